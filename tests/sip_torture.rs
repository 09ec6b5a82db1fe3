//! RFC 4475 torture messages through `sip::message::classify`.
//!
//! `tests/fixtures/rfc4475/expect.toml` says, per message, which outcomes satisfy the RFC for
//! this server; every fixture is also run in stream mode and truncated, which must not panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard::sip::message::{classify, Inbound, SipMessage};

#[derive(Debug, Deserialize)]
struct Expect {
    section: String,
    kind: String,
    #[serde(default)]
    uas: Option<u16>,
    #[serde(default)]
    layer: Option<String>,
    accept: Vec<String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475")
}

fn expectations() -> BTreeMap<String, Expect> {
    let text = std::fs::read_to_string(fixture_dir().join("expect.toml")).expect("expect.toml");
    toml::from_str(&text).expect("expect.toml parses")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(format!("{name}.dat"))).expect("fixture")
}

fn outcome(i: &Inbound) -> String {
    match i {
        Inbound::Request(_) => "request".into(),
        Inbound::Response(_) => "response".into(),
        Inbound::Reject { code, .. } => format!("reject:{code}"),
        Inbound::Drop { .. } => "drop".into(),
    }
}

fn detail(i: &Inbound) -> String {
    match i {
        Inbound::Reject { reason, .. } | Inbound::Drop { reason } => reason.clone(),
        _ => String::new(),
    }
}

/// The value of the first header line called `name` (or its compact form), unfolded.
fn raw_header(bytes: &[u8], name: &str, compact: &str) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact))
            .then(|| v.trim().to_string())
    })
}

fn normalise_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_fixture_has_an_expectation() {
    let exp = expectations();
    let mut files: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".dat").map(str::to_string)
        })
        .collect();
    files.sort();
    let named: Vec<String> = exp.keys().cloned().collect();
    assert_eq!(files, named);
    assert_eq!(files.len(), 49, "RFC 4475 has 49 messages");
}

