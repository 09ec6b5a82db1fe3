//! Calls we place, in virtual time: the endpoint's INVITE client side against a scripted
//! peer that answers by hand-made responses. No sockets; 64·T1 passes in microseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::sip::dialog::{Peer, Transport};
use switchboard::sip::digest::{self, Algorithm, Credentials, NonceIssuer};
use switchboard::sip::endpoint::{
    CallHandle, EndReason, Endpoint, EndpointConfig, Event, OutgoingCall, Party,
};
use switchboard::sip::ids::Ids;
use switchboard::sip::message::{
    classify, encode_response, header_value, push_header, response_to, set_body, Inbound,
    ParsedRequest,
};
use switchboard::sip::transaction::TimerConfig;

const US: &str = "127.0.0.1:5060";
const THEM: &str = "127.0.0.1:5070";
const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
const ANSWER: &[u8] = b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 42000 RTP/AVP 0\r\n";

fn them(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: THEM.parse().unwrap(),
    }
}

/// One message the endpoint sent: when (ms since the start), where, and its text.
#[derive(Clone, Debug)]
struct Sent {
    at: u64,
    to: Peer,
    text: String,
}

struct World {
    now: Instant,
    start: Instant,
    ep: Endpoint,
    sent: Vec<Sent>,
    events: Vec<(u64, Event)>,
}

impl World {
    fn new(seed: u64) -> Self {
        let now = Instant::now();
        World {
            now,
            start: now,
            ep: Endpoint::with_ids(
                EndpointConfig {
                    timers: TimerConfig::default(),
                    local_addr: US.parse().unwrap(),
                    user_agent: "switchboard-test".into(),
                },
                Ids::with_seed(seed),
            ),
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.start).as_millis() as u64
    }

    fn flush(&mut self) {
        let at = self.ms();
        while let Some(t) = self.ep.poll_transmit() {
            self.sent.push(Sent {
                at,
                to: t.peer,
                text: String::from_utf8(t.bytes).unwrap(),
            });
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push((at, e));
        }
    }

    fn call(&mut self, out: OutgoingCall) -> CallHandle {
        let h = self.ep.invite(self.now, out).unwrap();
        self.flush();
        h
    }

    /// Steps from deadline to deadline up to `ms` after the start.
    fn advance_to(&mut self, ms: u64) {
        let until = self.start + Duration::from_millis(ms);
        step_until(
            self,
            until,
            |w| w.ep.poll_timeout(),
            |w, at| {
                w.now = w.now.max(at);
                w.ep.handle_timeout(w.now);
                w.flush();
            },
        );
        self.now = self.now.max(until);
    }

    fn deliver(&mut self, bytes: &[u8]) {
        self.deliver_from(them(Transport::Udp), bytes);
    }

    fn deliver_from(&mut self, peer: Peer, bytes: &[u8]) {
        self.ep.handle_message(self.now, peer, bytes);
        self.flush();
    }

    /// Every message sent whose first line starts with `start`.
    fn sent_starting(&self, start: &str) -> Vec<Sent> {
        self.sent
            .iter()
            .filter(|s| s.text.starts_with(start))
            .cloned()
            .collect()
    }

    fn last(&self, start: &str) -> String {
        self.sent_starting(start)
            .last()
            .unwrap_or_else(|| panic!("nothing sent starting {start}: {:#?}", self.sent))
            .text
            .clone()
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).map(|(_, e)| e).collect()
    }
}

/// Fires what `deadline` says is due, in order, until nothing is due by `until`; bounded.
fn step_until<M>(
    m: &mut M,
    until: Instant,
    deadline: impl Fn(&mut M) -> Option<Instant>,
    fire: impl Fn(&mut M, Instant),
) {
    for _ in 0..100_000 {
        match deadline(m) {
            Some(at) if at <= until => fire(m, at),
            _ => return,
        }
    }
    panic!("still busy after 100,000 steps");
}

fn outgoing(transport: Transport) -> OutgoingCall {
    OutgoingCall {
        target: "sip:bob@127.0.0.1:5070".into(),
        peer: them(transport),
        from: Party {
            display_name: Some("Switch \"Board\"".into()),
            uri: "sip:sb@127.0.0.1".into(),
        },
        to: Party::uri("sip:bob@127.0.0.1:5070"),
        sdp: Some(SDP.to_vec()),
        headers: vec![("X-Campaign".into(), "42".into())],
        route: Vec::new(),
        credentials: None,
        call_id: None,
    }
}

fn parse_req(text: &str) -> ParsedRequest {
    match classify(text.as_bytes(), false) {
        Inbound::Request(r) => *r,
        other => panic!("not a request: {other:?}\n{text}"),
    }
}

fn header<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

fn branch(text: &str) -> String {
    parse_req(text).ess.branch.unwrap()
}

/// The peer's response to our request `req`, with its To tag, extra headers and body.
fn reply(req: &str, code: u16, tag: Option<&str>, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let r = parse_req(req);
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        302 => "Moved Temporarily",
        401 => "Unauthorized",
        407 => "Proxy Authentication Required",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut resp = response_to(&r.req, code, reason, tag);
    for (n, v) in extra {
        push_header(&mut resp, n, v);
    }
    if !body.is_empty() {
        set_body(&mut resp, "application/sdp", body.to_vec());
    }
    encode_response(&resp)
}

const CONTACT: (&str, &str) = ("Contact", "<sip:bob@127.0.0.1:5070>");

