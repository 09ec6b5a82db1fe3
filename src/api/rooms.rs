//! `/api/rooms` handlers: live rooms, their members, and the controls an operator may use.
//!
//! A control is accepted (202) once the conference side has taken it; the room applies it
//! on its media worker, and the event stream tells what happened (`member_muted`, …).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::live::{MemberAction, RoomAction, RoomInfo};

/// Longest prompt name accepted.
pub const MAX_PROMPT: usize = 200;

/// What `POST /api/rooms/{name}/members/{member}/{action}` can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberActionName {
    /// The others stop hearing the member.
    Mute,
    /// The others hear the member again.
    Unmute,
    /// The member stops hearing the room.
    Deaf,
    /// The member hears the room again.
    Undeaf,
    /// The member leaves the room and its call is hung up.
    Kick,
}

impl From<MemberActionName> for MemberAction {
    fn from(a: MemberActionName) -> Self {
        match a {
            MemberActionName::Mute => MemberAction::Mute,
            MemberActionName::Unmute => MemberAction::Unmute,
            MemberActionName::Deaf => MemberAction::Deaf,
            MemberActionName::Undeaf => MemberAction::Undeaf,
            MemberActionName::Kick => MemberAction::Kick,
        }
    }
}

/// Body of `POST /api/rooms/{name}/play`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayBody {
    /// A prompt's name under the prompts folder, such as `welcome` or `conf/muted`.
    #[schema(example = "welcome")]
    pub prompt: String,
}

/// Answer of `POST /api/rooms/{name}/record/start`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingStarted {
    /// The new recording's id (see `/api/recordings/{id}` once it is finished).
    pub id: String,
}

/// Checks a prompt name: a relative path of plain segments, no `..`, no backslash.
pub fn validate_prompt(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROMPT
        && !name.starts_with('/')
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "`prompt` is a relative name of letters, digits, `-`, `_`, `.` and `/`".into(),
        ))
    }
}

/// A live room, and the instance that holds it: behind a proxy every instance lists only
/// its own rooms, and an operator looking at several needs to tell them apart.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoomView {
    /// The room.
    #[serde(flatten)]
    pub room: RoomInfo,
    /// The instance holding it (`[server] name`).
    pub instance: String,
}

impl RoomView {
    fn of(state: &ApiState, room: RoomInfo) -> RoomView {
        RoomView {
            room,
            instance: state.instance().to_string(),
        }
    }
}

/// Lists live rooms with their members.
#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "rooms",
    responses(
        (status = 200, description = "Live rooms, by name", body = Vec<RoomView>),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<RoomView>> {
    let rooms = state.rooms.list();
    Json(rooms.into_iter().map(|r| RoomView::of(&state, r)).collect())
}

/// Describes one live room.
#[utoipa::path(
    get,
    path = "/api/rooms/{name}",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room and its members", body = RoomView),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomView>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state
        .rooms
        .get(&name)
        .map(|r| Json(RoomView::of(&state, r)))
        .ok_or_else(|| ApiError::NotFound(format!("no room {name}")))
}

/// Mutes, unmutes, deafens, undeafens or kicks a member.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/members/{member}/{action}",
    tag = "rooms",
    params(
        ("name" = String, Path, description = "Room name"),
        ("member" = u64, Path, description = "Member id in the room"),
        ("action" = MemberActionName, Path, description = "mute, unmute, deaf, undeaf or kick"),
    ),
    responses(
        (status = 202, description = "Taken by the room; the event stream reports the change"),
        (status = 400, description = "Malformed member id or unknown action", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room or member", body = ErrorBody),
        (status = 409, description = "Refused by the room", body = ErrorBody),
    )
)]
pub(crate) async fn member_action(
    State(state): State<ApiState>,
    path: Result<Path<(String, u64, MemberActionName)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((name, member, action)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state.rooms.member_action(&name, member, action.into())?;
    tracing::info!(room = %name, member, ?action, "member control over the API");
    Ok(StatusCode::ACCEPTED)
}

async fn room_action(
    state: &ApiState,
    name: Result<Path<String>, PathRejection>,
    action: RoomAction,
) -> Result<Option<String>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    tracing::info!(room = %name, ?action, "room control over the API");
    Ok(state.rooms.room_action(&name, action)?)
}

