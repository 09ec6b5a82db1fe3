//! The HTTP API: an axum [`Router`] over the recordings folder, the live calls and rooms,
//! the event stream, CDRs and metrics, plus the web console's static files.
//!
//! Endpoints (all behind a bearer token, see [`auth`], except `/api/info` and the console's
//! own files):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/info` | name, version, whether a token is needed, whether draining (no token) |
//! | POST | `/api/admin/drain` | 202: refuse new calls, end live ones after `drain_secs`, exit |
//! | GET | `/api/recordings` | `{ "total", "items" }`, newest first; filters and paging |
//! | GET | `/api/recordings/{id}` | the sidecar |
//! | GET, HEAD | `/api/recordings/{id}/audio` | the WAV; `Range`, `ETag`, `If-None-Match` |
//! | GET | `/api/recordings/{id}/levels?n=` | peak level of each of `n` slices of the WAV |
//! | DELETE | `/api/recordings/{id}` | 204; removes the WAV and the sidecar |
//! | GET | `/api/calls`, `/api/calls/{id}` | live calls |
//! | POST | `/api/calls/{id}/hangup`, `/api/calls/{id}/dtmf` | 202: handed to the call |
//! | GET | `/api/rooms`, `/api/rooms/{name}` | live rooms with their members |
//! | POST | `/api/rooms/{name}/members/{id}/{action}` | 202: mute, unmute, deaf, undeaf, kick |
//! | POST | `/api/rooms/{name}/{lock,unlock,end,play,record/start,record/stop}` | 202 |
//! | GET | `/api/events` | Server-Sent Events from the event bus |
//! | GET | `/api/cdrs` | one day's call detail records, newest first; text and outcome filters |
//! | POST | `/api/webrtc/{number}` | 201: an SDP offer (WHIP style) answered by a call to `number` |
//! | DELETE | `/api/webrtc/sessions/{id}` | 200: hangs that call up |
//! | GET | `/api/trunks` | the SIP trunks: registration, up or down, calls in use, results |
//! | GET | `/api/stats` | live calls, legs, rooms and media counters as JSON |
//! | GET | `/metrics` | Prometheus text exposition |
//! | GET | `/api/openapi.json` | the OpenAPI document |
//! | GET | `/`, `/console.js`, `/console.css` | the web console (no token: it holds no data) |
//!
//! Listing reads only the in-memory [`RecordingIndex`]; file access happens only for audio
//! and delete, and then only for `dir/ID.wav` and `dir/ID.json` with an `ID` that passed
//! [`is_safe_id`](crate::media::record::sidecar::is_safe_id) and is in the index, so no
//! request can name a path outside the recordings folder. CDRs are read only from
//! `DIR/YYYY-MM-DD.jsonl` for a date checked digit by digit.

pub mod admin;
pub mod auth;
pub mod calls;
pub mod cdrs;
pub mod console;
pub mod events;
pub mod index;
pub mod info;
pub mod levels;
pub mod openapi;
pub mod prometheus;
pub mod range;
pub mod recordings;
pub mod rooms;
pub mod trunks;
pub mod webrtc;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

pub use auth::check_token_policy;
pub use index::{IndexError, ListFilter, Page, RecordingIndex};
pub use openapi::ApiDoc;

use crate::engine::WorkerStats;
use crate::events::EventBus;
use crate::live::{CallRegistry, NoRooms, Rooms};
use crate::metrics::Metrics;

/// Keep-alive comment interval of the event stream, short enough for common proxy timeouts.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What every handler shares: the recordings folder, the token, the index and the live
/// parts of the server.
#[derive(Clone)]
pub struct ApiState {
    dir: PathBuf,
    token: Option<String>,
    index: Arc<RecordingIndex>,
    calls: CallRegistry,
    rooms: Arc<dyn Rooms>,
    events: EventBus,
    metrics: Arc<Metrics>,
    workers: Vec<Arc<WorkerStats>>,
    cdr_dir: Option<PathBuf>,
    keep_alive: Duration,
    levels: Arc<levels::LevelCache>,
    drain: crate::drain::Drain,
    originator: Option<Originator>,
    trunks: Arc<crate::sip::trunks::Trunks>,
    instance: Arc<str>,
    whip: Option<Arc<crate::call::whip::WhipCalls>>,
    room_number: Arc<str>,
}

/// Places a call for `POST /api/calls` and returns its Call-ID.
pub type Originator = Arc<
    dyn Fn(crate::call::Originate) -> Result<String, crate::call::OriginateError> + Send + Sync,