/// A request from the peer in the dialog of our INVITE `invite` answered with To tag `tag`.
fn their_request(invite: &str, method: &str, tag: &str, cseq: u32, body: &[u8]) -> Vec<u8> {
    let r = parse_req(invite);
    let from = header(invite, "From")[0];
    let to = header(invite, "To")[0];
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    let mut m = format!(
        "{method} sip:sb@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtheirs{cseq}\r\n\
Max-Forwards: 70\r\n\
From: {to};tag={tag}\r\n\
To: {from}\r\n\
Call-ID: {}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:bob@127.0.0.1:5070>\r\n\
{ct}Content-Length: {}\r\n\r\n",
        r.ess.call_id,
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

#[test]
fn unanswered_udp_invite_doubles_from_t1_and_timer_b_fails_it_408_at_64_t1() {
    let mut w = World::new(1);
    let call = w.call(outgoing(Transport::Udp));
    w.advance_to(40_000);
    let times: Vec<u64> = w.sent_starting("INVITE ").iter().map(|s| s.at).collect();
    assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    let gaps: Vec<u64> = times.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(gaps, vec![500, 1000, 2000, 4000, 8000, 16000], "T1·2^n");
    let sent = w.sent_starting("INVITE ");
    assert!(
        sent.iter().all(|s| s.text == sent[0].text),
        "retransmissions are identical"
    );
    assert_eq!(w.events.len(), 2, "{:?}", w.events);
    assert!(matches!(
        &w.events[0],
        (32_000, Event::Failed { call: c, code: 408, .. }) if *c == call
    ));
    assert!(matches!(
        &w.events[1],
        (
            32_000,
            Event::Ended {
                reason: EndReason::Rejected(408),
                ..
            }
        )
    ));
    assert_eq!(w.ep.call_count(), 0);
    assert_eq!(w.ep.transaction_count(), 0);
}

#[test]
fn unanswered_tcp_invite_is_sent_once_and_fails_at_64_t1() {
    let mut w = World::new(2);
    w.call(outgoing(Transport::Tcp));
    w.advance_to(31_999);
    assert!(w.events.is_empty());
    w.advance_to(40_000);
    assert_eq!(w.sent_starting("INVITE ").len(), 1);
    let invite = w.last("INVITE ");
    assert!(header(&invite, "Via")[0].starts_with("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK"));
    assert!(header(&invite, "Contact")[0].contains("transport=tcp"));
    assert!(matches!(
        w.events[0],
        (32_000, Event::Failed { code: 408, .. })
    ));
}

#[test]
fn the_invite_carries_what_the_call_asked_for() {
    let mut w = World::new(3);
    let mut out = outgoing(Transport::Udp);
    out.route = vec!["sip:127.0.0.9:5060;lr".into()];
    w.call(out);
    let invite = w.last("INVITE ");
    assert!(
        invite.starts_with("INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n"),
        "{invite}"
    );
    let via = header(&invite, "Via")[0];
    assert!(via.ends_with(";rport"), "{via}");
    assert_eq!(header(&invite, "Route"), vec!["<sip:127.0.0.9:5060;lr>"]);
    assert!(
        header(&invite, "From")[0].starts_with("\"Switch \\\"Board\\\"\" <sip:sb@127.0.0.1>;tag=")
    );
    assert_eq!(header(&invite, "To"), vec!["<sip:bob@127.0.0.1:5070>"]);
    assert_eq!(header(&invite, "X-Campaign"), vec!["42"]);
    assert_eq!(header(&invite, "Content-Type"), vec!["application/sdp"]);
    assert!(invite.ends_with(std::str::from_utf8(SDP).unwrap()));
    let p = parse_req(&invite);
    assert!(p.ess.has_rfc3261_branch());
    assert_eq!(w.sent[0].to, them(Transport::Udp));
    // What cannot be sent is refused before anything goes out.
    let mut bad = outgoing(Transport::Udp);
    bad.target = "sip:bob@127.0.0.1;transport=tcp".into();
    assert!(w.ep.invite(w.now, bad).is_err());
    let mut bad = outgoing(Transport::Udp);
    bad.target = "mailto:bob@example.com".into();
    assert!(w.ep.invite(w.now, bad).is_err());
    let mut bad = outgoing(Transport::Udp);
    bad.headers = vec![("X-Evil".into(), "a\r\nBYE: x".into())];
    assert!(w.ep.invite(w.now, bad).is_err());
    let mut bad = outgoing(Transport::Udp);
    bad.headers = vec![("l".into(), "0".into())];
    assert!(w.ep.invite(w.now, bad).is_err(), "compact Content-Length");
    w.flush();
    assert_eq!(w.sent.len(), 1);
}

/// A world whose endpoint just sent an INVITE over UDP: the world, the call, the INVITE.
fn calling(seed: u64) -> (World, CallHandle, String) {
    let mut w = World::new(seed);
    let call = w.call(outgoing(Transport::Udp));
    let invite = w.last("INVITE ");
    (w, call, invite)
}

/// A call answered 200 after 180; returns the world, the call, the INVITE and the tag.
fn answered(seed: u64, extra: &[(&str, &str)]) -> (World, CallHandle, String) {
    let (mut w, call, invite) = calling(seed);
    w.deliver(&reply(&invite, 100, None, &[], &[]));
    w.deliver(&reply(&invite, 180, Some("bobtag"), &[CONTACT], &[]));
    let mut headers = vec![CONTACT];
    headers.extend_from_slice(extra);
    w.deliver(&reply(&invite, 200, Some("bobtag"), &headers, ANSWER));
    (w, call, invite)
}

#[test]
fn ringing_then_answer_is_acked_on_a_new_branch_and_reacked_for_each_retransmitted_200() {
    let (mut w, call, invite) = answered(4, &[]);
    let events = w.take_events();
    assert_eq!(events.len(), 2, "100 Trying is not reported: {events:?}");
    assert!(matches!(
        &events[0],
        Event::Progress { call: c, code: 180, to_tag: Some(t), sdp: None, reason } if *c == call && t == "bobtag" && reason == "Ringing"
    ));
    assert!(
        matches!(&events[1], Event::Answered { call: c, sdp: Some(s) } if *c == call && s == ANSWER)
    );
    let acks = w.sent_starting("ACK ");
    assert_eq!(acks.len(), 1);
    let ack = &acks[0].text;
    assert!(
        ack.starts_with("ACK sip:bob@127.0.0.1:5070 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_ne!(
        branch(ack),
        branch(&invite),
        "the ACK for a 2xx is a transaction of its own"
    );
    assert!(header(ack, "To")[0].ends_with(";tag=bobtag"));
    let cseq = parse_req(&invite).ess.cseq;
    assert_eq!(header(ack, "CSeq"), vec![format!("{cseq} ACK").as_str()]);
    assert_eq!(header(ack, "Content-Length"), vec!["0"]);
    // The 200 again (our ACK was lost): the same ACK again, no second event.
    w.advance_to(600);
    w.deliver(&reply(&invite, 200, Some("bobtag"), &[CONTACT], ANSWER));
    let acks = w.sent_starting("ACK ");
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].text, acks[1].text);
    assert!(w.events.is_empty());
    assert_eq!(w.ep.call_count(), 1);
    // In the dialog: INFO of ours, a re-INVITE of theirs.
    w.ep.send_info(
        w.now,
        call,
        "application/dtmf-relay",
        b"Signal=5\r\n".to_vec(),
    )
    .unwrap();
    w.flush();
    let info = w.last("INFO ");
    assert!(info.starts_with("INFO sip:bob@127.0.0.1:5070 SIP/2.0"));
    assert_eq!(parse_req(&info).ess.cseq, cseq + 1);
    w.deliver(&their_request(&invite, "INVITE", "bobtag", 7, SDP));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::ReInvite { call: c, sdp: Some(_) }] if *c == call
    ));
    w.ep.answer_reinvite(w.now, call, ANSWER.to_vec()).unwrap();
    w.flush();
    assert!(w.last("SIP/2.0 ").starts_with("SIP/2.0 200 OK"));
    // Our BYE: to the remote target, the next CSeq, and the call forgotten on its 200.
    w.ep.hangup(w.now, call).unwrap();
    w.flush();
    let bye = w.last("BYE ");
    assert!(
        bye.starts_with("BYE sip:bob@127.0.0.1:5070 SIP/2.0"),
        "{bye}"
    );
    assert_eq!(parse_req(&bye).ess.cseq, cseq + 2);
    assert!(header(&bye, "To")[0].ends_with(";tag=bobtag"));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Ended {
            reason: EndReason::LocalBye,
            ..
        }]
    ));
    w.deliver(&reply(&bye, 200, None, &[], &[]));
    assert_eq!(w.ep.call_count(), 0);
}

