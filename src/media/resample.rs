//! Sample-rate conversion for prompts and for legs whose codec runs at another rate.
//!
//! Both paths use rubato's synchronous FFT resampler: the ratio between two telephony
//! rates is fixed, and its anti-aliasing filter is as good as a long windowed sinc at a
//! fraction of the cost.
//!
//! - [`resample`] converts a whole clip at once (a prompt, when it is loaded). It uses
//!   blocks of about 1024 input samples, so its filter is sharp: a 3.4 kHz tone passes
//!   8 → 16 → 8 kHz within 0.5 dB, and a 5 kHz tone at 16 kHz is more than 40 dB down
//!   after conversion to 8 kHz. Its output is aligned with its input (no delay).
//! - [`StreamResampler`] converts one fixed frame (20 ms on the media tick) into one
//!   fixed frame, from buffers allocated when it is made. Its FFT block is one frame, so
//!   its output lags its input by **half a frame** (10 ms for 20 ms frames, see
//!   [`StreamResampler::latency`]) and its filter is wider than the one-shot path's
//!   (see the tests for the measured response).
//!
//! Samples are 16-bit linear PCM at the edges and `f32` in between; conversion back to
//! 16 bits rounds and saturates.

use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::media::frame::{AudioSource, Frame, FRAME};
use crate::rtp::types::ClockRate;

/// Why a resampler could not be made or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// A sample rate is zero.
    #[error("invalid sample rate {0} Hz")]
    InvalidRate(u32),
    /// A rate does not hold a whole number of samples per frame.
    #[error("{rate} Hz does not give a whole number of samples in {frame_ms} ms")]
    FrameNotWhole {
        /// The sample rate in Hz.
        rate: u32,
        /// The frame length in ms.
        frame_ms: u32,
    },
    /// A frame passed to [`StreamResampler::process`] has the wrong length.
    #[error("frame of {got} samples where {want} were expected")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// Samples expected.
        want: usize,
    },
    /// The resampler itself refused (its message).
    #[error("resampler: {0}")]
    Engine(String),
}

/// A PCM sample the resamplers accept: 16-bit integer or float in [−1, 1].
pub trait PcmSample: Copy {
    /// The sample as a float with full scale 1.0.
    fn to_f32(self) -> f32;
}

impl PcmSample for i16 {
    fn to_f32(self) -> f32 {
        f32::from(self) / 32768.0
    }
}

impl PcmSample for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

/// Converts a float sample (full scale 1.0) to 16 bits, rounding and saturating.
pub fn f32_to_i16(x: f32) -> i16 {
    // `as` saturates and maps NaN to 0, which is what a corrupt sample should become.
    (x * 32768.0).round() as i16
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if rate == 0 {
        Err(ResampleError::InvalidRate(rate))
    } else {
        Ok(())
    }
}

fn engine<E: std::fmt::Display>(e: E) -> ResampleError {
    ResampleError::Engine(e.to_string())
}

