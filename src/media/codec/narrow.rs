//! A codec seen at the media engine's internal rate: PCM goes in and comes out at
//! [`INTERNAL_RATE`], and is resampled to and from the codec's own sample rate in 10 ms
//! blocks. What lies above the internal rate's band is lost, but nothing is garbled: the
//! resamplers filter before they decimate.
//!
//! This is how a leg, which processes 8 kHz frames, carries G.722, L16 at 16 kHz and Opus
//! until the engine runs at wideband rates. The resamplers' filters add 10 ms of delay
//! (5 ms each way).

use super::{AudioCodec, CodecError, CodecKind};
use crate::media::frame::INTERNAL_RATE;
use crate::media::resample::StreamResampler;

/// Resampling block: every packet a leg plays is a whole number of 10 ms.
const BLOCK_MS: u32 = 10;
/// The longest packet (60 ms) at the highest codec rate (48 kHz).
const MAX_WIDE: usize = 2880;

/// A codec whose PCM side runs at the internal rate.
pub struct AtInternalRate {
    inner: Box<dyn AudioCodec>,
    up: StreamResampler,
    down: StreamResampler,
    wide: Box<[i16; MAX_WIDE]>,
    /// Codec-rate samples per internal-rate sample.
    ratio: usize,
}

impl std::fmt::Debug for AtInternalRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtInternalRate")
            .field("kind", &self.inner.kind())
            .field("ratio", &self.ratio)
            .finish()
    }
}

impl AtInternalRate {
    /// Wraps `inner`, whose sample rate must be a whole multiple of the internal rate.
    pub fn new(inner: Box<dyn AudioCodec>) -> Result<Self, CodecError> {
        let rate = inner.sample_rate();
        let unavailable = |reason: String| CodecError::Unavailable {
            codec: inner.name(),
            reason,
        };
        if !rate.hz().is_multiple_of(INTERNAL_RATE.hz()) {
            return Err(unavailable(format!(
                "{} Hz is not a multiple of {} Hz",
                rate.hz(),
                INTERNAL_RATE.hz()
            )));
        }
        let up = StreamResampler::new(INTERNAL_RATE, rate, BLOCK_MS)
            .map_err(|e| unavailable(e.to_string()))?;
        let down = StreamResampler::new(rate, INTERNAL_RATE, BLOCK_MS)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(AtInternalRate {
            ratio: (rate.hz() / INTERNAL_RATE.hz()) as usize,
            inner,
            up,
            down,
            wide: Box::new([0; MAX_WIDE]),
        })
    }

