//! Media engine: codecs, DTMF detection, tones and the level conventions they share.
//!
//! Everything here is sans-IO and works on caller-provided buffers: a 20 ms frame is
//! encoded, decoded, scanned for digits or filled with a tone without allocating.

pub mod codec;
pub mod dtmf;
pub mod level;
pub mod record;
pub mod tone;
