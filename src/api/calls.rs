//! `/api/calls` handlers: live calls and the controls an operator may send them.
//!
//! A control is accepted (202) once it is queued to the call's own task; the call applies
//! it there, and the event stream tells what happened.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::live::{CallControl, CallInfo};

/// Most keys sent in one request.
pub const MAX_DIGITS: usize = 64;

/// Body of `POST /api/calls/{id}/dtmf`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DtmfBody {
    /// Keys to send: `0-9`, `*`, `#`, `A-D`; 1 to 64 of them.
    #[schema(example = "12#")]
    pub digits: String,
}

/// Checks keys to send; lower-case `a-d` are taken as upper case.
pub fn validate_digits(digits: &str) -> Result<String, ApiError> {
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return Err(ApiError::BadRequest(format!(
            "`digits` must have 1 to {MAX_DIGITS} keys"
        )));
    }
    let upper = digits.to_ascii_uppercase();
    match upper
        .chars()
        .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        Some(c) => Err(ApiError::BadRequest(format!(
            "`digits` may hold only 0-9, *, # and A-D, not {c:?}"
        ))),
        None => Ok(upper),
    }
}

/// Lists live calls, oldest first.
#[utoipa::path(
    get,
    path = "/api/calls",
    tag = "calls",
    responses(
        (status = 200, description = "Live calls, oldest first", body = Vec<CallInfo>),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<CallInfo>> {
    Json(state.calls.list())
}

/// Describes one live call.
#[utoipa::path(
    get,
    path = "/api/calls/{id}",
    tag = "calls",
    params(("id" = String, Path, description = "SIP Call-ID")),
    responses(
        (status = 200, description = "The call", body = CallInfo),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CallInfo>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state
        .calls
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no call {id}")))
}

/// Hangs a call up (BYE, or a refusal before the answer).
#[utoipa::path(
    post,
    path = "/api/calls/{id}/hangup",
    tag = "calls",
    params(("id" = String, Path, description = "SIP Call-ID")),
    responses(
        (status = 202, description = "Handed to the call; `call_ended` follows on the event stream"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
    )
)]
pub(crate) async fn hangup(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state.calls.control(&id, CallControl::Hangup)?;
    tracing::info!(call_id = %id, "hangup requested over the API");
    Ok(StatusCode::ACCEPTED)
}

/// Sends keys to the caller.
#[utoipa::path(
    post,
    path = "/api/calls/{id}/dtmf",
    tag = "calls",
    params(("id" = String, Path, description = "SIP Call-ID")),
    request_body = DtmfBody,
    responses(
        (status = 202, description = "Handed to the call"),
        (status = 400, description = "Malformed body or keys", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
    )
)]
pub(crate) async fn dtmf(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<DtmfBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let digits = validate_digits(&body.digits)?;
    state.calls.control(&id, CallControl::Dtmf(digits))?;
    Ok(StatusCode::ACCEPTED)
}

/// Body of `POST /api/calls/{id}/stream` and `POST /api/rooms/{name}/stream`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBody {
    /// The application's `ws://` or `wss://` URL.
    #[schema(example = "wss://bot.example.com/media")]
    pub url: String,
    /// `twilio` (default: JSON with base64 µ-law at 8 kHz) or `l16` (binary PCM).
    pub format: Option<String>,
    /// `inbound` (default: what the caller says), `outbound` (what it hears) or `both`.
    pub track: Option<String>,
    /// Sample rate of an `l16` stream: 8000 (default) or 16000.
    pub rate: Option<u32>,
    /// Play what the application sends back to the caller (calls only).
    #[serde(default)]
    pub bidirectional: bool,
    /// Passed on in the start message (Twilio's `customParameters`).
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
}

impl StreamBody {
    /// The checked request.
    pub(crate) fn request(self) -> Result<crate::stream::StreamRequest, ApiError> {
        let options = crate::stream::StreamOptions {
            format: self.format,
            track: self.track,
            rate: self.rate,
            bidirectional: self.bidirectional,
            parameters: self.parameters,
        };
        crate::stream::StreamRequest::new(self.url.trim(), options).map_err(ApiError::BadRequest)
    }
}

/// Streams the call's audio to an application over WebSocket (one stream per call).
#[utoipa::path(
    post,
    path = "/api/calls/{id}/stream",
    tag = "calls",
    params(("id" = String, Path, description = "SIP Call-ID")),
    request_body = StreamBody,
    responses(
        (status = 202, description = "Handed to the call; `stream_started` follows once the socket is up"),
        (status = 400, description = "Malformed body, URL or options", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
    )
)]
pub(crate) async fn stream_start(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<StreamBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let request = body.request()?;
    state
        .calls
        .control(&id, CallControl::Stream(Box::new(request)))?;
    tracing::info!(call_id = %id, "stream requested over the API");
    Ok(StatusCode::ACCEPTED)
}

