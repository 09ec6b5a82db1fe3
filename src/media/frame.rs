//! The media frame: its duration, the internal rate audio is mixed and processed at, the
//! samples one frame holds, the buffer type for one frame, and [`AudioSource`], what produces
//! outbound audio a frame at a time.
//!
//! Everything between decode and encode (tones, prompts, DTMF detection and generation, the
//! conference mixer, recording) runs at [`INTERNAL_RATE`]. That is not a codec's RTP clock:
//! a codec states its own ([`crate::media::codec::CodecKind::rtp_clock`]), and the two part
//! ways once a codec samples at another rate than the engine.

use std::time::Duration;

pub use crate::rtp::types::ClockRate;

/// Frame duration of the media clock.
pub const FRAME: Duration = Duration::from_millis(20);

/// The rate every frame is processed at between decode and encode.
pub const INTERNAL_RATE: ClockRate = ClockRate::HZ_8000;

/// Samples in one frame at [`INTERNAL_RATE`].
pub const FRAME_SAMPLES: usize =
    (INTERNAL_RATE.hz() as u64 * FRAME.as_millis() as u64 / 1000) as usize;

/// Frames per second of audio.
pub const FRAMES_PER_SEC: u32 = (1000 / FRAME.as_millis()) as u32;

/// One frame of linear PCM at [`INTERNAL_RATE`].
pub type Frame = [i16; FRAME_SAMPLES];

/// A frame of silence.
pub static SILENCE: Frame = [0; FRAME_SAMPLES];

/// Something that produces outbound audio, a frame at a time, without allocating.
pub trait AudioSource: Send {
    /// Fills `out`; returns how many samples were written (fewer than asked: finished).
    fn fill(&mut self, out: &mut [i16]) -> usize;
}

impl AudioSource for super::tone::ToneGenerator {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::tone::ToneGenerator::fill(self, out)
    }
}

impl AudioSource for super::prompt::Playlist {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::Playlist::fill(self, out)
    }
}

impl AudioSource for super::prompt::PromptPlayer {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        super::prompt::PromptPlayer::fill(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_twenty_ms_at_the_internal_rate() {
        assert_eq!(FRAME_SAMPLES, 160);
        assert_eq!(FRAMES_PER_SEC, 50);
        assert_eq!(INTERNAL_RATE.ticks_in(FRAME), FRAME_SAMPLES as u64);
    }
}
