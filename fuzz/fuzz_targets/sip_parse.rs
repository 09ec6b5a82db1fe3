//! Fuzzes SIP messages in datagram and stream mode (seeds: the RFC 4475 torture messages).
//! Invariant: never panics; a reject we produce is itself a SIP response we can read.
//! The body is switchboard::fuzzing::sip_parse, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::sip_parse(data));
