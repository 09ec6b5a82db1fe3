//! SRTP's four per-packet transforms must not allocate: a counting global allocator proves
//! it for every suite, across a sequence-number wrap, replays and forged packets included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard::rtp::srtp::{CryptoAttr, MasterKey, SrtpError, SrtpSession, Suite};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn protect_and_unprotect_do_not_allocate() {
    for suite in Suite::ALL {
        let a = MasterKey::random(suite).unwrap();
        let b = MasterKey::random(suite).unwrap();
        let mut alice = SrtpSession::new(&a, &CryptoAttr::new(1, b.clone())).unwrap();
        let mut bob = SrtpSession::new(&b, &CryptoAttr::new(1, a)).unwrap();
        let mut accepted = 0;
        let mut refused = 0;
        let n = allocations(|| {
            for i in 0..600u16 {
                let seq = 65_300u16.wrapping_add(i);
                // Two SSRCs, so the stream table is used, not only one slot.
                let ssrc = 0x1000 + u32::from(i % 2);
                let mut p = [0x55u8; 172 + 16];
                p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let len = alice.protect_rtp(&mut p, 172).unwrap();
                let mut replay = p;
                if bob.unprotect_rtp(&mut p[..len]) == Ok(172) {
                    accepted += 1;
                }
                if bob.unprotect_rtp(&mut replay[..len]) == Err(SrtpError::Replayed) {
                    refused += 1;
                }
                replay[40] ^= 1;
                if bob.unprotect_rtp(&mut replay[..len]).is_err() {
                    refused += 1;
                }

                let mut r = [0u8; 32 + 20];
                r[..8].copy_from_slice(&[0x80, 201, 0, 7, 0, 0, 0x10, 0]);
                let len = alice.protect_rtcp(&mut r, 32).unwrap();
                if bob.unprotect_rtcp(&mut r[..len]) == Ok(32) {
                    accepted += 1;
                }
            }
        });
        assert_eq!(n, 0, "{suite} allocated {n} times");
        assert_eq!(accepted, 1200, "{suite}");
        assert_eq!(refused, 1200, "{suite}");
    }
}
