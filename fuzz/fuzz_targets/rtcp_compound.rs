//! Fuzzes RTCP compound packets fed to an RTCP session (src/rtp/rtcp.rs).
//! Invariant: never panics; a refused datagram is counted; the reports and BYE the session
//! writes afterwards fit MAX_COMPOUND_LEN and a peer session accepts them.
//! The body is switchboard::fuzzing::rtcp_compound, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::rtcp_compound(data));
