//! The SIP endpoint and a test caller talk over an emulated network that loses, delays and
//! reorders datagrams, in virtual time: 64·T1 of retransmissions pass in microseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::uac::{offer, Uac, UacState};
use switchboard::sdp::{parse, LocalSession};
use switchboard::sip::dialog::{Peer, Transport};
use switchboard::sip::endpoint::{CallHandle, EndReason, Endpoint, EndpointConfig, Event};
use switchboard::sip::ids::Ids;
use switchboard::sip::session_timer::SessionTimerConfig;
use switchboard::sip::transaction::TimerConfig;

const SERVER: &str = "127.0.0.1:5060";
const CLIENT: &str = "127.0.0.1:5070";

/// An endpoint whose tags, branches and first CSeqs follow from `seed`.
fn endpoint(seed: u64) -> Endpoint {
    Endpoint::with_ids(
        EndpointConfig {
            timers: TimerConfig::default(),
            local_addr: SERVER.parse().unwrap(),
            user_agent: "switchboard-test".into(),
        },
        Ids::with_seed(seed),
    )
}

/// A caller whose Call-ID, tag and branches follow from `seed` (not the endpoint's sequence).
fn caller(seed: u64) -> Uac {
    Uac::seeded(
        CLIENT.parse().unwrap(),
        SERVER.parse().unwrap(),
        false,
        !seed,
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

/// A lossy, reordering datagram network with a seeded random source.
struct Net {
    rng: fastrand::Rng,
    loss: f64,
    jitter_ms: u64,
    in_flight: Vec<(Instant, u64, Dir, Vec<u8>)>,
    seq: u64,
    delivered: usize,
    dropped: usize,
}

impl Net {
    fn new(seed: u64, loss: f64, jitter_ms: u64) -> Self {
        Net {
            rng: fastrand::Rng::with_seed(seed),
            loss,
            jitter_ms,
            in_flight: Vec::new(),
            seq: 0,
            delivered: 0,
            dropped: 0,
        }
    }
    fn send(&mut self, now: Instant, dir: Dir, bytes: Vec<u8>) {
        if self.rng.f64() < self.loss {
            self.dropped += 1;
            return;
        }
        let delay = 2 + self.rng.u64(0..=self.jitter_ms);
        self.seq += 1;
        self.in_flight
            .push((now + Duration::from_millis(delay), self.seq, dir, bytes));
    }
    fn next(&self) -> Option<Instant> {
        self.in_flight.iter().map(|m| m.0).min()
    }
    fn pop_due(&mut self, now: Instant) -> Vec<(Dir, Vec<u8>)> {
        let mut due: Vec<_> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.0, m.1));
        self.delivered += due.len();
        due.into_iter().map(|m| (m.2, m.3)).collect()
    }
}

/// How the test plays the call layer above the endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Answer,
    RingOnly,
}

struct World {
    now: Instant,
    start: Instant,
    ep: Endpoint,
    uac: Uac,
    net: Net,
    policy: Policy,
    incoming: Vec<CallHandle>,
    confirmed: usize,
    reinvites: usize,
    reinvite_answers: Vec<u16>,
    refer_answers: Vec<u16>,
    progress: Vec<(u16, bool)>,
    ended: Vec<EndReason>,
    server_sent: Vec<(u64, Vec<u8>)>,
    /// What the caller sent, with its send times (ms since the start).
    client_sent: Vec<(u64, Vec<u8>)>,
    /// UPDATE offers the call layer answered.
    updates: usize,
    /// Offers (re-INVITE, UPDATE) are left unanswered, for the test to see them pending.
    defer_offers: bool,
    /// Our SDP side, answering UPDATE offers the way the call layer does.
    session: LocalSession,
    /// A moment `run_until` must stop at even when nothing happens then.
    wake: Option<Instant>,
}

impl World {
    fn new(seed: u64, loss: f64, jitter_ms: u64, policy: Policy) -> Self {
        let now = Instant::now();
        World {
            now,
            start: now,
            ep: endpoint(seed),
            uac: caller(seed),
            net: Net::new(seed, loss, jitter_ms),
            policy,
            incoming: Vec::new(),
            confirmed: 0,
            reinvites: 0,
            reinvite_answers: Vec::new(),
            refer_answers: Vec::new(),
            progress: Vec::new(),
            ended: Vec::new(),
            server_sent: Vec::new(),
            client_sent: Vec::new(),
            updates: 0,
            defer_offers: false,
            session: LocalSession::new(7, "127.0.0.1:20000".parse().unwrap()),
            wake: None,
        }
    }

    /// A world whose caller's call to `echo` is answered and confirmed, on a clean network.
    fn answered(seed: u64) -> Self {
        Self::answered_with(seed, "")
    }