    /// Resamples the first `wide_len` codec-rate samples in `wide` down into `out`.
    fn narrow(&mut self, wide_len: usize, out: &mut [i16]) -> Result<usize, CodecError> {
        let (block_in, block_out) = (self.down.input_len(), self.down.output_len());
        let needed = wide_len / self.ratio;
        if !wide_len.is_multiple_of(block_in) {
            return Err(CodecError::FrameSize {
                codec: self.inner.name(),
                samples: wide_len,
            });
        }
        let Some(out) = out.get_mut(..needed) else {
            return Err(CodecError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        for (w, o) in self.wide[..wide_len]
            .chunks_exact(block_in)
            .zip(out.chunks_exact_mut(block_out))
        {
            self.down.process(w, o).map_err(|_| CodecError::FrameSize {
                codec: self.inner.name(),
                samples: wide_len,
            })?;
        }
        Ok(needed)
    }

    /// The codec-rate length for `samples` internal-rate samples, if it fits the buffer.
    fn wide_len(&self, samples: usize) -> Result<usize, CodecError> {
        let wide = samples * self.ratio;
        if wide > MAX_WIDE || !samples.is_multiple_of(self.up.input_len()) {
            return Err(CodecError::FrameSize {
                codec: self.inner.name(),
                samples,
            });
        }
        Ok(wide)
    }
}

impl AudioCodec for AtInternalRate {
    fn kind(&self) -> CodecKind {
        self.inner.kind()
    }

    fn sample_rate(&self) -> crate::rtp::types::ClockRate {
        INTERNAL_RATE
    }

    fn max_encoded_len(&self, samples: usize) -> usize {
        self.inner.max_encoded_len(samples * self.ratio)
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let wide_len = self.wide_len(pcm.len())?;
        let (block_in, block_out) = (self.up.input_len(), self.up.output_len());
        for (p, w) in pcm
            .chunks_exact(block_in)
            .zip(self.wide[..wide_len].chunks_exact_mut(block_out))
        {
            self.up.process(p, w).map_err(|_| CodecError::FrameSize {
                codec: self.inner.name(),
                samples: pcm.len(),
            })?;
        }
        self.inner.encode(&self.wide[..wide_len], out)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.inner.decode(payload, &mut self.wide[..])?;
        self.narrow(n, out)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let wide_len = self.wide_len(out.len())?;
        let n = self.inner.conceal(&mut self.wide[..wide_len])?;
        self.narrow(n, out)
    }

    fn has_own_concealment(&self) -> bool {
        self.inner.has_own_concealment()
    }

    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let wide_len = self.wide_len(out.len())?;
        let n = self
            .inner
            .recover(next_payload, &mut self.wide[..wide_len])?;
        self.narrow(n, out)
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.up.reset();
        self.down.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::test_util::{fit_sine, round_trip, sine};
    use crate::media::codec::G722;
    use crate::rtp::types::ClockRate;

    fn g722_at_8k() -> AtInternalRate {
        AtInternalRate::new(Box::new(G722::new())).unwrap()
    }

    #[test]
    fn g722_carries_an_8_khz_stream() {
        let mut c = g722_at_8k();
        assert_eq!(c.kind(), CodecKind::G722);
        assert_eq!(c.sample_rate(), ClockRate::HZ_8000);
        assert_eq!(c.clock_rate(), ClockRate::HZ_8000);
        assert_eq!(c.max_encoded_len(160), 160);
        let pcm = sine(1000.0, 10000.0, 8000, 1.0);
        for frame in [80, 160, 480] {
            let out = round_trip(&mut c, &pcm, frame);
            let (amp, snr) = fit_sine(&out[1600..], 1000.0, 8000);
            eprintln!("G.722 at 8 kHz, {frame}-sample frames: amplitude {amp:.0}, SNR {snr:.1} dB");
            assert!((amp / 10000.0 - 1.0).abs() < 0.05, "amplitude {amp}");
            assert!(snr > 30.0, "SNR {snr:.1} dB");
        }
    }

    #[test]
    fn the_wide_band_is_dropped_not_folded() {
        // 6 kHz from a wideband phone: nothing of it may fold back to 2 kHz at 8 kHz.
        let wide = sine(6000.0, 10000.0, 16000, 0.5);
        let mut phone = G722::new();
        let mut c = g722_at_8k();
        let mut payload = [0u8; 160];
        let mut out = Vec::new();
        let mut frame = [0i16; 160];
        for f in wide.chunks_exact(320) {
            let n = phone.encode(f, &mut payload).unwrap();
            assert_eq!(c.decode(&payload[..n], &mut frame).unwrap(), 160);
            out.extend_from_slice(&frame);
        }
        let (alias, _) = fit_sine(&out[800..], 2000.0, 8000);
        let rms = crate::media::level::rms_dbfs(&out[800..]);
        eprintln!("6 kHz through G.722 at 8 kHz: {rms:.1} dBFS, 2 kHz alias {alias:.1}");
        assert!(rms < -40.0, "{rms:.1} dBFS left of a 6 kHz tone");
        assert!(alias < 30.0, "6 kHz folded to 2 kHz at {alias:.1}");
    }

    #[test]
    fn frames_must_be_whole_10_ms_blocks() {
        let mut c = g722_at_8k();
        let mut out = [0u8; 400];
        assert!(matches!(
            c.encode(&[0; 100], &mut out),
            Err(CodecError::FrameSize { samples: 100, .. })
        ));
        assert!(matches!(
            c.encode(&[0; 1520], &mut out),
            Err(CodecError::FrameSize { samples: 1520, .. })
        ));
        let mut pcm = [0i16; 100];
        assert!(matches!(
            c.decode(&[0; 160], &mut pcm),
            Err(CodecError::BufferTooSmall { needed: 160, .. })
        ));
        // A lone odd byte decodes to two 16 kHz samples: not a whole block.
        assert!(c.decode(&[0; 3], &mut pcm).is_err());
        let mut lost = [1i16; 160];
        assert_eq!(c.conceal(&mut lost).unwrap(), 160);
    }
}
