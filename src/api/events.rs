//! `GET /api/events`: the event bus as Server-Sent Events.
//!
//! Each event is sent as `id: SEQ`, `event: TYPE`, `data: JSON` (the [`Stamped`] event). A
//! client that falls so far behind that the bus drops events for it gets an `event: lagged`
//! with `{"missed": N}` and then continues with the oldest event still kept, so a gap is
//! never silent. A comment is sent on connect and then every keep-alive interval.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::{ApiError, ApiState, ErrorBody};
use crate::events::{Event, Stamped};
use crate::metrics::Metrics;

/// Every event type, as sent in `event:` and the JSON `type`.
pub const EVENT_TYPES: [&str; 21] = [
    "call_started",
    "call_answered",
    "call_ended",
    "dtmf",
    "room_created",
    "room_ended",
    "room_locked",
    "member_joined",
    "member_left",
    "member_talking",
    "member_muted",
    "member_deaf",
    "recording_started",
    "recording_finished",
    "stream_started",
    "stream_stopped",
    "call_step",
    "call_ringing",
    "call_failed",
    "speech",
    "amd",
];

/// An event's type name, as serialised in its `type` field.
pub fn event_type(e: &Event) -> &'static str {
    match e {
        Event::CallStarted { .. } => "call_started",
        Event::CallAnswered { .. } => "call_answered",
        Event::CallEnded { .. } => "call_ended",
        Event::Dtmf { .. } => "dtmf",
        Event::RoomCreated { .. } => "room_created",
        Event::RoomEnded { .. } => "room_ended",
        Event::RoomLocked { .. } => "room_locked",
        Event::MemberJoined { .. } => "member_joined",
        Event::MemberLeft { .. } => "member_left",
        Event::MemberTalking { .. } => "member_talking",
        Event::MemberMuted { .. } => "member_muted",
        Event::MemberDeaf { .. } => "member_deaf",
        Event::RecordingStarted { .. } => "recording_started",
        Event::RecordingFinished { .. } => "recording_finished",
        Event::StreamStarted { .. } => "stream_started",
        Event::StreamStopped { .. } => "stream_stopped",
        Event::CallStep { .. } => "call_step",
        Event::CallRinging { .. } => "call_ringing",
        Event::CallFailed { .. } => "call_failed",
        Event::Speech { .. } => "speech",
        Event::Amd { .. } => "amd",
    }
}

/// Query of `GET /api/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Comma-separated event types to receive (`call_started,call_ended`); absent: all.
    pub types: Option<String>,
    /// The bearer token, for clients that cannot send headers (browsers' `EventSource`).
    pub token: Option<String>,
}

