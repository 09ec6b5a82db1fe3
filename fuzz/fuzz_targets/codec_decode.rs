//! Fuzzes G.722 and L16 decoders (src/media/codec/), direct and behind the leg resampler, on
//! arbitrary payloads and lost frames.
//! Invariant: never panics; decoding writes within the buffer and exactly the samples the
//! payload holds; L16 decode → encode round-trips.
//! The body is switchboard::fuzzing::codec_decode, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::codec_decode(data));