#[test]
fn their_bye_on_a_call_we_placed_is_answered_and_ends_it() {
    let (mut w, call, invite) = answered(5, &[]);
    w.take_events();
    w.deliver(&their_request(&invite, "BYE", "bobtag", 2, &[]));
    assert!(w.last("SIP/2.0 ").starts_with("SIP/2.0 200 OK"));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::RemoteBye }] if *c == call
    ));
    assert_eq!(w.ep.call_count(), 0);
}

#[test]
fn early_media_183_is_reported_with_its_sdp() {
    let (mut w, call, invite) = calling(6);
    w.deliver(&reply(&invite, 183, Some("em"), &[CONTACT], ANSWER));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Progress { call: c, code: 183, to_tag: Some(t), sdp: Some(s), .. }]
            if *c == call && t == "em" && s == ANSWER
    ));
    // Timer A stopped with the provisional, and B does not end a ringing call.
    w.advance_to(300_000);
    assert_eq!(w.sent_starting("INVITE ").len(), 1);
    assert!(w.events.is_empty());
    assert_eq!(w.ep.call_count(), 1);
}

#[test]
fn busy_486_is_acked_on_the_invite_branch_and_its_retransmissions_absorbed_until_timer_d() {
    let (mut w, call, invite) = calling(7);
    w.advance_to(100);
    let busy = reply(&invite, 486, Some("busy"), &[], &[]);
    w.deliver(&busy);
    let ack = w.last("ACK ");
    assert_eq!(
        branch(&ack),
        branch(&invite),
        "§17.1.1.3: the INVITE's branch"
    );
    assert!(ack.starts_with("ACK sip:bob@127.0.0.1:5070 SIP/2.0"));
    assert!(header(&ack, "To")[0].ends_with(";tag=busy"));
    let cseq = parse_req(&invite).ess.cseq;
    assert_eq!(header(&ack, "CSeq"), vec![format!("{cseq} ACK").as_str()]);
    let events = w.take_events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Failed { call: c, code: 486, contacts, retry_after: None, .. },
             Event::Ended { reason: EndReason::Rejected(486), .. }] if *c == call && contacts.is_empty()
        ),
        "{events:?}"
    );
    // Our ACK was lost: the 486 again gets the ACK again and nothing else.
    w.advance_to(2_000);
    w.deliver(&busy);
    assert_eq!(w.sent_starting("ACK ").len(), 2);
    assert!(w.events.is_empty());
    // Timer D (32 s on UDP) ends the transaction; later copies find nothing.
    w.advance_to(100 + 31_999);
    assert_eq!(w.ep.transaction_count(), 1);
    w.advance_to(100 + 32_000);
    assert_eq!(w.ep.transaction_count(), 0);
    w.deliver(&busy);
    assert_eq!(w.sent_starting("ACK ").len(), 2);
    assert_eq!(
        w.sent_starting("INVITE ").len(),
        1,
        "no retransmission after the final"
    );
}

#[test]
fn a_302_is_not_followed_and_its_contacts_are_reported() {
    let (mut w, _, invite) = calling(8);
    w.deliver(&reply(
        &invite,
        302,
        Some("r"),
        &[
            (
                "Contact",
                "<sip:carol@127.0.0.1:5080>;q=0.7, \"D\" <sip:dave@127.0.0.1:5081>",
            ),
            ("Contact", "sip:erin@127.0.0.1:5082"),
        ],
        &[],
    ));
    let events = w.take_events();
    let Event::Failed { code, contacts, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(*code, 302);
    assert_eq!(
        contacts,
        &vec![
            "sip:carol@127.0.0.1:5080".to_string(),
            "sip:dave@127.0.0.1:5081".to_string(),
            "sip:erin@127.0.0.1:5082".to_string()
        ]
    );
    assert_eq!(w.sent_starting("INVITE ").len(), 1);
    assert_eq!(w.sent_starting("ACK ").len(), 1);
}

#[test]
fn a_503_reports_its_retry_after() {
    let (mut w, _, invite) = calling(9);
    w.deliver(&reply(
        &invite,
        503,
        Some("o"),
        &[("Retry-After", "120 (overloaded);duration=60")],
        &[],
    ));
    assert!(matches!(
        w.take_events().as_slice(),
        [
            Event::Failed {
                code: 503,
                retry_after: Some(120),
                ..
            },
            Event::Ended { .. }
        ]
    ));
}

#[test]
fn record_route_of_two_proxies_is_reversed_and_in_dialog_requests_go_to_the_first_route() {
    let (mut w, call, _) = answered(
        10,
        &[(
            "Record-Route",
            "<sip:127.0.0.2:5060;lr>, <sip:127.0.0.3:5062;lr;transport=tcp>",
        )],
    );
    let ack = w.sent_starting("ACK ").remove(0);
    let routes = [
        "<sip:127.0.0.3:5062;lr;transport=tcp>",
        "<sip:127.0.0.2:5060;lr>",
    ];
    assert_eq!(header(&ack.text, "Route"), routes);
    let first_hop = Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.3:5062".parse::<SocketAddr>().unwrap(),
    };
    assert_eq!(ack.to, first_hop);
    w.ep.hangup(w.now, call).unwrap();
    w.flush();
    let bye = w.sent_starting("BYE ").remove(0);
    assert!(
        bye.text.starts_with("BYE sip:bob@127.0.0.1:5070 SIP/2.0"),
        "the remote target stays the Request-URI"
    );
    assert_eq!(header(&bye.text, "Route"), routes);
    assert_eq!(bye.to, first_hop);
    assert!(header(&bye.text, "Via")[0].starts_with("SIP/2.0/TCP "));
}

fn challenge_world(seed: u64, alg: Algorithm, proxy: bool) -> (World, CallHandle, String, String) {
    let mut w = World::new(seed);
    let mut out = outgoing(Transport::Udp);
    out.credentials = Some(Credentials::password("alice", "wonderland"));
    let call = w.call(out);
    let invite = w.last("INVITE ");
    let issuer = NonceIssuer::new(b"secret".to_vec(), "switchboard", 300);
    let challenge = issuer.challenge(1_000, alg, false).to_string();
    let (code, name) = if proxy {
        (407, "Proxy-Authenticate")
    } else {
        (401, "WWW-Authenticate")
    };
    w.deliver(&reply(
        &invite,
        code,
        Some("auth"),
        &[(name, &challenge)],
        &[],
    ));
    (w, call, invite, challenge)
}

