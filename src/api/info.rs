//! `GET /api/info` (open to all: what the console needs before it has a token) and
//! `GET /api/stats` (the live numbers of `/metrics` as one JSON object).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{prometheus, ApiState, ErrorBody};

/// How requests authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No token: the server listens on loopback without one.
    None,
    /// `Authorization: Bearer TOKEN`.
    Token,
}

/// Answer of `GET /api/info`: the server's name and version, which instance this is, whether
/// a token is needed, whether it is draining and how many calls it holds, nothing more (a
/// proxy's operator reads it from every instance behind the proxy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServerInfo {
    /// Always `switchboard`.
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Whether requests need a bearer token.
    pub auth: AuthMode,
    /// The server is draining: it takes no new calls and exits once the live ones end.
    pub draining: bool,
    /// This instance's name (`[server] name`, by default the host name).
    pub instance: String,
    /// Live calls.
    pub calls: u64,
    /// The dialplan number that joins room `{room}` from a browser, when WebRTC calls are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_number: Option<String>,
}

/// Tells a client whether it needs a token; needs none itself.
#[utoipa::path(
    get,
    path = "/api/info",
    tag = "server",
    security(()),
    responses((status = 200, description = "Name, version, instance, authentication, drain, calls", body = ServerInfo))
)]
pub(crate) async fn info(State(state): State<ApiState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        name: "switchboard",
        version: env!("CARGO_PKG_VERSION"),
        auth: if state.token.is_some() {
            AuthMode::Token
        } else {
            AuthMode::None
        },
        draining: state.drain.is_draining(),
        instance: state.instance().to_string(),
        calls: state.calls.len() as u64,
        room_number: state.whip.as_ref().map(|_| state.room_number.to_string()),
    })
}

/// Answer of `GET /api/stats`: what is live now and the media workers' counters, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Stats {
    /// Live calls.
    pub calls: u64,
    /// Media legs owned by the workers.
    pub legs: u64,
    /// Live conference rooms.
    pub rooms: u64,
    /// Members of all live rooms.
    pub room_members: u64,
    /// Media workers.
    pub workers: u64,
    /// Media ticks run, ever.
    pub ticks: u64,
    /// Ticks that started late, ever.
    pub late_ticks: u64,
    /// Frames skipped after a worker fell behind, ever.
    pub skipped_ticks: u64,
    /// RTP packets accepted, ever.
    pub rtp_packets_in: u64,
    /// RTP packets sent, ever.
    pub rtp_packets_out: u64,
    /// Audio frames concealed after loss or lateness, ever.
    pub frames_concealed: u64,
    /// RTP packets lost (expected from their sequence numbers, never received), ever.
    pub rtp_packets_lost: u64,
    /// Lost packets as a percentage of packets expected, received or lost (0 without media).
    pub rtp_loss_percent: f64,
}

/// The live numbers of `/metrics`, as JSON.
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "metrics",
    responses(
        (status = 200, description = "Live counts and media counters", body = Stats),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn stats(State(state): State<ApiState>) -> Json<Stats> {
    let g = prometheus::gauges(&state);
    let mut s = Stats {
        calls: g.active_calls,
        rooms: g.rooms,
        room_members: g.room_members,
        workers: g.workers.len() as u64,
        ..Stats::default()
    };
    for w in &g.workers {
        s.legs += w.legs;
        s.ticks += w.ticks;
        s.late_ticks += w.late_ticks;
        s.skipped_ticks += w.skipped_ticks;
        for &(name, _, v) in &w.extra_counters {
            match name {
                "rtp_packets_in" => s.rtp_packets_in += v,
                "rtp_packets_out" => s.rtp_packets_out += v,
                "frames_concealed" => s.frames_concealed += v,
                "rtp_packets_lost" => s.rtp_packets_lost += v,
                _ => {}
            }
        }
    }
    let expected = s.rtp_packets_in + s.rtp_packets_lost;
    if expected > 0 {
        s.rtp_loss_percent =
            (s.rtp_packets_lost as f64 * 100.0 / expected as f64 * 100.0).round() / 100.0;
    }
    Json(s)
}