/// Stops the call's stream.
#[utoipa::path(
    delete,
    path = "/api/calls/{id}/stream",
    tag = "calls",
    params(("id" = String, Path, description = "SIP Call-ID")),
    responses(
        (status = 202, description = "Handed to the call; `stream_stopped` follows"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
    )
)]
pub(crate) async fn stream_stop(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state.calls.control(&id, CallControl::StopStream)?;
    Ok(StatusCode::ACCEPTED)
}

/// Body of `POST /api/calls`: a call to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginateBody {
    /// Whom to call: a `sip:` URI with an IP address, allowed by `[outbound] allow`.
    #[schema(example = "sip:alice@127.0.0.1:5070")]
    pub to: String,
    /// The From user (default `switchboard`).
    pub from: Option<String>,
    /// The number the callee sees, when not `from`.
    pub caller_id: Option<String>,
    /// The script to run on answer (one of `script` and `room`).
    pub script: Option<String>,
    /// The conference room to join on answer.
    pub room: Option<String>,
    /// Variables the script sees as `session.vars`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Seconds the far end may ring (default 30, at most 300).
    pub timeout_secs: Option<u64>,
    /// Detect an answering machine before the script runs: its result is the script's
    /// `session.amd` and an `amd` event (a room's flow leaves a machine at once).
    #[serde(default)]
    pub amd: bool,
}

/// The call just placed.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Originated {
    /// Its SIP Call-ID, for `/api/calls/{id}` and the events.
    pub id: String,
}

/// Places a call; on answer it runs a script (`session.direction == "outbound"`) or joins a
/// room.
#[utoipa::path(
    post,
    path = "/api/calls",
    tag = "calls",
    request_body = OriginateBody,
    responses(
        (status = 201, description = "Placed; `call_ringing`, `call_answered` or `call_failed`, then `call_ended` follow on the event stream", body = Originated),
        (status = 400, description = "Malformed body, bad target, unknown script", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "The target is not allowed by `[outbound] allow`", body = ErrorBody),
        (status = 503, description = "The server is draining", body = ErrorBody),
    )
)]
pub(crate) async fn originate(
    State(state): State<ApiState>,
    body: Result<Json<OriginateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Originated>), ApiError> {
    use crate::call::OriginateFlow;
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let flow = match (b.script, b.room) {
        (Some(s), None) => OriginateFlow::Script(s),
        (None, Some(room)) => OriginateFlow::Room {
            room,
            confirm: None,
        },
        _ => {
            return Err(ApiError::BadRequest(
                "give one of `script` and `room`".into(),
            ))
        }
    };
    place(
        &state,
        crate::call::Originate {
            to: b.to,
            from: b.from,
            caller_id: b.caller_id,
            flow,
            vars: b.vars,
            timeout: ring_timeout(b.timeout_secs)?,
            amd: b.amd,
        },
    )
}

/// `timeout_secs` of a call to place: 1 to 300, default 30.
pub(crate) fn ring_timeout(secs: Option<u64>) -> Result<std::time::Duration, ApiError> {
    let secs = secs.unwrap_or(30);
    if !(1..=300).contains(&secs) {
        return Err(ApiError::BadRequest(
            "`timeout_secs` must be 1 to 300".into(),
        ));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Places a call for the API: 201 with its id, 403 outside `[outbound] allow`.
pub(crate) fn place(
    state: &ApiState,
    o: crate::call::Originate,
) -> Result<(StatusCode, Json<Originated>), ApiError> {
    use crate::call::OriginateError;
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the server is draining".into()));
    }
    let Some(originate) = state.originator.as_ref() else {
        return Err(ApiError::Unavailable("this server places no calls".into()));
    };
    match originate(o) {
        Ok(id) => {
            tracing::info!(call_id = %id, "call placed over the API");
            Ok((StatusCode::CREATED, Json(Originated { id })))
        }
        Err(e @ OriginateError::NotAllowed(_)) => Err(ApiError::Forbidden(e.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits() {
        assert_eq!(validate_digits("12#*abcD").unwrap(), "12#*ABCD");
        assert!(validate_digits("").is_err());
        assert!(validate_digits("1E").is_err());
        assert!(validate_digits("1 2").is_err());
        assert!(validate_digits(&"1".repeat(64)).is_ok());
        assert!(validate_digits(&"1".repeat(65)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn accepted_digits_are_keypad_keys(s in "\\PC{0,80}") {
            if let Ok(d) = validate_digits(&s) {
                proptest::prop_assert!(!d.is_empty() && d.len() <= MAX_DIGITS);
                proptest::prop_assert!(d.chars().all(|c| "0123456789*#ABCD".contains(c)));
            }
        }
    }
}