/// Locks a room: no one else may join.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/lock",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Taken by the room"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused by the room", body = ErrorBody),
    )
)]
pub(crate) async fn lock(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    room_action(&state, name, RoomAction::Lock).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Unlocks a room.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/unlock",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Taken by the room"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused by the room", body = ErrorBody),
    )
)]
pub(crate) async fn unlock(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    room_action(&state, name, RoomAction::Unlock).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Ends a room: every member leaves.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/end",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Taken by the room"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused by the room", body = ErrorBody),
    )
)]
pub(crate) async fn end(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    room_action(&state, name, RoomAction::End).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Body of `POST /api/rooms/{name}/dial`: someone to call into the room.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomDialBody {
    /// Whom to call: a `sip:` URI with an IP address or `trunk:NAME/NUMBER`, allowed by
    /// `[outbound] allow`.
    #[schema(example = "sip:bob@127.0.0.1:5070")]
    pub to: String,
    /// The number the callee sees.
    pub caller_id: Option<String>,
    /// Seconds the far end may ring (default 30, at most 300).
    pub timeout_secs: Option<u64>,
    /// A key the callee must press before joining (so a voicemail box does not join).
    pub confirm: Option<String>,
    /// Detect an answering machine first: a machine is hung up on, never joins.
    #[serde(default)]
    pub amd: bool,
}

/// Calls someone into a room: on answer (and the `confirm` key, if asked for) they join.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/dial",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    request_body = RoomDialBody,
    responses(
        (status = 201, description = "Placed; `call_ringing`, `call_answered`, `member_joined` or `call_failed` follow on the event stream", body = super::calls::Originated),
        (status = 400, description = "Malformed body or target", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "The target is not allowed by `[outbound] allow`", body = ErrorBody),
        (status = 503, description = "The server is draining", body = ErrorBody),
    )
)]
pub(crate) async fn dial(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<RoomDialBody>, JsonRejection>,
) -> Result<(StatusCode, Json<super::calls::Originated>), ApiError> {
    let Path(room) = name.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let confirm = match b.confirm.as_deref() {
        None => None,
        Some(k) => match k.chars().collect::<Vec<_>>()[..] {
            [c] if crate::media::dtmf::Digit::from_char(c).is_some() => {
                Some(c.to_ascii_uppercase())
            }
            _ => return Err(ApiError::BadRequest("`confirm` must be one key".into())),
        },
    };
    super::calls::place(
        &state,
        crate::call::Originate {
            to: b.to,
            from: None,
            caller_id: b.caller_id,
            flow: crate::call::OriginateFlow::Room { room, confirm },
            vars: Default::default(),
            timeout: super::calls::ring_timeout(b.timeout_secs)?,
            amd: b.amd,
        },
    )
}

/// Plays a prompt to everyone in a room.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/play",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    request_body = PlayBody,
    responses(
        (status = 202, description = "Taken by the room"),
        (status = 400, description = "Malformed body or prompt name", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused by the room (such as an unknown prompt)", body = ErrorBody),
    )
)]
pub(crate) async fn play(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<PlayBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    validate_prompt(&body.prompt)?;
    room_action(&state, name, RoomAction::Play(body.prompt)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Starts recording a room; answers the new recording's id.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/record/start",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Recording started", body = RecordingStarted),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused (already recording)", body = ErrorBody),
    )
)]
pub(crate) async fn record_start(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = room_action(&state, name, RoomAction::RecordStart)
        .await?
        .ok_or_else(|| ApiError::Internal("room started a recording without an id".into()))?;
    Ok((StatusCode::ACCEPTED, Json(RecordingStarted { id })).into_response())
}

/// Stops a room's recording.
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/record/stop",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Taken by the room; `recording_finished` follows"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused (not recording)", body = ErrorBody),
    )
)]
pub(crate) async fn record_stop(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    room_action(&state, name, RoomAction::RecordStop).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Answer of `POST /api/rooms/{name}/stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStarted {
    /// The stream's id (`streamSid` in its messages, `stream_id` in its events).
    pub stream_id: String,
}

/// Streams a room's mix to an application over WebSocket (one stream per room; it only
/// listens: `track` is `inbound`, `bidirectional` false).
#[utoipa::path(
    post,
    path = "/api/rooms/{name}/stream",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    request_body = super::calls::StreamBody,
    responses(
        (status = 202, description = "Streaming; `stream_started` follows once the socket is up", body = StreamStarted),
        (status = 400, description = "Malformed body, URL or options", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused (already streamed)", body = ErrorBody),
    )
)]
pub(crate) async fn stream_start(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<super::calls::StreamBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let request = body.request()?;
    if request.bidirectional {
        return Err(ApiError::BadRequest(
            "a room stream only listens: bidirectional is for calls".into(),
        ));
    }
    if request.track != crate::stream::Track::Inbound {
        return Err(ApiError::BadRequest(
            "a room stream carries the room's mix: track inbound".into(),
        ));
    }
    let stream_id = room_action(&state, name, RoomAction::StreamStart(Box::new(request)))
        .await?
        .ok_or_else(|| ApiError::Internal("room started a stream without an id".into()))?;
    Ok((StatusCode::ACCEPTED, Json(StreamStarted { stream_id })).into_response())
}

/// Stops a room's stream.
#[utoipa::path(
    delete,
    path = "/api/rooms/{name}/stream",
    tag = "rooms",
    params(("name" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "Taken by the room; `stream_stopped` follows"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Refused (not streamed)", body = ErrorBody),
    )
)]
pub(crate) async fn stream_stop(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    room_action(&state, name, RoomAction::StreamStop).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_names() {
        for ok in ["welcome", "conf/muted", "a-b_c.wav"] {
            assert!(validate_prompt(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "a b",
            ".",
        ] {
            assert!(validate_prompt(bad).is_err(), "{bad}");
        }
        assert!(validate_prompt(&"a".repeat(MAX_PROMPT + 1)).is_err());
    }
}