/// The wanted types of a `types` parameter; `None` means all.
pub fn parse_types(types: Option<&str>) -> Result<Option<Vec<&'static str>>, ApiError> {
    let Some(list) = types.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            EVENT_TYPES
                .iter()
                .find(|k| **k == t)
                .copied()
                .ok_or_else(|| ApiError::BadRequest(format!("unknown event type {t:?}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One SSE frame of a published event.
pub fn sse_event(e: &Stamped) -> SseEvent {
    let frame = SseEvent::default()
        .id(e.seq.to_string())
        .event(event_type(&e.event));
    match frame.clone().json_data(e) {
        Ok(f) => f,
        // Events are plain strings and numbers; this cannot fail, but a frame without data
        // is better than a dropped stream.
        Err(_) => frame,
    }
}

/// Streams events as they are published.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(EventsParams),
    responses(
        (status = 200, description = "`text/event-stream`: `id:` the event's seq, `event:` its type, `data:` the event as JSON (see the `Stamped` schema). `event: lagged` with `{\"missed\": N}` when the client fell behind and N events were lost. Comment lines keep the connection alive.", content_type = "text/event-stream", body = String),
        (status = 400, description = "Unknown event type in `types`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (header or `?token=`)", body = ErrorBody),
    )
)]
pub(crate) async fn stream(
    State(state): State<ApiState>,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wanted = parse_types(params.types.as_deref())?;
    let rx = state.events.subscribe();
    let hello = stream::once(async { Ok(SseEvent::default().comment("connected")) });
    let events = subscription(rx, wanted, state.metrics.clone()).map(Ok);
    Ok(Sse::new(hello.chain(events)).keep_alive(
        KeepAlive::new()
            .interval(state.keep_alive)
            .text("keep-alive"),
    ))
}

/// The SSE frames of a bus subscription: matching events, and a `lagged` frame for each gap.
pub fn subscription(
    rx: tokio::sync::broadcast::Receiver<Arc<Stamped>>,
    wanted: Option<Vec<&'static str>>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = SseEvent> {
    stream::unfold(rx, move |mut rx| {
        let wanted = wanted.clone();
        let metrics = metrics.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let kind = event_type(&e.event);
                        if wanted.as_ref().is_none_or(|w| w.contains(&kind)) {
                            return Some((sse_event(&e), rx));
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        metrics.events_lagged(n);
                        tracing::debug!(missed = n, "event-stream client fell behind");
                        let frame = SseEvent::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}"));
                        return Some((frame, rx));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_the_json_tag() {
        let all = [
            Event::CallStarted {
                call_id: "c".into(),
                from: "f".into(),
                to: "t".into(),
            },
            Event::CallAnswered {
                call_id: "c".into(),
            },
            Event::CallEnded {
                call_id: "c".into(),
                reason: "r".into(),
                code: None,
            },
            Event::Dtmf {
                call_id: "c".into(),
                digit: "1".into(),
                method: "info".into(),
            },
            Event::RoomCreated { room: "r".into() },
            Event::RoomEnded { room: "r".into() },
            Event::RoomLocked {
                room: "r".into(),
                locked: true,
            },
            Event::MemberJoined {
                room: "r".into(),
                member: 1,
                call_id: "c".into(),
                moderator: false,
                muted: false,
            },
            Event::MemberLeft {
                room: "r".into(),
                member: 1,
                call_id: "c".into(),
                reason: "left".into(),
            },
            Event::MemberTalking {
                room: "r".into(),
                member: 1,
                talking: true,
            },
            Event::MemberMuted {
                room: "r".into(),
                member: 1,
                muted: true,
            },
            Event::MemberDeaf {
                room: "r".into(),
                member: 1,
                deaf: true,
            },
            Event::RecordingStarted {
                id: "x".into(),
                call_id: None,
                room: None,
            },
            Event::RecordingFinished {
                id: "x".into(),
                duration_ms: 1,
                reason: "hangup".into(),
                discarded: false,
            },
            Event::StreamStarted {
                stream_id: "MZ1".into(),
                call_id: Some("c".into()),
                room: None,
                url: "ws://127.0.0.1:1/".into(),
                format: "twilio".into(),
                track: "inbound".into(),
                bidirectional: true,
            },
            Event::StreamStopped {
                stream_id: "MZ1".into(),
                call_id: None,
                room: Some("r".into()),
                reason: "app_closed".into(),
                duration_ms: 1,
                dropped: 0,
            },
            Event::CallStep {
                call_id: "c".into(),
                step: "answered".into(),
            },
            Event::CallRinging {
                call_id: "c".into(),
            },
            Event::CallFailed {
                call_id: "c".into(),
                code: 486,
                reason: "Busy Here".into(),
            },
            Event::Speech {
                call_id: "c".into(),
                kind: "listen".into(),
                engine: "pocketsphinx".into(),
                text: "sales".into(),
                cached: None,
                choice: Some("sales".into()),
                confidence: Some(0.9),
                key: None,
                reason: Some("speech".into()),
                speech_ms: Some(600),
                recognize_ms: Some(12),
            },
            Event::Amd {
                call_id: "c".into(),
                status: "MACHINE".into(),
                cause: "LONGGREETING-1520-1500".into(),
                greeting_ms: 1520,
                words: 2,
            },
        ];
        assert_eq!(all.len(), EVENT_TYPES.len());
        for (e, name) in all.iter().zip(EVENT_TYPES) {
            let v = serde_json::to_value(e).unwrap();
            assert_eq!(v["type"], event_type(e));
            assert_eq!(event_type(e), name);
        }
    }

    #[test]
    fn type_filters() {
        assert_eq!(parse_types(None).unwrap(), None);
        assert_eq!(parse_types(Some("")).unwrap(), None);
        assert_eq!(
            parse_types(Some("call_started, dtmf")).unwrap(),
            Some(vec!["call_started", "dtmf"])
        );
        assert!(parse_types(Some("call_started,nope")).is_err());
    }
}
