//! Signalling hot path: parsing, and whole calls through the sans-IO endpoint.
//! Also prints the heap held per idle (confirmed) dialog, measured with a counting allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::sip::dialog::{Peer, Transport};
use switchboard::sip::endpoint::{Endpoint, EndpointConfig, Event};
use switchboard::sip::message::classify;
use switchboard::sip::transaction::TimerConfig;

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n";

fn msg(method: &str, n: u64, to_tag: &str, cseq: u32, body: &str) -> Vec<u8> {
    format!(
        "{method} sip:echo@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1:5070>;tag=f{n}\r\n\
To: <sip:echo@127.0.0.1:5060>{to_tag}\r\nCall-ID: {n}@bench\r\nCSeq: {cseq} {method}\r\n\
Contact: <sip:load@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        timers: TimerConfig::default(),
        local_addr: "127.0.0.1:5060".parse().unwrap(),
        user_agent: "switchboard".into(),
    })
}

const PEER: Peer = Peer {
    transport: Transport::Udp,
    addr: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5070),
};

/// INVITE → 100/180/200 → ACK through the endpoint; returns the To tag.
fn setup(ep: &mut Endpoint, now: Instant, n: u64) -> String {
    ep.handle_message(now, PEER, &msg("INVITE", n, "", 1, SDP));
    while let Some(ev) = ep.poll_event() {
        if let Event::Incoming { call, .. } = ev {
            let _ = ep.ring(now, call, None);
            let _ = ep.answer(now, call, SDP.as_bytes().to_vec());
        }
    }
    let mut tag = String::new();
    while let Some(t) = ep.poll_transmit() {
        if t.bytes.starts_with(b"SIP/2.0 200") {
            let text = String::from_utf8_lossy(&t.bytes);
            let to = text.lines().find(|l| l.starts_with("To:")).unwrap_or("");
            if let Some(i) = to.find(";tag=") {
                tag = to[i + 5..]
                    .split([';', '>'])
                    .next()
                    .unwrap_or("")
                    .to_string();
            }
        }
    }
    let to = format!(";tag={tag}");
    ep.handle_message(now, PEER, &msg("ACK", n, &to, 1, ""));
    while ep.poll_event().is_some() {}
    tag
}

fn bench(c: &mut Criterion) {
    let invite = msg("INVITE", 1, "", 1, SDP);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify INVITE with SDP", |b| {
        b.iter(|| black_box(classify(black_box(&invite), false)))
    });
    g.bench_function("call: INVITE, 100/180/200, ACK, BYE/200", |b| {
        let mut ep = endpoint();
        let mut n = 0u64;
        let t0 = Instant::now();
        b.iter(|| {
            n += 1;
            let now = t0 + Duration::from_micros(n);
            let tag = setup(&mut ep, now, n);
            ep.handle_message(now, PEER, &msg("BYE", n, &format!(";tag={tag}"), 2, ""));
            while ep.poll_event().is_some() {}
            while ep.poll_transmit().is_some() {}
            // Expire lingering transactions now and then, as the clock would.
            if n.is_multiple_of(1024) {
                ep.handle_timeout(now + Duration::from_secs(64));
            }
        })
    });
    g.finish();

    let mut ep = endpoint();
    let now = Instant::now();
    const N: u64 = 2000;
    // Let the INVITE transactions of the measured calls expire so only dialogs remain.
    let before = alloc::held();
    for n in 0..N {
        setup(&mut ep, now, 1_000_000 + n);
    }
    ep.handle_timeout(now + Duration::from_secs(40));
    while ep.poll_transmit().is_some() {}
    let after = alloc::held();
    assert_eq!(ep.call_count(), N as usize);
    assert_eq!(ep.transaction_count(), 0, "every ACK matched its dialog");
    println!(
        "endpoint heap per idle dialog: {} bytes ({} dialogs, {} transactions left)",
        (after - before) / N as isize,
        ep.call_count(),
        ep.transaction_count()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
