//! The leg every media benchmark drives: PCMU with telephone-events, sending to a fixed peer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::media::codec::CodecKind;
use switchboard::media::leg::{Leg, LegConfig};
use switchboard::rtp::types::{PayloadType, Ssrc};
use switchboard::sdp::Direction;

/// Where the benchmark legs send (nothing listens; the benchmarks use a no-op sink).
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// A PCMU leg with SSRC `i`, sending to [`PEER`].
pub fn pcmu_leg(i: usize, now: Instant) -> Leg {
    Leg::new(
        LegConfig {
            codec: CodecKind::Pcmu,
            payload_type: PayloadType::PCMU,
            telephone_event: Some(PayloadType::DEFAULT_TELEPHONE_EVENT),
            remote: Some(PEER),
            remote_rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            rtp_timeout: Duration::from_secs(60),
            ssrc: Ssrc::new(i as u32),
            ptime: Duration::from_millis(20),
            sources: Default::default(),
            dtmf: switchboard::media::dtmf::DetectorConfig::default(),
        },
        now,
    )
    .unwrap()
}