    /// Like [`World::answered`], with extra header lines in the caller's INVITE.
    fn answered_with(seed: u64, invite_headers: &str) -> Self {
        let mut w = World::new(seed, 0.0, 5, Policy::Answer);
        w.uac.invite_headers = invite_headers.to_string();
        let now = w.now;
        w.uac
            .invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
        assert!(w.run_until(|w| w.confirmed == 1));
        w
    }

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: CLIENT.parse::<SocketAddr>().unwrap(),
        }
    }

    fn answer_sdp() -> Vec<u8> {
        offer("127.0.0.1", 20000, "sendrecv")
    }

    /// Moves messages and events until `done` holds or nothing is left to happen; bounded.
    fn run_until(&mut self, mut done: impl FnMut(&World) -> bool) -> bool {
        for _ in 0..10_000 {
            self.shuttle();
            if done(self) {
                return true;
            }
            let next = [
                self.net.next(),
                self.ep.poll_timeout(),
                self.uac.poll_timeout(),
                self.wake.filter(|w| *w > self.now),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return done(self);
            };
            self.now = self.now.max(next);
            for (dir, bytes) in self.net.pop_due(self.now) {
                match dir {
                    Dir::ToServer => self.ep.handle_message(self.now, Self::peer(), &bytes),
                    Dir::ToClient => self.uac.handle(self.now, &bytes),
                }
            }
            self.ep.handle_timeout(self.now);
            self.uac.handle_timeout(self.now);
        }
        false
    }

    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.ep.poll_transmit() {
                let at = (self.now - self.start).as_millis() as u64;
                self.server_sent.push((at, t.bytes.clone()));
                self.net.send(self.now, Dir::ToClient, t.bytes);
                moved = true;
            }
            while let Some(m) = self.uac.outbox.pop_front() {
                let at = (self.now - self.start).as_millis() as u64;
                self.client_sent.push((at, m.clone()));
                self.net.send(self.now, Dir::ToServer, m);
                moved = true;
            }
            while let Some(ev) = self.ep.poll_event() {
                moved = true;
                match ev {
                    Event::Incoming { call, .. } => {
                        self.incoming.push(call);
                        self.ep.ring(self.now, call, None).unwrap();
                        if self.policy == Policy::Answer {
                            self.ep.answer(self.now, call, Self::answer_sdp()).unwrap();
                        }
                    }
                    Event::Confirmed { .. } => self.confirmed += 1,
                    Event::ReInvite { .. } if self.defer_offers => self.reinvites += 1,
                    Event::Update { .. } if self.defer_offers => self.updates += 1,
                    Event::Update { call, sdp } => {
                        self.updates += 1;
                        // Negotiated like the call layer does; a broken offer gets 488.
                        let answer = parse(&sdp).ok().and_then(|o| self.session.answer(&o).ok());
                        match answer {
                            Some(a) => self
                                .ep
                                .answer_reinvite(self.now, call, a.sdp.to_string().into_bytes())
                                .unwrap(),
                            None => self
                                .ep
                                .reject_reinvite(self.now, call, 488, "Not Acceptable Here", None)
                                .unwrap(),
                        }
                    }
                    Event::ReInvite { call, sdp } => {
                        self.reinvites += 1;
                        assert!(sdp.is_some());
                        self.ep
                            .answer_reinvite(self.now, call, offer("127.0.0.1", 20000, "recvonly"))
                            .unwrap();
                    }
                    Event::Info { .. } => {}
                    Event::ReInviteAnswered { code, .. } => self.reinvite_answers.push(code),
                    Event::ReferAnswered { code, .. } => self.refer_answers.push(code),
                    Event::TransferProgress {
                        status, terminated, ..
                    } => self.progress.push((status, terminated)),
                    Event::Ended { reason, .. } => self.ended.push(reason),
                    // Events of calls we place; none here.
                    Event::Progress { .. } | Event::Answered { .. } | Event::Failed { .. } => {}
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until `at` (stopping there even when nothing is due then).
    fn advance_to(&mut self, at: Instant) {
        self.wake = Some(at);
        assert!(self.run_until(|w| w.now >= at));
        self.wake = None;
    }
}

#[test]
fn calls_survive_loss_and_reordering() {
    let real = std::time::Instant::now();
    let mut established = 0;
    for seed in 0..40 {
        let mut w = World::new(seed, 0.25, 120, Policy::Answer);
        let now = w.now;
        w.uac
            .invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
        let up = w.run_until(|w| w.uac.state == UacState::Confirmed && w.confirmed == 1);
        if !up {
            // With 25% loss a call may legitimately fail: then the server must clean up alone.
            assert!(
                w.run_until(|w| w.ep.call_count() == 0),
                "seed {seed}: call leaked"
            );
            continue;
        }
        established += 1;
        assert_eq!(
            w.incoming.len(),
            1,
            "seed {seed}: retransmitted INVITE made a second call"
        );
        let now = w.now;
        w.uac.request(now, "BYE", "", b"");
        let closed = w.run_until(|w| !w.ended.is_empty() && w.ep.call_count() == 0);
        assert!(closed, "seed {seed}: BYE never completed: {:?}", w.ended);
        // The BYE may be lost 7 times in a row only with tiny odds; a timeout ends it as well.
        assert!(
            matches!(w.ended[0], EndReason::RemoteBye),
            "seed {seed}: {:?}",
            w.ended
        );
        // Let every transaction expire: nothing may linger.
        w.run_until(|_| false);
        assert_eq!(w.ep.transaction_count(), 0, "seed {seed}");
        assert!(w.elapsed() < Duration::from_secs(120));
    }
    assert!(
        established >= 30,
        "only {established}/40 calls set up at 25% loss"
    );
    assert!(real.elapsed() < Duration::from_secs(10));
}

#[test]
fn missing_ack_retransmits_the_2xx_then_ends_the_call_with_bye() {
    let mut w = World::new(1, 0.0, 0, Policy::Answer);
    // A client that never ACKs: feed the INVITE by hand and never deliver anything back.
    let now = w.now;
    w.uac
        .invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
    let invite = w.uac.outbox.pop_front().unwrap();
    w.uac = caller(2);
    w.ep.handle_message(now, World::peer(), &invite);
    w.net.loss = 1.0;
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::AckTimeout]);
    let oks: Vec<u64> = w
        .server_sent
        .iter()
        .filter(|(_, b)| b.starts_with(b"SIP/2.0 200"))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        oks,
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let bye = w
        .server_sent
        .iter()
        .find(|(_, b)| b.starts_with(b"BYE "))
        .expect("a BYE after 64*T1");
    assert_eq!(bye.0, 32_000);
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let mut w = World::new(2, 0.0, 10, Policy::RingOnly);
    let now = w.now;
    w.uac
        .invite(now, "ring", &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(w.run_until(|w| w.uac.state == UacState::Ringing));
    let now = w.now;
    w.uac.cancel(now);
    assert!(w.run_until(|w| {
        w.uac.state == UacState::Terminated
            && !w.ended.is_empty()
            && w.uac.statuses.iter().any(|s| s.0 == "CANCEL")
    }));
    assert_eq!(w.ended, vec![EndReason::Cancelled]);
    assert!(
        w.uac.statuses.contains(&("CANCEL".into(), 200)),
        "{:?}",
        w.uac.statuses
    );
    assert!(w.uac.statuses.contains(&("INVITE".into(), 487)));
    assert_eq!(w.ep.call_count(), 0);
    // The 487 was ACKed, so Timer G stops: at most one copy of the 487 went out.
    assert!(w.run_until(|w| w.ep.transaction_count() == 0));
    let n487 = w
        .server_sent
        .iter()
        .filter(|(_, b)| b.starts_with(b"SIP/2.0 487"))
        .count();
    assert_eq!(n487, 1);
}

