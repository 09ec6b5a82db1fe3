//! The OpenAPI document, generated from the handlers' annotations.
//!
//! The recording types live in `media::record` and carry no OpenAPI derive, so their JSON
//! shape is described here by mirror types; a test checks that the mirror's properties are
//! exactly the keys a serialized sidecar has.

// The mirror types only describe JSON; nothing constructs them.
#![allow(dead_code)]

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{
    admin, calls, cdrs, events, info, levels, prometheus, recordings, rooms, trunks, webrtc,
};

/// The API description served at `/api/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard HTTP API",
        description = "Live calls and rooms, their controls, the event stream, SIP trunks, call detail records, metrics and recordings of the switchboard SIP media server. Every request but `/api/info` needs `Authorization: Bearer TOKEN` unless the server listens on loopback without a token; `/api/events` and recording audio also take `?token=` for browsers. Controls answer 202 once the call or room has taken them; what then happens is reported on the event stream."
    ),
    paths(
        recordings::list,
        recordings::get_one,
        recordings::audio,
        levels::levels,
        recordings::delete,
        calls::list,
        calls::originate,
        calls::get_one,
        calls::hangup,
        calls::dtmf,
        calls::stream_start,
        calls::stream_stop,
        rooms::list,
        rooms::get_one,
        rooms::member_action,
        rooms::lock,
        rooms::unlock,
        rooms::end,
        rooms::play,
        rooms::dial,
        rooms::record_start,
        rooms::record_stop,
        rooms::stream_start,
        rooms::stream_stop,
        events::stream,
        cdrs::list,
        trunks::list,
        prometheus::scrape,
        info::info,
        info::stats,
        admin::drain,
        webrtc::offer,
        webrtc::hang_up,
        super::openapi_json
    ),
    components(schemas(
        recordings::RecordingList,
        Recording,
        super::ErrorBody,
        crate::events::Stamped,
        crate::events::Event,
        crate::cdr::Cdr,
        crate::cdr::CdrPage,
        levels::Levels,
        info::ServerInfo,
        info::AuthMode,
        info::Stats,
        admin::DrainStarted,
        calls::OriginateBody,
        calls::StreamBody,
        crate::stream::run::StreamRecord,
        rooms::RoomDialBody,
        rooms::RoomView,
        rooms::StreamStarted,
        calls::Originated,
        crate::sip::trunks::TrunkStatus,
        crate::sip::trunks::RegistrationStatus,
        crate::sip::trunks::TrunkResults
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "recordings", description = "Recorded calls and rooms: metadata and WAV audio"),
        (name = "calls", description = "Live calls and their controls"),
        (name = "rooms", description = "Live conference rooms, members and their controls"),
        (name = "events", description = "Server-Sent Events of everything that happens"),
        (name = "cdrs", description = "Call detail records, one JSON line per finished call"),
        (name = "trunks", description = "SIP trunks: registration, availability, calls in use and results"),
        (name = "metrics", description = "Prometheus metrics and the same live numbers as JSON"),
        (name = "webrtc", description = "Calls from browsers and WebRTC applications: an SDP offer to a dialplan number, answered like an INVITE"),
        (name = "server", description = "What the server is, whether it needs a token, and taking it out of service")
    )
)]
pub struct ApiDoc;

/// Adds the bearer-token scheme that the `security` requirement names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// One recording: the sidecar `ID.json` stored next to `ID.wav`.
#[derive(ToSchema)]
pub(crate) struct Recording {
    /// Unique id; letters, digits, `-` and `_`.
    id: String,
    /// SIP Call-ID of the recorded call.
    call_id: String,
    /// Caller (From URI).
    from: String,
    /// Callee (To URI).
    to: String,
    /// Conference room, when the recording is of a room; absent otherwise.
    room: Option<String>,
    /// Start time, RFC 3339 UTC.
    #[schema(format = DateTime)]
    started: String,
    /// Length of the audio in milliseconds.
    duration_ms: u64,
    /// Sample format of the WAV.
    format: Format,
    /// Recorded directions and layout.
    mode: Mode,
    /// Digits pressed while recording, as keypad characters.
    digits: String,
    /// Why the recording stopped; null while recording and after a crash repair.
    stop_reason: Option<StopReason>,
    /// Life-cycle state.
    state: State,
    /// WAV file name, relative to the recordings folder.
    file: String,
}

