//! parse ∘ print round trips for generated SIP messages, and `classify` on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use switchboard::sip::message::{classify, encode_response, Essentials, Inbound};

#[derive(Debug, Clone)]
struct Msg {
    /// `None` for a request; the status code and reason phrase for a response.
    status: Option<(u16, String)>,
    method: String,
    ruri: String,
    transport: &'static str,
    sent_by: String,
    branch: String,
    from_display: Option<String>,
    from_uri: String,
    from_tag: String,
    to_uri: String,
    to_tag: Option<String>,
    call_id: String,
    cseq: u32,
    max_forwards: u8,
    contact: String,
    body: Vec<u8>,
}

impl Msg {
    fn print(&self) -> Vec<u8> {
        let mut s = match &self.status {
            None => format!("{} {} SIP/2.0\r\n", self.method, self.ruri),
            Some((code, reason)) => format!("SIP/2.0 {code} {reason}\r\n"),
        };
        s += &format!(
            "Via: SIP/2.0/{} {};branch={}\r\n",
            self.transport, self.sent_by, self.branch
        );
        s += &match &self.from_display {
            Some(d) => format!(
                "From: \"{d}\" <{}>;tag={}\r\n",
                self.from_uri, self.from_tag
            ),
            None => format!("From: <{}>;tag={}\r\n", self.from_uri, self.from_tag),
        };
        s += &match &self.to_tag {
            Some(t) => format!("To: <{}>;tag={t}\r\n", self.to_uri),
            None => format!("To: <{}>\r\n", self.to_uri),
        };
        s += &format!("Call-ID: {}\r\n", self.call_id);
        s += &format!("CSeq: {} {}\r\n", self.cseq, self.method);
        s += &format!("Max-Forwards: {}\r\n", self.max_forwards);
        s += &format!("Contact: <{}>\r\n", self.contact);
        if !self.body.is_empty() {
            s += "Content-Type: application/sdp\r\n";
        }
        s += &format!("Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn essentials(&self) -> Essentials {
        let parsed = classify(&self.print(), false);
        match parsed {
            Inbound::Request(r) => r.ess,
            Inbound::Response(r) => r.ess,
            other => panic!("{other:?}"),
        }
    }
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}\\.(com|net|org)",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (1024u16..=65535).prop_map(|p| format!(":{p}"))
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    ("[a-z0-9][a-z0-9._+-]{0,12}", host(), port()).prop_map(|(u, h, p)| format!("sip:{u}@{h}{p}"))
}

fn method() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "MESSAGE",
        "REGISTER",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
        "PRACK",
    ])
    .prop_map(str::to_string)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        (1u32..=u32::MAX, host(), 1024u16..=65000).prop_map(|(id, h, p)| {
            format!(
                "v=0\r\no=- {id} {id} IN IP4 {h}\r\ns=-\r\nc=IN IP4 {h}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0 8\r\n"
            )
            .into_bytes()
        }),
    ]
}

fn message() -> impl Strategy<Value = Msg> {
    let status = prop_oneof![
        Just(None),
        (100u16..=699, "[A-Za-z][A-Za-z ]{0,20}[A-Za-z]").prop_map(|(c, r)| Some((c, r))),
    ];
    (
        (
            status,
            method(),
            sip_uri(),
            prop::sample::select(vec!["UDP", "TCP", "TLS"]),
        ),
        (host(), port(), token()),
        (
            prop::option::of("[A-Za-z][A-Za-z .]{0,15}"),
            sip_uri(),
            token(),
        ),
        (sip_uri(), prop::option::of(token())),
        ("[a-zA-Z0-9.!%*_+`'~-]{1,20}", prop::option::of(host())),
        (0u32..=0x7fff_ffff, any::<u8>(), sip_uri(), body()),
    )
        .prop_map(
            |(
                (status, method, ruri, transport),
                (h, p, branch),
                (from_display, from_uri, from_tag),
                (to_uri, to_tag),
                (cid, cid_host),
                (cseq, max_forwards, contact, body),
            )| {
                // A response always carries the To tag of the dialog it belongs to.
                let to_tag = match &status {
                    Some(_) => Some(to_tag.unwrap_or_else(|| "t1".into())),
                    None => to_tag,
                };
                Msg {
                    status,
                    method,
                    ruri,
                    transport,
                    sent_by: format!("{h}{p}"),
                    branch: format!("z9hG4bK{branch}"),
                    from_display: from_display
                        .map(|d| d.trim().to_string())
                        .filter(|d| !d.is_empty()),
                    from_uri,
                    from_tag,
                    to_uri,
                    to_tag,
                    call_id: match cid_host {
                        Some(h) => format!("{cid}@{h}"),
                        None => cid,
                    },
                    cseq,
                    max_forwards,
                    contact,
                    body,
                }
            },
        )
}

