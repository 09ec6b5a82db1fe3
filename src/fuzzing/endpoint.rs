//! The SIP endpoint driven by a script decoded from the fuzz input: messages from a few
//! peers, virtual time, and the commands the layer above gives on the calls it heard of.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::dialog::{Peer, Transport};
use crate::sip::endpoint::{CallHandle, Endpoint, EndpointConfig, Event, OutgoingCall, Party};
use crate::sip::ids::Ids;
use crate::sip::transaction::TimerConfig;

/// Steps one input may take; longer inputs are cut here so one run stays short.
const MAX_OPS: usize = 256;
/// Calls the driver remembers to give commands on.
const MAX_HANDLES: usize = 16;
/// Messages and events one step may produce: every call and transaction the steps opened may
/// end in the same step (a time step firing all their timers at once), each with a few.
const MAX_OUTPUT_PER_STEP: usize = 8 * MAX_OPS;
/// Timer firings one time step may take.
const MAX_TIMER_ROUNDS: usize = 10_000;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

/// Runs the script in `data`; the endpoint must never panic, its output per step stays
/// bounded, and it holds no more calls and transactions than the steps could have made.
///
/// Each step is one op byte and its operands:
/// - `0..=3` message: peer (op & 3, odd peers on TCP), length (2 bytes, LE), that many bytes;
/// - `4` time: advance by (byte + 1) × 100 ms, firing due timers;
/// - `5..=15` a command on remembered call (next byte): ring, ring with SDP, answer,
///   reject, hangup, re-INVITE, answer / reject a re-INVITE, INFO, REFER, acknowledge;
/// - `16` place a call to peer (next byte);
/// - anything else: ignored.
pub fn endpoint(data: &[u8]) {
    let start = Instant::now();
    let mut now = start;
    let mut ep = Endpoint::with_ids(
        EndpointConfig {
            timers: TimerConfig::default(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
            user_agent: "switchboard-fuzz".into(),
        },
        Ids::with_seed(7),
    );
    let mut calls: Vec<CallHandle> = Vec::new();
    let mut rest = data;
    let mut steps = 0usize;
    while let [op, tail @ ..] = rest {
        rest = tail;
        steps += 1;
        if steps > MAX_OPS {
            break;
        }
        match op {
            0..=3 => {
                let [lo, hi, tail @ ..] = rest else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
                let (bytes, tail) = tail.split_at(len);
                rest = tail;
                ep.handle_message(now, peer(*op), bytes);
            }
            4 => {
                let [d, tail @ ..] = rest else {
                    break;
                };
                rest = tail;
                now += Duration::from_millis(100 * (u64::from(*d) + 1));
                let mut rounds = 0;
                while let Some(at) = ep.poll_timeout() {
                    if at > now {
                        break;
                    }
                    rounds += 1;
                    assert!(
                        rounds <= MAX_TIMER_ROUNDS,
                        "timers do not move past {now:?}"
                    );
                    ep.handle_timeout(now);
                    drain(&mut ep, &mut calls);
                }
            }
            5..=16 => {
                let [n, tail @ ..] = rest else {
                    break;
                };
                rest = tail;
                if *op == 16 {
                    if let Ok(call) = ep.invite(now, outgoing(*n)) {
                        remember(&mut calls, call);
                    }
                } else if let Some(&call) = calls.get(usize::from(*n) % calls.len().max(1)) {
                    command(&mut ep, now, *op, call);
                }
            }
            _ => {}
        }
        drain(&mut ep, &mut calls);
        // Each step opens at most one call and a handful of transactions; what is left over
        // after timers have run their course must be accounted for by the steps taken.
        assert!(
            ep.call_count() <= steps,
            "{} calls after {steps} steps",
            ep.call_count()
        );
        assert!(
            ep.transaction_count() <= 4 * steps,
            "{} transactions after {steps} steps",
            ep.transaction_count()
        );
    }
}

fn peer(n: u8) -> Peer {
    Peer {
        transport: if n.is_multiple_of(2) {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        addr: SocketAddr::from(([127, 0, 0, 1], 5070 + u16::from(n % 4))),
    }
}

fn outgoing(n: u8) -> OutgoingCall {
    let p = peer(n);
    OutgoingCall {
        target: format!("sip:bob@{}", p.addr),
        peer: p,
        from: Party::uri("sip:switchboard@127.0.0.1"),
        to: Party::uri(format!("sip:bob@{}", p.addr)),
        sdp: (n & 4 == 0).then(|| SDP.to_vec()),
        headers: Vec::new(),
        route: Vec::new(),
        credentials: None,
        call_id: None,
    }
}

fn command(ep: &mut Endpoint, now: Instant, op: u8, call: CallHandle) {
    // Refusals (no such call, wrong state) are answers too: only panics are findings.
    let _ = match op {
        5 => ep.ring(now, call, None),
        6 => ep.ring(now, call, Some(SDP.to_vec())),
        7 => ep.answer(now, call, SDP.to_vec()),
        8 => ep.reject(now, call, 486, "Busy Here", Some("busy")),
        9 => ep.hangup(now, call),
        10 => ep.reinvite(now, call, SDP.to_vec()),
        11 => ep.answer_reinvite(now, call, SDP.to_vec()),
        12 => ep.reject_reinvite(now, call, 488, "Not Acceptable Here", None),
        13 => ep.send_info(
            now,
            call,
            "application/dtmf-relay",
            b"Signal=5\r\nDuration=160\r\n".to_vec(),
        ),
        14 => ep.refer(now, call, "sip:carol@127.0.0.1"),
        _ => ep.acknowledge(now, call, SDP.to_vec()),
    };
}

/// Takes what the endpoint produced, remembering the calls it names.
fn drain(ep: &mut Endpoint, calls: &mut Vec<CallHandle>) {
    let mut out = 0;
    while let Some(t) = ep.poll_transmit() {
        out += 1;
        assert!(
            out <= MAX_OUTPUT_PER_STEP,
            "unbounded messages from one step"
        );
        assert!(t.bytes.len() <= 2 * usize::from(u16::MAX) + 4096);
    }
    while let Some(e) = ep.poll_event() {
        out += 1;
        assert!(out <= MAX_OUTPUT_PER_STEP, "unbounded events from one step");
        let call = match e {
            Event::Incoming { call, .. } | Event::Answered { call, .. } => call,
            _ => continue,
        };
        remember(calls, call);
    }
}

fn remember(calls: &mut Vec<CallHandle>, call: CallHandle) {
    if calls.contains(&call) {
        return;
    }
    if calls.len() == MAX_HANDLES {
        calls.remove(0);
    }
    calls.push(call);
}
