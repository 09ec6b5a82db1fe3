//! Fuzzes the SDP parser: no input may panic it, and whatever parses must survive
//! print → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = sdp::parse(data) {
        let printed = parsed.to_string();
        match sdp::parse(printed.as_bytes()) {
            Ok(reparsed) => assert_eq!(reparsed, parsed, "round trip changed:\n{printed}"),
            Err(e) => panic!("printed SDP does not parse ({e}):\n{printed}"),
        }
    }
});
