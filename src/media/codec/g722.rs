//! ITU-T G.722 at 64 kbit/s (mode 1): 16 kHz audio split by a 24-tap QMF into two 8 kHz
//! sub-bands, each coded by adaptive differential PCM (6 bits low band, 2 bits high band),
//! one byte per pair of input samples.
//!
//! The arithmetic follows the Recommendation's block diagrams (blocks 1L–6L, 1H–6H, the
//! shared predictor block 4) in 16-bit fixed point with its saturations, so both ends
//! track the same predictor state. Concealment of a lost frame repeats the last decoded
//! frame at a gain falling linearly to silence over 60 ms, as G.711 Appendix I fades.

use super::{AudioCodec, CodecError, CodecKind};

/// QMF coefficients h0..h11 (the 24-tap filter is symmetric); they sum to 4096.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Decision levels of the 6-bit low-band quantiser (block 1L), scaled by 2¹².
const Q6: [i32; 31] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0,
];
/// Low-band code for a negative difference in interval `i`.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
/// Low-band code for a positive difference in interval `i`.
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Inverse 4-bit quantiser (block 2L): the predictor adapts on the code's top four bits.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// Inverse 6-bit quantiser (block 5L), what the decoder outputs in mode 1.
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Low-band scale factor adaptation (block 3L): code magnitude class and its log increment.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// Antilog table of the scale factors (blocks 3L and 3H).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// High band: codes for negative and positive differences, inverse quantiser, adaptation.
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const RH2: [usize; 4] = [2, 1, 2, 1];
const WH: [i32; 3] = [0, -214, 798];

/// Saturates to the 16-bit range, as every adder in the Recommendation does.
#[inline]
fn sat(x: i32) -> i32 {
    x.clamp(-32768, 32767)
}

/// The adaptive predictor of one sub-band (block 4) and its scale factor.
#[derive(Debug, Clone, Copy)]
struct Band {
    /// Signal estimate (sp + sz).
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    /// Log scale factor.
    nb: i32,
    /// Scale factor.
    det: i32,
}

impl Band {
    const fn new(det: i32) -> Self {
        Band {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            a: [0; 3],
            ap: [0; 3],
            p: [0; 3],
            d: [0; 7],
            b: [0; 7],
            bp: [0; 7],
            nb: 0,
            det,
        }
    }

    /// Blocks 3L/3H: adapts the log scale factor by `increment` and rescales.
    #[inline]
    fn adapt_scale(&mut self, increment: i32, nb_max: i32, shift_base: i32) {
        self.nb = (((self.nb * 32512) >> 15) + increment).clamp(0, nb_max);
        let wd1 = ((self.nb >> 6) & 31) as usize;
        let wd2 = shift_base - (self.nb >> 11);
        let wd3 = if wd2 < 0 {
            ILB[wd1] << -wd2
        } else {
            ILB[wd1] >> wd2
        };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstructs, adapts the pole and zero predictors on the quantised
    /// difference `dx`, and forms the next signal estimate.
    #[inline]
    fn predict(&mut self, dx: i32) {
        // RECONS, PARREC
        self.d[0] = dx;
        self.r[0] = sat(self.s + dx);
        self.p[0] = sat(self.sz + dx);
        // UPPOL2
        let sg0 = self.p[0] >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = if sg0 == sg2 { 128 } else { -128 };
        wd3 += wd2 >> 7;
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);
        // UPPOL1
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = sat(15360 - self.ap[2]);
        self.ap[1] = sat(wd1 + wd2).clamp(-limit, limit);
        // UPZERO
        let step = if dx == 0 { 0 } else { 128 };
        let sgd = dx >> 15;
        for i in 1..7 {
            let wd2 = if (self.d[i] >> 15) == sgd {
                step
            } else {
                -step
            };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat(wd2 + wd3);
        }
        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }
        // FILTEP
        let wd1 = (self.a[1] * sat(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat(self.r[2] + self.r[2])) >> 15;
        self.sp = sat(wd1 + wd2);
        // FILTEZ
        let mut sz = 0;
        for i in 1..7 {
            sz += (self.b[i] * sat(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat(sz);
        // PREDIC
        self.s = sat(self.sp + self.sz);
    }
}

/// Initial scale factors of the two bands (the Recommendation's reset values).
const LOW_DET: i32 = 32;
const HIGH_DET: i32 = 8;

/// One direction of G.722: the sub-band predictors and the QMF delay line.
#[derive(Debug, Clone)]
struct State {
    low: Band,
    high: Band,
    qmf: [i32; 24],
}

impl State {
    const fn new() -> Self {
        State {
            low: Band::new(LOW_DET),
            high: Band::new(HIGH_DET),
            qmf: [0; 24],
        }
    }

    /// Pushes two samples into the QMF delay line and returns the even and odd tap sums.
    #[inline]
    fn qmf(&mut self, first: i32, second: i32) -> (i32, i32) {
        self.qmf.copy_within(2.., 0);
        self.qmf[22] = first;
        self.qmf[23] = second;
        let mut even = 0;
        let mut odd = 0;
        for i in 0..12 {
            even += self.qmf[2 * i] * QMF[i];
            odd += self.qmf[2 * i + 1] * QMF[11 - i];
        }
        (even, odd)
    }

    /// Codes the sub-band samples `xlow`, `xhigh` (blocks 1L–4L, 1H–4H) into one byte.
    fn encode_bands(&mut self, xlow: i32, xhigh: i32) -> u8 {
        // Low band: 6-bit quantiser (block 1L).
        let el = sat(xlow - self.low.s);
        let wd = if el >= 0 { el } else { -(el + 1) };
        let mut i = 1;
        while i < 30 && wd >= (Q6[i] * self.low.det) >> 12 {
            i += 1;
        }
        let ilow = if el < 0 { ILN[i] } else { ILP[i] };
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.predict(dlow);

        // High band: 2-bit quantiser (block 1H).
        let eh = sat(xhigh - self.high.s);
        let wd = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if wd >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] } as usize;
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        self.high.adapt_scale(WH[RH2[ihigh]], 22528, 10);
        self.high.predict(dhigh);

        ((ihigh << 6) as u8) | (ilow as u8)
    }

    /// Decodes one byte into the reconstructed sub-band samples (blocks 5L–6L, 5H–6H).
    fn decode_bands(&mut self, code: u8) -> (i32, i32) {
        let ilow = usize::from(code & 0x3F);
        let ihigh = usize::from(code >> 6);

        let rlow = (self.low.s + ((self.low.det * QM6[ilow]) >> 15)).clamp(-16384, 16383);
        let ril = ilow >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril]], 18432, 8);
        self.low.predict(dlow);

        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh]], 22528, 10);
        self.high.predict(dhigh);
        (rlow, rhigh)
    }
}