#[test]
fn a_401_is_answered_with_digest_md5_and_sha256_and_the_call_goes_through() {
    for (seed, alg) in [(11, Algorithm::Md5), (12, Algorithm::Sha256)] {
        let (mut w, call, first, challenge) = challenge_world(seed, alg, false);
        assert!(w.events.is_empty(), "a challenge we answer is not reported");
        let ack = w.last("ACK ");
        assert_eq!(branch(&ack), branch(&first));
        let invites = w.sent_starting("INVITE ");
        assert_eq!(invites.len(), 2);
        let second = &invites[1].text;
        let (p1, p2) = (parse_req(&first), parse_req(second));
        assert_eq!(p2.ess.cseq, p1.ess.cseq + 1);
        assert_eq!(p2.ess.call_id, p1.ess.call_id);
        assert_eq!(p2.ess.from_tag, p1.ess.from_tag);
        assert_eq!(p2.ess.to_tag, None);
        assert_ne!(p2.ess.branch, p1.ess.branch);
        assert!(
            second.ends_with(std::str::from_utf8(SDP).unwrap()),
            "the offer goes again"
        );
        let auth = digest::parse_authorization(header(second, "Authorization")[0]).unwrap();
        assert_eq!(auth.algorithm, alg);
        assert_eq!(auth.nc, Some(1));
        assert!(header(second, "Authorization")[0].contains("nc=00000001"));
        assert_eq!(auth.uri, "sip:bob@127.0.0.1:5070");
        assert_eq!(auth.username, "alice");
        let ha1 = digest::ha1(alg, "alice", "switchboard", "wonderland");
        assert!(digest::verify(&auth, "INVITE", &ha1), "{challenge}");
        assert!(!digest::verify(
            &auth,
            "INVITE",
            &digest::ha1(alg, "alice", "switchboard", "x")
        ));
        // The nonce expired meanwhile: stale=true gets the same nonce answered with nc 2.
        let stale = format!("{challenge}, stale=true");
        w.deliver(&reply(
            second,
            401,
            Some("auth"),
            &[("WWW-Authenticate", &stale)],
            &[],
        ));
        let third = w.last("INVITE ");
        let auth3 = digest::parse_authorization(header(&third, "Authorization")[0]).unwrap();
        assert_eq!(
            (auth3.nonce.as_str(), auth3.nc),
            (auth.nonce.as_str(), Some(2))
        );
        assert!(header(&third, "Authorization")[0].contains("nc=00000002"));
        assert!(digest::verify(&auth3, "INVITE", &ha1));
        assert_eq!(parse_req(&third).ess.cseq, p1.ess.cseq + 2);
        w.deliver(&reply(&third, 200, Some("bob"), &[CONTACT], ANSWER));
        let ack = w.last("ACK ");
        assert_eq!(
            header(&ack, "Authorization"),
            header(&third, "Authorization"),
            "§13.2.2.4: the ACK for the 2xx carries the INVITE's credentials"
        );
        assert_eq!(header(&ack, "Content-Length"), vec!["0"]);
        assert!(
            matches!(w.take_events().as_slice(), [Event::Answered { call: c, .. }] if *c == call)
        );
        // CANCEL/ACK of the answered call are not needed; its BYE uses the last CSeq + 1.
        w.ep.hangup(w.now, call).unwrap();
        w.flush();
        assert_eq!(parse_req(&w.last("BYE ")).ess.cseq, p1.ess.cseq + 3);
    }
}

#[test]
fn a_407_is_answered_with_proxy_authorization() {
    let (mut w, _, _, _) = challenge_world(13, Algorithm::Sha256, true);
    let second = w.last("INVITE ");
    assert!(header(&second, "Authorization").is_empty());
    let auth = digest::parse_authorization(header(&second, "Proxy-Authorization")[0]).unwrap();
    assert!(digest::verify(
        &auth,
        "INVITE",
        &digest::ha1(Algorithm::Sha256, "alice", "switchboard", "wonderland")
    ));
    assert!(w.take_events().is_empty());
}

#[test]
fn a_second_401_with_the_same_nonce_fails_the_call() {
    let (mut w, call, _, challenge) = challenge_world(14, Algorithm::Md5, false);
    let second = w.last("INVITE ");
    w.deliver(&reply(
        &second,
        401,
        Some("auth"),
        &[("WWW-Authenticate", &challenge)],
        &[],
    ));
    assert_eq!(w.sent_starting("INVITE ").len(), 2, "no third attempt");
    assert_eq!(branch(&w.last("ACK ")), branch(&second));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Failed { call: c, code: 401, .. }, Event::Ended { reason: EndReason::Rejected(401), .. }] if *c == call
    ));
}

#[test]
fn a_401_without_credentials_fails_the_call() {
    let (mut w, _, invite) = calling(15);
    w.deliver(&reply(
        &invite,
        401,
        Some("a"),
        &[("WWW-Authenticate", "Digest realm=\"x\", nonce=\"y\"")],
        &[],
    ));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Failed { code: 401, .. }, Event::Ended { .. }]
    ));
}

#[test]
fn cancel_before_any_provisional_is_held_until_the_first_then_487_ends_it_cancelled() {
    let (mut w, call, invite) = calling(16);
    w.ep.cancel(w.now, call).unwrap();
    w.flush();
    assert!(
        w.sent_starting("CANCEL ").is_empty(),
        "§9.1: not before a provisional"
    );
    w.advance_to(200);
    w.deliver(&reply(&invite, 180, Some("x"), &[CONTACT], &[]));
    assert!(
        w.events.is_empty(),
        "a call being cancelled reports no progress"
    );
    let cancel = w.last("CANCEL ");
    assert!(cancel.starts_with("CANCEL sip:bob@127.0.0.1:5070 SIP/2.0"));
    assert_eq!(branch(&cancel), branch(&invite));
    let cseq = parse_req(&invite).ess.cseq;
    assert_eq!(
        header(&cancel, "CSeq"),
        vec![format!("{cseq} CANCEL").as_str()]
    );
    assert_eq!(header(&cancel, "To"), header(&invite, "To"), "no To tag");
    assert_eq!(header(&cancel, "From"), header(&invite, "From"));
    w.deliver(&reply(&cancel, 200, Some("x"), &[], &[]));
    w.deliver(&reply(&invite, 487, Some("x"), &[], &[]));
    assert_eq!(branch(&w.last("ACK ")), branch(&invite));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Failed { code: 487, .. }, Event::Ended { call: c, reason: EndReason::Cancelled }] if *c == call
    ));
    // A retransmitted CANCEL 200 or 487 changes nothing.
    w.deliver(&reply(&cancel, 200, Some("x"), &[], &[]));
    assert!(w.events.is_empty());
}

#[test]
fn cancel_after_ringing_goes_at_once_and_hangup_of_a_ringing_call_cancels_too() {
    let (mut w, call, invite) = calling(17);
    w.deliver(&reply(&invite, 180, Some("x"), &[CONTACT], &[]));
    w.take_events();
    w.ep.hangup(w.now, call).unwrap();
    w.flush();
    let cancel = w.last("CANCEL ");
    assert_eq!(branch(&cancel), branch(&invite));
    // Asking twice sends nothing more.
    w.ep.cancel(w.now, call).unwrap();
    w.flush();
    assert_eq!(w.sent_starting("CANCEL ").len(), 1);
    w.deliver(&reply(&invite, 487, Some("x"), &[], &[]));
    assert!(matches!(
        w.take_events().as_slice(),
        [
            Event::Failed { code: 487, .. },
            Event::Ended {
                reason: EndReason::Cancelled,
                ..
            }
        ]
    ));
    assert_eq!(
        w.ep.cancel(w.now, call),
        Err(switchboard::sip::endpoint::CommandError::NoSuchCall)
    );
}

