//! Feeds arbitrary bytes to the SIP message layer in both datagram and stream mode.
//! Seed with `tests/fixtures/rfc4475/*.dat`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::message::{classify, Inbound};

fuzz_target!(|data: &[u8]| {
    for stream in [false, true] {
        // A reject we produce must itself be a response we can read, whatever provoked it.
        if let Inbound::Reject { response, .. } = classify(data, stream) {
            assert!(response.starts_with(b"SIP/2.0 "));
            let _ = classify(&response, stream);
        }
    }
});
