//! SRTP per packet: protect and unprotect of one 172-byte G.711 RTP packet (20 ms of PCMU)
//! for each suite. Also checks, with a counting allocator, that neither allocates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use switchboard::rtp::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

const PAYLOAD: usize = 160;
const LEN: usize = 12 + PAYLOAD;
const BUF: usize = LEN + 16;

/// The PCMU packet with sequence number `seq`, in a buffer with room for any tag.
fn packet(seq: u16) -> [u8; BUF] {
    let mut p = [0xd5u8; BUF];
    p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xed, 0x12, 0x34]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p
}

fn pair(suite: Suite) -> (SrtpSession, SrtpSession) {
    let a = MasterKey::random(suite).unwrap();
    let b = MasterKey::random(suite).unwrap();
    let alice = SrtpSession::new(&a, &CryptoAttr::new(1, b.clone())).unwrap();
    let bob = SrtpSession::new(&b, &CryptoAttr::new(1, a)).unwrap();
    (alice, bob)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp");
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let mut seq = 0u16;

        let before = alloc::allocations();
        for _ in 0..100 {
            let mut p = packet(seq);
            seq = seq.wrapping_add(1);
            let n = alice.protect_rtp(&mut p, LEN).unwrap();
            assert_eq!(bob.unprotect_rtp(&mut p[..n]).unwrap(), LEN);
        }
        assert_eq!(alloc::allocations(), before, "{suite} allocated");

        // Each packet needs a fresh sequence number: both ends refuse a repeated one.
        g.bench_function(format!("protect/{suite}"), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    packet(seq)
                },
                |p| black_box(alice.protect_rtp(p, LEN).unwrap()),
                BatchSize::SmallInput,
            )
        });
        let (mut alice, mut bob) = pair(suite);
        g.bench_function(format!("unprotect/{suite}"), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = packet(seq);
                    let n = alice.protect_rtp(&mut p, LEN).unwrap();
                    (p, n)
                },
                |(p, n)| black_box(bob.unprotect_rtp(&mut p[..*n]).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