#[test]
fn server_hangup_sends_bye_and_forgets_the_call_on_200() {
    let mut w = World::answered(3);
    let call = w.incoming[0];
    let now = w.now;
    w.ep.hangup(now, call).unwrap();
    assert!(w.run_until(|w| w.ep.call_count() == 0));
    assert_eq!(w.ended, vec![EndReason::LocalBye]);
    assert_eq!(w.uac.state, UacState::Terminated);
    assert_eq!(w.uac.requests_in, vec!["BYE".to_string()]);
}

#[test]
fn reinvite_to_hold_is_answered_and_acked() {
    let mut w = World::answered(4);
    let now = w.now;
    let acks_before = w.uac.acks_sent;
    w.uac.reinvite(now, &offer("127.0.0.1", 40000, "sendonly"));
    assert!(w.run_until(|w| w.uac.acks_sent > acks_before));
    assert_eq!(w.reinvites, 1);
    assert_eq!(w.uac.statuses.iter().filter(|s| s.1 == 200).count(), 2);
    // The re-INVITE's 2xx stops being retransmitted once ACKed.
    let sent_before = w.server_sent.len();
    let until = w.now + Duration::from_secs(10);
    w.run_until(|w| w.now >= until);
    assert_eq!(w.server_sent.len(), sent_before);
    assert_eq!(w.ep.call_count(), 1);
}

