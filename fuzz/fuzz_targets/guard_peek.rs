//! Fuzzes The guard's raw-bytes peek (src/sip/guard/peek.rs).
//! Invariant: never panics; the User-Agent it returns is a trimmed slice of the input, and the
//! pattern matcher agrees with a plain lowercase search.
//! The body is switchboard::fuzzing::guard_peek, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::guard_peek(data));
