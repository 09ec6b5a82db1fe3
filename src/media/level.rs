//! Signal level convention shared by the tone generator and the DTMF detector.
//!
//! G.711 defines its digital milliwatt so that a full-scale sine is +3.14 dBm0 (A-law). µ-law
//! puts 0 dBm0 0.065 dB lower on the 16-bit scale (+3.17 dBm0 at its overload, 4 × 8159 =
//! 32 636, not 32 767); the difference is ignored here, and tests that need exact µ-law levels
//! correct for it. Hence a sine of `L` dBm0 has peak amplitude
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

/// Share of the energy of `pcm` (sampled at `rate` Hz) that lies at `freq` (Goertzel): close
/// to 1 for a pure tone of that frequency, close to 0 when it is absent. For measuring what a
/// call carries (tests, diagnostics), not for the per-frame hot path.
pub fn tone_share(pcm: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f64 = pcm.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (pcm.len() as f64 * energy)
    }
}

/// RMS level of `pcm` relative to full scale, in dBFS (silence reads about −90).
pub fn rms_dbfs(pcm: &[i16]) -> f64 {
    let mean_square =
        pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len().max(1) as f64;
    10.0 * (mean_square.max(1e-9) / (32768.0f64 * 32768.0)).log10()
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

    #[test]
    fn tone_share_tells_a_tone_from_another() {
        let pcm: Vec<i16> = (0..1600)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0).sin()) as i16
            })
            .collect();
        assert!(tone_share(&pcm, 1000.0, 8000.0) > 0.95);
        assert!(tone_share(&pcm, 1400.0, 8000.0) < 0.01);
        assert_eq!(tone_share(&[0; 160], 1000.0, 8000.0), 0.0);
        assert!(
            (rms_dbfs(&pcm) - (20.0 * (8000.0f64 / 32768.0 / 2f64.sqrt()).log10())).abs() < 0.1
        );
    }
}