#[test]
fn requests_outside_a_dialog_are_answered_by_the_endpoint() {
    let mut ep = endpoint(3);
    let now = Instant::now();
    let cases: [(&str, &str, u16); 8] = [
        ("BYE", ";tag=nosuch", 481),
        ("INFO", "", 481),
        ("OPTIONS", "", 200),
        ("SUBSCRIBE", "", 405),
        ("NOTIFY", "", 481),
        ("NOTIFY", ";tag=nosuch", 481),
        ("REFER", "", 405),
        ("UPDATE", ";tag=nosuch", 481),
    ];
    for (i, (method, to_tag, code)) in cases.into_iter().enumerate() {
        let m = format!(
            "{method} sip:x@{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT};branch=z9hG4bK{method}{i}\r\n\
From: <sip:a@{CLIENT}>;tag=1\r\nTo: <sip:x@{SERVER}>{to_tag}\r\nCall-ID: c-{method}{i}\r\n\
CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        ep.handle_message(now, World::peer(), m.as_bytes());
        let t = ep.poll_transmit().expect("an answer");
        let text = String::from_utf8(t.bytes).unwrap();
        assert!(
            text.starts_with(&format!("SIP/2.0 {code} ")),
            "{method}: {text}"
        );
        if method == "OPTIONS" {
            assert!(text.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"));
            assert!(text.contains("Accept: application/sdp"));
        }
        if code == 405 {
            let allow = text
                .lines()
                .find(|l| l.starts_with("Allow: "))
                .expect(&text);
            assert!(
                allow.contains("NOTIFY") && !allow.contains(method),
                "{allow}"
            );
        }
        // A retransmission of the same request gets the same answer from the transaction.
        ep.handle_message(now, World::peer(), m.as_bytes());
        let again = String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap();
        assert_eq!(again, text);
    }
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn retransmitted_invite_is_absorbed_by_its_transaction() {
    let mut ep = endpoint(4);
    let now = Instant::now();
    let mut uac = caller(4);
    uac.invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
    let invite = uac.outbox.pop_front().unwrap();
    ep.handle_message(now, World::peer(), &invite);
    ep.handle_message(now + Duration::from_millis(500), World::peer(), &invite);
    let sent: Vec<String> = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| String::from_utf8(t.bytes).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.starts_with("SIP/2.0 100 Trying")));
    let events: Vec<Event> = std::iter::from_fn(|| ep.poll_event()).collect();
    assert_eq!(events.len(), 1, "one call, not two");
}

#[test]
fn an_idle_confirmed_call_keeps_no_transaction_after_64_t1() {
    let mut w = World::answered(5);
    let later = w.now + Duration::from_secs(40);
    w.ep.handle_timeout(later);
    assert_eq!(w.ep.transaction_count(), 0);
    assert_eq!(w.ep.call_count(), 1);
}

#[test]
fn server_reinvite_is_answered_and_acked_and_glare_gets_491() {
    let mut w = World::answered(6);
    let call = w.incoming[0];
    let now = w.now;
    w.ep.reinvite(now, call, offer("127.0.0.1", 20000, "sendonly"))
        .unwrap();
    assert!(
        w.ep.reinvite(now, call, offer("127.0.0.1", 20000, "sendonly"))
            .is_err(),
        "one re-INVITE at a time"
    );
    // The caller re-INVITEs at the same moment: the server must refuse with 491.
    w.uac.reinvite(now, &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(w.run_until(|w| w.uac.statuses.iter().any(|s| s.1 == 491)));
    assert!(w.run_until(|w| w.uac.requests_in.iter().filter(|m| *m == "ACK").count() == 1));
    assert_eq!(w.uac.requests_in[0], "INVITE");
    assert_eq!(
        w.reinvites, 0,
        "the glaring re-INVITE never reached the call layer"
    );
    assert!(w.run_until(|w| !w.reinvite_answers.is_empty()));
    assert_eq!(w.reinvite_answers, vec![200]);
    assert!(w.ended.is_empty());
    // The call goes on: once the 200 was ACKed a new re-INVITE from us is allowed.
    let now = w.now;
    assert!(w
        .ep
        .reinvite(now, call, offer("127.0.0.1", 20000, "sendrecv"))
        .is_ok());
}

/// The messages the server sent whose first line starts with `start`, with their send times.
fn sent_starting(w: &World, start: &str) -> Vec<(u64, String)> {
    w.server_sent
        .iter()
        .filter(|(_, b)| b.starts_with(start.as_bytes()))
        .map(|(t, b)| (*t, String::from_utf8(b.clone()).unwrap()))
        .collect()
}

fn header<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

fn cseq_of(text: &str) -> u32 {
    header(text, "CSeq")[0]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A NOTIFY of the refer subscription from the caller.
fn notify(w: &mut World, event: &str, state: &str, sipfrag: &[u8]) {
    let now = w.now;
    let extra = format!("Event: {event}\r\nSubscription-State: {state}\r\n");
    w.uac
        .request_with(now, "NOTIFY", &extra, "message/sipfrag", sipfrag);
}

fn statuses_of(w: &World, method: &str) -> Vec<u16> {
    w.uac
        .statuses
        .iter()
        .filter(|s| s.0 == method)
        .map(|s| s.1)
        .collect()
}

#[test]
fn refer_carries_transfer_headers_in_the_dialog_and_202_is_reported() {
    let mut w = World::answered_with(
        7,
        "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
    );
    w.uac.reply_codes.push(("REFER".into(), 202));
    let call = w.incoming[0];
    let now = w.now;
    w.ep.send_info(now, call, "application/dtmf", b"5".to_vec())
        .unwrap();
    w.ep.refer(now, call, "sip:bob@example.com").unwrap();
    assert!(w.run_until(|w| !w.refer_answers.is_empty()));
    assert_eq!(w.refer_answers, vec![202]);
    assert!(w.ended.is_empty());
    assert_eq!(w.ep.call_count(), 1);

    let refers = sent_starting(&w, "REFER ");
    assert_eq!(refers.len(), 1, "answered at once: no retransmission");
    let refer = &refers[0].1;
    assert!(
        refer.starts_with(&format!("REFER sip:tester@{CLIENT} SIP/2.0\r\n")),
        "{refer}"
    );
    assert_eq!(header(refer, "Refer-To"), vec!["<sip:bob@example.com>"]);
    assert_eq!(
        header(refer, "Referred-By"),
        vec![format!("<sip:echo@{SERVER}>")]
    );
    assert_eq!(
        header(refer, "Route"),
        vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(header(refer, "Contact").len(), 1);
    let info = &sent_starting(&w, "INFO ")[0].1;
    assert_eq!(cseq_of(refer), cseq_of(info) + 1);
    assert!(header(refer, "CSeq")[0].ends_with(" REFER"));

    let switchboard::sip::message::Inbound::Request(p) =
        switchboard::sip::message::classify(refer.as_bytes(), false)
    else {
        panic!("{refer}")
    };
    assert_eq!(p.ess.from_tag, w.uac.to_tag, "From carries our tag");
    assert_eq!(
        p.ess.to_tag.as_deref(),
        Some(w.uac.from_tag.as_str()),
        "To carries the caller's tag"
    );
    assert_eq!(p.ess.call_id, w.uac.call_id);
}

#[test]
fn notify_progress_is_answered_200_and_reported_until_terminated() {
    let mut w = World::answered(8);
    w.uac.reply_codes.push(("REFER".into(), 202));
    let call = w.incoming[0];
    let now = w.now;
    w.ep.refer(now, call, "tel:+15550100").unwrap();
    assert!(w.run_until(|w| w.refer_answers == vec![202]));
    let refer_cseq = cseq_of(&sent_starting(&w, "REFER ")[0].1);

    let id_other = format!("refer;id={}", refer_cseq + 7);
    let id_ours = format!("refer;id={refer_cseq}");
    let notifies: [(&str, &str, &[u8]); 5] = [
        ("refer", "active;expires=60", b"SIP/2.0 100 Trying\r\n"),
        // A fragment we cannot read is still acknowledged, reported with status 0.
        ("refer", "active;expires=60", b"garbage"),
        // A subscription id naming another REFER matches nothing.
        (&id_other, "active", b"SIP/2.0 180 Ringing"),
        (
            &id_ours,
            "terminated;reason=noresource",
            b"SIP/2.0 200 OK\r\n",
        ),
        // Once terminated, the subscription is gone.
        ("refer", "terminated", b"SIP/2.0 200 OK"),
    ];
    for (n, (event, state, frag)) in notifies.into_iter().enumerate() {
        notify(&mut w, event, state, frag);
        assert!(w.run_until(|w| statuses_of(w, "NOTIFY").len() == n + 1));
    }
    assert_eq!(w.progress, vec![(100, false), (0, false), (200, true)]);
    assert_eq!(statuses_of(&w, "NOTIFY"), vec![200, 200, 481, 200, 481]);
    assert_eq!(w.progress.len(), 3);
    assert!(w.ended.is_empty());
}

#[test]
fn unanswered_refer_is_retransmitted_by_timer_e_then_times_out_as_408() {
    let mut w = World::answered(9);
    let call = w.incoming[0];
    w.net.loss = 1.0;
    let t0 = w.elapsed().as_millis() as u64;
    let now = w.now;
    w.ep.refer(now, call, "sips:bob@example.com").unwrap();
    assert!(w.run_until(|w| !w.refer_answers.is_empty()));
    assert_eq!(w.refer_answers, vec![408]);
    let times: Vec<u64> = sent_starting(&w, "REFER ")
        .iter()
        .map(|(t, _)| t - t0)
        .collect();
    assert_eq!(
        times,
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(w.elapsed().as_millis() as u64 - t0, 32_000, "Timer F");
    // A dialog whose peer stopped answering is ended (RFC 3261 §12.2.1.2).
    assert_eq!(w.ended, vec![EndReason::Timeout]);
    assert_eq!(sent_starting(&w, "BYE ").len(), 1);
}

#[test]
fn refused_refer_leaves_the_call_and_no_subscription() {
    let mut w = World::answered(10);
    w.uac.reply_codes.push(("REFER".into(), 603));
    let call = w.incoming[0];
    let now = w.now;
    w.ep.refer(now, call, "sip:bob@example.com").unwrap();
    assert!(w.run_until(|w| !w.refer_answers.is_empty()));
    assert_eq!(w.refer_answers, vec![603]);
    notify(&mut w, "refer", "terminated", b"SIP/2.0 200 OK");
    assert!(w.run_until(|w| !statuses_of(w, "NOTIFY").is_empty()));
    assert_eq!(statuses_of(&w, "NOTIFY"), vec![481]);
    assert!(w.progress.is_empty());
    assert!(w.ended.is_empty());
    assert_eq!(w.ep.call_count(), 1);
}

#[test]
fn refer_answered_481_ends_the_call() {
    let mut w = World::answered(11);
    w.uac.reply_codes.push(("REFER".into(), 481));
    let call = w.incoming[0];
    let now = w.now;
    w.ep.refer(now, call, "sip:bob@example.com").unwrap();
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.refer_answers, vec![481]);
    assert_eq!(w.ended, vec![EndReason::Timeout]);
}

#[test]
fn bad_refer_targets_and_states_are_refused_without_sending() {
    use switchboard::sip::endpoint::CommandError;
    use switchboard::sip::refer::TargetError;
    let mut w = World::answered(12);
    let call = w.incoming[0];
    let now = w.now;
    let txs = w.ep.transaction_count();
    for (target, why) in [
        ("bob", TargetError::Scheme),
        ("http://example.com/", TargetError::Scheme),
        ("sip:", TargetError::Empty),
        (
            "sip:bob@x\r\nVia: SIP/2.0/UDP evil",
            TargetError::Characters,
        ),
    ] {
        assert_eq!(
            w.ep.refer(now, call, target),
            Err(CommandError::InvalidTarget(why)),
            "{target:?}"
        );
    }
    assert_eq!(
        w.ep.refer(now, CallHandle(999), "sip:bob@example.com"),
        Err(CommandError::NoSuchCall)
    );
    assert!(w.ep.poll_transmit().is_none());
    assert_eq!(w.ep.transaction_count(), txs);

    // Not yet answered: nothing to transfer.
    let mut ringing = World::new(13, 0.0, 5, Policy::RingOnly);
    let now = ringing.now;
    ringing
        .uac
        .invite(now, "ring", &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(ringing.run_until(|w| w.uac.state == UacState::Ringing));
    let call = ringing.incoming[0];
    let now = ringing.now;
    assert_eq!(
        ringing.ep.refer(now, call, "sip:bob@example.com"),
        Err(CommandError::WrongState)
    );
    assert!(ringing.ep.poll_transmit().is_none());
}

#[test]
fn refer_from_the_caller_is_refused_with_405_and_the_call_goes_on() {
    let mut w = World::answered(14);
    let now = w.now;
    let extra =
        format!("Refer-To: <sip:carol@example.com>\r\nReferred-By: <sip:tester@{CLIENT}>\r\n");
    w.uac.request_with(now, "REFER", &extra, "", b"");
    assert!(w.run_until(|w| !statuses_of(w, "REFER").is_empty()));
    assert_eq!(statuses_of(&w, "REFER"), vec![405]);
    let answer = &sent_starting(&w, "SIP/2.0 405")[0].1;
    let allow = header(answer, "Allow");
    assert_eq!(allow.len(), 1, "{answer}");
    assert!(!allow[0].contains("REFER") && allow[0].contains("NOTIFY"));
    assert!(w.ended.is_empty());
    assert_eq!(w.ep.call_count(), 1);
    // The dialog still works: BYE ends it normally.
    let now = w.now;
    w.uac.request(now, "BYE", "", b"");
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::RemoteBye]);
}

// ---- UPDATE (RFC 3311) and session timers (RFC 4028) ----

/// The responses the server sent to `method` requests with status `code`.
fn answers(w: &World, code: u16, method: &str) -> Vec<(u64, String)> {
    sent_starting(w, &format!("SIP/2.0 {code} "))
        .into_iter()
        .filter(|(_, t)| header(t, "CSeq").iter().any(|c| c.ends_with(method)))
        .collect()
}

/// When the server sent the 200 OK to the initial INVITE (ms since the start).
fn answered_at(w: &World) -> u64 {
    answers(w, 200, "INVITE")[0].0
}

fn update(w: &mut World, extra: &str, sdp: &[u8]) {
    let now = w.now;
    let ct = if sdp.is_empty() {
        ""
    } else {
        "application/sdp"
    };
    w.uac.request_with(now, "UPDATE", extra, ct, sdp);
}

fn direction_of(sdp: &str) -> &str {
    ["sendrecv", "sendonly", "recvonly", "inactive"]
        .into_iter()
        .find(|d| sdp.contains(&format!("a={d}\r\n")))
        .unwrap_or("none")
}

#[test]
fn update_without_body_is_a_refresh_answered_200_and_the_call_goes_on() {
    let mut w = World::answered(20);
    update(&mut w, "", b"");
    assert!(w.run_until(|w| statuses_of(w, "UPDATE") == [200]));
    let ok = &answers(&w, 200, "UPDATE")[0].1;
    assert!(header(ok, "Allow")[0].contains("UPDATE"), "{ok}");
    assert_eq!(header(ok, "Contact").len(), 1, "{ok}");
    assert!(!ok.contains("Content-Type"), "a refresh has no body: {ok}");
    assert_eq!(w.updates, 0, "a refresh is not the call layer's business");
    // No session timer was asked for: two idle hours later the call is still up, untouched.
    let later = w.now + Duration::from_secs(7200);
    w.advance_to(later);
    assert!(w.ended.is_empty());
    assert_eq!(w.ep.call_count(), 1);
    assert!(sent_starting(&w, "BYE").is_empty() && sent_starting(&w, "UPDATE").is_empty());
    let now = w.now;
    w.uac.request(now, "BYE", "", b"");
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::RemoteBye]);
}

#[test]
fn update_in_the_early_dialog_refreshes_but_an_offer_must_wait() {
    let mut w = World::new(21, 0.0, 5, Policy::RingOnly);
    w.uac.invite_headers = "Supported: timer\r\nSession-Expires: 600\r\n".into();
    let now = w.now;
    w.uac
        .invite(now, "ring", &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(w.run_until(|w| w.uac.state == UacState::Ringing));
    update(&mut w, "", b"");
    assert!(w.run_until(|w| statuses_of(w, "UPDATE") == [200]));
    update(&mut w, "", &offer("127.0.0.1", 40000, "sendonly"));
    assert!(w.run_until(|w| statuses_of(w, "UPDATE").len() == 2));
    assert_eq!(statuses_of(&w, "UPDATE"), [200, 500]);
    assert_eq!(
        header(&answers(&w, 500, "UPDATE")[0].1, "Retry-After").len(),
        1
    );
    assert_eq!(w.updates, 0);
    assert!(w.ended.is_empty());
    // The INVITE's session timer is untouched by the early refresh: the 200 carries it.
    let (now, call) = (w.now, w.incoming[0]);
    w.ep.answer(now, call, World::answer_sdp()).unwrap();
    assert!(w.run_until(|w| w.confirmed == 1));
    let ok = &answers(&w, 200, "INVITE")[0].1;
    assert_eq!(header(ok, "Session-Expires"), ["600;refresher=uac"], "{ok}");
}

#[test]
fn update_with_sdp_puts_the_call_on_hold_and_back() {
    let mut w = World::answered(22);
    update(&mut w, "", &offer("127.0.0.1", 40002, "sendonly"));
    assert!(w.run_until(|w| statuses_of(w, "UPDATE") == [200]));
    let ok = &answers(&w, 200, "UPDATE")[0].1;
    assert_eq!(header(ok, "Content-Type"), ["application/sdp"]);
    assert_eq!(direction_of(ok), "recvonly", "{ok}");
    assert_eq!(w.updates, 1);
    update(&mut w, "", &offer("127.0.0.1", 40002, "sendrecv"));
    assert!(w.run_until(|w| statuses_of(w, "UPDATE") == [200, 200]));
    assert_eq!(direction_of(&answers(&w, 200, "UPDATE")[1].1), "sendrecv");
    // A retransmitted UPDATE is answered by its transaction, not offered again.
    assert_eq!(w.updates, 2);
    assert!(w.ended.is_empty());
}

#[test]
fn update_offer_crossing_an_offer_gets_491_or_500() {
    let mut w = World::answered(23);
    w.net.jitter_ms = 0;
    let call = w.incoming[0];
    // Our re-INVITE offer is on its way when the caller's UPDATE offer arrives: 491.
    let now = w.now;
    w.ep.reinvite(now, call, offer("127.0.0.1", 20000, "sendonly"))
        .unwrap();
    update(&mut w, "", &offer("127.0.0.1", 40000, "sendonly"));
    assert!(w.run_until(|w| !statuses_of(w, "UPDATE").is_empty()));
    assert_eq!(statuses_of(&w, "UPDATE"), [491]);
    assert_eq!(w.updates, 0);
    assert!(w.run_until(|w| w.reinvite_answers == [200]));
    // The caller's re-INVITE offer waits for our answer: a second offer gets 500 Retry-After,
    // while an UPDATE without offer (a refresh) is still fine.
    w.defer_offers = true;
    let now = w.now;
    w.uac.reinvite(now, &offer("127.0.0.1", 40000, "sendonly"));
    assert!(w.run_until(|w| w.reinvites == 1));
    update(&mut w, "", &offer("127.0.0.1", 40000, "inactive"));
    assert!(w.run_until(|w| statuses_of(w, "UPDATE").len() == 2));
    update(&mut w, "", b"");
    assert!(w.run_until(|w| statuses_of(w, "UPDATE").len() == 3));
    assert_eq!(statuses_of(&w, "UPDATE"), [491, 500, 200]);
    assert_eq!(
        header(&answers(&w, 500, "UPDATE")[0].1, "Retry-After").len(),
        1
    );
    assert_eq!(w.updates, 0);
    assert!(w.ended.is_empty());
}

/// A caller INVITE with `headers`, against an endpoint with `min_se`; runs until answered or
/// refused.
fn timer_world(seed: u64, min_se: u32, headers: &str) -> World {
    let mut w = World::new(seed, 0.0, 0, Policy::Answer);
    w.ep.set_session_timers(SessionTimerConfig {
        session_expires: 1800,
        min_se,
    });
    w.uac.invite_headers = headers.to_string();
    let now = w.now;
    w.uac
        .invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(w.run_until(|w| w.confirmed == 1 || w.uac.state == UacState::Terminated));
    w
}

#[test]
fn session_interval_below_min_se_gets_422_naming_our_minimum() {
    for (min_se, asked, code) in [
        (90, 89, 422),
        (90, 90, 200),
        (120, 119, 422),
        (120, 120, 200),
    ] {
        let h = format!("Supported: timer\r\nSession-Expires: {asked}\r\n");
        let w = timer_world(24, min_se, &h);
        assert_eq!(
            statuses_of(&w, "INVITE").last(),
            Some(&code),
            "{min_se}/{asked}"
        );
        if code == 422 {
            let r = &answers(&w, 422, "INVITE")[0].1;
            assert_eq!(header(r, "Min-SE"), [min_se.to_string().as_str()], "{r}");
            assert!(w.incoming.is_empty(), "a 422 never reaches the call layer");
        } else {
            let ok = &answers(&w, 200, "INVITE")[0].1;
            assert_eq!(
                header(ok, "Session-Expires"),
                [format!("{asked};refresher=uac").as_str()]
            );
            assert_eq!(header(ok, "Require"), ["timer"]);
        }
    }
    // The compact form, and a refresh by UPDATE below the minimum.
    let mut w = timer_world(25, 90, "k: timer\r\nx: 600;refresher=uas\r\n");
    let ok = &answers(&w, 200, "INVITE")[0].1;
    assert_eq!(header(ok, "Session-Expires"), ["600;refresher=uas"]);
    update(&mut w, "Supported: timer\r\nSession-Expires: 60\r\n", b"");
    assert!(w.run_until(|w| !statuses_of(w, "UPDATE").is_empty()));
    assert_eq!(statuses_of(&w, "UPDATE"), [422]);
    assert_eq!(header(&answers(&w, 422, "UPDATE")[0].1, "Min-SE"), ["90"]);
    assert!(w.ended.is_empty());
}

#[test]
fn peer_refreshing_every_half_interval_keeps_the_call_for_an_hour_then_bye_on_silence() {
    let se = "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n";
    let mut w = timer_world(26, 90, se);
    let mut last = w.now;
    // Every 60 s for an hour: UPDATE without body, UPDATE with SDP, re-INVITE — all refresh.
    for i in 0..60 {
        w.advance_to(last + Duration::from_secs(60));
        match i % 3 {
            0 => update(&mut w, se, b""),
            1 => update(&mut w, se, &offer("127.0.0.1", 40000, "sendrecv")),
            _ => {
                let now = w.now;
                w.uac.reinvite(now, &offer("127.0.0.1", 40000, "sendrecv"));
            }
        }
        let oks = w.uac.statuses.iter().filter(|s| s.1 == 200).count();
        assert!(w.run_until(|w| w.uac.statuses.iter().filter(|s| s.1 == 200).count() > oks));
        last = w.now;
    }
    assert!(w.elapsed() >= Duration::from_secs(3600));
    assert!(w.ended.is_empty(), "{:?}", w.ended);
    assert!(sent_starting(&w, "BYE").is_empty());
    // Every 2xx to a refresh repeats the interval and who refreshes.
    let refreshes: Vec<_> = answers(&w, 200, "UPDATE")
        .into_iter()
        .chain(answers(&w, 200, "INVITE").into_iter().skip(1))
        .collect();
    assert_eq!(refreshes.len(), 60);
    for (_, r) in &refreshes {
        assert_eq!(header(r, "Session-Expires"), ["120;refresher=uac"], "{r}");
    }
    // Then silence: BYE at expiry minus min(32 s, 120/3) = 88 s after the last refresh.
    let last_ok = refreshes.iter().map(|r| r.0).max().unwrap();
    let just_before = w.start + Duration::from_millis(last_ok + 88_000 - 1);
    w.advance_to(just_before);
    assert!(w.ended.is_empty() && sent_starting(&w, "BYE").is_empty());
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::SessionExpired]);
    assert_eq!(sent_starting(&w, "BYE")[0].0, last_ok + 88_000);
}

