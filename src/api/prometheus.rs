//! `GET /metrics`: the server's counters and gauges in the Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::ApiState;
use crate::metrics::{Gauges, WorkerSample};

/// Content type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads the gauges now and renders everything.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition (0.0.4)", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub(crate) async fn scrape(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, CONTENT_TYPE_TEXT)],
        state.metrics.render(&gauges(&state)),
    )
}

/// The live gauges now: calls, rooms, members, each media worker's counters and the trunks.
pub(crate) fn gauges(state: &ApiState) -> Gauges {
    let rooms = state.rooms.list();
    Gauges {
        active_calls: state.calls.len() as u64,
        rooms: rooms.len() as u64,
        room_members: rooms.iter().map(|r| r.members.len() as u64).sum(),
        workers: state
            .workers
            .iter()
            .map(|w| WorkerSample::from_stats(w))
            .collect(),
        trunks: state.trunks.status(std::time::Instant::now()),
    }
}
