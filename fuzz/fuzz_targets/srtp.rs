//! Fuzzes SRTP and SDES (src/rtp/srtp/).
//! Invariant: never panics; a parsed `a=crypto` survives print → parse; unprotect refuses
//! arbitrary bytes; what one session protects the peer session accepts and decrypts back,
//! refuses with one bit flipped, and refuses as a replay the second time.
//! The body is switchboard::fuzzing::srtp, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::srtp(data));
