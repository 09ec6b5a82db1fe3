//! Packet-loss concealment after ITU-T G.711 Appendix I, on decoded 8 kHz or 16 kHz PCM.
//!
//! Implemented as in the Appendix I reference (`LowcFE`), whose constants are samples at
//! 8 kHz; at 16 kHz every one of them is the same duration in samples at 16 kHz:
//! - a 48.75 ms history (390 samples at 8 kHz); output is delayed by 3.75 ms (30 samples at
//!   8 kHz) so the start of an erasure can be cross-faded with the real signal;
//! - pitch detection by normalised cross-correlation over 20 ms, periods 5–15 ms (66–200 Hz),
//!   a coarse search on every 0.25 ms lag (2:1 decimated at 8 kHz, 4:1 at 16 kHz) then a fine
//!   search on every lag around the best match;
//! - the first 10 ms of an erasure repeat the last pitch period, with a quarter-period
//!   overlap-add where the period joins itself;
//! - the second and third 10 ms widen the repeated segment to two and then three periods;
//! - from the second 10 ms on, the output is attenuated linearly by 20 % per 10 ms, reaching
//!   silence after 60 ms (zeros from then on);
//! - the first good frame after an erasure is overlap-added with the continued synthetic
//!   signal over a quarter of the repeated period (at most 3.75 ms) plus 4 ms per extra
//!   10 ms erased (at most 10 ms in all).
//!
//! Appendix I works in 10 ms blocks; frames here may be any multiple of 10 ms (80 samples at
//! 8 kHz, 160 at 16 kHz). Floating point is `f32` rather than the reference's `double`; the
//! state is fixed-size arrays sized for 16 kHz, so nothing allocates.
//!
//! The coarse search keeps its 0.25 ms lag grid at 16 kHz (4:1 decimation) rather than
//! halving it: its cost is then that of 8 kHz, a quarter of a 2:1 search at 16 kHz, and the
//! fine search (±3 lags) still visits every lag between coarse neighbours, so no lag is left
//! unexamined near the coarse winner.

use super::types::ClockRate;

/// Samples in the 10 ms block the algorithm works on at 8 kHz (see [`G711Plc::block`]).
pub const BLOCK: usize = 80;
/// Output delay in samples (3.75 ms) that every frame passing through an 8 kHz [`G711Plc`]
/// incurs (see [`G711Plc::delay`]).
pub const DELAY: usize = POVERLAPMAX;

const PITCH_MIN: usize = 40;
const PITCH_MAX: usize = 120;
const PITCHDIFF: usize = PITCH_MAX - PITCH_MIN;
const POVERLAPMAX: usize = PITCH_MAX >> 2;
const HISTORYLEN: usize = PITCH_MAX * 3 + POVERLAPMAX;
const NDEC: usize = 2;
const CORRLEN: usize = 160;
const CORRMINPOWER: f32 = 250.0;
const EOVERLAPINCR: usize = 32;
const ATTENFAC: f32 = 0.2;

/// The largest rate factor (16 kHz over 8 kHz), which the scratch arrays are sized for.
const MAX_FACTOR: usize = 2;

/// A frame whose length is not a whole number of 10 ms blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} samples is not a multiple of the {block}-sample block")]
pub struct FrameLengthError {
    /// Samples in the refused frame.
    pub len: usize,
    /// Samples in a 10 ms block at the concealer's rate.
    pub block: usize,
}

/// Concealment state for one decoded stream at 8 or 16 kHz.
#[derive(Debug, Clone)]
pub struct G711Plc {
    /// Samples per 8 kHz sample period: 1 at 8 kHz, 2 at 16 kHz; scales every constant.
    factor: usize,
    erasecnt: usize,
    poverlap: usize,
    poffset: usize,
    pitch: usize,
    pitchblen: usize,
    /// Sized for the concealer's rate: a narrowband leg does not carry room for wideband.
    history: Box<[i16]>,
    pitchbuf: Box<[f32]>,
    lastq: Box<[f32]>,
}

impl Default for G711Plc {
    fn default() -> Self {
        Self::new()
    }
}

fn clamp16(x: f32) -> i16 {
    x.clamp(-32768.0, 32767.0) as i16
}

impl G711Plc {
    /// An 8 kHz concealer whose history is silence.
    pub fn new() -> Self {
        Self::with_factor(1)
    }

    /// A concealer for PCM at `rate` whose history is silence; `None` unless 8 or 16 kHz.
    pub fn with_rate(rate: ClockRate) -> Option<Self> {
        match rate {
            ClockRate::HZ_8000 => Some(Self::with_factor(1)),
            ClockRate::HZ_16000 => Some(Self::with_factor(2)),
            _ => None,
        }
    }

    fn with_factor(factor: usize) -> Self {
        G711Plc {
            factor,
            erasecnt: 0,
            poverlap: 0,
            poffset: 0,
            pitch: 0,
            pitchblen: 0,
            history: vec![0; HISTORYLEN * factor].into_boxed_slice(),
            pitchbuf: vec![0.0; HISTORYLEN * factor].into_boxed_slice(),
            lastq: vec![0.0; POVERLAPMAX * factor].into_boxed_slice(),
        }
    }

