//! Fuzzes RFC 4733 telephone-event payloads, a sequence of them in one receiver
//! (src/media/dtmf/rfc4733.rs); records are [advance, flags, timestamp×4, length, payload].
//! Invariant: never panics; one payload yields at most 64 events; every payload is counted
//! as accepted or malformed (bounded output).
//! The body is switchboard::fuzzing::rfc4733_events, which tests/fuzz_corpus.rs also runs on the
//! corpus and kept crashes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::rfc4733_events(data));
