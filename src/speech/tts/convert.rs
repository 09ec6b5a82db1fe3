//! Converts an engine's audio to the leg's rate as it arrives, in pieces of any size, so
//! that the pieces joined are the clip converted whole.
//!
//! It drives [`StreamResampler`] with blocks of about 1024 input samples, the block
//! [`crate::media::resample::resample`] uses for a whole clip, so its filter is as sharp,
//! and trims the resampler's delay at the start and flushes it at the end, so the output
//! is aligned with the input and exactly `ceil(len × to / from)` samples long. A rate pair
//! with no whole-millisecond block near that size is gathered and converted whole at the
//! end (it then does not stream).

use crate::media::resample::{resample, StreamResampler};
use crate::rtp::types::ClockRate;

use super::TtsError;

/// Input block aimed for, in samples.
const BLOCK: u64 = 1024;

/// Rate conversion of one clip, fed in pieces.
pub(crate) struct Converter {
    from: u32,
    to: ClockRate,
    mode: Mode,
    /// Input samples taken so far.
    taken: u64,
    /// Output samples given so far.
    given: u64,
}

enum Mode {
    Same,
    Stream(Box<Blocks>),
    Whole(Vec<i16>),
}

/// The streaming path: input gathered into whole blocks, each converted as it fills.
struct Blocks {
    resampler: StreamResampler,
    pending: Vec<i16>,
    block_out: Vec<i16>,
    /// Output samples still to drop: the resampler's delay.
    skip: usize,
}

impl Blocks {
    /// Converts the full block in `pending` and gives its output past the delay.
    fn run(&mut self) -> Result<&[i16], TtsError> {
        self.resampler.process(&self.pending, &mut self.block_out)?;
        self.pending.clear();
        let drop = self.skip.min(self.block_out.len());
        self.skip -= drop;
        Ok(&self.block_out[drop..])
    }
}

/// The block length in ms for converting `from` to `to`: both sides whole and the output
/// even (an odd one would shift the output by half a sample), the input the shortest of
/// at least [`BLOCK`] samples, as the whole-clip path picks it.
fn block_ms(from: u32, to: u32) -> Option<u32> {
    let len = |rate: u32, ms: u32| u64::from(rate) * u64::from(ms);
    (10..=400u32)
        .filter(|&ms| len(from, ms) % 1000 == 0 && len(to, ms) % 2000 == 0)
        .min_by_key(|&ms| (len(from, ms) / 1000 < BLOCK, len(from, ms)))
}

impl Converter {
    /// A converter from `from` Hz to `to`.
    pub(crate) fn new(from: u32, to: ClockRate) -> Result<Self, TtsError> {
        if from == 0 {
            return Err(TtsError::BadAudio("sample rate 0".into()));
        }
        let mode = if from == to.hz() {
            Mode::Same
        } else {
            let stream = ClockRate::new(from)
                .zip(block_ms(from, to.hz()))
                .and_then(|(f, ms)| StreamResampler::new(f, to, ms).ok());
            match stream {
                Some(resampler) => Mode::Stream(Box::new(Blocks {
                    pending: Vec::with_capacity(resampler.input_len()),
                    block_out: vec![0; resampler.output_len()],
                    skip: resampler.latency_samples(),
                    resampler,
                })),
                None => Mode::Whole(Vec::new()),
            }
        };
        Ok(Self {
            from,
            to,
            mode,
            taken: 0,
            given: 0,
        })
    }

    /// The output length the input so far stands for.
    fn target(&self) -> u64 {
        (self.taken * u64::from(self.to.hz())).div_ceil(u64::from(self.from))
    }

    /// Converts `input`, appending what is ready to `out`.
    pub(crate) fn push(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), TtsError> {
        self.taken += input.len() as u64;
        let start = out.len();
        match &mut self.mode {
            Mode::Same => out.extend_from_slice(input),
            Mode::Whole(all) => all.extend_from_slice(input),
            Mode::Stream(b) => {
                let mut rest = input;
                while !rest.is_empty() {
                    let take = (b.resampler.input_len() - b.pending.len()).min(rest.len());
                    b.pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if b.pending.len() == b.resampler.input_len() {
                        out.extend_from_slice(b.run()?);
                    }
                }
            }
        }
        self.given += (out.len() - start) as u64;
        Ok(())
    }

    /// Converts what is left, appending it to `out`; the clip's output is then complete.
    pub(crate) fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), TtsError> {
        let target = self.target();
        let start = out.len();
        match &mut self.mode {
            Mode::Same => {}
            Mode::Whole(all) => out.extend(resample(all, self.from, self.to)?),
            Mode::Stream(b) => {
                // Silence pushes the filter's tail out; at most the delay plus one block.
                let mut given = self.given;
                let mut blocks = 0;
                while given < target && blocks < 4 {
                    let len = b.resampler.input_len();
                    b.pending.resize(len, 0);
                    let ready = b.run()?;
                    let want = usize::try_from(target - given).unwrap_or(usize::MAX);
                    let n = ready.len().min(want);
                    out.extend_from_slice(&ready[..n]);
                    given += n as u64;
                    blocks += 1;
                }
            }
        }
        self.given += (out.len() - start) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, rate: f64, hz: f64) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f64 * hz * std::f64::consts::TAU / rate).sin() * 12000.0) as i16)
            .collect()
    }

    fn convert_in_pieces(input: &[i16], from: u32, to: ClockRate, piece: usize) -> Vec<i16> {
        let mut c = Converter::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            c.push(chunk, &mut out).unwrap();
        }
        c.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn pieces_joined_match_the_whole_clip_resampled() {
        for (from, to) in [
            (8000, ClockRate::HZ_16000),
            (8000, ClockRate::HZ_48000),
            (16000, ClockRate::HZ_8000),
            (16000, ClockRate::HZ_48000),
            (24000, ClockRate::HZ_8000),
            (22050, ClockRate::HZ_16000),
        ] {
            let input = tone(from as usize * 3 / 2 + 77, f64::from(from), 440.0);
            let whole = resample(&input, from, to).unwrap();
            for piece in [1, 97, 160, 5000] {
                let joined = convert_in_pieces(&input, from, to, piece);
                assert_eq!(joined.len(), whole.len(), "{from}->{} by {piece}", to.hz());
                let worst = joined
                    .iter()
                    .zip(&whole)
                    .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                    .max()
                    .unwrap_or(0);
                assert!(
                    worst <= 64,
                    "{from}->{} by {piece}: differs by {worst}",
                    to.hz()
                );
            }
        }
    }

    #[test]
    fn same_rate_passes_through() {
        let input = tone(1000, 8000.0, 300.0);
        assert_eq!(
            convert_in_pieces(&input, 8000, ClockRate::HZ_8000, 33),
            input
        );
    }

    #[test]
    fn zero_rate_is_refused() {
        assert!(Converter::new(0, ClockRate::HZ_8000).is_err());
    }
}