#[test]
fn silent_peer_refresher_gets_bye_at_expiry_minus_the_smaller_of_32_s_and_a_third() {
    for (se, bye_after_s) in [(1800, 1768), (90, 60), (96, 64), (97, 65)] {
        let h = format!("Supported: timer\r\nSession-Expires: {se}\r\n");
        let mut w = timer_world(27, 90, &h);
        let t0 = answered_at(&w);
        assert!(w.run_until(|w| !w.ended.is_empty()));
        assert_eq!(w.ended, vec![EndReason::SessionExpired], "SE {se}");
        assert_eq!(
            sent_starting(&w, "BYE")[0].0,
            t0 + bye_after_s * 1000,
            "SE {se}"
        );
        assert!(sent_starting(&w, "UPDATE").is_empty());
        assert!(w.run_until(|w| w.ep.call_count() == 0));
    }
}

#[test]
fn we_refresh_by_update_at_half_the_interval_again_and_again() {
    let h = "Allow: INVITE, ACK, CANCEL, BYE, UPDATE\r\nSupported: timer\r\n\
Session-Expires: 90;refresher=uas\r\n";
    let mut w = timer_world(28, 90, h);
    let ok = &answers(&w, 200, "INVITE")[0].1;
    assert_eq!(header(ok, "Session-Expires"), ["90;refresher=uas"]);
    let t0 = answered_at(&w);
    assert!(w.run_until(|w| sent_starting(w, "UPDATE").len() == 3));
    let updates = sent_starting(&w, "UPDATE");
    // 45 s after the 200, then 45 s after each 2xx, which comes back 4 ms later.
    let times: Vec<u64> = updates.iter().map(|u| u.0).collect();
    assert_eq!(times, [t0 + 45_000, t0 + 90_004, t0 + 135_008]);
    for (_, u) in &updates {
        assert_eq!(header(u, "Session-Expires"), ["90;refresher=uac"], "{u}");
        assert!(!u.contains("Content-Type"), "{u}");
    }
    assert!(cseq_of(&updates[1].1) > cseq_of(&updates[0].1));
    assert!(w.ended.is_empty());
}

