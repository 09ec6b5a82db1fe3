//! Media: the frame and internal rate everything shares ([`frame`]), codecs, DTMF
//! detection, tones, prompts and resampling, and the per-call leg. The workers that tick legs
//! live in [`crate::engine`].
//!
//! Apart from kernel receive timestamps ([`stamp`]) and prompt loading (files), everything
//! here is sans-IO and works on caller-provided buffers: a 20 ms frame is encoded, decoded, scanned for
//! digits, filled with a tone or a prompt without allocating.

pub mod codec;
pub mod dtmf;
pub mod frame;
pub mod leg;
pub mod level;
pub mod prompt;
pub mod record;
pub mod resample;
pub mod stamp;
pub mod tone;
