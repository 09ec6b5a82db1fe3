//! Fuzzes The SIP endpoint (src/sip/endpoint/) fed a script of messages from four peers, virtual
//! time steps and call commands (op codes in switchboard::fuzzing::endpoint).
//! Invariant: never panics; timers always move forward; messages and events per step stay
//! below a cap, and calls and transactions stay below what the steps could have opened.
//! The body is switchboard::fuzzing::endpoint, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::endpoint(data));