#[test]
fn a_cancelled_call_whose_peer_never_answers_ends_64_t1_after_the_cancel() {
    let (mut w, call, invite) = calling(18);
    w.deliver(&reply(&invite, 180, Some("x"), &[CONTACT], &[]));
    w.advance_to(100_000);
    w.ep.cancel(w.now, call).unwrap();
    w.flush();
    w.advance_to(100_000 + 31_999);
    assert_eq!(w.events.len(), 1, "only the progress: {:?}", w.events);
    w.advance_to(140_000);
    assert!(
        matches!(
            w.events.last(),
            Some((
                132_000,
                Event::Ended {
                    reason: EndReason::Cancelled,
                    ..
                }
            ))
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn an_answer_crossing_our_cancel_is_acked_and_sent_bye() {
    let (mut w, call, invite) = calling(19);
    w.deliver(&reply(&invite, 180, Some("x"), &[CONTACT], &[]));
    w.take_events();
    w.ep.cancel(w.now, call).unwrap();
    w.flush();
    let cancel = w.last("CANCEL ");
    w.deliver(&reply(&invite, 200, Some("x"), &[CONTACT], ANSWER));
    w.deliver(&reply(&cancel, 200, Some("x"), &[], &[]));
    let ack = w.last("ACK ");
    assert_ne!(branch(&ack), branch(&invite));
    let bye = w.last("BYE ");
    assert!(header(&bye, "To")[0].ends_with(";tag=x"));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Ended { call: c, reason: EndReason::Cancelled }] if *c == call
    ));
    w.deliver(&reply(&bye, 200, None, &[], &[]));
    assert_eq!(w.ep.call_count(), 0);
}

#[test]
fn forks_the_first_2xx_wins_and_a_later_one_is_acked_and_sent_bye() {
    let (mut w, call, invite) = calling(20);
    w.deliver(&reply(
        &invite,
        180,
        Some("fork-a"),
        &[("Contact", "<sip:a@127.0.0.1:5071>")],
        &[],
    ));
    w.deliver(&reply(
        &invite,
        180,
        Some("fork-b"),
        &[("Contact", "<sip:b@127.0.0.1:5072>")],
        &[],
    ));
    w.deliver(&reply(
        &invite,
        200,
        Some("fork-b"),
        &[("Contact", "<sip:b@127.0.0.1:5072>")],
        ANSWER,
    ));
    let events = w.take_events();
    let tags: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { to_tag, .. } => to_tag.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec!["fork-a", "fork-b"], "each early dialog reported");
    assert_eq!(
        w.ep.early_dialogs(call),
        Some(&["fork-a".to_string(), "fork-b".to_string()][..])
    );
    assert!(matches!(events.last(), Some(Event::Answered { call: c, .. }) if *c == call));
    let ack_b = w.last("ACK ");
    assert!(ack_b.starts_with("ACK sip:b@127.0.0.1:5072"));
    assert_eq!(
        w.sent.last().unwrap().to.addr,
        "127.0.0.1:5072".parse().unwrap()
    );
    // Fork a answers too, late.
    w.deliver(&reply(
        &invite,
        200,
        Some("fork-a"),
        &[("Contact", "<sip:a@127.0.0.1:5071>")],
        ANSWER,
    ));
    let ack_a = w.last("ACK ");
    assert!(ack_a.starts_with("ACK sip:a@127.0.0.1:5071"), "{ack_a}");
    assert!(header(&ack_a, "To")[0].ends_with(";tag=fork-a"));
    let bye_a = w.last("BYE ");
    assert!(bye_a.starts_with("BYE sip:a@127.0.0.1:5071"));
    assert!(header(&bye_a, "To")[0].ends_with(";tag=fork-a"));
    assert_eq!(
        w.sent_starting("BYE ").len(),
        1,
        "the winner keeps its call"
    );
    assert!(w.events.is_empty(), "the late fork is not reported");
    w.deliver(&reply(&bye_a, 200, None, &[], &[]));
    assert_eq!(w.ep.call_count(), 1);
    // The winner's call is intact.
    w.ep.hangup(w.now, call).unwrap();
    w.flush();
    assert!(w.last("BYE ").starts_with("BYE sip:b@127.0.0.1:5072"));
}