/// Samples a concealed frame fades over: the last good frame repeated at falling gain, then
/// silence after this many (60 ms at 16 kHz, as G.711 Appendix I).
const FADE_SAMPLES: usize = 960;
/// The longest frame remembered for concealment: 60 ms at 16 kHz.
const HISTORY: usize = 960;

/// G.722 encoder and decoder for one stream, on 16 kHz mono PCM.
#[derive(Debug, Clone)]
pub struct G722 {
    enc: State,
    dec: State,
    /// The last decoded frame, replayed (faded) when a frame is lost.
    last: [i16; HISTORY],
    last_len: usize,
    /// Samples concealed since the last good frame.
    concealed: usize,
}

impl Default for G722 {
    fn default() -> Self {
        Self::new()
    }
}

impl G722 {
    /// An encoder and decoder in their reset state.
    pub fn new() -> Self {
        G722 {
            enc: State::new(),
            dec: State::new(),
            last: [0; HISTORY],
            last_len: 0,
            concealed: 0,
        }
    }
}

impl AudioCodec for G722 {
    fn kind(&self) -> CodecKind {
        CodecKind::G722
    }

    fn max_encoded_len(&self, samples: usize) -> usize {
        samples.div_ceil(2)
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(CodecError::FrameSize {
                codec: "G722",
                samples: pcm.len(),
            });
        }
        let needed = pcm.len() / 2;
        if out.len() < needed {
            return Err(CodecError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        for (o, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            let (even, odd) = self.enc.qmf(i32::from(pair[0]), i32::from(pair[1]));
            // The filter's gain of 2¹³ and the halving to the codec's 15-bit input.
            let xlow = (even + odd) >> 14;
            let xhigh = (odd - even) >> 14;
            *o = self.enc.encode_bands(xlow, xhigh);
        }
        Ok(needed)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let needed = payload.len() * 2;
        if out.len() < needed {
            return Err(CodecError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        for (&code, pair) in payload.iter().zip(out.chunks_exact_mut(2)) {
            let (rlow, rhigh) = self.dec.decode_bands(code);
            let (even, odd) = self.dec.qmf(rlow + rhigh, rlow - rhigh);
            // The odd taps hold the earlier output sample of the pair.
            pair[0] = sat(odd >> 11) as i16;
            pair[1] = sat(even >> 11) as i16;
        }
        let kept = needed.min(HISTORY);
        self.last[..kept].copy_from_slice(&out[needed - kept..needed]);
        self.last_len = kept;
        self.concealed = 0;
        Ok(needed)
    }

    /// Repeats the last good frame with a linear fade to silence over 60 ms. The decoder
    /// state is left as it was: its scale factors still fit the talker's level, where a
    /// reset one would start the next good frame far too quiet.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let len = self.last_len;
        for s in out.iter_mut() {
            let gain = FADE_SAMPLES.saturating_sub(self.concealed) as i32;
            *s = if len == 0 || gain == 0 {
                0
            } else {
                let src = self.last[self.concealed % len];
                (i32::from(src) * gain / FADE_SAMPLES as i32) as i16
            };
            self.concealed = self.concealed.saturating_add(1);
        }
        Ok(out.len())
    }

    fn reset(&mut self) {
        *self = G722::new();
    }

    fn reset_decoder(&mut self) {
        self.dec = State::new();
        self.last_len = 0;
        self.concealed = 0;
    }
}

#[cfg(test)]
mod tests;