/// Sample format of a recording.
#[derive(ToSchema)]
pub(crate) struct Format {
    /// Samples per second.
    rate: u32,
    /// Interleaved channels.
    channels: u16,
    /// Bits per sample.
    bits: u16,
}

/// Which directions of the call are recorded and how.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// What the caller sends (mono).
    Inbound,
    /// What the server sends to the caller (mono).
    Outbound,
    /// Both directions mixed (mono).
    MixedMono,
    /// Caller left, server right.
    Stereo,
}

/// Why a recording stopped.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum StopReason {
    /// The maximum duration was reached.
    MaxDuration,
    /// Continuous silence.
    Silence,
    /// A terminator digit (the keypad character) was pressed.
    Terminator(String),
    /// The call ended.
    Hangup,
    /// Stopped on request.
    Requested,
}

/// Where a recording is in its life.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum State {
    /// Still being written; its audio is not served yet.
    Recording,
    /// Finished normally.
    Complete,
    /// Recovered after a crash.
    Repaired,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::media::dtmf::Digit;
    use crate::media::record::{
        Format as RealFormat, RecordMode, Sidecar, SidecarState, StopReason as RealStop,
    };

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn recording_schema_matches_the_sidecar() {
        let sidecar = Sidecar {
            id: "a".into(),
            call_id: "c".into(),
            from: "sip:a@x".into(),
            to: "sip:b@x".into(),
            room: Some("r".into()),
            started: "2024-05-01T12:00:00.000Z".into(),
            duration_ms: 1,
            format: RealFormat {
                rate: 8000,
                channels: 1,
                bits: 16,
            },
            mode: RecordMode::MixedMono,
            digits: "1#".into(),
            stop_reason: Some(RealStop::Terminator(Digit::from_char('#').unwrap())),
            state: SidecarState::Complete,
            file: "a.wav".into(),
        };
        let json = serde_json::to_value(&sidecar).unwrap();
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(keys(&json), keys(&schemas["Recording"]["properties"]));
        assert_eq!(
            keys(&json["format"]),
            keys(&schemas["Format"]["properties"])
        );
        let text = schemas.to_string();
        for value in [&json["mode"], &json["state"]] {
            let v = value.as_str().unwrap();
            assert!(text.contains(&format!("\"{v}\"")), "{v} not in schema");
        }
        let stop = keys(&json["stop_reason"]);
        assert_eq!(stop.len(), 1);
        let stop = stop.first().unwrap();
        assert!(
            text.contains(&format!("\"{stop}\"")),
            "{stop} not in schema"
        );
        assert!(text.contains("\"max_duration\""));
    }

    #[test]
    fn document_lists_every_endpoint_and_bearer_security() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = keys(&doc["paths"]);
        for p in [
            "/api/recordings",
            "/api/recordings/{id}",
            "/api/recordings/{id}/audio",
            "/api/openapi.json",
            "/api/calls",
            "/api/calls/{id}",
            "/api/calls/{id}/hangup",
            "/api/calls/{id}/dtmf",
            "/api/rooms",
            "/api/rooms/{name}",
            "/api/rooms/{name}/members/{member}/{action}",
            "/api/rooms/{name}/lock",
            "/api/rooms/{name}/unlock",
            "/api/rooms/{name}/end",
            "/api/rooms/{name}/play",
            "/api/rooms/{name}/record/start",
            "/api/rooms/{name}/record/stop",
            "/api/events",
            "/api/cdrs",
            "/metrics",
            "/api/webrtc/{number}",
            "/api/webrtc/sessions/{id}",
        ] {
            assert!(paths.contains(p), "{p} missing from {paths:?}");
        }
        assert!(doc["paths"]["/api/recordings/{id}"]["delete"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let params = doc["paths"]["/api/recordings"]["get"]["parameters"].to_string();
        for p in ["caller", "callee", "room", "from", "to", "limit", "offset"] {
            assert!(params.contains(&format!("\"{p}\"")), "parameter {p}");
        }
    }
}