#[test]
fn we_refresh_by_reinvite_with_our_sdp_when_allow_lacks_update() {
    let h = "Allow: INVITE, ACK, CANCEL, BYE\r\nSession-Expires: 90\r\n";
    let mut w = timer_world(29, 90, h);
    // The caller does not support timers: we refresh, and no Require goes to it.
    let ok = &answers(&w, 200, "INVITE")[0].1;
    assert_eq!(header(ok, "Session-Expires"), ["90;refresher=uas"]);
    assert!(header(ok, "Require").is_empty());
    let t0 = answered_at(&w);
    assert!(w.run_until(|w| sent_starting(w, "ACK").len() == 2));
    let invites = sent_starting(&w, "INVITE");
    assert_eq!(invites.len(), 2);
    assert_eq!(invites[0].0, t0 + 45_000);
    assert_eq!(
        invites[1].0,
        t0 + 90_004,
        "45 s after the 2xx, after the ACK"
    );
    let ours = String::from_utf8(World::answer_sdp()).unwrap();
    for (_, i) in &invites {
        assert!(i.ends_with(&ours), "the same SDP again: {i}");
    }
    assert!(sent_starting(&w, "UPDATE").is_empty());
    assert_eq!(
        w.reinvite_answers,
        Vec::<u16>::new(),
        "refreshes are not reported"
    );
    assert!(w.ended.is_empty());
}

