//! Bridged legs on real media workers: two RTP peers on 127.0.0.1 whose legs start on
//! different workers; bridging moves one leg to the other's worker and each peer hears the
//! other, not itself, until the bridge ends or the other leg is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::rtp::{tone, tone_power, RtpPeer};
use switchboard::engine::{BridgeError, LegHandle, LegSockets, MediaEngine, MoveError};
use switchboard::media::leg::{Leg, LegConfig, LegEvent};
use switchboard::rtp::types::Ssrc;
use tokio::sync::mpsc::UnboundedReceiver;

const LOW: f64 = 500.0;
const HIGH: f64 = 1300.0;

struct Party {
    peer: RtpPeer,
    leg: LegHandle,
    leg_addr: SocketAddr,
    _events: UnboundedReceiver<LegEvent>,
}

async fn party(media: &MediaEngine, n: u32) -> Party {
    let peer = RtpPeer::bind().await;
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let leg_addr = rtp.local_addr().unwrap();
    let cfg = LegConfig::pcmu(peer.socket.local_addr().unwrap(), Ssrc::new(300 + n));
    let leg = Leg::new(cfg, std::time::Instant::now()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let leg = media.add(leg, LegSockets::new(rtp, rtcp), tx).unwrap();
    Party {
        peer,
        leg,
        leg_addr,
        _events: rx,
    }
}

/// Both peers send their tone for `ms` at once; what each received, past the first 400 ms.
async fn talk(a: &mut Party, b: &mut Party, ms: usize) -> [Vec<i16>; 2] {
    let linger = Duration::from_millis(100);
    let (ta, tb) = (tone("500/5000@-16", ms), tone("1300/5000@-16", ms));
    let (ra, rb) = tokio::join!(
        a.peer.exchange(a.leg_addr, &ta, linger),
        b.peer.exchange(b.leg_addr, &tb, linger),
    );
    [ra, rb].map(|r| r.get(400 * 8..).unwrap_or(&[]).to_vec())
}

fn bridges(media: &MediaEngine) -> usize {
    media
        .stats()
        .iter()
        .map(|s| s.bridges.load(Ordering::Relaxed))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_moves_one_leg_and_carries_audio_both_ways_until_it_ends() {
    let media = MediaEngine::start(2, 0).unwrap();
    let mut a = party(&media, 1).await;
    let mut b = party(&media, 2).await;
    let (wa, wb) = (a.leg.worker(), b.leg.worker());
    assert_ne!(wa, wb, "the legs start on different workers");

    media.bridge(&a.leg, &b.leg).await.unwrap();
    assert_eq!(
        b.leg.worker(),
        wa,
        "the second leg moved to the first's worker"
    );
    assert_eq!(a.leg.worker(), wa);
    let [heard_a, heard_b] = talk(&mut a, &mut b, 2000).await;
    for (who, heard, own, other) in [("a", &heard_a, LOW, HIGH), ("b", &heard_b, HIGH, LOW)] {
        assert!(
            heard.len() > 8 * 1200,
            "{who} received audio: {}",
            heard.len()
        );
        let (o, h) = (tone_power(heard, other), tone_power(heard, own));
        assert!(
            o > 0.8 && h < 0.05,
            "{who}: {o} at its peer's tone, {h} at its own"
        );
    }
    assert_eq!(bridges(&media), 1);

    // A bridged leg stays with its peer, and neither takes a second peer.
    assert_eq!(media.move_leg(&b.leg, wb).await, Err(MoveError::Refused));
    let c = party(&media, 3).await;
    assert_eq!(
        media.bridge(&c.leg, &a.leg).await,
        Err(BridgeError::Move(MoveError::Refused))
    );
    assert_eq!(
        media.bridge(&a.leg, &c.leg).await,
        Err(BridgeError::Bridged(a.leg.id()))
    );
    assert_eq!(
        media.bridge(&a.leg, &a.leg).await,
        Err(BridgeError::SameLeg)
    );

    // Unbridged: both hear silence, while their legs go on sending.
    media.unbridge(&b.leg);
    let [heard_a, heard_b] = talk(&mut a, &mut b, 1200).await;
    for (who, heard) in [("a", &heard_a), ("b", &heard_b)] {
        assert!(
            heard.len() > 8 * 500,
            "{who} still receives: {}",
            heard.len()
        );
        assert!(heard.iter().all(|&s| s.abs() <= 8), "{who} hears silence");
    }

    // Bridged again (now on one worker, nothing moves), then b hangs up: a hears silence.
    media.bridge(&b.leg, &a.leg).await.unwrap();
    let [heard_a, _] = talk(&mut a, &mut b, 1200).await;
    assert!(tone_power(&heard_a, HIGH) > 0.8, "a hears b again");
    drop(b.leg);
    let probe = tone("500/5000@-16", 1200);
    let after = a
        .peer
        .exchange(a.leg_addr, &probe, Duration::from_millis(100))
        .await;
    let after = after.get(400 * 8..).unwrap_or(&[]);
    assert!(after.len() > 8 * 500, "a still receives: {}", after.len());
    assert!(
        after.iter().all(|&s| s.abs() <= 8),
        "a hears silence after b left"
    );
    assert_eq!(bridges(&media), 0);
}
