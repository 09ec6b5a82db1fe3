//! The SIP guard's cost per inbound message: the quick look at the bytes, the decision on
//! the pass path, for a flood from spoofed sources (a table entry evicted every time), for a
//! source over its rate, and the stateless 503 a refusal then costs the endpoint.
//! Also asserts that the pass path allocates nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::error::Refusal;
use switchboard::sip::dialog::{Peer, Transport};
use switchboard::sip::endpoint::{Endpoint, EndpointConfig};
use switchboard::sip::guard::{peek, Guard, GuardConfig, Inbound, Load, Verdict};
use switchboard::sip::transaction::TimerConfig;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

const INVITE: &[u8] = b"INVITE sip:echo@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbench1\r\n\
Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1:5070>;tag=f1\r\n\
To: <sip:echo@127.0.0.1:5060>\r\nCall-ID: 1@bench\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:load@127.0.0.1:5070>\r\nUser-Agent: Linphone-Desktop/5.2.6 (belle-sip/5.2.94)\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
Supported: replaces, outbound, gruu, path\r\nContent-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

/// The shipped defaults: access lists of a typical size, the default scanner list and rates.
fn config() -> GuardConfig {
    let mut c = switchboard::Config::embedded().unwrap();
    c.sip.allow = (0..8).map(|i| format!("10.{i}.0.0/16")).collect();
    c.sip.allow.push("127.0.0.0/8".into());
    c.sip.deny = vec!["10.6.6.0/24".into(), "2001:db8::/32".into()];
    c.sip.guard().unwrap()
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);

    c.bench_function("guard peek an INVITE", |b| {
        b.iter(|| black_box(peek(black_box(INVITE))))
    });

    // Pass path: one source within its rate (each iteration is 20 ms later than the last,
    // inside the default 100 INVITEs/s) and within the server-wide caps.
    let mut g = Guard::new(config(), t0);
    let mut now = t0;
    let step = Duration::from_millis(20);
    let before = alloc::allocations();
    for _ in 0..10_000 {
        now += step;
        let m = Inbound {
            source: src,
            transport: Transport::Udp,
            peek: peek(INVITE),
        };
        assert_eq!(g.check(now, &m, Load::default), Verdict::Pass);
    }
    assert_eq!(alloc::allocations(), before, "the pass path allocates");
    c.bench_function("guard check INVITE pass (peek + decision)", |b| {
        b.iter(|| {
            now += step;
            let m = Inbound {
                source: src,
                transport: Transport::Udp,
                peek: peek(black_box(INVITE)),
            };
            black_box(g.check(now, &m, Load::default))
        })
    });

    // A flood from spoofed sources: each message from a new address, so every one takes a
    // table entry in place of the least recently seen.
    let mut g = Guard::new(config(), t0);
    let mut n: u32 = 0;
    let mut now = t0;
    c.bench_function("guard check INVITE from a new source each time", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            now += Duration::from_micros(1);
            let m = Inbound {
                source: IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))),
                transport: Transport::Udp,
                peek: peek(black_box(INVITE)),
            };
            black_box(g.check(now, &m, Load::default))
        })
    });

    // One source far over its rate: every message refused (escalation off, so it is not
    // simply dropped).
    let mut cfg = config();
    cfg.escalate_after = 0;
    let mut g = Guard::new(cfg, t0);
    let mut now = t0;
    c.bench_function(
        "guard check INVITE over the source's rate (503 verdict)",
        |b| {
            b.iter(|| {
                now += Duration::from_nanos(100);
                let m = Inbound {
                    source: src,
                    transport: Transport::Udp,
                    peek: peek(black_box(INVITE)),
                };
                black_box(g.check(now, &m, Load::default))
            })
        },
    );

    // What the refusal then costs: parse, build and queue the 503.
    let mut ep = Endpoint::new(EndpointConfig {
        timers: TimerConfig::default(),
        local_addr: "127.0.0.1:5060".parse().unwrap(),
        user_agent: "switchboard".into(),
    });
    let peer = Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], 5070)),
    };
    c.bench_function(
        "endpoint refuse an INVITE (parse + 503 with Retry-After)",
        |b| {
            b.iter(|| {
                ep.refuse(t0, peer, black_box(INVITE), &Refusal::Overloaded, Some(1));
                black_box(ep.poll_transmit())
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