#[test]
fn our_refresh_answered_422_491_or_481() {
    let h = "Allow: UPDATE\r\nSupported: timer\r\nSession-Expires: 90;refresher=uas\r\n";
    // 422: asked again at once with the peer's Min-SE; a second 422 is not chased.
    let mut w = timer_world(30, 90, h);
    w.uac.reply_codes.push(("UPDATE".into(), 422));
    w.uac
        .reply_headers
        .push(("UPDATE".into(), "Min-SE".into(), "200".into()));
    let t0 = answered_at(&w);
    assert!(w.run_until(|w| !w.ended.is_empty()));
    let updates = sent_starting(&w, "UPDATE");
    assert_eq!(updates.len(), 2);
    assert_eq!(
        header(&updates[1].1, "Session-Expires"),
        ["200;refresher=uac"]
    );
    assert_eq!(
        updates[1].0,
        updates[0].0 + 4,
        "retried as soon as the 422 came"
    );
    // The session agreed on is 90 s: it ends 60 s after the last refresh.
    assert_eq!(w.ended, vec![EndReason::SessionExpired]);
    assert_eq!(sent_starting(&w, "BYE")[0].0, t0 + 60_000);

    // 491: retried within 2 s.
    let mut w = timer_world(31, 90, h);
    w.uac.reply_codes.push(("UPDATE".into(), 491));
    assert!(w.run_until(|w| sent_starting(w, "UPDATE").len() == 2));
    let updates = sent_starting(&w, "UPDATE");
    let gap = updates[1].0 - (updates[0].0 + 4);
    assert!(gap <= 2000, "{gap}");

    // 481: the dialog is gone at the peer; BYE.
    let mut w = timer_world(32, 90, h);
    w.uac.reply_codes.push(("UPDATE".into(), 481));
    let t0 = answered_at(&w);
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::Timeout]);
    assert_eq!(sent_starting(&w, "BYE")[0].0, t0 + 45_004);
}

#[test]
fn our_reinvite_carries_the_session_timer_and_its_2xx_refreshes() {
    let mut w = timer_world(
        33,
        90,
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
    );
    let call = w.incoming[0];
    w.uac.reply_headers.push((
        "INVITE".into(),
        "Session-Expires".into(),
        "120;refresher=uas".into(),
    ));
    w.advance_to(w.now + Duration::from_secs(50));
    let now = w.now;
    w.ep.reinvite(now, call, offer("127.0.0.1", 20000, "sendonly"))
        .unwrap();
    assert!(w.run_until(|w| w.reinvite_answers == [200]));
    let ours = &sent_starting(&w, "INVITE")[0];
    assert_eq!(header(&ours.1, "Session-Expires"), ["120;refresher=uas"]);
    // The 2xx (4 ms later) refreshed the session; the caller still refreshes: BYE 88 s on.
    assert!(w.run_until(|w| !w.ended.is_empty()));
    assert_eq!(w.ended, vec![EndReason::SessionExpired]);
    assert_eq!(sent_starting(&w, "BYE")[0].0, ours.0 + 4 + 88_000);
}

