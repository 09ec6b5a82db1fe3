//! The leg every media benchmark drives: PCMU with telephone-events, sending to a fixed peer.

use std::net::SocketAddr;
use std::time::Instant;

use switchboard::media::dtmf::InbandDetection;
use switchboard::media::leg::{Leg, LegConfig};
use switchboard::rtp::types::Ssrc;

/// Where the benchmark legs send (nothing listens; the benchmarks use a no-op sink).
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// A PCMU leg with SSRC `i`, sending to [`PEER`].
#[allow(dead_code)]
pub fn pcmu_leg(i: usize, now: Instant) -> Leg {
    Leg::new(LegConfig::pcmu(PEER, Ssrc::new(i as u32)), now).unwrap()
}

/// As [`pcmu_leg`], with in-band detection as `[dtmf] inband` says (the leg agreed RFC 4733
/// events, so `Auto` leaves its audio unanalysed).
#[allow(dead_code)]
pub fn pcmu_leg_inband(i: usize, now: Instant, inband: InbandDetection) -> Leg {
    let cfg = LegConfig {
        inband,
        ..LegConfig::pcmu(PEER, Ssrc::new(i as u32))
    };
    Leg::new(cfg, now).unwrap()
}
