//! The HTTP API: an axum [`Router`] over the recordings folder.
//!
//! Endpoints (all under `/api`, all behind a bearer token, see [`auth`]):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/recordings` | `{ "total", "items" }`, newest first; filters and paging |
//! | GET | `/api/recordings/{id}` | the sidecar |
//! | GET, HEAD | `/api/recordings/{id}/audio` | the WAV; `Range`, `ETag`, `If-None-Match` |
//! | DELETE | `/api/recordings/{id}` | 204; removes the WAV and the sidecar |
//! | GET | `/api/openapi.json` | the OpenAPI document |
//!
//! Listing reads only the in-memory [`RecordingIndex`]; file access happens only for audio
//! and delete, and then only for `dir/ID.wav` and `dir/ID.json` with an `ID` that passed
//! [`is_safe_id`](crate::media::record::sidecar::is_safe_id) and is in the index, so no
//! request can name a path outside the recordings folder.

pub mod auth;
pub mod index;
pub mod openapi;
pub mod range;
pub mod recordings;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

pub use auth::check_token_policy;
pub use index::{IndexError, ListFilter, Page, RecordingIndex};
pub use openapi::ApiDoc;

/// What every handler shares: the recordings folder, the token and the index.
#[derive(Debug, Clone)]
pub struct ApiState {
    dir: PathBuf,
    token: Option<String>,
    index: Arc<RecordingIndex>,
}

impl ApiState {
    /// State for the index's folder; an empty or blank token means no authentication.
    pub fn new(index: Arc<RecordingIndex>, token: Option<String>) -> ApiState {
        ApiState {
            dir: index.dir().to_path_buf(),
            token: auth::normalise_token(token),
            index,
        }
    }

    /// The recordings folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The recording index, for the server to `upsert`/`remove` as recordings change.
    pub fn index(&self) -> &Arc<RecordingIndex> {
        &self.index
    }
}

/// The API's routes, with authentication applied to all of them (and to unknown paths).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/recordings", get(recordings::list))
        .route(
            "/api/recordings/{id}",
            get(recordings::get_one).delete(recordings::delete),
        )
        .route("/api/recordings/{id}/audio", get(recordings::audio))
        .route("/api/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state)
}

/// The generated OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "recordings",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Why a request failed; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or `invalid`: the wrong one.
    #[error("missing or invalid bearer token")]
    Unauthorized {
        /// A token was given but did not match.
        invalid: bool,
    },
    /// The request is malformed (bad id, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// No such recording or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The recording is still being written.
    #[error("{0}")]
    Conflict(String),
    /// A file operation failed; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        if let ApiError::Unauthorized { invalid } = self {
            let challenge = if invalid {
                HeaderValue::from_static("Bearer error=\"invalid_token\"")
            } else {
                HeaderValue::from_static("Bearer")
            };
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