/// Prints a parsed message again, the way this server puts it on the wire.
fn reprint(i: &Inbound) -> Vec<u8> {
    match i {
        Inbound::Request(r) => r.req.to_bytes(),
        Inbound::Response(r) => encode_response(&r.resp),
        other => panic!("not parsed: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_print_round_trip(m in message()) {
        let wire = m.print();
        let first = classify(&wire, false);
        let ess = match &first {
            Inbound::Request(r) => {
                prop_assert_eq!(r.req.method.to_string(), m.method.clone());
                prop_assert_eq!(r.req.uri.to_string(), m.ruri.clone());
                prop_assert_eq!(&r.req.body, &m.body);
                r.ess.clone()
            }
            Inbound::Response(r) => {
                prop_assert_eq!(Some(r.code), m.status.as_ref().map(|s| s.0));
                prop_assert_eq!(&r.resp.body, &m.body);
                r.ess.clone()
            }
            other => {
                let text = String::from_utf8_lossy(&wire);
                return Err(TestCaseError::fail(format!("{other:?}\n{text}")));
            }
        };
        prop_assert_eq!(&ess.call_id, &m.call_id);
        prop_assert_eq!(ess.cseq, m.cseq);
        prop_assert_eq!(ess.cseq_method.to_string(), m.method.clone());
        prop_assert_eq!(ess.from_tag.as_deref(), Some(m.from_tag.as_str()));
        prop_assert_eq!(ess.to_tag.as_deref(), m.to_tag.as_deref());
        prop_assert_eq!(ess.branch.as_deref(), Some(m.branch.as_str()));
        prop_assert_eq!(&ess.sent_by, &m.sent_by.to_ascii_lowercase());
        prop_assert_eq!(&ess, &m.essentials());

        let again = classify(&reprint(&first), false);
        let ess2 = match &again {
            Inbound::Request(r) => {
                let Inbound::Request(r1) = &first else { unreachable!() };
                prop_assert_eq!(r.req.method, r1.req.method);
                prop_assert_eq!(r.req.uri.to_string(), r1.req.uri.to_string());
                prop_assert_eq!(&r.req.body, &r1.req.body);
                r.ess.clone()
            }
            Inbound::Response(r) => {
                let Inbound::Response(r1) = &first else { unreachable!() };
                prop_assert_eq!(r.code, r1.code);
                prop_assert_eq!(&r.resp.body, &r1.resp.body);
                r.ess.clone()
            }
            other => return Err(TestCaseError::fail(format!("reprint: {other:?}"))),
        };
        prop_assert_eq!(ess2, ess);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500), stream in any::<bool>()) {
        let _ = classify(&bytes, stream);
    }

    #[test]
    fn damaged_messages_never_panic(
        m in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        stream in any::<bool>(),
    ) {
        let mut wire = m.print();
        for (at, byte) in edits {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        let end = cut.index(wire.len() + 1);
        let _ = classify(&wire[..end], stream);
        let _ = classify(&wire, stream);
    }
}
