//! Router tests of the live endpoints: calls registered by the test, a fake conference side
//! that records what it is asked, events published by the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::*;
use crate::events::Event;
use crate::live::{
    CallControl, CallGuard, CallInfo, ControlError, MemberAction, MemberInfo, RoomAction, RoomInfo,
};

const TOKEN: &str = "live-token";

/// What the fake conference side was asked to do.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Member(String, u64, MemberAction),
    Room(String, RoomAction),
}

/// Rooms `sales` (members 1 and 2) and `locked-out` (refuses everything).
#[derive(Default)]
struct FakeRooms {
    seen: Mutex<Vec<Seen>>,
}

fn member(id: u64) -> MemberInfo {
    MemberInfo {
        id,
        call_id: format!("call-{id}"),
        from: format!("<sip:m{id}@example.com>"),
        moderator: id == 1,
        muted: false,
        deaf: false,
        talking: false,
        joined_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

impl Rooms for FakeRooms {
    fn list(&self) -> Vec<RoomInfo> {
        ["locked-out", "sales"]
            .iter()
            .filter_map(|n| self.get(n))
            .collect()
    }
    fn get(&self, name: &str) -> Option<RoomInfo> {
        let members = match name {
            "sales" => vec![member(1), member(2)],
            "locked-out" => vec![],
            _ => return None,
        };
        Some(RoomInfo {
            name: name.into(),
            members,
            locked: name == "locked-out",
            recording: None,
            stream: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            rate: 8000,
        })
    }
    fn member_action(
        &self,
        room: &str,
        member: u64,
        action: MemberAction,
    ) -> Result<(), ControlError> {
        let r = self.get(room).ok_or(ControlError::NoRoom)?;
        if !r.members.iter().any(|m| m.id == member) {
            return Err(ControlError::NoMember);
        }
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Member(room.into(), member, action));
        Ok(())
    }
    fn room_action(&self, room: &str, action: RoomAction) -> Result<Option<String>, ControlError> {
        self.get(room).ok_or(ControlError::NoRoom)?;
        if room == "locked-out" {
            return Err(ControlError::Refused("room is being ended".into()));
        }
        let answer = (action == RoomAction::RecordStart).then(|| "room-rec-1".to_string());
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Room(room.into(), action));
        Ok(answer)
    }
}

struct Live {
    app: Router,
    calls: CallRegistry,
    bus: EventBus,
    rooms: Arc<FakeRooms>,
    metrics: Arc<Metrics>,
    cdr_dir: PathBuf,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.cdr_dir.parent().unwrap());
    }
}

