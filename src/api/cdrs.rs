//! `GET /api/cdrs`: one day's call detail records, newest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::recordings::{DEFAULT_LIMIT, MAX_LIMIT};
use super::{ApiError, ApiState, ErrorBody};
use crate::cdr::{read_day, CdrDate, CdrError, CdrPage};

/// Query of `GET /api/cdrs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CdrParams {
    /// The UTC day, `YYYY-MM-DD`; default today.
    pub date: Option<String>,
    /// Page size, default 50; values above 1000 are reduced to 1000.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
    /// Records to skip, newest first; default 0.
    pub offset: Option<usize>,
}

/// Lists one day's CDRs.
#[utoipa::path(
    get,
    path = "/api/cdrs",
    tag = "cdrs",
    params(CdrParams),
    responses(
        (status = 200, description = "One page of the day's records, newest first", body = CdrPage),
        (status = 400, description = "Malformed date or parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "CDRs are turned off (`[cdr] dir` is empty)", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<CdrParams>, QueryRejection>,
) -> Result<Json<CdrPage>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Some(dir) = state.cdr_dir.clone() else {
        return Err(ApiError::NotFound("CDRs are turned off".into()));
    };
    let date = match params.date.as_deref() {
        Some(d) => CdrDate::parse(d).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => CdrDate::of(std::time::SystemTime::now()),
    };
    let offset = params.offset.unwrap_or(0);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let page = tokio::task::spawn_blocking(move || read_day(&dir, &date, offset, limit))
        .await
        .map_err(|e| ApiError::Internal(format!("CDR read task: {e}")))?;
    match page {
        Ok(p) => Ok(Json(p)),
        Err(e @ CdrError::BadDate(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