#[test]
fn torture_messages_get_the_outcome_the_rfc_asks_for() {
    let mut failures = Vec::new();
    for (name, exp) in expectations() {
        assert!(
            matches!(exp.kind.as_str(), "valid" | "invalid"),
            "{name}: kind {}",
            exp.kind
        );
        let got = classify(&fixture(&name), false);
        let o = outcome(&got);
        if !exp.accept.contains(&o) {
            failures.push(format!(
                "{name} ({}, {}): got {o} {:?}, want one of {:?}",
                exp.section,
                exp.kind,
                detail(&got),
                exp.accept
            ));
        }
        if exp.kind == "invalid" && !matches!(got, Inbound::Reject { .. } | Inbound::Drop { .. }) {
            failures.push(format!("{name}: an invalid message was accepted"));
        }
        if let (Some(code), Inbound::Reject { code: got_code, .. }) = (exp.uas, &got) {
            if exp.accept.iter().any(|a| a.starts_with("reject:")) {
                assert!(
                    exp.accept.contains(&format!("reject:{got_code}")),
                    "{name}: rejected with {got_code}, the RFC names {code}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn rejections_are_well_formed_answers_to_the_request() {
    for name in expectations().keys() {
        let bytes = fixture(name);
        let Inbound::Reject { response, code, .. } = classify(&bytes, false) else {
            continue;
        };
        let text = String::from_utf8_lossy(&response).into_owned();
        let parsed = match SipMessage::try_from(response.as_slice()) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("{name}: reject is not a SIP response: {other:?}\n{text}"),
        };
        assert_eq!(
            u16::from(parsed.status_code.clone()),
            code,
            "{name}\n{text}"
        );
        assert!(
            text.starts_with(&format!("SIP/2.0 {code} ")),
            "{name}\n{text}"
        );
        let call_id = raw_header(&bytes, "Call-ID", "i").expect("request has a Call-ID");
        let got = raw_header(&response, "Call-ID", "i").expect("reject has a Call-ID");
        assert_eq!(got, call_id, "{name}: Call-ID not echoed\n{text}");
        let cseq = raw_header(&bytes, "CSeq", "CSeq").expect("request has a CSeq");
        let got = raw_header(&response, "CSeq", "CSeq").expect("reject has a CSeq");
        assert_eq!(
            normalise_ws(&got),
            normalise_ws(&cseq),
            "{name}: CSeq not echoed\n{text}"
        );
        let to = raw_header(&response, "To", "t").expect("reject has a To");
        assert!(
            to.contains(";tag="),
            "{name}: reject without a To tag\n{text}"
        );
        // Our own answer must read back as a response, unless the CSeq it had to echo is one
        // the message model refuses (an extension method, an overlarge number).
        match classify(&response, false) {
            Inbound::Response(r) => {
                assert_eq!(r.code, code, "{name}");
                assert_eq!(r.ess.call_id, call_id, "{name}");
            }
            Inbound::Drop { reason } if reason.contains("CSeq") => {}
            other => panic!("{name}: our own reject reads back as {other:?}\n{text}"),
        }
    }
}

#[test]
fn accepted_messages_expose_their_essentials() {
    for (name, exp) in expectations() {
        let bytes = fixture(&name);
        let ess = match classify(&bytes, false) {
            Inbound::Request(r) => {
                assert_eq!(r.ess.cseq_method, r.req.method, "{name}");
                r.ess
            }
            Inbound::Response(r) => r.ess,
            _ => continue,
        };
        let call_id = raw_header(&bytes, "Call-ID", "i").expect("Call-ID");
        assert_eq!(ess.call_id, call_id, "{name} ({})", exp.section);
        let cseq = raw_header(&bytes, "CSeq", "CSeq").expect("CSeq");
        let num: u32 = normalise_ws(&cseq)
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("CSeq number");
        assert_eq!(ess.cseq, num, "{name}");
    }
}

#[test]
fn specific_readings() {
    let req = |name: &str| match classify(&fixture(name), false) {
        Inbound::Request(r) => r,
        other => panic!("{name}: {other:?}"),
    };
    let wsinv = req("wsinv");
    assert_eq!(wsinv.ess.from_tag.as_deref(), Some("98asjd8"));
    assert_eq!(wsinv.ess.to_tag.as_deref(), Some("1918181833n"));
    assert_eq!(wsinv.ess.branch.as_deref(), Some("390skdjuw"));
    assert_eq!(wsinv.ess.cseq, 9);
    assert_eq!(wsinv.req.body.len(), 150);

    // Only the REGISTER counts; the INVITE after its Content-Length is not part of it.
    let dblreq = req("dblreq");
    assert_eq!(dblreq.ess.cseq_method.to_string(), "REGISTER");
    assert!(dblreq.req.body.is_empty());

    let longreq = req("longreq");
    assert_eq!(longreq.ess.sent_by, "sip33.example.com");
    assert_eq!(longreq.ess.branch, None);
    assert_eq!(longreq.ess.from_tag.as_deref().map(str::len), Some(155));

    let mpart = req("mpart01");
    assert_eq!(mpart.req.body.len(), 553);

    let inv2543 = req("inv2543");
    assert_eq!(inv2543.ess.branch, None);
    assert_eq!(inv2543.ess.from_tag, None);
    assert!(inv2543.req.body.ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));

    let Inbound::Response(unreason) = classify(&fixture("unreason"), false) else {
        panic!("unreason")
    };
    assert_eq!(unreason.code, 200);
}

#[test]
fn stream_mode_and_truncation_never_panic() {
    for name in expectations().keys() {
        let bytes = fixture(name);
        let _ = classify(&bytes, true);
        for cut in 0..bytes.len() {
            let _ = classify(&bytes[..cut], false);
            let _ = classify(&bytes[..cut], true);
        }
    }
}

#[test]
fn baddn_is_refused_for_its_display_names_too() {
    // The RFC's archive ends baddn without the empty line; closed properly it still is a 400.
    let mut bytes = fixture("baddn");
    bytes.extend_from_slice(b"\r\n");
    let got = classify(&bytes, false);
    assert_eq!(outcome(&got), "reject:400", "{}", detail(&got));
}

#[test]
fn strictness_leaves_ordinary_variants_alone() {
    // Liberal-looking but legal forms close to the refused ones.
    let base = "OPTIONS sip:user@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKa1, SIP/2.0/TCP h2.example.com;branch=z9hG4bKa2\r\n\
From: \"Bell, Alexander\" <sip:a.g.bell@example.com?Subject=x>;tag=43\r\n\
To: sip:user@example.com;tag=9\r\n\
Contact: <sip:a@b.example.com>;expires=60, sip:c@d.example.com;q=0.5\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
Call-ID: strict.1@example.com\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
    let got = classify(base.as_bytes(), false);
    assert_eq!(outcome(&got), "request", "{}", detail(&got));
}

/// The messages whose RFC 4475 answer comes from above the parser (420, 415, 406), fed to the
/// endpoint itself.
#[test]
fn endpoint_gives_the_answers_the_rfc_asks_for() {
    use switchboard::sip::dialog::{Peer, Transport};
    use switchboard::sip::endpoint::{Endpoint, EndpointConfig};
    let peer = Peer {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
    };
    let mut checked = 0;
    for (name, exp) in expectations() {
        let (Some(code), Some("endpoint")) = (exp.uas, exp.layer.as_deref()) else {
            continue;
        };
        let mut ep = Endpoint::new(EndpointConfig {
            timers: Default::default(),
            local_addr: "127.0.0.1:5060".parse().unwrap(),
            user_agent: "switchboard-test".into(),
        });
        ep.handle_message(std::time::Instant::now(), peer, &fixture(&name));
        let finals: Vec<String> = std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| String::from_utf8_lossy(&t.bytes).into_owned())
            .filter(|t| !t.starts_with("SIP/2.0 100 "))
            .collect();
        assert_eq!(finals.len(), 1, "{name}: {finals:?}");
        assert!(
            finals[0].starts_with(&format!("SIP/2.0 {code} ")),
            "{name}: expected {code}, got {}",
            finals[0].lines().next().unwrap_or("")
        );
        assert_eq!(ep.call_count(), 0, "{name}: must not become a call");
        checked += 1;
    }
    assert_eq!(checked, 3, "bext01, invut, sdp01");
}