    /// Samples in a 10 ms block at this concealer's rate; frames are whole numbers of these.
    pub fn block(&self) -> usize {
        BLOCK * self.factor
    }

    /// Output delay in samples (3.75 ms) at this concealer's rate.
    pub fn delay(&self) -> usize {
        DELAY * self.factor
    }

    /// Samples of history in use at this rate (48.75 ms).
    fn histlen(&self) -> usize {
        HISTORYLEN * self.factor
    }

    /// Whether the last frame handled was concealed.
    pub fn concealing(&self) -> bool {
        self.erasecnt > 0
    }

    /// Passes a received frame through, in place: it comes out [`delay`](Self::delay) samples
    /// late, and cross-faded from the concealment if it ends an erasure.
    pub fn good_frame(&mut self, pcm: &mut [i16]) -> Result<(), FrameLengthError> {
        let block = self.check_len(pcm.len())?;
        for block in pcm.chunks_exact_mut(block) {
            self.add_to_history(block);
        }
        Ok(())
    }

    /// Fills `out` with concealment for a lost frame.
    pub fn lost_frame(&mut self, out: &mut [i16]) -> Result<(), FrameLengthError> {
        let block = self.check_len(out.len())?;
        for block in out.chunks_exact_mut(block) {
            self.dofe(block);
        }
        Ok(())
    }

    /// The block length if `len` is a whole number of blocks at this rate.
    fn check_len(&self, len: usize) -> Result<usize, FrameLengthError> {
        let block = self.block();
        if len.is_multiple_of(block) {
            Ok(block)
        } else {
            Err(FrameLengthError { len, block })
        }
    }

    fn add_to_history(&mut self, s: &mut [i16]) {
        if self.erasecnt > 0 {
            let mut overlapbuf = [0i16; BLOCK * MAX_FACTOR];
            // Longer erasures get a longer fade back to the real signal.
            let olen = (self.poverlap + (self.erasecnt - 1) * EOVERLAPINCR * self.factor)
                .min(self.block());
            self.getfespeech(&mut overlapbuf[..olen]);
            self.overlap_add_at_end(s, &overlapbuf[..olen]);
            self.erasecnt = 0;
        }
        self.save_speech(s);
    }

    fn save_speech(&mut self, s: &mut [i16]) {
        let (hl, block, delay) = (self.histlen(), self.block(), self.delay());
        let history = &mut self.history[..hl];
        history.copy_within(block.., 0);
        history[hl - block..].copy_from_slice(s);
        s.copy_from_slice(&history[hl - block - delay..hl - delay]);
    }

    fn dofe(&mut self, out: &mut [i16]) {
        let hl = self.histlen();
        if self.erasecnt == 0 {
            for (f, &h) in self.pitchbuf[..hl].iter_mut().zip(self.history.iter()) {
                *f = f32::from(h);
            }
            self.pitch = self.find_pitch();
            self.poverlap = self.pitch >> 2;
            let end = hl;
            let po = self.poverlap;
            self.lastq[..po].copy_from_slice(&self.pitchbuf[end - po..end]);
            self.poffset = 0;
            self.pitchblen = self.pitch;
            self.blend_period_end();
            for i in 0..po {
                self.history[hl - po + i] = clamp16(self.pitchbuf[end - po + i]);
            }
            self.getfespeech(out);
        } else if self.erasecnt == 1 || self.erasecnt == 2 {
            let mut tmp = [0i16; POVERLAPMAX * MAX_FACTOR];
            let po = self.poverlap;
            let saveoffset = self.poffset;
            self.getfespeech(&mut tmp[..po]);
            self.poffset = saveoffset;
            while self.poffset > self.pitch {
                self.poffset -= self.pitch;
            }
            self.pitchblen += self.pitch;
            self.blend_period_end();
            self.getfespeech(out);
            overlap_add_i16(&tmp[..po], out);
            self.scale_speech(out);
        } else if self.erasecnt > 5 {
            out.fill(0);
        } else {
            self.getfespeech(out);
            self.scale_speech(out);
        }
        self.erasecnt += 1;
        self.save_speech(out);
    }

    /// Cross-fades the saved last quarter period into the samples one buffer length earlier,
    /// so the repeated segment loops without a click.
    fn blend_period_end(&mut self) {
        let po = self.poverlap;
        let hl = self.histlen();
        let start = hl - self.pitchblen;
        if po == 0 {
            return;
        }
        let incr = 1.0 / po as f32;
        let mut lw = 1.0 - incr;
        let mut rw = incr;
        for i in 0..po {
            let t = lw * self.lastq[i] + rw * self.pitchbuf[start - po + i];
            self.pitchbuf[hl - po + i] = t.clamp(-32768.0, 32767.0);
            lw -= incr;
            rw += incr;
        }
    }

