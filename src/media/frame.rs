//! The media frame: its duration, the rates audio is processed at, the buffer type for one
//! frame, and [`AudioSource`], what produces outbound audio a frame at a time.
//!
//! There is no single internal rate. A leg runs at its codec's own sample rate (8 kHz for
//! G.711, 16 kHz for G.722 and L16/16000, 48 kHz for Opus): decode, concealment, DTMF
//! detection and generation, tones, prompts and recording all happen there, so nothing a
//! codec carries is lost between decode and encode. A [`Frame`] says which rate it holds;
//! audio crosses to another rate only where two rates meet (a bridge, a room mixing at the
//! highest rate among its members), through [`crate::media::resample::RateAdapter`].
//!
//! A codec's sample rate is not its RTP clock ([`crate::media::codec::CodecKind::rtp_clock`]):
//! G.722 samples at 16 kHz and counts 8 kHz.

use std::time::Duration;

pub use crate::rtp::types::ClockRate;

/// Frame duration of the media clock.
pub const FRAME: Duration = Duration::from_millis(20);

/// The narrowband rate: G.711's, and that of telephony prompts and tones by default.
pub const NARROW_RATE: ClockRate = ClockRate::HZ_8000;

/// The highest rate a frame holds (Opus's).
pub const MAX_RATE: ClockRate = ClockRate::HZ_48000;

/// Samples in one frame at [`NARROW_RATE`].
pub const FRAME_SAMPLES: usize = samples_at(NARROW_RATE);

/// Samples in one frame at [`MAX_RATE`]: the capacity of every [`Frame`].
pub const MAX_FRAME_SAMPLES: usize = samples_at(MAX_RATE);

/// Frames per second of audio.
pub const FRAMES_PER_SEC: u32 = (1000 / FRAME.as_millis()) as u32;

/// Samples in one frame at `rate` (at most [`MAX_FRAME_SAMPLES`]).
pub const fn samples_at(rate: ClockRate) -> usize {
    let n = rate.hz() as usize / FRAMES_PER_SEC as usize;
    if n > 960 {
        960
    } else {
        n
    }
}

/// One frame of mono linear PCM at its rate: it dereferences to exactly its samples.
///
/// Its storage holds a frame at the highest rate, so frames of every rate are the same type
/// and are copied without allocating.
#[derive(Clone, Copy)]
pub struct Frame {
    rate: ClockRate,
    len: usize,
    pcm: [i16; MAX_FRAME_SAMPLES],
}

impl Frame {
    /// A frame of silence at `rate`.
    pub const fn silence(rate: ClockRate) -> Frame {
        Frame {
            rate,
            len: samples_at(rate),
            pcm: [0; MAX_FRAME_SAMPLES],
        }
    }

    /// A frame at `rate` holding `samples` (cut or padded with silence to one frame).
    pub fn from_samples(rate: ClockRate, samples: &[i16]) -> Frame {
        let mut f = Frame::silence(rate);
        let n = samples.len().min(f.len);
        f.pcm[..n].copy_from_slice(&samples[..n]);
        f
    }

    /// The rate of its samples.
    pub fn rate(&self) -> ClockRate {
        self.rate
    }

    /// Becomes a frame of silence at `rate`.
    pub fn clear(&mut self, rate: ClockRate) {
        self.rate = rate;
        self.len = samples_at(rate);
        self.pcm[..self.len].fill(0);
    }

    /// Becomes a frame at `rate` whose samples are left as they were: for a caller that
    /// fills every one of them next.
    pub fn set_rate(&mut self, rate: ClockRate) {
        self.rate = rate;
        self.len = samples_at(rate);
    }
}

impl From<[i16; FRAME_SAMPLES]> for Frame {
    /// A narrowband frame.
    fn from(samples: [i16; FRAME_SAMPLES]) -> Frame {
        Frame::from_samples(NARROW_RATE, &samples)
    }
}

impl std::ops::Deref for Frame {
    type Target = [i16];
    fn deref(&self) -> &[i16] {
        &self.pcm[..self.len]
    }
}

impl std::ops::DerefMut for Frame {
    fn deref_mut(&mut self) -> &mut [i16] {
        &mut self.pcm[..self.len]
    }
}

impl<'a> IntoIterator for &'a Frame {
    type Item = &'a i16;
    type IntoIter = std::slice::Iter<'a, i16>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.rate == other.rate && **self == **other
    }
}

impl Eq for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} Hz, {} samples)", self.rate.hz(), self.len)
    }
}

/// A frame of silence at the narrowband rate.
pub static SILENCE: Frame = Frame::silence(NARROW_RATE);
static SILENCE_16K: Frame = Frame::silence(ClockRate::HZ_16000);
static SILENCE_48K: Frame = Frame::silence(ClockRate::HZ_48000);

/// A frame of silence at `rate`, for the rates a leg runs at (narrowband for any other).
pub fn silence_at(rate: ClockRate) -> &'static Frame {
    match rate.hz() {
        16000 => &SILENCE_16K,
        48000 => &SILENCE_48K,
        _ => &SILENCE,
    }
}

/// Something that produces outbound audio, a frame at a time, without allocating.
pub trait AudioSource: Send {
    /// The rate of what it produces; a consumer at another rate converts.
    fn rate(&self) -> ClockRate;

    /// Fills `out`; returns how many samples were written (fewer than asked: finished).
    fn fill(&mut self, out: &mut [i16]) -> usize;
}

impl AudioSource for super::tone::ToneGenerator {
    fn rate(&self) -> ClockRate {
        super::tone::ToneGenerator::rate(self)
    }
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::tone::ToneGenerator::fill(self, out)
    }
}

impl AudioSource for super::prompt::Playlist {
    fn rate(&self) -> ClockRate {
        super::prompt::Playlist::rate(self)
    }
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::Playlist::fill(self, out)
    }
}

impl AudioSource for super::prompt::PromptPlayer {
    fn rate(&self) -> ClockRate {
        ClockRate::new(self.prompt().rate).unwrap_or(NARROW_RATE)
    }
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::PromptPlayer::fill(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_twenty_ms_at_its_rate() {
        assert_eq!(FRAME_SAMPLES, 160);
        assert_eq!(FRAMES_PER_SEC, 50);
        assert_eq!(NARROW_RATE.ticks_in(FRAME), FRAME_SAMPLES as u64);
        assert_eq!(Frame::silence(ClockRate::HZ_16000).len(), 320);
        assert_eq!(Frame::silence(MAX_RATE).len(), MAX_FRAME_SAMPLES);
        assert_eq!(MAX_FRAME_SAMPLES, 960);
    }

    #[test]
    fn a_frame_shows_only_its_own_samples_and_changes_rate_whole() {
        let mut f = Frame::from_samples(ClockRate::HZ_16000, &[7; 400]);
        assert_eq!(f.len(), 320);
        assert!(f.iter().all(|&s| s == 7));
        f.clear(NARROW_RATE);
        assert_eq!((f.len(), f.rate()), (160, NARROW_RATE));
        assert!(f.iter().all(|&s| s == 0));
        let short = Frame::from_samples(NARROW_RATE, &[3; 10]);
        assert_eq!(&short[..11], &[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0]);
        assert_ne!(
            Frame::silence(NARROW_RATE),
            Frame::silence(ClockRate::HZ_16000)
        );
    }
}
