//! Fuzzes TCP stream framing (src/sip/framing.rs) under arbitrary chunking of the stream.
//! Invariant: never panics; the messages, and whether an error ends the stream, are the same
//! however the stream is cut, and no message exceeds the framer's limit (bounded output).
//! The body is switchboard::fuzzing::sip_framing, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::sip_framing(data));