fn live_with_bus(bus: EventBus) -> Live {
    let base = std::env::temp_dir().join(format!(
        "switchboard-live-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let rec = base.join("recordings");
    let cdr_dir = base.join("cdr");
    std::fs::create_dir_all(&rec).unwrap();
    let index = Arc::new(RecordingIndex::load(&rec).unwrap());
    let calls = CallRegistry::default();
    let rooms = Arc::new(FakeRooms::default());
    let metrics = Arc::new(Metrics::default());
    let app = router(
        ApiState::new(index, Some(TOKEN.into()))
            .with_calls(calls.clone())
            .with_rooms(rooms.clone())
            .with_events(bus.clone())
            .with_metrics(metrics.clone())
            .with_media_stats(vec![Arc::new(Default::default())])
            .with_cdr_dir(Some(cdr_dir.clone()))
            .with_instance("sb-7")
            .with_keep_alive(Duration::from_millis(100)),
    );
    Live {
        app,
        calls,
        bus,
        rooms,
        metrics,
        cdr_dir,
    }
}

fn live() -> Live {
    live_with_bus(EventBus::default())
}

impl Live {
    fn call(&self, id: &str) -> (CallGuard, mpsc::UnboundedReceiver<CallControl>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let guard = self
            .calls
            .register(CallInfo::new(id, "<sip:alice@example.com>", "ivr"), tx);
        (guard, rx)
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Bytes) {
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (s, _, b) = self.send(req).await;
        (s, b)
    }

    async fn post(&self, uri: &str, json: Option<&str>) -> (StatusCode, Bytes) {
        let mut b = Request::post(uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if json.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(json.map_or_else(Body::empty, |j| Body::from(j.to_string())))
            .unwrap();
        let (s, _, b) = self.send(req).await;
        (s, b)
    }

    fn seen(&self) -> Vec<Seen> {
        self.rooms.seen.lock().unwrap().clone()
    }
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {b:?}"))
}

// ---- authentication ----

#[tokio::test]
async fn every_live_endpoint_needs_the_token() {
    let l = live();
    let (_g, _rx) = l.call("c1");
    for (method, uri) in [
        (Method::GET, "/api/calls"),
        (Method::GET, "/api/calls/c1"),
        (Method::POST, "/api/calls/c1/hangup"),
        (Method::POST, "/api/calls/c1/dtmf"),
        (Method::GET, "/api/rooms"),
        (Method::GET, "/api/rooms/sales"),
        (Method::POST, "/api/rooms/sales/members/1/mute"),
        (Method::POST, "/api/rooms/sales/lock"),
        (Method::POST, "/api/rooms/sales/unlock"),
        (Method::POST, "/api/rooms/sales/end"),
        (Method::POST, "/api/rooms/sales/play"),
        (Method::POST, "/api/rooms/sales/record/start"),
        (Method::POST, "/api/rooms/sales/record/stop"),
        (Method::GET, "/api/events"),
        (Method::GET, "/api/cdrs"),
        (Method::GET, "/metrics"),
    ] {
        let bare = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = l.send(bare).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        // A token in the URL unlocks nothing but the event stream and audio.
        let with_query = Request::builder()
            .method(method.clone())
            .uri(format!("{uri}?token={TOKEN}"))
            .body(Body::empty())
            .unwrap();
        if uri != "/api/events" {
            assert_eq!(
                l.send(with_query).await.0,
                StatusCode::UNAUTHORIZED,
                "{method} {uri}?token="
            );
        }
    }
    assert!(l.seen().is_empty(), "no control got through");
    assert_eq!(l.calls.len(), 1);
}

#[tokio::test]
async fn query_token_opens_the_event_stream_only_when_right() {
    let l = live();
    let wrong = Request::get("/api/events?token=nope")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = l.send(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    let right = Request::get(format!("/api/events?token={TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = l.app.clone().oneshot(right).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
}

#[tokio::test]
async fn console_files_are_served_without_a_token() {
    let l = live();
    for (uri, ty, needle) in [
        ("/", "text/html", "console.js"),
        ("/console.js", "text/javascript", "EventSource"),
        ("/console.css", "text/css", "{"),
        // The browser call page, for any number, and its script.
        ("/call/conf-1", "text/html", "/call.js"),
        ("/call.js", "text/javascript", "/api/webrtc/"),
    ] {
        let (status, headers, body) = l.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(ty));
        assert!(String::from_utf8_lossy(&body).contains(needle), "{uri}");
    }
}

// ---- calls ----

#[tokio::test]
async fn calls_are_listed_and_described() {
    let l = live();
    let (_a, _ra) = l.call("c1");
    let (b, _rb) = l.call("c2");
    let (status, body) = l.get("/api/calls").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    let mut ids: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["c1", "c2"]);
    let (status, body) = l.get("/api/calls/c1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["state"], "ringing");
    assert_eq!(json(&body)["from"], "<sip:alice@example.com>");
    assert_eq!(l.get("/api/calls/nope").await.0, StatusCode::NOT_FOUND);
    drop(b);
    assert_eq!(l.get("/api/calls/c2").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hangup_and_dtmf_reach_the_call() {
    let l = live();
    let (_g, mut rx) = l.call("c1");
    assert_eq!(
        l.post("/api/calls/c1/hangup", None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(rx.try_recv().unwrap(), CallControl::Hangup);
    let (status, _) = l
        .post("/api/calls/c1/dtmf", Some(r#"{"digits":"12#a"}"#))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(rx.try_recv().unwrap(), CallControl::Dtmf("12#A".into()));
    assert_eq!(
        l.post("/api/calls/nope/hangup", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        l.post("/api/calls/nope/dtmf", Some(r#"{"digits":"1"}"#))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let long = format!(r#"{{"digits":"{}"}}"#, "1".repeat(65));
    for bad in [
        Some(r#"{"digits":"12E"}"#),
        Some(r#"{"digits":""}"#),
        Some(long.as_str()),
        Some(r#"{"digits":12}"#),
        Some(r#"{"keys":"1"}"#),
        Some("not json"),
        None,
    ] {
        let (status, body) = l.post("/api/calls/c1/dtmf", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(json(&body)["error"].is_string());
    }
    assert!(rx.try_recv().is_err(), "no bad request reached the call");
}

// ---- rooms ----

#[tokio::test]
async fn rooms_are_listed_and_described() {
    let l = live();
    let (status, body) = l.get("/api/rooms").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["instance"] == "sb-7"));
    let (status, body) = l.get("/api/rooms/sales").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["members"][1]["id"], 2);
    assert_eq!(v["members"][0]["moderator"], true);
    assert_eq!(v["name"], "sales");
    assert_eq!(v["instance"], "sb-7", "the instance holding it");
    assert_eq!(l.get("/api/rooms/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn member_controls_reach_the_room() {
    let l = live();
    for (action, expected) in [
        ("mute", MemberAction::Mute),
        ("unmute", MemberAction::Unmute),
        ("deaf", MemberAction::Deaf),
        ("undeaf", MemberAction::Undeaf),
        ("kick", MemberAction::Kick),
    ] {
        let uri = format!("/api/rooms/sales/members/2/{action}");
        assert_eq!(l.post(&uri, None).await.0, StatusCode::ACCEPTED, "{uri}");
        assert_eq!(
            l.seen().last(),
            Some(&Seen::Member("sales".into(), 2, expected))
        );
    }
    let before = l.seen().len();
    for (uri, status) in [
        ("/api/rooms/sales/members/9/mute", StatusCode::NOT_FOUND),
        ("/api/rooms/nope/members/1/mute", StatusCode::NOT_FOUND),
        ("/api/rooms/sales/members/x/mute", StatusCode::BAD_REQUEST),
        ("/api/rooms/sales/members/-1/mute", StatusCode::BAD_REQUEST),
        ("/api/rooms/sales/members/1/shout", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(l.post(uri, None).await.0, status, "{uri}");
    }
    assert_eq!(l.seen().len(), before);
}

#[tokio::test]
async fn room_controls_reach_the_room() {
    let l = live();
    for (path, expected) in [
        ("lock", RoomAction::Lock),
        ("unlock", RoomAction::Unlock),
        ("end", RoomAction::End),
        ("record/stop", RoomAction::RecordStop),
    ] {
        let uri = format!("/api/rooms/sales/{path}");
        assert_eq!(l.post(&uri, None).await.0, StatusCode::ACCEPTED, "{uri}");
        assert_eq!(l.seen().last(), Some(&Seen::Room("sales".into(), expected)));
    }
    let (status, body) = l.post("/api/rooms/sales/record/start", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json(&body)["id"], "room-rec-1");
    let (status, _) = l
        .post(
            "/api/rooms/sales/play",
            Some(r#"{"prompt":"conf/welcome"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        l.seen().last(),
        Some(&Seen::Room(
            "sales".into(),
            RoomAction::Play("conf/welcome".into())
        ))
    );
    let before = l.seen().len();
    for body in [
        Some(r#"{"prompt":"../../etc/passwd"}"#),
        Some(r#"{"prompt":""}"#),
        Some(r#"{}"#),
        None,
    ] {
        assert_eq!(
            l.post("/api/rooms/sales/play", body).await.0,
            StatusCode::BAD_REQUEST,
            "{body:?}"
        );
    }
    assert_eq!(
        l.post("/api/rooms/nope/lock", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = l.post("/api/rooms/locked-out/end", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(json(&body)["error"], "room is being ended");
    assert_eq!(l.seen().len(), before);
}

// ---- events ----

/// Reads SSE frames (blank-line separated) until `n` data frames arrived, within 5 s.
async fn sse_frames(body: &mut Body, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while frames
        .iter()
        .filter(|f: &&String| f.contains("data:"))
        .count()
        < n
    {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("SSE frames in time")
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            frames.push(text[..end].to_string());
            text.drain(..end + 2);
        }
    }
    frames
}

fn field<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim_start)
}

async fn open_events(l: &Live, query: &str) -> Body {
    let req = Request::get(format!("/api/events{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = l.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

#[tokio::test]
async fn sse_delivers_published_events_in_order_with_ids() {
    let l = live();
    let mut body = open_events(&l, "").await;
    l.bus.publish(Event::CallStarted {
        call_id: "c1".into(),
        from: "a".into(),
        to: "b".into(),
    });
    l.bus.publish(Event::CallAnswered {
        call_id: "c1".into(),
    });
    l.bus.publish(Event::MemberTalking {
        room: "sales".into(),
        member: 2,
        talking: true,
    });
    let frames = sse_frames(&mut body, 3).await;
    assert_eq!(frames[0], ": connected", "a comment first");
    let data: Vec<_> = frames.iter().filter(|f| f.contains("data:")).collect();
    let ids: Vec<_> = data.iter().map(|f| field(f, "id").unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    let types: Vec<_> = data.iter().map(|f| field(f, "event").unwrap()).collect();
    assert_eq!(types, ["call_started", "call_answered", "member_talking"]);
    let last: serde_json::Value = serde_json::from_str(field(data[2], "data").unwrap()).unwrap();
    assert_eq!(last["seq"], 3);
    assert_eq!(last["type"], "member_talking");
    assert_eq!(last["talking"], true);
}

#[tokio::test]
async fn sse_filters_by_type_and_keeps_alive() {
    let l = live();
    let (status, _) = l.get("/api/events?types=call_ended,bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut body = open_events(&l, "?types=call_ended,dtmf").await;
    l.bus.publish(Event::CallAnswered {
        call_id: "c1".into(),
    });
    l.bus.publish(Event::Dtmf {
        call_id: "c1".into(),
        digit: "5".into(),
        method: "rfc4733".into(),
    });
    l.bus.publish(Event::CallEnded {
        call_id: "c1".into(),
        reason: "caller_bye".into(),
        code: None,
    });
    let frames = sse_frames(&mut body, 2).await;
    let ids: Vec<_> = frames.iter().filter_map(|f| field(f, "id")).collect();
    assert_eq!(ids, ["2", "3"], "call_answered filtered out");
    // With nothing published, the 100 ms keep-alive comment arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while !text.contains(": keep-alive") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("keep-alive in time")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
}

#[tokio::test]
async fn a_lagging_client_is_told_how_many_it_missed() {
    let l = live_with_bus(EventBus::new(4));
    let mut body = open_events(&l, "").await;
    for i in 0..10 {
        l.bus.publish(Event::RoomCreated {
            room: i.to_string(),
        });
    }
    let frames = sse_frames(&mut body, 5).await;
    let data: Vec<_> = frames.iter().filter(|f| f.contains("data:")).collect();
    assert_eq!(field(data[0], "event"), Some("lagged"));
    assert_eq!(field(data[0], "data"), Some(r#"{"missed":6}"#));
    let ids: Vec<_> = data[1..].iter().map(|f| field(f, "id").unwrap()).collect();
    assert_eq!(ids, ["7", "8", "9", "10"]);
    let m = l.metrics.render(&Default::default());
    assert!(
        m.contains("switchboard_event_stream_lagged_total 6\n"),
        "{m}"
    );
}

// ---- metrics ----

#[tokio::test]
async fn metrics_are_valid_exposition_with_live_gauges() {
    let l = live();
    let (_a, _ra) = l.call("c1");
    let (_b, _rb) = l.call("c2");
    l.metrics.sip_response(200);
    l.metrics.dtmf("info");
    let req = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = l.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let samples = crate::metrics::tests::parse_exposition(std::str::from_utf8(&body).unwrap());
    assert_eq!(samples["switchboard_active_calls"], 2.0);
    assert_eq!(samples["switchboard_rooms"], 2.0);
    assert_eq!(samples["switchboard_room_members"], 2.0);
    assert_eq!(
        samples["switchboard_sip_responses_total{code=\"200\"}"],
        1.0
    );
    assert_eq!(
        samples["switchboard_dtmf_digits_total{method=\"info\"}"],
        1.0
    );
    assert_eq!(samples["switchboard_media_worker_legs{worker=\"0\"}"], 0.0);
}

// ---- CDRs ----

#[tokio::test]
async fn cdrs_are_listed_per_day_newest_first() {
    let l = live();
    let (status, body) = l.get("/api/cdrs").await;
    assert_eq!(status, StatusCode::OK, "a missing folder is an empty day");
    assert_eq!(json(&body)["total"], 0);
    let (w, thread) = crate::cdr::CdrWriter::spawn(l.cdr_dir.clone(), l.metrics.clone()).unwrap();
    for (id, end) in [
        ("a", "2026-03-01T10:00:00.000Z"),
        ("b", "2026-03-01T11:00:00.000Z"),
        ("c", "2026-03-01T12:00:00.000Z"),
        ("d", "2026-03-02T12:00:00.000Z"),
    ] {
        assert!(w.submit(crate::cdr::tests::sample(id, end)));
    }
    drop(w);
    thread.join().unwrap();
    // A file next to the CDR folder that no request may reach.
    std::fs::write(l.cdr_dir.parent().unwrap().join("secret.jsonl"), "{}\n").unwrap();
    let (status, body) = l.get("/api/cdrs?date=2026-03-01&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["date"], "2026-03-01");
    assert_eq!(v["total"], 3);
    let ids: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].clone())
        .collect();
    assert_eq!(ids, ["c", "b"]);
    assert_eq!(v["items"][0]["rtp"]["lost"], 2);
    let (_, body) = l.get("/api/cdrs?date=2026-03-01&offset=2").await;
    assert_eq!(json(&body)["items"][0]["call_id"], "a");
    for bad in [
        "/api/cdrs?date=2026-3-1",
        "/api/cdrs?date=..%2Fsecret",
        "/api/cdrs?date=..%2F..%2Fsecret",
        "/api/cdrs?date=2026-03-01%2F..",
        "/api/cdrs?limit=x",
        "/api/cdrs?unknown=1",
    ] {
        assert_eq!(l.get(bad).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn cdrs_turned_off_answer_404() {
    let dir = std::env::temp_dir().join(format!("switchboard-nocdr-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let index = Arc::new(RecordingIndex::load(&dir).unwrap());
    let app = router(ApiState::new(index, None));
    let resp = app
        .oneshot(Request::get("/api/cdrs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn cdrs_filter_by_caller_callee_and_outcome() {
    let l = live();
    let (w, thread) = crate::cdr::CdrWriter::spawn(l.cdr_dir.clone(), l.metrics.clone()).unwrap();
    let mut bob = crate::cdr::tests::sample("bob-missed", "2026-03-01T11:00:00.000Z");
    bob.from = "\"Bob\" <sip:bob@example.org>;tag=9".into();
    bob.to = "conf-sales".into();
    bob.answered_at = None;
    bob.cause = "cancelled".into();
    for cdr in [
        crate::cdr::tests::sample("alice-1", "2026-03-01T10:00:00.000Z"),
        bob,
        crate::cdr::tests::sample("alice-2", "2026-03-01T12:00:00.000Z"),
    ] {
        assert!(w.submit(cdr));
    }
    drop(w);
    thread.join().unwrap();
    let ids = |v: serde_json::Value| -> (u64, Vec<String>) {
        let items = v["items"].as_array().unwrap().iter();
        (
            v["total"].as_u64().unwrap(),
            items
                .map(|c| c["call_id"].as_str().unwrap().to_string())
                .collect(),
        )
    };
    for (query, total, want) in [
        ("caller=ALICE", 2, vec!["alice-2", "alice-1"]),
        ("caller=bob&callee=sales", 1, vec!["bob-missed"]),
        ("callee=ivr&outcome=answered", 2, vec!["alice-2", "alice-1"]),
        ("outcome=unanswered", 1, vec!["bob-missed"]),
        ("outcome=cancelled", 1, vec!["bob-missed"]),
        ("outcome=refused", 0, vec![]),
        // Paging applies to the matches, and `total` counts them all.
        ("caller=alice&limit=1&offset=1", 2, vec!["alice-1"]),
        (
            "caller=&callee=&outcome=",
            3,
            vec!["alice-2", "bob-missed", "alice-1"],
        ),
    ] {
        let (status, body) = l.get(&format!("/api/cdrs?date=2026-03-01&{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(
            ids(json(&body)),
            (total, want.iter().map(|s| s.to_string()).collect()),
            "{query}"
        );
    }
}

// ---- stats ----

#[tokio::test]
async fn stats_match_the_live_state_and_the_workers() {
    let base = std::env::temp_dir().join(format!("switchboard-stats-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&base).unwrap();
    let index = Arc::new(RecordingIndex::load(&base).unwrap());
    let calls = CallRegistry::default();
    let workers: Vec<Arc<crate::engine::WorkerStats>> = vec![Arc::default(), Arc::default()];
    use std::sync::atomic::Ordering::Relaxed;
    workers[0].legs.store(2, Relaxed);
    workers[1].legs.store(1, Relaxed);
    workers[0].ticks.store(1000, Relaxed);
    workers[1].ticks.store(500, Relaxed);
    workers[1].late_ticks.store(7, Relaxed);
    workers[0].packets_in.store(900, Relaxed);
    workers[1].packets_in.store(90, Relaxed);
    workers[0].packets_out.store(1000, Relaxed);
    workers[1].frames_concealed.store(12, Relaxed);
    workers[1].packets_lost.store(10, Relaxed);
    let app = router(
        ApiState::new(index, Some(TOKEN.into()))
            .with_calls(calls.clone())
            .with_rooms(Arc::new(FakeRooms::default()))
            .with_media_stats(workers),
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let _call = calls.register(CallInfo::new("c1", "a", "b"), tx);
    let get = |token: bool| {
        let mut b = Request::get("/api/stats");
        if token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        app.clone().oneshot(b.body(Body::empty()).unwrap())
    };
    assert_eq!(get(false).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let resp = get(true).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json(&to_bytes(resp.into_body(), 1 << 20).await.unwrap());
    assert_eq!(
        v,
        serde_json::json!({
            "calls": 1, "legs": 3, "rooms": 2, "room_members": 2, "workers": 2,
            "ticks": 1500, "late_ticks": 7, "skipped_ticks": 0,
            "rtp_packets_in": 990, "rtp_packets_out": 1000, "frames_concealed": 12,
            "rtp_packets_lost": 10, "rtp_loss_percent": 1.0,
        })
    );
    let _ = std::fs::remove_dir_all(base);
}