/// Input block for [`resample`]: about 1024 samples, a whole number of the rates' smallest
/// common blocks, and an even output block.
fn one_shot_chunk(from_hz: u32, to_hz: u32) -> usize {
    let g = gcd(from_hz, to_hz);
    let (min_in, min_out) = ((from_hz / g) as usize, (to_hz / g) as usize);
    let mut blocks = 1024usize.div_ceil(min_in);
    // rubato trims `block_out / 2` samples of delay; with an odd block the true delay is
    // half a sample more and every output would come out shifted by it.
    if blocks * min_out % 2 == 1 {
        blocks += 1;
    }
    blocks * min_in
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Resamples a whole mono clip from `from_hz` to `to` and returns 16-bit samples.
///
/// `from_hz` is the rate a file states, so it is checked here. Allocates; meant for loading
/// prompts, never for the media tick. The output has `ceil(len × to / from)` samples and
/// starts where the input starts.
pub fn resample<S: PcmSample>(
    input: &[S],
    from_hz: u32,
    to: ClockRate,
) -> Result<Vec<i16>, ResampleError> {
    check_rate(from_hz)?;
    let to_hz = to.hz();
    if from_hz == to_hz {
        return Ok(input.iter().map(|&s| f32_to_i16(s.to_f32())).collect());
    }
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let floats: Vec<f32> = input.iter().map(|&s| s.to_f32()).collect();
    let mut fft = Fft::<f32>::new(
        from_hz as usize,
        to_hz as usize,
        one_shot_chunk(from_hz, to_hz),
        1,
        FixedSync::Both,
    )
    .map_err(engine)?;
    let adapter = InterleavedSlice::new(&floats[..], 1, floats.len()).map_err(engine)?;
    let out = fft
        .process_all(&adapter, floats.len(), None)
        .map_err(engine)?;
    Ok(out.take_data().into_iter().map(f32_to_i16).collect())
}

/// Converts a stream of fixed frames from one rate to another, allocation-free per frame.
///
/// Output lags input by [`latency`](Self::latency) (half a frame); the first frames
/// after creation or [`reset`](Self::reset) start with that much silence.
pub struct StreamResampler {
    /// `None` when both rates are equal: frames are copied.
    fft: Option<Fft<f32>>,
    input: Vec<f32>,
    output: Vec<f32>,
    frame_in: usize,
    frame_out: usize,
    to_hz: u32,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("frame_in", &self.frame_in)
            .field("frame_out", &self.frame_out)
            .field("latency_samples", &self.latency_samples())
            .finish()
    }
}

fn frame_len(rate: u32, frame_ms: u32) -> Result<usize, ResampleError> {
    let samples = u64::from(rate) * u64::from(frame_ms);
    if frame_ms == 0 || samples % 1000 != 0 {
        return Err(ResampleError::FrameNotWhole { rate, frame_ms });
    }
    usize::try_from(samples / 1000).map_err(engine)
}

impl StreamResampler {
    /// A resampler taking `frame_ms` frames at `from` and giving `frame_ms` frames at `to`.
    pub fn new(from: ClockRate, to: ClockRate, frame_ms: u32) -> Result<Self, ResampleError> {
        let (from_hz, to_hz) = (from.hz(), to.hz());
        let frame_in = frame_len(from_hz, frame_ms)?;
        let frame_out = frame_len(to_hz, frame_ms)?;
        let fft = if from_hz == to_hz {
            None
        } else {
            let fft = Fft::<f32>::new(
                from_hz as usize,
                to_hz as usize,
                frame_in,
                1,
                FixedSync::Both,
            )
            .map_err(engine)?;
            // Both sizes are whole multiples of the rates' GCD block, so rubato should pick
            // exactly one frame per call; anything else would break the fixed-frame contract.
            if fft.input_frames_next() != frame_in || fft.output_frames_next() != frame_out {
                return Err(ResampleError::Engine(format!(
                    "{from_hz} → {to_hz} Hz: blocks of {} → {} samples, not {frame_in} → {frame_out}",
                    fft.input_frames_next(),
                    fft.output_frames_next()
                )));
            }
            Some(fft)
        };
        Ok(Self {
            fft,
            input: vec![0.0; frame_in],
            output: vec![0.0; frame_out],
            frame_in,
            frame_out,
            to_hz,
        })
    }

    /// Samples per input frame.
    pub fn input_len(&self) -> usize {
        self.frame_in
    }

    /// Samples per output frame.
    pub fn output_len(&self) -> usize {
        self.frame_out
    }

    /// How many output samples the output lags the input (0 when the rates are equal).
    pub fn latency_samples(&self) -> usize {
        self.fft.as_ref().map_or(0, |f| f.output_delay())
    }

    /// How long the output lags the input.
    pub fn latency(&self) -> Duration {
        Duration::from_secs_f64(self.latency_samples() as f64 / f64::from(self.to_hz))
    }

    /// Capacity of the internal frame buffers, which processing never changes.
    pub fn buffer_capacity(&self) -> (usize, usize) {
        (self.input.capacity(), self.output.capacity())
    }

    /// Forgets the signal so far, as if newly made.
    pub fn reset(&mut self) {
        if let Some(fft) = &mut self.fft {
            fft.reset();
        }
    }

