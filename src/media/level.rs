//! Signal level convention shared by the tone generator and the DTMF detector.
//!
//! G.711 defines its digital milliwatt so that a full-scale sine is +3.14 dBm0 (A-law; µ-law
//! is +3.17, the 0.03 dB difference is ignored). Hence a sine of `L` dBm0 has peak amplitude
//! `32767 × 10^((L − 3.14) / 20)`: 0 dBm0 ≈ 22 826 peak, −10 dBm0 ≈ 7 218, −25 dBm0 ≈ 1 284.
//! Levels of multi-frequency tones are always given per frequency component.

/// Level of a full-scale sine on the 16-bit linear scale, in dBm0.
// G.711's figure, not π.
#[allow(clippy::approx_constant)]
pub const FULL_SCALE_DBM0: f32 = 3.14;

/// Peak amplitude (16-bit linear) of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f32) -> f32 {
    32767.0 * 10f32.powf((dbm0 - FULL_SCALE_DBM0) / 20.0)
}

/// Level in dBm0 of a sine with the given peak amplitude (16-bit linear).
pub fn peak_to_dbm0(peak: f32) -> f32 {
    20.0 * (peak / 32767.0).log10() + FULL_SCALE_DBM0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convention_round_trips() {
        assert!((dbm0_to_peak(FULL_SCALE_DBM0) - 32767.0).abs() < 0.5);
        assert!((dbm0_to_peak(0.0) - 22826.0).abs() < 2.0);
        assert!((peak_to_dbm0(dbm0_to_peak(-25.0)) + 25.0).abs() < 1e-3);
    }
}