#[test]
fn the_same_seed_replays_a_call_byte_for_byte() {
    let run = |seed| {
        let (mut w, call, _) = answered(seed, &[]);
        w.ep.hangup(w.now, call).unwrap();
        w.flush();
        w.sent.iter().map(|s| s.text.clone()).collect::<Vec<_>>()
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
    let _ = header_value;
}

mod registration {
    use super::*;
    use switchboard::sip::register::{Registration, RegistrationConfig, RegistrationState};

    const CONTACT_URI: &str = "sip:sb@127.0.0.1:5060";

    struct Reg {
        now: Instant,
        start: Instant,
        reg: Registration,
        sent: Vec<(u64, String)>,
    }

    impl Reg {
        fn new(seed: u64, expires: u32) -> Self {
            let now = Instant::now();
            let cfg = RegistrationConfig {
                registrar: "sip:127.0.0.1:5070".into(),
                peer: them(Transport::Udp),
                aor: "sip:alice@127.0.0.1".into(),
                contact: CONTACT_URI.into(),
                credentials: Some(Credentials::password("alice", "wonderland")),
                expires,
                local_addr: US.parse().unwrap(),
                user_agent: "switchboard-test".into(),
                timers: TimerConfig::default(),
            };
            let mut r = Reg {
                now,
                start: now,
                reg: Registration::new(cfg, Ids::with_seed(seed)),
                sent: Vec::new(),
            };
            r.reg.start(now);
            r.flush();
            r
        }

        fn secs(&self, s: u64) -> Instant {
            self.start + Duration::from_secs(s)
        }

        fn flush(&mut self) {
            let at = (self.now - self.start).as_millis() as u64;
            while let Some(t) = self.reg.poll_transmit() {
                assert_eq!(t.peer, them(Transport::Udp));
                self.sent.push((at, String::from_utf8(t.bytes).unwrap()));
            }
        }

        fn advance_to_ms(&mut self, ms: u64) {
            let until = self.start + Duration::from_millis(ms);
            step_until(
                self,
                until,
                |r| r.reg.poll_timeout(),
                |r, at| {
                    r.now = r.now.max(at);
                    r.reg.handle_timeout(r.now);
                    r.flush();
                },
            );
            self.now = self.now.max(until);
        }

        fn deliver(&mut self, bytes: &[u8]) -> bool {
            let taken = self.reg.handle_message(self.now, bytes);
            self.flush();
            taken
        }

        fn last(&self) -> String {
            self.sent.last().unwrap().1.clone()
        }

        /// The REGISTERs with a CSeq of their own (not retransmissions), with send times.
        fn attempts(&self) -> Vec<(u64, u32)> {
            let mut out: Vec<(u64, u32)> = Vec::new();
            for (at, text) in &self.sent {
                let cseq = parse_req(text).ess.cseq;
                if out.last().is_none_or(|(_, c)| *c != cseq) {
                    out.push((*at, cseq));
                }
            }
            out
        }
    }

    fn challenge(alg: Algorithm) -> String {
        NonceIssuer::new(b"registrar".to_vec(), "switchboard", 3600)
            .challenge(7, alg, false)
            .to_string()
    }

    #[test]
    fn a_401_is_answered_and_the_600_s_granted_are_refreshed_at_half_with_the_next_nonce_count() {
        let mut r = Reg::new(30, 3600);
        let first = r.last();
        assert!(
            first.starts_with("REGISTER sip:127.0.0.1:5070 SIP/2.0\r\n"),
            "{first}"
        );
        assert_eq!(header(&first, "Expires"), vec!["3600"]);
        assert_eq!(header(&first, "Contact"), vec!["<sip:sb@127.0.0.1:5060>"]);
        assert!(header(&first, "Authorization").is_empty());
        assert_eq!(r.reg.state(), RegistrationState::Registering);
        // A response to something else is not ours.
        let other = reply(
            &first.replace("branch=z9hG4bK", "branch=z9hG4bKx"),
            200,
            None,
            &[],
            &[],
        );
        assert!(!r.deliver(&other));
        let ch = challenge(Algorithm::Sha256);
        assert!(r.deliver(&reply(
            &first,
            401,
            Some("reg"),
            &[("WWW-Authenticate", &ch)],
            &[]
        )));
        let second = r.last();
        let (p1, p2) = (parse_req(&first), parse_req(&second));
        assert_eq!(
            p2.ess.call_id, p1.ess.call_id,
            "one Call-ID per registration"
        );
        assert_eq!(p2.ess.cseq, p1.ess.cseq + 1);
        assert_eq!(p2.ess.from_tag, p1.ess.from_tag);
        let ha1 = digest::ha1(Algorithm::Sha256, "alice", "switchboard", "wonderland");
        let a1 = digest::parse_authorization(header(&second, "Authorization")[0]).unwrap();
        assert_eq!(a1.nc, Some(1));
        assert!(digest::verify(&a1, "REGISTER", &ha1));
        r.advance_to_ms(200);
        assert!(r.deliver(&reply(
            &second,
            200,
            Some("reg"),
            &[
                ("Contact", "<sip:sb@127.0.0.1:5060>;expires=600"),
                ("Expires", "3600")
            ],
            &[],
        )));
        assert_eq!(
            r.reg.state(),
            RegistrationState::Registered {
                until: r.secs(600) + Duration::from_millis(200)
            }
        );
        r.advance_to_ms(200 + 299_999);
        assert_eq!(r.sent.len(), 2, "no refresh before half the granted time");
        r.advance_to_ms(200 + 300_000);
        let third = r.last();
        assert_eq!(r.sent.len(), 3);
        assert_eq!(parse_req(&third).ess.cseq, p1.ess.cseq + 2);
        let a3 = digest::parse_authorization(header(&third, "Authorization")[0]).unwrap();
        assert_eq!((a3.nonce.as_str(), a3.nc), (a1.nonce.as_str(), Some(2)));
        assert!(header(&third, "Authorization")[0].contains("nc=00000002"));
        assert!(digest::verify(&a3, "REGISTER", &ha1));
        r.deliver(&reply(
            &third,
            200,
            Some("reg"),
            &[("Contact", "<sip:sb@127.0.0.1:5060>;expires=600")],
            &[],
        ));
        assert!(
            matches!(r.reg.state(), RegistrationState::Registered { until } if until == r.secs(900) + Duration::from_millis(200))
        );
    }

    #[test]
    fn a_423_is_retried_with_min_expires() {
        let mut r = Reg::new(31, 60);
        let first = r.last();
        r.deliver(&reply(
            &first,
            423,
            Some("reg"),
            &[("Min-Expires", "1800")],
            &[],
        ));
        let second = r.last();
        assert_eq!(header(&second, "Expires"), vec!["1800"]);
        assert_eq!(parse_req(&second).ess.cseq, parse_req(&first).ess.cseq + 1);
        r.deliver(&reply(
            &second,
            200,
            Some("reg"),
            &[("Expires", "1800")],
            &[],
        ));
        assert_eq!(
            r.reg.state(),
            RegistrationState::Registered {
                until: r.secs(1800)
            }
        );
        r.advance_to_ms(899_999);
        assert_eq!(r.sent.len(), 2);
        r.advance_to_ms(900_000);
        assert_eq!(
            header(&r.last(), "Expires"),
            vec!["1800"],
            "the raised value stays"
        );
        // A 423 whose minimum is no larger cannot be satisfied: a failure.
        let third = r.last();
        r.deliver(&reply(
            &third,
            423,
            Some("reg"),
            &[("Min-Expires", "1800")],
            &[],
        ));
        assert!(matches!(
            r.reg.state(),
            RegistrationState::Failed { code: 423, .. }
        ));
    }

    #[test]
    fn a_503_with_retry_after_waits_that_long() {
        let mut r = Reg::new(32, 600);
        let first = r.last();
        r.deliver(&reply(
            &first,
            503,
            Some("reg"),
            &[("Retry-After", "120")],
            &[],
        ));
        assert_eq!(
            r.reg.state(),
            RegistrationState::Failed {
                code: 503,
                retry_at: r.secs(120)
            }
        );
        r.advance_to_ms(119_999);
        assert_eq!(r.sent.len(), 1);
        r.advance_to_ms(120_000);
        assert_eq!(r.sent.len(), 2);
        assert_eq!(r.reg.state(), RegistrationState::Registering);
        assert_eq!(r.sent[1].0, 120_000);
    }

    #[test]
    fn no_answer_times_out_by_timer_f_backs_off_and_retries_for_hours() {
        let mut r = Reg::new(33, 600);
        r.advance_to_ms(31_999);
        assert_eq!(r.reg.state(), RegistrationState::Registering);
        r.advance_to_ms(32_000);
        let RegistrationState::Failed {
            code: 408,
            retry_at,
        } = r.reg.state()
        else {
            panic!("{:?}", r.reg.state())
        };
        let wait = retry_at - r.secs(32);
        assert!(
            wait >= Duration::from_secs(24) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let hours = 6;
        r.advance_to_ms(hours * 3600 * 1000);
        let attempts = r.attempts();
        let starts: Vec<u64> = attempts.iter().map(|a| a.0).collect();
        let gaps: Vec<u64> = starts.windows(2).map(|p| p[1] - p[0] - 32_000).collect();
        // 30 s doubling to 10 min, each up to a fifth shorter.
        for (i, g) in gaps.iter().enumerate() {
            let base = (30_000u64 << i.min(10)).min(600_000);
            assert!(
                *g <= base && *g >= base - base / 5,
                "gap {i}: {g} vs {base}"
            );
        }
        assert!(
            gaps.iter().rev().take(10).all(|g| *g >= 480_000),
            "capped at 10 min"
        );
        assert!(attempts.len() > 30, "{} attempts", attempts.len());
        let last = *starts.last().unwrap();
        assert!(
            hours * 3600 * 1000 - last <= 632_000,
            "still retrying at the end"
        );
        // Every finished attempt went out 11 times: Timer E on UDP until F.
        for (_, cseq) in &attempts[..attempts.len() - 1] {
            let copies = r
                .sent
                .iter()
                .filter(|(_, t)| parse_req(t).ess.cseq == *cseq)
                .count();
            assert_eq!(copies, 11, "CSeq {cseq}");
        }
    }

    #[test]
    fn unregister_sends_expires_0_and_stops_refreshing() {
        let mut r = Reg::new(34, 600);
        let first = r.last();
        let ch = challenge(Algorithm::Md5);
        r.deliver(&reply(
            &first,
            401,
            Some("reg"),
            &[("WWW-Authenticate", &ch)],
            &[],
        ));
        let second = r.last();
        r.deliver(&reply(
            &second,
            200,
            Some("reg"),
            &[("Expires", "600")],
            &[],
        ));
        r.advance_to_ms(10_000);
        r.reg.unregister(r.now);
        r.flush();
        let bye = r.last();
        assert_eq!(header(&bye, "Expires"), vec!["0"]);
        assert_eq!(header(&bye, "Contact"), vec!["<sip:sb@127.0.0.1:5060>"]);
        let a = digest::parse_authorization(header(&bye, "Authorization")[0]).unwrap();
        assert_eq!(a.nc, Some(2));
        assert_eq!(r.reg.state(), RegistrationState::Unregistering);
        r.deliver(&reply(&bye, 200, Some("reg"), &[], &[]));
        assert_eq!(r.reg.state(), RegistrationState::Unregistered);
        assert_eq!(r.reg.poll_timeout(), None);
        r.advance_to_ms(3_600_000);
        assert_eq!(r.sent.len(), 3);
    }
}

#[test]
fn our_reinvite_and_refer_and_their_info_work_on_a_call_we_placed() {
    let (mut w, call, invite) = answered(23, &[]);
    w.take_events();
    let cseq = parse_req(&invite).ess.cseq;
    w.ep.reinvite(w.now, call, SDP.to_vec()).unwrap();
    w.flush();
    let re = w.last("INVITE ");
    assert!(re.starts_with("INVITE sip:bob@127.0.0.1:5070 SIP/2.0"));
    assert!(header(&re, "To")[0].ends_with(";tag=bobtag"));
    assert_eq!(parse_req(&re).ess.cseq, cseq + 1);
    w.deliver(&reply(&re, 200, None, &[CONTACT], ANSWER));
    let ack = w.last("ACK ");
    assert_eq!(parse_req(&ack).ess.cseq, cseq + 1);
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::ReInviteAnswered { call: c, code: 200, sdp: Some(_) }] if *c == call
    ));
    w.ep.refer(w.now, call, "sip:carol@127.0.0.1:5090").unwrap();
    w.flush();
    let refer = w.last("REFER ");
    assert_eq!(
        header(&refer, "Refer-To"),
        vec!["<sip:carol@127.0.0.1:5090>"]
    );
    assert_eq!(header(&refer, "Referred-By"), vec!["<sip:sb@127.0.0.1>"]);
    w.deliver(&reply(&refer, 202, None, &[], &[]));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::ReferAnswered { code: 202, .. }]
    ));
    let info = String::from_utf8(their_request(&invite, "INFO", "bobtag", 3, &[]))
        .unwrap()
        .replace(
            "Content-Length: 0",
            "Content-Type: application/dtmf-relay\r\nContent-Length: 10",
        )
        + "Signal=7\r\n";
    w.deliver(info.as_bytes());
    assert!(w.last("SIP/2.0 ").starts_with("SIP/2.0 200 OK"));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Info { call: c, content_type: Some(ct), body }]
            if *c == call && ct == "application/dtmf-relay" && body == b"Signal=7\r\n"
    ));
}