    /// Converts one frame: `input` must hold [`input_len`](Self::input_len) samples and
    /// `output` [`output_len`](Self::output_len).
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<(), ResampleError> {
        if input.len() != self.frame_in {
            return Err(ResampleError::FrameLength {
                got: input.len(),
                want: self.frame_in,
            });
        }
        if output.len() != self.frame_out {
            return Err(ResampleError::FrameLength {
                got: output.len(),
                want: self.frame_out,
            });
        }
        let Some(fft) = &mut self.fft else {
            output.copy_from_slice(input);
            return Ok(());
        };
        for (d, &s) in self.input.iter_mut().zip(input) {
            *d = s.to_f32();
        }
        let src = InterleavedSlice::new(&self.input[..], 1, self.frame_in).map_err(engine)?;
        let mut dst =
            InterleavedSlice::new_mut(&mut self.output[..], 1, self.frame_out).map_err(engine)?;
        fft.process_into_buffer(&src, &mut dst, None)
            .map_err(engine)?;
        for (d, &s) in output.iter_mut().zip(&self.output) {
            *d = f32_to_i16(s);
        }
        Ok(())
    }
}

/// Carries a stream of 20 ms [`Frame`]s across to another rate where two rates meet (a
/// bridge between legs of different codecs, a room mixing above a member's rate, a prompt
/// made for another rate than its leg's).
///
/// Frames at the rate already wanted are copied as they are. Otherwise one
/// [`StreamResampler`] converts them, made when the pair of rates first appears (a join or a
/// codec change, never the steady state) and kept while it stays; a pair that cannot be
/// converted is remembered and gives silence without trying again every frame.
///
/// A stream that stops being converted for a while (its listener took a frame converted
/// elsewhere, or nothing came) tells the adapter with [`RateAdapter::pass`], which costs
/// nothing; the filter then starts again from silence, or, through
/// [`RateAdapter::convert_after`], from the frame the caller says came just before (the
/// room's last mix, which it keeps once for every member), as an unbroken stream would.
#[derive(Debug, Default)]
pub struct RateAdapter {
    resampler: Option<(ClockRate, ClockRate, Option<StreamResampler>)>,
    /// Frames went by unconverted: the filter's history is stale.
    stale: bool,
    /// A source's frame at its own rate, before conversion.
    scratch: Option<Box<Frame>>,
}

/// What [`RateAdapter::fill`] got from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// The frame holds some of the source.
    pub any: bool,
    /// The source has ended (within or before this frame).
    pub ended: bool,
}

impl RateAdapter {
    /// An adapter with nothing made yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `input` at `to`, into `out`; silence when the pair of rates cannot be converted.
    /// After a [`pass`](Self::pass) the filter starts again from silence.
    pub fn convert(&mut self, input: &Frame, to: ClockRate, out: &mut Frame) {
        self.convert_after(None, input, to, out);
    }

    /// As [`convert`](Self::convert), but after a [`pass`](Self::pass) the filter is first
    /// fed `before`, the frame that came just before `input` (when it is at `input`'s rate):
    /// its output is what the listener already heard by another way, and the filter's
    /// history then is what an unbroken stream would have left.
    pub fn convert_after(
        &mut self,
        before: Option<&Frame>,
        input: &Frame,
        to: ClockRate,
        out: &mut Frame,
    ) {
        if input.rate() == to {
            *out = *input;
            return;
        }
        out.set_rate(to);
        let from = input.rate();
        if !matches!(&self.resampler, Some((f, t, _)) if *f == from && *t == to) {
            let made = StreamResampler::new(from, to, FRAME.as_millis() as u32)
                .map_err(|e| {
                    tracing::warn!(from = from.hz(), to = to.hz(), error = %e, "no rate conversion")
                })
                .ok();
            self.resampler = Some((from, to, made));
            // A new filter has no history to be stale.
            self.stale = false;
        }
        let Some((_, _, Some(r))) = self.resampler.as_mut() else {
            out.fill(0);
            return;
        };
        if std::mem::take(&mut self.stale) {
            r.reset();
            if let Some(before) = before.filter(|b| b.rate() == from) {
                let _ = r.process(before, out);
            }
        }
        if r.process(input, out).is_err() {
            out.fill(0);
        }
    }