>;

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("dir", &self.dir)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("calls", &self.calls)
            .field("cdr_dir", &self.cdr_dir)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State for the index's folder; an empty or blank token means no authentication.
    /// No live calls, no rooms, a bus of its own and CDRs off until set with `with_*`.
    pub fn new(index: Arc<RecordingIndex>, token: Option<String>) -> ApiState {
        ApiState {
            dir: index.dir().to_path_buf(),
            token: auth::normalise_token(token),
            index,
            calls: CallRegistry::default(),
            rooms: Arc::new(NoRooms),
            events: EventBus::default(),
            metrics: Arc::new(Metrics::default()),
            workers: Vec::new(),
            cdr_dir: None,
            keep_alive: SSE_KEEP_ALIVE,
            levels: Arc::default(),
            drain: crate::drain::Drain::default(),
            originator: None,
            trunks: Arc::default(),
            instance: Arc::from("switchboard"),
            whip: None,
            room_number: Arc::from(""),
        }
    }

    /// Takes calls offered over HTTP (`POST /api/webrtc/{number}`) with `whip`; the
    /// console joins room `{room}` by calling `room_number`.
    pub fn with_whip(
        mut self,
        whip: Arc<crate::call::whip::WhipCalls>,
        room_number: &str,
    ) -> ApiState {
        self.whip = Some(whip);
        self.room_number = Arc::from(room_number);
        self
    }

    /// Names this instance in `/api/info` and `/api/rooms` (default `switchboard`).
    pub fn with_instance(mut self, name: &str) -> ApiState {
        self.instance = Arc::from(name);
        self
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Places calls for `POST /api/calls` with `originate`.
    pub fn with_originator(mut self, originate: Originator) -> ApiState {
        self.originator = Some(originate);
        self
    }

    /// Uses this registry of live calls.
    pub fn with_calls(mut self, calls: CallRegistry) -> ApiState {
        self.calls = calls;
        self
    }

    /// Uses this conference side.
    pub fn with_rooms(mut self, rooms: Arc<dyn Rooms>) -> ApiState {
        self.rooms = rooms;
        self
    }

    /// Streams events from this bus.
    pub fn with_events(mut self, events: EventBus) -> ApiState {
        self.events = events;
        self
    }

    /// Serves these counters at `/metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> ApiState {
        self.metrics = metrics;
        self
    }

    /// Reports these media workers at `/metrics`.
    pub fn with_media_stats(mut self, workers: Vec<Arc<WorkerStats>>) -> ApiState {
        self.workers = workers;
        self
    }

    /// Lists CDRs from this folder; `None` turns `/api/cdrs` off (404).
    pub fn with_cdr_dir(mut self, dir: Option<PathBuf>) -> ApiState {
        self.cdr_dir = dir;
        self
    }

    /// Throws this switch on `POST /api/admin/drain` and reports it in `/api/info`.
    pub fn with_drain(mut self, drain: crate::drain::Drain) -> ApiState {
        self.drain = drain;
        self
    }

    /// Lists these trunks at `/api/trunks` and `/metrics`.
    pub fn with_trunks(mut self, trunks: Arc<crate::sip::trunks::Trunks>) -> ApiState {
        self.trunks = trunks;
        self
    }

    /// Sends an event-stream keep-alive comment this often (default [`SSE_KEEP_ALIVE`]).
    pub fn with_keep_alive(mut self, every: Duration) -> ApiState {
        self.keep_alive = every;
        self
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

/// The API's routes, with authentication applied to all of them (and to unknown paths)
/// except the web console's static files.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/recordings", get(recordings::list))
        .route(
            "/api/recordings/{id}",
            get(recordings::get_one).delete(recordings::delete),
        )
        .route("/api/recordings/{id}/audio", get(recordings::audio))
        .route("/api/recordings/{id}/levels", get(levels::levels))
        .route("/api/calls", get(calls::list).post(calls::originate))
        .route("/api/calls/{id}", get(calls::get_one))
        .route("/api/calls/{id}/hangup", post(calls::hangup))
        .route("/api/calls/{id}/dtmf", post(calls::dtmf))
        .route(
            "/api/calls/{id}/stream",
            post(calls::stream_start).delete(calls::stream_stop),
        )
        .route("/api/rooms", get(rooms::list))
        .route("/api/rooms/{name}", get(rooms::get_one))
        .route(
            "/api/rooms/{name}/members/{member}/{action}",
            post(rooms::member_action),
        )
        .route("/api/rooms/{name}/lock", post(rooms::lock))
        .route("/api/rooms/{name}/unlock", post(rooms::unlock))
        .route("/api/rooms/{name}/end", post(rooms::end))
        .route("/api/rooms/{name}/play", post(rooms::play))
        .route("/api/rooms/{name}/dial", post(rooms::dial))
        .route("/api/rooms/{name}/record/start", post(rooms::record_start))
        .route("/api/rooms/{name}/record/stop", post(rooms::record_stop))
        .route(
            "/api/rooms/{name}/stream",
            post(rooms::stream_start).delete(rooms::stream_stop),
        )
        .route("/api/events", get(events::stream))
        .route("/api/cdrs", get(cdrs::list))
        .route("/api/trunks", get(trunks::list))
        .route("/api/webrtc/{number}", post(webrtc::offer))
        .route(
            "/api/webrtc/sessions/{id}",
            axum::routing::delete(webrtc::hang_up),
        )
        .route("/metrics", get(prometheus::scrape))
        .route("/api/stats", get(info::stats))
        .route("/api/admin/drain", post(admin::drain))
        .route("/api/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state.clone());
    // Open to all: a client learns here whether it needs a token at all.
    let open = Router::new()
        .route("/api/info", get(info::info))
        .with_state(state);
    console::routes().merge(open).merge(api)
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

impl From<crate::live::ControlError> for ApiError {
    fn from(e: crate::live::ControlError) -> Self {
        use crate::live::ControlError as C;
        match e {
            C::NoCall | C::NoRoom | C::NoMember => ApiError::NotFound(e.to_string()),
            C::Refused(why) => ApiError::Conflict(why),
        }
    }
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
    /// The recording is still being written, or the control was refused.
    #[error("{0}")]
    Conflict(String),
    /// A file operation failed; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// Refused by policy (e.g. `[outbound] allow`).
    #[error("{0}")]
    Forbidden(String),
    /// Not now (draining, nothing to do it with).
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
