//! Fuzzes STUN and a WebRTC leg's intake (src/webrtc/).
//! Invariant: never panics; an address decoded is the one a rebuild encodes; the ICE-lite
//! agent answers only messages, with their transaction id, and with success only for our
//! password's MESSAGE-INTEGRITY (a signed USERNAME other than ours gets 401 without
//! integrity); the transport sends only to the checked address and counts each datagram once.
//! The body is switchboard::fuzzing::stun, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::stun(data));