    /// The next frame of `source` into `out` at `to`, converted from the rate it plays at;
    /// what was left of it when it ended is followed by silence.
    pub fn fill(
        &mut self,
        source: &mut (impl AudioSource + ?Sized),
        to: ClockRate,
        out: &mut Frame,
    ) -> Fill {
        let from = source.rate();
        if from == to {
            out.set_rate(to);
            let n = source.fill(out);
            out[n..].fill(0);
            return Fill {
                any: n > 0,
                ended: n < out.len(),
            };
        }
        let mut own = self
            .scratch
            .take()
            .unwrap_or_else(|| Box::new(Frame::silence(from)));
        own.set_rate(from);
        let n = source.fill(&mut own);
        own[n..].fill(0);
        let fill = Fill {
            any: n > 0,
            ended: n < own.len(),
        };
        self.convert(&own, to, out);
        self.scratch = Some(own);
        fill
    }

    /// A frame of this stream went by unconverted this tick (another conversion of the same
    /// audio served, or nothing came): the filter's history is no longer the stream's.
    pub fn pass(&mut self) {
        self.stale = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NARROW: ClockRate = ClockRate::HZ_8000;

    /// `r` Hz as a clock rate.
    fn hz(r: u32) -> ClockRate {
        ClockRate::new(r).unwrap()
    }

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// RMS of the middle of a signal, away from edge effects.
    fn rms_mid(x: &[i16]) -> f64 {
        let a = x.len() / 4;
        let b = x.len() * 3 / 4;
        let s: f64 = x[a..b].iter().map(|&v| f64::from(v).powi(2)).sum();
        (s / (b - a) as f64).sqrt()
    }

    fn db(a: f64, b: f64) -> f64 {
        20.0 * (a / b).log10()
    }

    #[test]
    fn narrowband_edge_survives_round_trip() {
        let x = sine(3400.0, 8000, 8000, 10000.0);
        let up = resample(&x, 8000, hz(16000)).unwrap();
        assert_eq!(up.len(), 16000);
        let back = resample(&up, 16000, hz(8000)).unwrap();
        assert_eq!(back.len(), 8000);
        let loss = db(rms_mid(&back), rms_mid(&x));
        assert!(loss.abs() < 0.5, "3.4 kHz changed by {loss:.2} dB");
    }

    #[test]
    fn downsampling_removes_what_would_alias() {
        let x = sine(5000.0, 16000, 16000, 10000.0);
        let y = resample(&x, 16000, hz(8000)).unwrap();
        let att = db(rms_mid(&y).max(1e-3), rms_mid(&x));
        assert!(att < -40.0, "5 kHz only {att:.1} dB down");
    }

    #[test]
    fn one_shot_is_aligned_with_its_input() {
        for (from, to) in [(8000, 16000), (16000, 8000), (48000, 8000), (44100, 8000)] {
            // A slow tone burst centred on 0.5 s must stay centred there: its envelope
            // peak is found by a sample-accurate centroid of energy.
            let n = from as usize;
            let x: Vec<i16> = (0..n)
                .map(|i| {
                    let t = i as f64 / f64::from(from) - 0.5;
                    let env = (-(t * 40.0).powi(2)).exp();
                    (10000.0 * env * (2.0 * std::f64::consts::PI * 300.0 * t).cos()) as i16
                })
                .collect();
            let y = resample(&x, from, hz(to)).unwrap();
            assert_eq!(
                y.len(),
                (n as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize
            );
            let (mut num, mut den) = (0.0, 0.0);
            for (i, &v) in y.iter().enumerate() {
                let e = f64::from(v).powi(2);
                num += e * i as f64;
                den += e;
            }
            let centre = num / den / f64::from(to);
            assert!(
                (centre - 0.5).abs() < 0.1 / f64::from(to),
                "{from}->{to}: centre {centre}"
            );
        }
    }

    #[test]
    fn equal_rates_copy() {
        let x = sine(440.0, 8000, 500, 9000.0);
        assert_eq!(resample(&x, 8000, hz(8000)).unwrap(), x);
        let mut r = StreamResampler::new(hz(8000), hz(8000), 20).unwrap();
        let mut out = [0i16; 160];
        r.process(&x[..160], &mut out).unwrap();
        assert_eq!(&out[..], &x[..160]);
        assert_eq!(r.latency_samples(), 0);
    }

    #[test]
    fn float_input_is_full_scale_one() {
        let y = resample(&[0.5f32, -1.0, 2.0], 8000, hz(8000)).unwrap();
        assert_eq!(y, vec![16384, -32768, 32767]);
    }

    #[test]
    fn bad_rates_and_frames_are_refused() {
        assert_eq!(
            resample(&[0i16; 4], 0, hz(8000)),
            Err(ResampleError::InvalidRate(0))
        );
        assert!(matches!(
            StreamResampler::new(hz(11025), hz(8000), 20),
            Err(ResampleError::FrameNotWhole { rate: 11025, .. })
        ));
        let mut r = StreamResampler::new(hz(8000), hz(16000), 20).unwrap();
        let mut out = [0i16; 320];
        assert_eq!(
            r.process(&[0; 100], &mut out),
            Err(ResampleError::FrameLength {
                got: 100,
                want: 160
            })
        );
    }

    /// Streams `x` through a fresh resampler, returning output without its latency.
    fn stream(x: &[i16], from: u32, to: u32) -> (Vec<i16>, StreamResampler) {
        let mut r = StreamResampler::new(hz(from), hz(to), 20).unwrap();
        let caps = r.buffer_capacity();
        let (fi, fo) = (r.input_len(), r.output_len());
        let mut padded = x.to_vec();
        padded.resize(x.len() + 2 * fi, 0);
        let mut out = Vec::with_capacity(padded.len() / fi * fo);
        let mut frame = vec![0i16; fo];
        for chunk in padded.chunks_exact(fi) {
            r.process(chunk, &mut frame).unwrap();
            out.extend_from_slice(&frame);
        }
        assert_eq!(r.buffer_capacity(), caps, "buffers grew");
        let lat = r.latency_samples();
        (out[lat..].to_vec(), r)
    }

    #[test]
    fn streaming_matches_one_shot_after_its_latency() {
        for (from, to) in [(8000, 16000), (16000, 8000), (48000, 8000), (8000, 48000)] {
            // Two in-band tones, well inside both filters' pass bands.
            let a = sine(440.0, from, from as usize, 6000.0);
            let b = sine(1800.0, from, from as usize, 4000.0);
            let x: Vec<i16> = a.iter().zip(&b).map(|(p, q)| p + q).collect();
            let one = resample(&x, from, hz(to)).unwrap();
            let (st, r) = stream(&x, from, to);
            assert_eq!(r.latency(), Duration::from_millis(10));
            // Ignore the start-up of either: compare the steady middle.
            let n = one.len();
            let (lo, hi) = (n / 10, n * 9 / 10);
            let max_err = (lo..hi)
                .map(|i| (i32::from(one[i]) - i32::from(st[i])).abs())
                .max()
                .unwrap();
            // 10 000 peak; the two filters differ slightly even in band.
            assert!(max_err < 100, "{from}->{to}: max diff {max_err}");
        }
    }

    #[test]
    fn streaming_filter_response() {
        // Measured response of the one-frame FFT filter, kept as a regression bound.
        let x = sine(3400.0, 8000, 8000, 10000.0);
        let (up, _) = stream(&x, 8000, 16000);
        let (back, _) = stream(&up[..16000], 16000, 8000);
        let loss = db(rms_mid(&back[..8000]), rms_mid(&x));
        assert!(loss.abs() < 1.0, "3.4 kHz streamed round trip {loss:.2} dB");
        let x = sine(5000.0, 16000, 16000, 10000.0);
        let (y, _) = stream(&x, 16000, 8000);
        let att = db(rms_mid(&y[..8000]).max(1e-3), rms_mid(&x));
        assert!(att < -40.0, "5 kHz streamed only {att:.1} dB down");
    }

    /// `pcm` cut into 20 ms frames at `rate`.
    fn frames(pcm: &[i16], rate: ClockRate) -> Vec<Frame> {
        pcm.chunks_exact(crate::media::frame::samples_at(rate))
            .map(|c| Frame::from_samples(rate, c))
            .collect()
    }

    #[test]
    fn an_adapter_copies_a_frame_at_the_rate_wanted_and_converts_others() {
        let mut a = RateAdapter::new();
        let wide = hz(16000);
        let f = Frame::from_samples(wide, &sine(1000.0, 16000, 320, 8000.0));
        let mut out = Frame::silence(NARROW);
        a.convert(&f, wide, &mut out);
        assert_eq!(out, f, "the same rate is a copy");
        // A 1 kHz tone crosses 16 → 8 kHz; 6 kHz, above the narrow band, does not.
        for (tone, passes) in [(1000.0, true), (6000.0, false)] {
            let mut a = RateAdapter::new();
            let mut got = Vec::new();
            for f in frames(&sine(tone, 16000, 16000, 8000.0), wide) {
                a.convert(&f, NARROW, &mut out);
                assert_eq!((out.rate(), out.len()), (NARROW, 160));
                got.extend_from_slice(&out);
            }
            let level = db(rms_mid(&got[4000..]), 8000.0 / 2f64.sqrt());
            if passes {
                assert!(level.abs() < 0.5, "{tone} Hz at {level:.1} dB");
            } else {
                assert!(level < -40.0, "{tone} Hz at {level:.1} dB");
            }
        }
    }

    /// A stream converted with frames left out (`pass`), then converted again, comes out as
    /// the unbroken conversion did: the filter is warmed with the frame before.
    #[test]
    fn a_stream_taken_up_again_joins_on_without_a_click() {
        let wide = hz(48000);
        // Not periodic over the gap's 200 ms, so stale history differs from the true one.
        let input = frames(&sine(437.0, 48000, 48000, 8000.0), wide);
        let (mut whole, mut broken) = (RateAdapter::new(), RateAdapter::new());
        let (mut a, mut b) = (Frame::silence(NARROW), Frame::silence(NARROW));
        let mut worst = 0i32;
        for (k, f) in input.iter().enumerate() {
            whole.convert(f, NARROW, &mut a);
            if (10..20).contains(&k) {
                broken.pass();
                continue;
            }
            let before = k.checked_sub(1).map(|j| &input[j]);
            broken.convert_after(before, f, NARROW, &mut b);
            if k >= 20 {
                let diff = a
                    .iter()
                    .zip(b.iter())
                    .map(|(&x, &y)| (i32::from(x) - i32::from(y)).abs());
                worst = worst.max(diff.max().unwrap_or(0));
            }
        }
        // Within 1 % of the tone's peak from the first frame after the break.
        assert!(worst < 80, "the resumed stream is off by {worst}");
        // Without `pass`, the filter resumes from stale audio.
        let mut stale = RateAdapter::new();
        let mut first_after = 0i32;
        for (k, f) in input
            .iter()
            .enumerate()
            .filter(|(k, _)| !(10..20).contains(k))
        {
            stale.convert(f, NARROW, &mut b);
            if k == 20 {
                whole = RateAdapter::new();
                for g in &input[..=20] {
                    whole.convert(g, NARROW, &mut a);
                }
                first_after = a
                    .iter()
                    .zip(b.iter())
                    .map(|(&x, &y)| (i32::from(x) - i32::from(y)).abs())
                    .max()
                    .unwrap_or(0);
            }
        }
        assert!(
            first_after > 400,
            "a stale filter would click: {first_after}"
        );
    }

    #[test]
    fn a_source_at_another_rate_is_filled_converted_and_its_end_reported() {
        use crate::media::tone::{ToneGenerator, ToneSpec};
        let spec: ToneSpec = "1000/50@-10".parse().unwrap();
        let mut tone = ToneGenerator::new(&spec, NARROW).unwrap();
        let mut a = RateAdapter::new();
        let mut out = Frame::silence(NARROW);
        let mut fills = Vec::new();
        for _ in 0..4 {
            fills.push(a.fill(&mut tone, hz(16000), &mut out));
            assert_eq!(out.rate(), hz(16000));
        }
        // 50 ms: two whole frames, half of the third, then nothing.
        let ended: Vec<(bool, bool)> = fills.iter().map(|f| (f.any, f.ended)).collect();
        assert_eq!(
            ended,
            [(true, false), (true, false), (true, true), (false, true)]
        );
    }
}
