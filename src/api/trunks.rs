//! `GET /api/trunks`: every configured SIP trunk with its state now.

use axum::extract::State;
use axum::Json;

use super::{ApiState, ErrorBody};
use crate::sip::trunks::TrunkStatus;

/// Lists the trunks in configuration order.
#[utoipa::path(
    get,
    path = "/api/trunks",
    tag = "trunks",
    responses(
        (status = 200, description = "Trunks: registration, up or down, calls, results", body = Vec<TrunkStatus>),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<TrunkStatus>> {
    Json(state.trunks.status(std::time::Instant::now()))
}