#[test]
fn without_an_offer_the_2xx_offer_is_answered_in_the_ack() {
    let mut w = World::new(24);
    let mut out = outgoing(Transport::Udp);
    out.sdp = None;
    let call = w.call(out);
    let invite = w.last("INVITE ");
    assert!(header(&invite, "Content-Type").is_empty());
    assert_eq!(header(&invite, "Content-Length"), vec!["0"]);
    w.deliver(&reply(&invite, 200, Some("lo"), &[CONTACT], SDP));
    assert!(matches!(
        w.take_events().as_slice(),
        [Event::Answered { call: c, sdp: Some(offer) }] if *c == call && offer == SDP
    ));
    assert!(
        w.sent_starting("ACK ").is_empty(),
        "the ACK waits for our answer"
    );
    // The 2xx again meanwhile: still no ACK without the answer.
    w.deliver(&reply(&invite, 200, Some("lo"), &[CONTACT], SDP));
    assert!(w.sent_starting("ACK ").is_empty());
    w.ep.acknowledge(w.now, call, ANSWER.to_vec()).unwrap();
    w.flush();
    let ack = w.last("ACK ");
    assert_eq!(header(&ack, "Content-Type"), vec!["application/sdp"]);
    assert!(ack.ends_with(std::str::from_utf8(ANSWER).unwrap()));
    assert_eq!(parse_req(&ack).ess.cseq, parse_req(&invite).ess.cseq);
    // Only once; a retransmitted 2xx now gets the same ACK.
    assert_eq!(
        w.ep.acknowledge(w.now, call, ANSWER.to_vec()),
        Err(switchboard::sip::endpoint::CommandError::WrongState)
    );
    w.deliver(&reply(&invite, 200, Some("lo"), &[CONTACT], SDP));
    let acks = w.sent_starting("ACK ");
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].text, acks[1].text);
    // With an offer of ours the ACK goes at once and acknowledge has nothing to do.
    let (mut w, call, _) = answered(25, &[]);
    assert_eq!(
        w.ep.acknowledge(w.now, call, ANSWER.to_vec()),
        Err(switchboard::sip::endpoint::CommandError::WrongState)
    );
}

mod registration_refused {
    use super::*;
    use switchboard::sip::register::{Registration, RegistrationConfig, RegistrationState};