#[test]
fn an_update_offer_pending_when_the_call_ends_is_closed_487() {
    let mut w = World::answered(34);
    w.defer_offers = true;
    update(&mut w, "", &offer("127.0.0.1", 40000, "sendonly"));
    assert!(w.run_until(|w| w.updates == 1));
    let now = w.now;
    w.uac.request(now, "BYE", "", b"");
    assert!(w.run_until(|w| !w.ended.is_empty() && !statuses_of(w, "UPDATE").is_empty()));
    assert_eq!(statuses_of(&w, "UPDATE"), [487]);
    w.run_until(|_| false);
    assert_eq!(w.ep.transaction_count(), 0);
    assert_eq!(w.ep.call_count(), 0);
}

#[test]
fn update_cseq_order_and_body_type_are_checked_like_other_requests() {
    let mut w = World::answered(35);
    update(&mut w, "", b"");
    assert!(w.run_until(|w| statuses_of(w, "UPDATE") == [200]));
    // Lower than the UPDATE just seen (CSeq 2): 500, the call goes on.
    let stale = format!(
        "UPDATE sip:echo@{SERVER} SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT};branch=z9hG4bKstale\r\n\
Max-Forwards: 70\r\nFrom: <sip:tester@{CLIENT}>;tag={}\r\nTo: <sip:echo@{SERVER}>;tag={}\r\n\
Call-ID: {}\r\nCSeq: 1 UPDATE\r\nContact: <sip:tester@{CLIENT}>\r\nContent-Length: 0\r\n\r\n",
        w.uac.from_tag,
        w.uac.to_tag.clone().unwrap(),
        w.uac.call_id
    );
    w.uac.outbox.push_back(stale.into_bytes());
    assert!(w.run_until(|w| statuses_of(w, "UPDATE").len() == 2));
    let now = w.now;
    w.uac
        .request_with(now, "UPDATE", "", "text/plain", b"hello");
    assert!(w.run_until(|w| statuses_of(w, "UPDATE").len() == 3));
    assert_eq!(statuses_of(&w, "UPDATE"), [200, 500, 415]);
    assert_eq!(w.updates, 0);
    assert!(w.ended.is_empty());
}

/// Everything both sides sent in one call over a lossy, reordering network: INVITE, 200,
/// ACK, a re-INVITE of ours, an UPDATE offer of the caller's, BYE, and the retransmissions
/// the losses cause, each with its send time; and the server's messages alone.
fn traced_call(seed: u64) -> (Vec<(u64, Vec<u8>)>, World) {
    let mut w = World::new(seed, 0.15, 60, Policy::Answer);
    let now = w.now;
    w.uac
        .invite(now, "echo", &offer("127.0.0.1", 40000, "sendrecv"));
    assert!(
        w.run_until(|w| w.uac.state == UacState::Confirmed && w.confirmed == 1),
        "seed {seed}: no call"
    );
    let (now, call) = (w.now, w.incoming[0]);
    w.ep.reinvite(now, call, offer("127.0.0.1", 20000, "sendonly"))
        .unwrap();
    assert!(
        w.run_until(|w| !w.reinvite_answers.is_empty()),
        "seed {seed}"
    );
    assert_eq!(w.reinvite_answers, [200], "seed {seed}");
    update(&mut w, "", &offer("127.0.0.1", 40002, "sendonly"));
    assert!(
        w.run_until(|w| statuses_of(w, "UPDATE").contains(&200)),
        "seed {seed}"
    );
    let now = w.now;
    w.uac.request(now, "BYE", "", b"");
    assert!(
        w.run_until(|w| !w.ended.is_empty() && w.ep.call_count() == 0),
        "seed {seed}"
    );
    assert_eq!(w.ended, [EndReason::RemoteBye], "seed {seed}");
    // Every retransmission and timer runs out, so the whole trace is compared.
    w.run_until(|_| false);
    assert_eq!(w.ep.transaction_count(), 0);
    let mut both: Vec<(u64, Vec<u8>)> = w.server_sent.clone();
    both.extend(w.client_sent.iter().cloned());
    both.sort();
    (both, w)
}

/// The server's To tag in its answers and the branches of its own requests.
fn our_tags_and_branches(w: &World) -> Vec<String> {
    let mut ids = Vec::new();
    for (_, m) in &w.server_sent {
        let text = String::from_utf8_lossy(m);
        if text.starts_with("SIP/2.0 200") {
            ids.extend(header(&text, "To").iter().map(|t| t.to_string()));
        } else {
            ids.extend(header(&text, "Via").iter().map(|v| v.to_string()));
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn the_same_seed_replays_a_lossy_call_byte_for_byte() {
    for seed in [31, 32] {
        let (first, w) = traced_call(seed);
        let (again, _) = traced_call(seed);
        // The losses did cost retransmissions: the trace is more than the bare exchange.
        assert!(
            w.net.dropped > 0,
            "seed {seed}: the network lost nothing; the test would prove less"
        );
        assert_eq!(first.len(), again.len(), "seed {seed}");
        for (n, (a, b)) in first.iter().zip(&again).enumerate() {
            assert_eq!(
                a,
                b,
                "seed {seed}, message {n}:\n{}\n---\n{}",
                String::from_utf8_lossy(&a.1),
                String::from_utf8_lossy(&b.1)
            );
        }
    }
}

#[test]
fn different_seeds_give_different_tags_and_branches() {
    let (_, a) = traced_call(31);
    let (_, b) = traced_call(32);
    let (ours_a, ours_b) = (our_tags_and_branches(&a), our_tags_and_branches(&b));
    assert!(
        ours_a.iter().any(|v| v.contains("z9hG4bK")) && ours_a.iter().any(|t| t.contains("tag=")),
        "{ours_a:?}"
    );
    for id in &ours_a {
        assert!(!ours_b.contains(id), "{id} in both runs");
    }
}
