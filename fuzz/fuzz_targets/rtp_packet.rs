//! Fuzzes RTP packets (src/rtp/packet.rs).
//! Invariant: never panics; a parsed packet classifies as RTP, and write → parse gives the
//! same packet back (minus padding, which the writer never adds).
//! The body is switchboard::fuzzing::rtp_packet, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::rtp_packet(data));
