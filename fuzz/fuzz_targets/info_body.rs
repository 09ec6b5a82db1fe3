//! Fuzzes SIP INFO DTMF bodies (src/media/dtmf/info.rs): first line the Content-Type, the rest the body.
//! Invariant: never panics; a digit read has a duration within (0, MAX_DURATION] and
//! survives format_dtmf_relay → parse unchanged.
//! The body is switchboard::fuzzing::info_body, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::info_body(data));
