//! Fuzzes the digest header parsers: no input may panic them, and whatever parses must
//! survive print → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::digest::{parse_authorization, parse_challenges};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(challenges) = parse_challenges(text) {
        for c in challenges {
            let printed = c.to_string();
            match parse_challenges(&printed) {
                Ok(again) => assert_eq!(again, vec![c], "round trip changed:\n{printed}"),
                Err(e) => panic!("printed challenge does not parse ({e}):\n{printed}"),
            }
        }
    }
    if let Ok(a) = parse_authorization(text) {
        let printed = a.to_string();
        match parse_authorization(&printed) {
            Ok(again) => assert_eq!(again, a, "round trip changed:\n{printed}"),
            Err(e) => panic!("printed credentials do not parse ({e}):\n{printed}"),
        }
    }
});