    fn getfespeech(&mut self, out: &mut [i16]) {
        let start = self.histlen() - self.pitchblen;
        let mut pos = 0;
        while pos < out.len() {
            let cnt = (self.pitchblen - self.poffset).min(out.len() - pos);
            for i in 0..cnt {
                out[pos + i] = clamp16(self.pitchbuf[start + self.poffset + i]);
            }
            self.poffset += cnt;
            if self.poffset == self.pitchblen {
                self.poffset = 0;
            }
            pos += cnt;
        }
    }

    fn scale_speech(&self, out: &mut [i16]) {
        let mut g = 1.0 - (self.erasecnt as f32 - 1.0) * ATTENFAC;
        // 20 % per 10 ms whatever the rate.
        let attenincr = ATTENFAC / self.block() as f32;
        for s in out.iter_mut() {
            *s = (f32::from(*s) * g.max(0.0)) as i16;
            g -= attenincr;
        }
    }

    fn overlap_add_at_end(&self, s: &mut [i16], f: &[i16]) {
        let cnt = f.len();
        if cnt == 0 {
            return;
        }
        let incr = 1.0 / cnt as f32;
        let gain = (1.0 - (self.erasecnt as f32 - 1.0) * ATTENFAC).max(0.0);
        let incrg = incr * gain;
        let mut lw = (1.0 - incr) * gain;
        let mut rw = incr;
        for i in 0..cnt {
            let t = lw * f32::from(f[i]) + rw * f32::from(s[i]);
            s[i] = clamp16(t);
            lw -= incrg;
            rw += incr;
        }
    }

    /// Appendix I `findpitch`: the lag in 5..=15 ms (40..=120 samples at 8 kHz) that best
    /// predicts the last 20 ms.
    fn find_pitch(&self) -> usize {
        let f = self.factor;
        let hl = self.histlen();
        let (corrlen, pitch_max, pitchdiff, ndec) =
            (CORRLEN * f, PITCH_MAX * f, PITCHDIFF * f, NDEC * f);
        let buf = &self.pitchbuf[..hl];
        let l = hl - corrlen;
        let mut r = hl - corrlen - pitch_max;

        let mut energy = 0.0f32;
        let mut corr = 0.0f32;
        for i in (0..corrlen).step_by(ndec) {
            energy += buf[r + i] * buf[r + i];
            corr += buf[r + i] * buf[l + i];
        }
        let mut bestcorr = corr / energy.max(CORRMINPOWER).sqrt();
        let mut bestmatch = 0;
        for j in (ndec..=pitchdiff).step_by(ndec) {
            energy -= buf[r] * buf[r];
            energy += buf[r + corrlen] * buf[r + corrlen];
            r += ndec;
            let mut corr = 0.0f32;
            for i in (0..corrlen).step_by(ndec) {
                corr += buf[r + i] * buf[l + i];
            }
            let c = corr / energy.max(CORRMINPOWER).sqrt();
            if c >= bestcorr {
                bestcorr = c;
                bestmatch = j;
            }
        }

        // Undecimated sums have `f` times the terms at the higher rate: the same floor per
        // sample.
        let minpower = CORRMINPOWER * f as f32;
        let j0 = bestmatch.saturating_sub(ndec - 1);
        let k = (bestmatch + ndec - 1).min(pitchdiff);
        let mut r = hl - corrlen - pitch_max + j0;
        let mut energy = 0.0f32;
        let mut corr = 0.0f32;
        for i in 0..corrlen {
            energy += buf[r + i] * buf[r + i];
            corr += buf[r + i] * buf[l + i];
        }
        let mut bestcorr = corr / energy.max(minpower).sqrt();
        let mut bestmatch = j0;
        for j in j0 + 1..=k {
            energy -= buf[r] * buf[r];
            energy += buf[r + corrlen] * buf[r + corrlen];
            r += 1;
            let mut corr = 0.0f32;
            for i in 0..corrlen {
                corr += buf[r + i] * buf[l + i];
            }
            let c = corr / energy.max(minpower).sqrt();
            if c > bestcorr {
                bestcorr = c;
                bestmatch = j;
            }
        }
        pitch_max - bestmatch
    }
}

