//! Fuzzes Digest challenges (WWW-Authenticate) and credentials (Authorization).
//! Invariant: never panics; whatever parses survives print → parse unchanged.
//! The body is switchboard::fuzzing::digest_parse, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::digest_parse(data));
