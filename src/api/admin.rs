//! `POST /api/admin/drain`: take the server out of service gracefully, as SIGTERM does.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiState, ErrorBody};

/// Answer of `POST /api/admin/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DrainStarted {
    /// Always true: the server is draining.
    pub draining: bool,
    /// Live calls when asked.
    pub calls: usize,
}

/// Starts draining: new INVITEs and OPTIONS get 503, live calls go on for up to
/// `[sip] drain_secs` and then get BYE, and the server exits once no call is left.
/// Asking again changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/drain",
    tag = "server",
    responses(
        (status = 202, description = "Draining", body = DrainStarted),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn drain(State(state): State<ApiState>) -> (StatusCode, Json<DrainStarted>) {
    if state.drain.start() {
        tracing::info!("drain requested over the API");
    }
    (
        StatusCode::ACCEPTED,
        Json(DrainStarted {
            draining: true,
            calls: state.calls.len(),
        }),
    )
}