/// Cross-fades from `l` into the start of `o`, in place (Appendix I `overlapadds`).
fn overlap_add_i16(l: &[i16], o: &mut [i16]) {
    let cnt = l.len();
    if cnt == 0 {
        return;
    }
    let incr = 1.0 / cnt as f32;
    let mut lw = 1.0 - incr;
    let mut rw = incr;
    for i in 0..cnt {
        let t = lw * f32::from(l[i]) + rw * f32::from(o[i]);
        o[i] = clamp16(t);
        lw -= incr;
        rw += incr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    /// A 130.5 Hz tone with a harmonic: a period of 61.3 samples, inside the pitch search
    /// range but not a whole number of samples, so repeating it needs the overlap-add.
    fn tone(n: usize) -> i16 {
        let phase = 2.0 * std::f32::consts::PI * n as f32 / 61.3;
        (8000.0 * phase.sin() + 2000.0 * (2.0 * phase).sin()) as i16
    }

    fn max_step(samples: &[i16]) -> i32 {
        samples
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    fn peak(samples: &[i16]) -> i32 {
        samples
            .iter()
            .map(|s| i32::from(*s).abs())
            .max()
            .unwrap_or(0)
    }

    /// Runs `good` frames of tone, then `lost` concealed frames, then `after` good frames.
    fn run(good: usize, lost: usize, after: usize) -> Vec<i16> {
        run_with(G711Plc::new(), FRAME, tone, good, lost, after)
    }

    /// Runs `good` frames of `signal` through `plc`, then `lost` concealed frames, then
    /// `after` good frames; frames are `frame` samples long.
    fn run_with(
        mut plc: G711Plc,
        frame: usize,
        signal: impl Fn(usize) -> i16,
        good: usize,
        lost: usize,
        after: usize,
    ) -> Vec<i16> {
        let mut out = Vec::new();
        let mut n = 0;
        for k in 0..good + lost + after {
            let mut pcm = vec![0i16; frame];
            if k < good || k >= good + lost {
                for s in pcm.iter_mut() {
                    *s = signal(n);
                    n += 1;
                }
                plc.good_frame(&mut pcm).unwrap();
                assert!(!plc.concealing());
            } else {
                n += frame;
                plc.lost_frame(&mut pcm).unwrap();
                assert!(plc.concealing());
            }
            out.extend_from_slice(&pcm);
        }
        out
    }

    #[test]
    fn good_frames_pass_through_delayed() {
        let out = run(5, 0, 0);
        assert!(out[..DELAY].iter().all(|&s| s == 0));
        for (i, &s) in out[DELAY..].iter().enumerate() {
            assert_eq!(s, tone(i));
        }
    }

    #[test]
    fn concealment_continues_the_waveform_without_a_click() {
        let good = 10;
        let out = run(good, 1, 0);
        let natural = max_step(&out[DELAY..good * FRAME]);
        let boundary = good * FRAME;
        // Across the start of the loss and through the first 10 ms of synthetic signal.
        let around = &out[boundary - 10..boundary + 10 + BLOCK];
        assert!(
            max_step(around) <= natural * 3 / 2,
            "step {} vs natural {}",
            max_step(around),
            natural
        );
        // For a periodic input the first repeated period matches the real continuation.
        for (i, &got) in out.iter().enumerate().take(boundary + BLOCK).skip(boundary) {
            let want = i32::from(tone(i - DELAY));
            let got = i32::from(got);
            assert!((want - got).abs() < 400, "sample {i}: {got} vs {want}");
        }
    }

    /// Asserts that the concealment from `start` on, in blocks of `block` (10 ms), begins at
    /// the level `full` and fades block by block: block b starts at gain 1 − 0.2·(b − 1).
    fn assert_fading_blocks(out: &[i16], start: usize, block: usize, full: i32) {
        let block_peaks: Vec<i32> = (0..8)
            .map(|b| peak(&out[start + b * block..start + (b + 1) * block]))
            .collect();
        assert!(block_peaks[0] >= full * 9 / 10, "first 10 ms at full level");
        for b in 1..6 {
            let ceiling = full as f32 * (1.0 - 0.2 * (b as f32 - 1.0)) + 1.0;
            assert!(
                block_peaks[b] as f32 <= ceiling,
                "block {b}: {block_peaks:?}"
            );
            assert!(
                block_peaks[b] < block_peaks[b - 1],
                "block {b}: {block_peaks:?}"
            );
        }
    }

    #[test]
    fn concealment_fades_to_silence_by_60_ms() {
        let good = 10;
        let out = run(good, 5, 0);
        let start = good * FRAME + DELAY; // first synthetic sample
        let full = peak(&out[DELAY..good * FRAME]);
        assert_fading_blocks(&out, start, BLOCK, full);
        // The ramp meets silence smoothly rather than being cut off.
        let ramp_end = peak(&out[start + 6 * BLOCK - 8..start + 6 * BLOCK]);
        assert!(ramp_end <= full / 20, "end of ramp {ramp_end} of {full}");
        assert!(
            out[start + 6 * BLOCK..].iter().all(|&s| s == 0),
            "silent from 60 ms on"
        );
    }

    #[test]
    fn recovery_cross_fades_into_the_real_signal() {
        let good = 10;
        for lost in [1, 2, 4] {
            let out = run(good, lost, 3);
            let natural = max_step(&out[DELAY..good * FRAME]);
            let resume = (good + lost) * FRAME + DELAY;
            let around = &out[resume - 20..resume + BLOCK];
            assert!(
                max_step(around) <= natural * 3 / 2,
                "after {lost} lost: step {} vs natural {natural}",
                max_step(around)
            );
            // Once the fade is over the output is the real signal again.
            let tail = out.len() - FRAME;
            for (i, &got) in out.iter().enumerate().skip(tail) {
                assert_eq!(got, tone(i - DELAY));
            }
        }
    }

    #[test]
    fn silence_conceals_to_silence() {
        let mut plc = G711Plc::new();
        let mut frame = [0i16; FRAME];
        plc.good_frame(&mut frame).unwrap();
        plc.lost_frame(&mut frame).unwrap();
        assert!(frame.iter().all(|&s| s == 0));
    }

    /// A fixed input with a gliding pitch and a little noise, through a fixed pattern of frame
    /// sizes and erasures of 1 to 7 blocks, so every branch of the concealer runs.
    fn pinned_8k_output() -> Vec<i16> {
        let mut plc = G711Plc::new();
        let mut seed = 0x1234_5678u32;
        let mut phase = 0.0f32;
        let mut n = 0usize;
        let mut out = Vec::new();
        // (frame length, lost)
        let pattern: [(usize, bool); 16] = [
            (160, false),
            (160, false),
            (80, false),
            (240, false),
            (80, true),
            (160, false),
            (160, false),
            (160, true),
            (80, false),
            (160, false),
            (240, true),
            (240, true),
            (80, true),
            (160, false),
            (160, true),
            (240, false),
        ];
        for round in 0..3 {
            for &(len, lost) in &pattern {
                let mut frame = vec![0i16; len];
                if lost {
                    plc.lost_frame(&mut frame).unwrap();
                } else {
                    for s in frame.iter_mut() {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let noise = f32::from((seed >> 16) as u16 as i16) / 64.0;
                        let period = 45.0 + 30.0 * (n as f32 / 2000.0 + round as f32).sin();
                        phase += 2.0 * std::f32::consts::PI / period;
                        *s = (6000.0 * phase.sin() + 2500.0 * (3.0 * phase).sin() + noise) as i16;
                        n += 1;
                    }
                    plc.good_frame(&mut frame).unwrap();
                }
                out.extend_from_slice(&frame);
            }
        }
        out
    }

    #[test]
    fn output_at_8_khz_is_pinned() {
        let out = pinned_8k_output();
        let hash = fnv(&out);
        // Concealed first blocks (700, 1100, 1500, 2200), later blocks (1200, 1600, 2300),
        // the attenuated tail (1900), a recovery fade (2040) and plain delayed input (5000).
        let probes: Vec<i16> = [700, 1100, 1200, 1500, 1600, 1900, 2040, 2200, 2300, 5000]
            .iter()
            .map(|&i| out[i])
            .collect();
        assert_eq!(out.len(), 3 * 2560);
        assert_eq!(hash, 0x2119_e3c1_3353_d4a0);
        assert_eq!(
            probes,
            [-194, 6375, -5334, 3921, -3353, -479, -560, 3532, -4607, -3857]
        );
    }

    /// FNV-1a over little-endian samples.
    fn fnv(samples: &[i16]) -> u64 {
        samples
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }

    /// Pinned output of a long run of 10, 20 and 30 ms frames of a gliding two-tone signal
    /// with single losses and bursts of up to 8 frames (past the 60 ms fade to silence), from
    /// a fixed seed, at 8 and 16 kHz: concealment and recovery after good runs of many
    /// lengths.
    #[test]
    fn long_random_losses_are_pinned_at_both_rates() {
        let mut hashes = Vec::new();
        for factor in [1usize, 2] {
            let rate = if factor == 1 { 8000.0 } else { 16000.0 };
            let mut plc = G711Plc::with_factor(factor);
            let mut rng = fastrand::Rng::with_seed(0x5eed_0017);
            let mut out = Vec::new();
            let mut n = 0usize;
            let mut lost_run = 0;
            for _ in 0..3000 {
                let len = BLOCK * factor * rng.usize(1..=3);
                let mut frame: Vec<i16> = (0..len)
                    .map(|k| {
                        let t = (n + k) as f64 / rate;
                        let f = 150.0 + 100.0 * (t * 0.7).sin();
                        (5000.0 * (2.0 * std::f64::consts::PI * f * t).sin()
                            + 2000.0 * (2.0 * std::f64::consts::PI * 3.1 * f * t).sin())
                            as i16
                    })
                    .collect();
                n += len;
                if lost_run == 0 && rng.u8(..) < 20 {
                    lost_run = rng.usize(1..=8);
                }
                if lost_run > 0 {
                    lost_run -= 1;
                    plc.lost_frame(&mut frame).unwrap();
                } else {
                    plc.good_frame(&mut frame).unwrap();
                }
                out.extend_from_slice(&frame);
            }
            hashes.push((out.len(), fnv(&out)));
        }
        assert_eq!(
            hashes,
            [
                (478_000, 0x3cce_038a_4c6b_17e2),
                (956_000, 0x9dd3_d938_705c_bbb9)
            ]
        );
    }

    #[test]
    fn odd_frame_length_is_refused() {
        let mut plc = G711Plc::new();
        let mut frame = [0i16; 100];
        assert_eq!(
            plc.good_frame(&mut frame),
            Err(FrameLengthError {
                len: 100,
                block: BLOCK
            })
        );
        assert_eq!(
            plc.lost_frame(&mut frame),
            Err(FrameLengthError {
                len: 100,
                block: BLOCK
            })
        );
        let mut ok = [0i16; 240];
        assert!(plc.lost_frame(&mut ok).is_ok(), "30 ms frames work");
    }

    /// 20 ms at 16 kHz.
    const FRAME_16: usize = 320;
    const BLOCK_16: usize = 160;
    const DELAY_16: usize = 60;

    fn plc_16k() -> G711Plc {
        G711Plc::with_rate(ClockRate::HZ_16000).unwrap()
    }

    /// A voiced 16 kHz signal: the harmonics of `f0` up to `top` Hz, falling 12 dB per octave
    /// as a glottal source does.
    fn harmonics_16k(f0: f32, top: f32, n: usize) -> i16 {
        let t = n as f32 / 16000.0;
        let count = (top / f0) as usize;
        let x: f32 = (1..=count)
            .map(|k| {
                let k = k as f32;
                6000.0 / (k * k) * (2.0 * std::f32::consts::PI * f0 * k * t + 0.7 * k).sin()
            })
            .sum();
        x as i16
    }

    /// 180 Hz up to 6 kHz: a period of 88.9 samples, not a whole number, so repeating it
    /// needs the overlap-add.
    fn voiced_16k(n: usize) -> i16 {
        harmonics_16k(180.0, 6000.0, n)
    }

    /// The lag in `lags` with the highest normalised autocorrelation of `x`.
    fn autocorrelation_peak(x: &[i16], lags: std::ops::RangeInclusive<usize>) -> usize {
        let r = |lag: usize| -> f64 {
            let (a, b) = (&x[..x.len() - lag], &x[lag..]);
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            let ea: f64 = a.iter().map(|&p| f64::from(p).powi(2)).sum();
            let eb: f64 = b.iter().map(|&p| f64::from(p).powi(2)).sum();
            dot / (ea * eb).sqrt().max(1.0)
        };
        lags.max_by(|&a, &b| r(a).total_cmp(&r(b))).unwrap_or(0)
    }

    /// Root-mean-square difference between `got` and `want(i)` for `got[i]`.
    fn rms_error(got: &[i16], want: impl Fn(usize) -> i16) -> f64 {
        let sum: f64 = got
            .iter()
            .enumerate()
            .map(|(i, &g)| (f64::from(g) - f64::from(want(i))).powi(2))
            .sum();
        (sum / got.len().max(1) as f64).sqrt()
    }

    #[test]
    fn with_rate_takes_8_and_16_khz_only() {
        let narrow = G711Plc::with_rate(ClockRate::HZ_8000).unwrap();
        assert_eq!((narrow.block(), narrow.delay()), (BLOCK, DELAY));
        let new = G711Plc::new();
        assert_eq!((new.block(), new.delay()), (BLOCK, DELAY));
        let wide = plc_16k();
        assert_eq!((wide.block(), wide.delay()), (BLOCK_16, DELAY_16));
        assert!(G711Plc::with_rate(ClockRate::HZ_48000).is_none());
        for hz in [7999, 8001, 11025, 15999, 16001, 32000, 44100] {
            let rate = ClockRate::new(hz).unwrap();
            assert!(G711Plc::with_rate(rate).is_none(), "{hz} Hz");
        }
    }

    #[test]
    fn frame_length_is_checked_against_the_16_khz_block() {
        let mut plc = plc_16k();
        let mut ten_ms_at_8k = [0i16; BLOCK];
        let refused = FrameLengthError {
            len: BLOCK,
            block: BLOCK_16,
        };
        assert_eq!(plc.good_frame(&mut ten_ms_at_8k), Err(refused));
        assert_eq!(plc.lost_frame(&mut ten_ms_at_8k), Err(refused));
        assert!(
            refused.to_string().contains("160-sample block"),
            "{refused}"
        );
        for len in [BLOCK_16 - 1, BLOCK_16 + 1, BLOCK_16 + BLOCK] {
            let mut frame = vec![0i16; len];
            assert!(plc.good_frame(&mut frame).is_err(), "{len} samples");
        }
        for len in [BLOCK_16, 2 * BLOCK_16, 3 * BLOCK_16] {
            let mut frame = vec![0i16; len];
            assert!(plc.good_frame(&mut frame).is_ok(), "{len} samples");
            assert!(plc.lost_frame(&mut frame).is_ok(), "{len} samples");
        }
        // The same 80 samples are a whole block at 8 kHz.
        assert!(G711Plc::new().good_frame(&mut ten_ms_at_8k).is_ok());
    }

    #[test]
    fn at_16_khz_good_frames_pass_through_delayed() {
        let out = run_with(plc_16k(), FRAME_16, voiced_16k, 5, 0, 0);
        assert!(out[..DELAY_16].iter().all(|&s| s == 0));
        for (i, &s) in out[DELAY_16..].iter().enumerate() {
            assert_eq!(s, voiced_16k(i));
        }
    }

    #[test]
    fn at_16_khz_concealment_continues_the_waveform_without_a_click() {
        let good = 10;
        let out = run_with(plc_16k(), FRAME_16, voiced_16k, good, 2, 0);
        let natural = max_step(&out[DELAY_16..good * FRAME_16]);
        let full = peak(&out[DELAY_16..good * FRAME_16]);
        let boundary = good * FRAME_16;
        // Across the start of the loss and through 20 ms of synthetic signal.
        let around = &out[boundary - 20..boundary + DELAY_16 + 2 * BLOCK_16];
        assert!(
            max_step(around) <= natural * 3 / 2,
            "step {} vs natural {natural}",
            max_step(around)
        );
        // The first 10 ms match the real continuation; the repeat is 89 samples for a period
        // of 88.9, so it drifts by a little.
        let first = &out[boundary..boundary + BLOCK_16];
        let worst = first
            .iter()
            .enumerate()
            .map(|(i, &got)| {
                (i32::from(got) - i32::from(voiced_16k(boundary + i - DELAY_16))).abs()
            })
            .max()
            .unwrap_or(0);
        assert!(worst < full / 10, "worst error {worst} of {full}");
    }

    #[test]
    fn at_16_khz_concealment_keeps_the_pitch() {
        // Periods in 16 kHz samples: the ends of the 80..=240 search range, the 180 Hz voice,
        // and just outside each end.
        for period in [80.0f32, 88.9, 150.0, 240.0, 78.0, 246.0] {
            let f0 = 16000.0 / period;
            let signal = |n: usize| harmonics_16k(f0, 6000.0, n);
            let good = 10;
            let out = run_with(plc_16k(), FRAME_16, signal, good, 3, 0);
            let start = good * FRAME_16 + DELAY_16; // first synthetic sample
            let synthetic = &out[start..start + 3 * BLOCK_16];
            let lags = (period * 2.0 / 3.0) as usize..=(period * 1.5) as usize;
            let found = autocorrelation_peak(synthetic, lags) as f32;
            let full = f64::from(peak(&out[DELAY_16..start]));
            let error = rms_error(&out[start..start + BLOCK_16], |i| {
                signal(start + i - DELAY_16)
            });
            if period <= 240.0 {
                // 78 samples is shorter than the search allows, but two periods are not.
                assert!((found - period).abs() <= 1.0, "period {period}: {found}");
                assert!(error < full / 20.0, "period {period}: rms error {error:.0}");
            } else {
                // Longer than 15 ms cannot be repeated whole.
                assert!(found <= 241.0, "period {period}: {found}");
                assert!(error > full / 20.0, "period {period}: rms error {error:.0}");
            }
        }
    }

    #[test]
    fn at_16_khz_concealment_fades_to_silence_by_60_ms() {
        let good = 10;
        let out = run_with(plc_16k(), FRAME_16, voiced_16k, good, 5, 0);
        let start = good * FRAME_16 + DELAY_16; // first synthetic sample
        let full = peak(&out[DELAY_16..good * FRAME_16]);
        assert_fading_blocks(&out, start, BLOCK_16, full);
        // The level over one period (89 samples) about the middle of each 10 ms is the gain
        // there: 1 − 0.2·(t − 10 ms)/10 ms, falling per sample rather than per block.
        let rms = |x: &[i16]| -> f64 {
            let sum: f64 = x.iter().map(|&s| f64::from(s).powi(2)).sum();
            (sum / x.len() as f64).sqrt()
        };
        let level = rms(&out[start - 89 - DELAY_16..start - DELAY_16]);
        for b in 1..6 {
            let mid = start + b * BLOCK_16 + BLOCK_16 / 2;
            let gain = rms(&out[mid - 44..mid + 45]) / level;
            let want = 1.0 - 0.2 * (b as f64 - 0.5);
            assert!(
                (gain - want).abs() < 0.05,
                "block {b}: gain {gain:.3}, want {want:.2}"
            );
        }
        let ramp_end = peak(&out[start + 6 * BLOCK_16 - 16..start + 6 * BLOCK_16]);
        assert!(ramp_end <= full / 20, "end of ramp {ramp_end} of {full}");
        assert!(
            out[start + 6 * BLOCK_16..].iter().all(|&s| s == 0),
            "silent from 60 ms on"
        );
    }

    #[test]
    fn at_16_khz_recovery_cross_fades_into_the_real_signal() {
        let good = 10;
        for lost in [1, 2, 4] {
            let out = run_with(plc_16k(), FRAME_16, voiced_16k, good, lost, 3);
            let natural = max_step(&out[DELAY_16..good * FRAME_16]);
            let resume = (good + lost) * FRAME_16 + DELAY_16;
            let around = &out[resume - 40..resume + BLOCK_16];
            assert!(
                max_step(around) <= natural * 3 / 2,
                "after {lost} lost: step {} vs natural {natural}",
                max_step(around)
            );
            let tail = out.len() - FRAME_16;
            for (i, &got) in out.iter().enumerate().skip(tail) {
                assert_eq!(got, voiced_16k(i - DELAY_16));
            }
        }
    }

    /// How long the fade back to the real signal lasts, in samples, after `lost` frames: the
    /// real signal after the loss is silence, so the fade is what remains of the concealment.
    fn recovery_fade_len(
        plc: G711Plc,
        frame: usize,
        signal: impl Fn(usize) -> i16,
        lost: usize,
    ) -> usize {
        let good = 10;
        let delay = plc.delay();
        let signal = |n: usize| if n < good * frame { signal(n) } else { 0 };
        let out = run_with(plc, frame, signal, good, lost, 2);
        let resume = (good + lost) * frame + delay;
        assert_ne!(out[resume - 1], 0, "concealing up to the resumption");
        out[resume..]
            .iter()
            .rposition(|&s| s != 0)
            .map_or(0, |last| last + 1)
    }

    #[test]
    fn at_16_khz_recovery_fade_lasts_as_long_as_at_8_khz() {
        // A quarter of the repeated period (89 / 4 = 22 samples) plus 4 ms (64 samples) per
        // 10 ms erased after the first, at most 10 ms (160 samples); after 60 ms there is
        // nothing left to fade. The last weights of the fade round to silence, so it can end
        // a few samples early.
        for (blocks, want) in [(1, 22), (2, 86), (3, 150), (4, 160), (5, 160), (6, 0)] {
            let wide = recovery_fade_len(plc_16k(), BLOCK_16, voiced_16k, blocks);
            let narrow = recovery_fade_len(G711Plc::new(), BLOCK, |n| voiced_16k(2 * n), blocks);
            assert!(
                wide <= want && wide + 4 >= want,
                "{blocks} blocks lost: {wide} samples, want {want}"
            );
            assert!(wide.abs_diff(2 * narrow) <= 3, "{wide} vs 8 kHz {narrow}");
        }
    }

    #[test]
    fn at_16_khz_silence_conceals_to_silence() {
        let mut plc = plc_16k();
        let mut frame = [0i16; FRAME_16];
        plc.good_frame(&mut frame).unwrap();
        for _ in 0..4 {
            plc.lost_frame(&mut frame).unwrap();
            assert!(frame.iter().all(|&s| s == 0));
        }
    }

    /// Concealing at 16 kHz and at 8 kHz on the 2:1 decimation agree only where both
    /// concealers can repeat the same period: a whole number of 8 kHz samples. Then they agree
    /// within rounding through the whole erasure, fade and silence included. For 180 Hz
    /// (88.9 samples at 16 kHz, 44.4 at 8 kHz) they do not: the 8 kHz concealer repeats 44 or 45
    /// samples, the 16 kHz one 89, which follows the real signal more closely.
    #[test]
    fn at_16_khz_concealment_matches_8_khz_where_the_period_is_whole_at_both() {
        let (good, lost) = (10, 4);
        let start8 = good * FRAME + DELAY; // first synthetic sample at 8 kHz
        for period8 in [40, 50, 64, 80, 120] {
            // Harmonics below 4 kHz, so taking every other sample is a clean decimation.
            let f0 = 8000.0 / period8 as f32;
            let sig16 = |n: usize| harmonics_16k(f0, 3900.0, n);
            let out16 = run_with(plc_16k(), FRAME_16, sig16, good, lost, 0);
            let out8 = run_with(G711Plc::new(), FRAME, |n| sig16(2 * n), good, lost, 0);
            let worst = out8
                .iter()
                .enumerate()
                .map(|(i, &s8)| (i32::from(out16[2 * i]) - i32::from(s8)).abs())
                .max()
                .unwrap_or(0);
            assert!(worst <= 2, "period {period8}: worst {worst}");
            assert!(
                peak(&out8[start8..start8 + BLOCK]) > 5000,
                "something was concealed"
            );
        }

        let sig16 = |n: usize| harmonics_16k(180.0, 3900.0, n);
        let out16 = run_with(plc_16k(), FRAME_16, sig16, good, 1, 0);
        let out8 = run_with(G711Plc::new(), FRAME, |n| sig16(2 * n), good, 1, 0);
        let truth = |i: usize| sig16(2 * (start8 + i - DELAY));
        let decimated: Vec<i16> = (start8..start8 + BLOCK).map(|i| out16[2 * i]).collect();
        let wide = rms_error(&decimated, truth);
        let narrow = rms_error(&out8[start8..start8 + BLOCK], truth);
        assert!(
            wide * 3.0 < narrow,
            "16 kHz error {wide:.0}, 8 kHz {narrow:.0}"
        );
    }
}