    #[test]
    fn refused_credentials_fail_each_attempt_and_a_later_fresh_nonce_is_answered_again() {
        let start = Instant::now();
        let mut reg = Registration::new(
            RegistrationConfig {
                registrar: "sip:127.0.0.1:5070".into(),
                peer: them(Transport::Udp),
                aor: "sip:alice@127.0.0.1".into(),
                contact: "sip:sb@127.0.0.1:5060".into(),
                credentials: Some(Credentials::password("alice", "wonderland")),
                expires: 600,
                local_addr: US.parse().unwrap(),
                user_agent: "t".into(),
                timers: TimerConfig::default(),
            },
            Ids::with_seed(40),
        );
        reg.start(start);
        let mut now = start;
        let mut last = String::from_utf8(reg.poll_transmit().unwrap().bytes).unwrap();
        let issuer = NonceIssuer::new(b"r".to_vec(), "switchboard", 3600);
        let same = issuer.challenge(1, Algorithm::Md5, false).to_string();
        let reply_to = |reg: &mut Registration, now: Instant, last: &str, ch: &str| {
            let r = reply(last, 401, Some("t"), &[("WWW-Authenticate", ch)], &[]);
            assert!(reg.handle_message(now, &r));
            reg.poll_transmit()
                .map(|t| String::from_utf8(t.bytes).unwrap())
        };
        // Answered once, then the same nonce again: refused, for many attempts in a row.
        for attempt in 0..6 {
            if attempt == 0 {
                last = reply_to(&mut reg, now, &last, &same).unwrap();
            }
            assert!(
                reply_to(&mut reg, now, &last, &same).is_none(),
                "attempt {attempt}"
            );
            let RegistrationState::Failed {
                code: 401,
                retry_at,
            } = reg.state()
            else {
                panic!("{:?}", reg.state())
            };
            now = retry_at;
            reg.handle_timeout(now);
            last = String::from_utf8(reg.poll_transmit().unwrap().bytes).unwrap();
            assert!(
                !header(&last, "Authorization").is_empty(),
                "preemptive credentials"
            );
        }
        // The registrar moves to a new nonce: answered at once, however many failures before.
        let fresh = issuer.challenge(2, Algorithm::Md5, false).to_string();
        let answered = reply_to(&mut reg, now, &last, &fresh).expect("answered");
        let a = digest::parse_authorization(header(&answered, "Authorization")[0]).unwrap();
        assert_eq!((a.nonce, a.nc), (issuer.issue(2), Some(1)));
        let ok = reply(&answered, 200, Some("t"), &[("Expires", "600")], &[]);
        assert!(reg.handle_message(now, &ok));
        assert!(matches!(reg.state(), RegistrationState::Registered { .. }));
    }
}

/// Our endpoint calls another endpoint of ours over a network that loses a fifth of the
/// datagrams and reorders them: every call is answered, confirmed and ended on both sides.
#[test]
fn two_endpoints_call_each_other_over_a_lossy_reordering_network() {
    for seed in [50, 60, 70, 80, 90] {
        calls_between_endpoints(seed, Transport::Udp, 0.2);
    }
}

/// The same over TCP, which loses nothing: no retransmission is needed, and none is sent.
#[test]
fn two_endpoints_call_each_other_over_tcp() {
    calls_between_endpoints(100, Transport::Tcp, 0.0);
}

fn calls_between_endpoints(seed: u64, transport: Transport, loss: f64) {
    const B: &str = "127.0.0.1:5070";
    let peer = |a: &str| Peer {
        transport,
        addr: a.parse().unwrap(),
    };
    let endpoint = |addr: &str, seed| {
        Endpoint::with_ids(
            EndpointConfig {
                timers: TimerConfig::default(),
                local_addr: addr.parse().unwrap(),
                user_agent: "t".into(),
            },
            Ids::with_seed(seed),
        )
    };
    let start = Instant::now();
    let (mut a, mut b) = (endpoint(US, seed), endpoint(B, seed + 1));
    let mut rng = fastrand::Rng::with_seed(seed + 2);
    // (due, seq, to_b, bytes)
    let mut wire: Vec<(Instant, u64, bool, Vec<u8>)> = Vec::new();
    let mut seq = 0;
    let (mut answered, mut confirmed, mut a_ended, mut b_ended) = (0, 0, 0, 0);
    let calls = 20;
    let mut placed = 0;
    let mut now = start;
    let mut live: Option<CallHandle> = None;
    let mut sent = 0;
    for _ in 0..200_000 {
        if placed < calls && a.call_count() == 0 && b.call_count() == 0 {
            let mut out = outgoing(transport);
            out.target = format!("sip:b@{B}");
            out.peer = peer(B);
            a.invite(now, out).unwrap();
            placed += 1;
        }
        for (ep, to_b) in [(&mut a, true), (&mut b, false)] {
            while let Some(t) = ep.poll_transmit() {
                assert_eq!(t.peer.transport, transport);
                sent += 1;
                if rng.f64() < loss {
                    continue;
                }
                seq += 1;
                let due = now + Duration::from_millis(2 + rng.u64(0..40));
                wire.push((due, seq, to_b, t.bytes));
            }
        }
        let mut progressed = false;
        while let Some(e) = a.poll_event() {
            progressed = true;
            match e {
                Event::Answered { call, sdp } => {
                    assert_eq!(sdp.as_deref(), Some(ANSWER));
                    answered += 1;
                    live = Some(call);
                }
                Event::Ended { reason, .. } => {
                    assert_eq!(reason, EndReason::LocalBye);
                    a_ended += 1;
                }
                Event::Progress { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        while let Some(e) = b.poll_event() {
            progressed = true;
            match e {
                Event::Incoming { call, .. } => {
                    b.ring(now, call, None).unwrap();
                    b.answer(now, call, ANSWER.to_vec()).unwrap();
                }
                Event::Confirmed { .. } => {
                    confirmed += 1;
                    // The caller hangs up once the callee saw the ACK (lost ACKs are sent
                    // again for each 2xx the callee repeats).
                    if let Some(call) = live.take() {
                        a.hangup(now, call).unwrap();
                    }
                }
                Event::Ended { reason, .. } => {
                    assert_eq!(reason, EndReason::RemoteBye);
                    b_ended += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        if progressed {
            continue;
        }
        let next = wire
            .iter()
            .map(|m| m.0)
            .chain(a.poll_timeout())
            .chain(b.poll_timeout())
            .min();
        let Some(next) = next else {
            break;
        };
        now = now.max(next);
        wire.sort_by_key(|m| (m.0, m.1));
        let due: Vec<_> = wire.iter().take_while(|m| m.0 <= now).cloned().collect();
        wire.drain(..due.len());
        for (_, _, to_b, bytes) in due {
            if to_b {
                b.handle_message(now, peer(US), &bytes);
            } else {
                a.handle_message(now, peer(B), &bytes);
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    assert_eq!(placed, calls);
    assert_eq!(
        (answered, confirmed, a_ended, b_ended),
        (calls, calls, calls, calls)
    );
    assert_eq!((a.call_count(), b.call_count()), (0, 0));
    assert_eq!((a.transaction_count(), b.transaction_count()), (0, 0));
    assert!(now - start < Duration::from_secs(3600), "{:?}", now - start);
    if loss == 0.0 {
        // INVITE, 100, 180, 200, ACK, BYE, 200 per call.
        assert_eq!(sent, 7 * calls);
    }
}
