//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver
//! started here on a free loopback port). One test runs the API router with a real call
//! registry and event bus, a fake conference side (every control checked precisely), a
//! recording, CDRs and media counters; one runs it without a token; one runs the whole server
//! with real SIP callers, one of them sending and hearing real audio, in a real room whose
//! every control is driven from the page and checked through the API.
//!
//! Needs `chromium` and `chromium-driver` (Debian). Without them the test fails under
//! `CI=true` and is skipped with a message otherwise. Screenshots of each step are written to
//! `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, Locator};
use switchboard::api::{router, ApiState, RecordingIndex};
use switchboard::events::{Event, EventBus};
use switchboard::live::{
    CallControl, CallInfo, CallRegistry, ControlError, MemberAction, MemberInfo, RoomAction,
    RoomInfo, Rooms,
};
use switchboard::media::record::{Format, RecordMode, Sidecar, SidecarState, StopReason};
use tokio::sync::mpsc;

mod support;

const TOKEN: &str = "console-token";
/// Longest wait for anything the page should show.
const WAIT: Duration = Duration::from_secs(15);

/// One room, `sales`, with two members; actions are reported on a channel and applied.
struct FakeRooms {
    room: Mutex<RoomInfo>,
    actions: mpsc::UnboundedSender<(u64, MemberAction)>,
}

impl Rooms for FakeRooms {
    fn list(&self) -> Vec<RoomInfo> {
        vec![self.room.lock().unwrap().clone()]
    }
    fn get(&self, name: &str) -> Option<RoomInfo> {
        let r = self.room.lock().unwrap();
        (r.name == name).then(|| r.clone())
    }
    fn member_action(
        &self,
        room: &str,
        member: u64,
        action: MemberAction,
    ) -> Result<(), ControlError> {
        let r = self.room.lock().unwrap();
        if r.name != room {
            return Err(ControlError::NoRoom);
        }
        if !r.members.iter().any(|m| m.id == member) {
            return Err(ControlError::NoMember);
        }
        let _ = self.actions.send((member, action));
        Ok(())
    }
    fn room_action(&self, _: &str, _: RoomAction) -> Result<Option<String>, ControlError> {
        Err(ControlError::Refused("not in this test".into()))
    }
}

fn member(id: u64, who: &str) -> MemberInfo {
    MemberInfo {
        id,
        call_id: format!("call-{who}"),
        from: format!("<sip:{who}@example.com>"),
        moderator: id == 1,
        muted: false,
        deaf: false,
        talking: false,
        joined_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Two seconds of a 440 Hz tone and its sidecar.
fn write_recording(dir: &Path, id: &str) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join(format!("{id}.wav")), spec).unwrap();
    for i in 0..16_000 {
        let t = i as f64 / 8000.0;
        w.write_sample((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    Sidecar {
        id: id.into(),
        call_id: "call-rec".into(),
        from: "sip:carol@example.com".into(),
        to: "sip:voicemail@pbx.example.com".into(),
        room: None,
        started: "2026-01-01T09:00:00.000Z".into(),
        duration_ms: 2000,
        format: Format {
            rate: 8000,
            channels: 1,
            bits: 16,
        },
        mode: RecordMode::Inbound,
        digits: String::new(),
        stop_reason: Some(StopReason::Hangup),
        state: SidecarState::Complete,
        file: format!("{id}.wav"),
    }
    .write(dir)
    .unwrap();
}

/// Waits for a CSS selector to match, boundedly.
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .every(Duration::from_millis(50))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// A GET to the API with the token; answers the status and the JSON body (null if none).
async fn api_get(http: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioExecutor;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let req = hyper::Request::get(format!("http://{http}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("API answer in time")
        .expect("API answer");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("API body in time")
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `probe` every 100 ms until it answers `Some`, at most [`WAIT`]; `what` names it
/// in the failure.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a script in the page and answers its value.
async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Text of the first element `css` matches, or None.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let v = js(
        c,
        &format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            serde_json::to_string(css).unwrap()
        ),
    )
    .await;
    v.as_str().map(str::to_string)
}

/// Whether the element `css` names is displayed (as a person would see it, CSS applied).
async fn displayed(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .is_displayed()
        .await
        .unwrap()
}

/// Waits until no element matches `css`.
async fn wait_gone(c: &Client, css: &str) {
    let q = serde_json::to_string(css).unwrap();
    eventually(&format!("{css} gone"), || async {
        let n = js(c, &format!("return document.querySelectorAll({q}).length;")).await;
        (n == 0).then_some(())
    })
    .await;
}

/// Where the first download link under `css` points.
async fn download_href(c: &Client, css: &str) -> String {
    c.find(Locator::Css(&format!("{css} a[data-action=download]")))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("a download link with an href")
}

/// Seconds of an `M:SS` or `H:MM:SS` duration.
fn seconds(text: &str) -> u64 {
    text.split(':').fold(0, |acc, part| {
        acc * 60
            + part
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{text:?}"))
    })
}

/// A finished call's record, ended now, in today's file of `dir`.
fn write_cdr(dir: &Path, call_id: &str, from: &str, to: &str, answered: bool) {
    write_leg_cdr(dir, call_id, from, to, answered, None);
}

/// A finished call's record, or (with `parent`) the record of a leg that call dialled.
fn write_leg_cdr(
    dir: &Path,
    call_id: &str,
    from: &str,
    to: &str,
    answered: bool,
    parent: Option<&str>,
) {
    use switchboard::cdr::{Cdr, CdrDate, HangupSide, RtpStats};
    let now = switchboard::live::rfc3339_now();
    let cdr = Cdr {
        call_id: call_id.into(),
        from: from.into(),
        to: to.into(),
        started_at: now.clone(),
        answered_at: answered.then(|| now.clone()),
        ended_at: now.clone(),
        duration_ms: if answered { 75_000 } else { 0 },
        hangup: HangupSide::Caller,
        cause: if answered { "caller_bye" } else { "cancelled" }.into(),
        sip_code: None,
        digits: String::new(),
        recordings: Vec::new(),
        rtp: RtpStats::default(),
        direction: if parent.is_some() {
            switchboard::cdr::Direction::Outbound
        } else {
            Default::default()
        },
        trunk: None,
        parent_call_id: parent.map(str::to_string),
        source: None,
        streams: Vec::new(),
        amd: None,
        reason: None,
        transport: None,
    };
    std::fs::create_dir_all(dir).unwrap();
    let path = CdrDate::of_rfc3339(&now).file(dir);
    let mut line = serde_json::to_string(&cdr).unwrap();
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_and_controls_live_state_in_a_browser() {
    let Some((driver, browser)) = support::browser::tools() else {
        return;
    };

    // The server: a recording on disk, CDRs, a real registry and bus, a fake conference side
    // and media counters.
    let base = std::env::temp_dir().join(format!("switchboard-console-{:016x}", fastrand::u64(..)));
    let rec_dir = base.join("recordings");
    let cdr_dir = base.join("cdr");
    std::fs::create_dir_all(&rec_dir).unwrap();
    write_recording(&rec_dir, "rec-console");
    write_cdr(
        &cdr_dir,
        "cdr-alice",
        "\"Alice\" <sip:alice@example.com>;tag=1",
        "ivr",
        true,
    );
    write_cdr(
        &cdr_dir,
        "cdr-bob",
        "<sip:bob@example.org>;tag=2",
        "conf-sales",
        false,
    );
    write_cdr(
        &cdr_dir,
        "cdr-bob-2",
        "<sip:bob@example.org>;tag=3",
        "echo",
        true,
    );
    // Alice's call dialled a desk phone: its leg's record, written last (newest).
    write_leg_cdr(
        &cdr_dir,
        "cdr-alice-leg",
        "\"Alice\" <sip:alice@example.com>;tag=1",
        "sip:desk@10.0.0.5",
        true,
        Some("cdr-alice"),
    );
    let calls = CallRegistry::default();
    let bus = EventBus::default();
    let (actions_tx, mut actions) = mpsc::unbounded_channel();
    let rooms = Arc::new(FakeRooms {
        room: Mutex::new(RoomInfo {
            name: "sales".into(),
            members: vec![member(1, "alice"), member(2, "bob")],
            locked: false,
            recording: None,
            stream: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            rate: 16000,
        }),
        actions: actions_tx,
    });
    let worker = Arc::new(switchboard::engine::WorkerStats::default());
    {
        use std::sync::atomic::Ordering::Relaxed;
        worker.legs.store(3, Relaxed);
        worker.late_ticks.store(4, Relaxed);
        worker.packets_in.store(970, Relaxed);
        worker.frames_concealed.store(45, Relaxed);
        worker.packets_lost.store(30, Relaxed);
    }
    let index = Arc::new(RecordingIndex::load(&rec_dir).unwrap());
    let app = router(
        ApiState::new(index, Some(TOKEN.into()))
            .with_calls(calls.clone())
            .with_rooms(rooms.clone())
            .with_events(bus.clone())
            .with_media_stats(vec![worker])
            .with_cdr_dir(Some(cdr_dir)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_driver, driver_addr) = support::browser::start_chromedriver(&driver).await;
    let c = support::browser::session(driver_addr, &browser).await;

    // First visit: the server needs a token, so the page asks for it, once.
    log_in(&c, http, Some("1-login")).await;
    let stored = js(&c, "return localStorage.getItem('switchboard-token');").await;
    assert_eq!(stored, TOKEN);
    assert!(
        displayed(&c, "#change-token").await,
        "a server with a token offers to change it"
    );

    // A call registers and announces itself: it appears as name and user, its duration
    // counting.
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let _call = calls.register(
        CallInfo::new(
            "call-console-1",
            "\"Dave Jones\" <sip:dave@example.com;user=phone>;tag=8f2a",
            "ivr",
        ),
        ctl_tx,
    );
    bus.publish(Event::CallStarted {
        call_id: "call-console-1".into(),
        from: "\"Dave Jones\" <sip:dave@example.com;user=phone>;tag=8f2a".into(),
        to: "ivr".into(),
    });
    let call_row = "#calls tr[data-call='call-console-1']";
    wait_for(&c, call_row).await;
    let who = text_of(&c, &format!("{call_row} .who")).await.unwrap();
    assert_eq!(who, "Dave Jones dave");
    assert_eq!(
        text_of(&c, &format!("{call_row} .who .name"))
            .await
            .unwrap(),
        "Dave Jones"
    );
    assert_eq!(
        text_of(&c, &format!("{call_row} .who .user"))
            .await
            .unwrap(),
        "dave"
    );
    let title = js(
        &c,
        &format!("return document.querySelector(\"{call_row} .party\").title;"),
    )
    .await;
    assert_eq!(title, "sip:dave@example.com;user=phone");
    // What the call's last listen() heard and its answering-machine verdict show on its row
    // as soon as their events come.
    _call.update(|i| {
        i.heard = Some("support".into());
        i.amd = Some("HUMAN (HUMAN-340-800)".into());
    });
    bus.publish(Event::Amd {
        call_id: "call-console-1".into(),
        status: "HUMAN".into(),
        cause: "HUMAN-340-800".into(),
        greeting_ms: 340,
        words: 1,
    });
    wait_for(&c, &format!("{call_row} .heard")).await;
    assert_eq!(
        text_of(&c, &format!("{call_row} .heard")).await.unwrap(),
        "“support”"
    );
    assert_eq!(
        text_of(&c, &format!("{call_row} .amd")).await.unwrap(),
        "AMD HUMAN (HUMAN-340-800)"
    );
    // The page's reading of other From forms.
    let parsed = js(
        &c,
        r#"return [
            '"Smith, J. <Sales>" <sip:js@example.com>;tag=1',
            '"Say \\"hi\\"" <sips:hi@example.com:5061;transport=tls>',
            'Bob <sip:bob@example.org>',
            '<sip:%2B15551234@gw.example.net;user=phone>;tag=x',
            'sip:carol@example.com;tag=9',
            'tel:+15550001',
            'ivr',
        ].map(t => { const p = parseParty(t); return [p.name, p.user, p.uri]; });"#,
    )
    .await;
    assert_eq!(
        parsed,
        serde_json::json!([
            ["Smith, J. <Sales>", "js", "sip:js@example.com"],
            ["Say \"hi\"", "hi", "sips:hi@example.com:5061;transport=tls"],
            ["Bob", "bob", "sip:bob@example.org"],
            ["", "+15551234", "sip:%2B15551234@gw.example.net;user=phone"],
            ["", "carol", "sip:carol@example.com"],
            ["", "+15550001", "tel:+15550001"],
            ["", "ivr", "ivr"],
        ])
    );
    let dur = format!("{call_row} .dur");
    let first = seconds(&text_of(&c, &dur).await.unwrap());
    assert!(first <= 2, "a new call shows {first} s");
    let later = eventually("call duration ticking", || async {
        let s = seconds(&text_of(&c, &dur).await?);
        (s > first).then_some(s)
    })
    .await;
    assert!(later <= first + 3, "{first} -> {later}");
    // Members' durations count from their joining time, here long ago.
    let member_dur = text_of(&c, "#rooms tr[data-member='1'] .dur")
        .await
        .unwrap();
    assert!(seconds(&member_dur) > 3600, "{member_dur}");
    screenshot(&c, "2-call").await;

    // Hang it up from the page: the call task receives the control.
    click(&c, &format!("{call_row} button[data-action=hangup]")).await;
    let ctl = tokio::time::timeout(WAIT, ctl_rx.recv())
        .await
        .expect("hangup in time");
    assert_eq!(ctl, Some(CallControl::Hangup));

    // The room and its members are shown; talking lights up from the event stream.
    let bob = "#rooms [data-room='sales'] tr[data-member='2']";
    wait_for(&c, bob).await;
    let meta = text_of(&c, "#rooms [data-room='sales'] .room-meta")
        .await
        .unwrap();
    assert!(meta.ends_with(" · 16 kHz"), "the room's rate: {meta}");
    assert_eq!(
        text_of(&c, &format!("{bob} .who .name")).await.unwrap(),
        "bob"
    );
    bus.publish(Event::MemberTalking {
        room: "sales".into(),
        member: 2,
        talking: true,
    });
    wait_for(&c, &format!("{bob}.talking")).await;

    // Mute: the room is asked, and once it reports the change the page shows it.
    click(&c, &format!("{bob} button[data-action=mute]")).await;
    let action = tokio::time::timeout(WAIT, actions.recv())
        .await
        .expect("mute in time");
    assert_eq!(action, Some((2, MemberAction::Mute)));
    rooms.room.lock().unwrap().members[1].muted = true;
    bus.publish(Event::MemberMuted {
        room: "sales".into(),
        member: 2,
        muted: true,
    });
    wait_for(&c, &format!("{bob}.muted")).await;
    assert_eq!(
        text_of(&c, &format!("{bob} .mute-state")).await.unwrap(),
        "muted"
    );
    wait_for(&c, &format!("{bob} button[data-action=unmute]")).await;
    screenshot(&c, "3-room-muted").await;

    // The live panel shows what `/api/stats` says.
    let (_, stats) = api_get(http, "/api/stats").await;
    assert_eq!(stats["legs"], 3);
    assert_eq!(stats["rtp_loss_percent"], 3.0);
    for key in [
        "calls",
        "legs",
        "rooms",
        "room_members",
        "late_ticks",
        "rtp_loss_percent",
    ] {
        let want = stats[key].to_string();
        let css = format!("#live .stat[data-stat='{key}'] .n");
        eventually(&format!("live panel {key} = {want}"), || async {
            let shown = text_of(&c, &css).await?;
            (shown.parse::<f64>().ok() == want.parse::<f64>().ok()).then_some(())
        })
        .await;
    }

    // The recording is listed with its length and a level strip, and plays in the page.
    let row = "#recordings tr[data-recording='rec-console']";
    wait_for(&c, row).await;
    assert_eq!(
        text_of(&c, &format!("{row} .length")).await.unwrap(),
        "0:02"
    );
    wait_for(&c, &format!("{row} canvas.levels[data-levels='80']")).await;
    // The strip is drawn: a steady tone gives bars across the whole width.
    let inked = js(
        &c,
        &format!(
            "const cv = document.querySelector(\"{row} canvas.levels\");
             const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
             const cols = new Set();
             for (let i = 3; i < d.length; i += 4) if (d[i] > 0) cols.add(((i - 3) / 4) % cv.width);
             return [cols.size, cv.width];"
        ),
    )
    .await;
    let (cols, width) = (inked[0].as_u64().unwrap(), inked[1].as_u64().unwrap());
    assert!(cols * 10 >= width * 9, "{cols} of {width} columns drawn");
    click(&c, &format!("{row} button[data-action=play]")).await;
    let (ready, time) = eventually("audio playing", || async {
        let v = js(
            &c,
            "const p = document.getElementById('player'); return [p.readyState, p.currentTime, p.error && p.error.code];",
        )
        .await;
        assert!(v[2].is_null(), "audio error {}", v[2]);
        let ready = v[0].as_u64().unwrap_or(0);
        let time = v[1].as_f64().unwrap_or(0.0);
        (ready >= 2 && time > 0.0).then_some((ready, time))
    })
    .await;
    assert!(ready >= 2 && time > 0.0);
    let href = download_href(&c, row).await;
    assert!(
        href.ends_with(&format!("/api/recordings/rec-console/audio?token={TOKEN}")),
        "{href}"
    );
    // The download link fetches the WAV itself.
    let fetched = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.arrayBuffer().then(b => done([r.status, b.byteLength])))
               .catch(e => done(String(e)));",
            vec![serde_json::Value::String(href.clone())],
        )
        .await
        .unwrap();
    assert_eq!(fetched, serde_json::json!([200, 44 + 32_000]));
    screenshot(&c, "4-recording-playing").await;

    // Call history: today's records, then filtered by caller and by outcome.
    let history = "#history tr[data-cdr]";
    let shown = |c: &Client| {
        let c = c.clone();
        async move {
            let v = js(
                &c,
                "return [...document.querySelectorAll('#history tr[data-cdr]')].map(r => r.dataset.cdr);",
            )
            .await;
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    wait_for(&c, history).await;
    // The dialled leg is listed under the call that dialled it, not by its own time.
    assert_eq!(
        shown(&c).await,
        ["cdr-bob-2", "cdr-bob", "cdr-alice", "cdr-alice-leg"]
    );
    assert_eq!(
        text_of(&c, "#history tr.leg[data-cdr='cdr-alice-leg'] .dialled")
            .await
            .unwrap(),
        "↳ sip:desk@10.0.0.5"
    );
    assert_eq!(
        text_of(&c, "#history tr[data-cdr='cdr-alice'] .who")
            .await
            .unwrap(),
        "Alice alice"
    );
    let filter = |c: &Client, caller: &'static str, outcome: &'static str| {
        let c = c.clone();
        async move {
            js(
                &c,
                &format!(
                    "const f = document.getElementById('history-filter');
                     f.elements.caller.value = '{caller}';
                     f.elements.outcome.value = '{outcome}';
                     document.getElementById('history').replaceChildren();"
                ),
            )
            .await;
            click(&c, "#history-filter button[type=submit]").await;
        }
    };
    filter(&c, "bob", "").await;
    eventually("history filtered by caller", || async {
        (shown(&c).await == ["cdr-bob-2", "cdr-bob"]).then_some(())
    })
    .await;
    filter(&c, "bob", "unanswered").await;
    eventually("history filtered by outcome", || async {
        (shown(&c).await == ["cdr-bob"]).then_some(())
    })
    .await;
    assert!(text_of(&c, "#history-total")
        .await
        .unwrap()
        .starts_with("1 call on "));
    js(&c, "document.getElementById('history').scrollIntoView();").await;
    screenshot(&c, "5-history").await;

    // A token that stops working brings the prompt back.
    js(
        &c,
        "localStorage.setItem('switchboard-token', 'wrong'); location.reload();",
    )
    .await;
    wait_for(&c, "#login:not([hidden]) #token").await;
    assert_eq!(
        text_of(&c, "#login-error").await.unwrap(),
        "The token was refused."
    );

    c.close().await.unwrap();
    server.abort();
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_no_token_when_the_server_needs_none() {
    let Some((driver, browser)) = support::browser::tools() else {
        return;
    };
    let base = std::env::temp_dir().join(format!("switchboard-console-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&base).unwrap();
    write_recording(&base, "rec-open");
    let index = Arc::new(RecordingIndex::load(&base).unwrap());
    let app = router(ApiState::new(index, None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (_driver, driver_addr) = support::browser::start_chromedriver(&driver).await;
    let c = support::browser::session(driver_addr, &browser).await;

    c.goto(&format!("http://{http}/")).await.unwrap();
    wait_for(&c, "#stream-state.on").await;
    wait_for(&c, "#recordings tr[data-recording='rec-open']").await;
    assert_eq!(
        js(&c, "return localStorage.getItem('switchboard-token');").await,
        serde_json::Value::Null
    );
    for (css, shown) in [
        ("#login", false),
        ("#app", true),
        ("#change-token", false),
        ("#recordings", true),
        // CDRs are off here: the history says so instead of showing an empty table.
        ("#history-filter", false),
        ("#history-table", false),
    ] {
        assert_eq!(displayed(&c, css).await, shown, "{css} displayed");
    }
    assert!(text_of(&c, "#history-total")
        .await
        .unwrap()
        .starts_with("Call history is off"));
    assert_eq!(
        text_of(&c, "#version").await.unwrap(),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    // Audio links carry no token either.
    let href = download_href(&c, "#recordings").await;
    assert!(href.ends_with("/api/recordings/rec-open/audio"), "{href}");
    screenshot(&c, "0-no-token").await;

    c.close().await.unwrap();
    server.abort();
    let _ = std::fs::remove_dir_all(base);
}

/// Opens the console at `http`, gives it the token when asked (screenshot of the login form
/// as `shot`), and waits until its event stream is live.
async fn log_in(c: &Client, http: SocketAddr, shot: Option<&str>) {
    c.goto(&format!("http://{http}/")).await.unwrap();
    let input = wait_for(c, "#login:not([hidden]) #token").await;
    assert!(displayed(c, "#login").await && !displayed(c, "#app").await);
    if let Some(name) = shot {
        screenshot(c, name).await;
    }
    input.send_keys(TOKEN).await.unwrap();
    click(c, "#login button[type=submit]").await;
    wait_for(c, "#stream-state.on").await;
}

/// Clicks the element `css` names, finding it again if the page re-rendered it meanwhile.
async fn click(c: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.is_ok(),
            Err(_) => false,
        };
        if clicked {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "cannot click {css}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SIP caller over UDP offering `rtp_port` for media, driven until its call ends (or
/// `limit`); answers whether the server ended it with BYE. `answered` gets the Call-ID and
/// the server's media address once the call is up.
async fn caller(
    server: SocketAddr,
    user: &'static str,
    rtp_port: u16,
    answered: tokio::sync::oneshot::Sender<(String, SocketAddr)>,
    limit: Duration,
) -> bool {
    use support::uac::{offer, Uac, UacState};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut uac = Uac::new(socket.local_addr().unwrap(), server, false);
    uac.invite(
        std::time::Instant::now(),
        user,
        &offer("127.0.0.1", rtp_port, "sendrecv"),
    );
    let until = tokio::time::Instant::now() + limit;
    let mut answered = Some(answered);
    let mut buf = vec![0u8; 65536];
    loop {
        while let Some(m) = uac.outbox.pop_front() {
            socket.send_to(&m, server).await.unwrap();
        }
        if uac.state == UacState::Confirmed {
            if let Some(tx) = answered.take() {
                let sdp = String::from_utf8_lossy(uac.answer.as_deref().unwrap_or_default());
                let port: u16 = sdp
                    .lines()
                    .find_map(|l| l.strip_prefix("m=audio "))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|p| p.parse().ok())
                    .expect("an audio port in the answer");
                let _ = tx.send((uac.call_id.clone(), SocketAddr::new(server.ip(), port)));
            }
        }
        if uac.state == UacState::Terminated || tokio::time::Instant::now() >= until {
            return uac.requests_in.iter().any(|r| r == "BYE");
        }
        let wake = uac
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(until)
            .min(until);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let n = r.unwrap().0;
                uac.handle(std::time::Instant::now(), &buf[..n]);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        uac.handle_timeout(std::time::Instant::now());
    }
}

/// Largest share of 1 kHz in any 50 ms of `pcm` that is not near silence.
fn peak_beep_share(pcm: &[i16]) -> f64 {
    pcm.chunks_exact(400)
        .filter(|w| switchboard::media::level::rms_dbfs(w) > -50.0)
        .map(|w| support::rtp::tone_power(w, 1000.0))
        .fold(0.0, f64::max)
}

/// The room `sales` as the API shows it, or None once it is gone.
async fn sales(http: SocketAddr) -> Option<serde_json::Value> {
    let (status, v) = api_get(http, "/api/rooms/sales").await;
    (status == 200).then_some(v)
}

/// The member of `sales` whose call is `call_id`, as the API shows it.
async fn api_member(http: SocketAddr, call_id: &str) -> serde_json::Value {
    let room = sales(http).await.expect("room sales");
    room["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["call_id"] == call_id)
        .cloned()
        .unwrap_or_else(|| panic!("no member for {call_id} in {room}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_drives_a_real_room_and_its_calls() {
    let Some((driver, browser)) = support::browser::tools() else {
        return;
    };
    let base = std::env::temp_dir().join(format!("switchboard-console-{:016x}", fastrand::u64(..)));
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.token = TOKEN.into();
    cfg.rtp.port_min = 44800;
    cfg.rtp.port_max = 44899;
    cfg.paths.recordings = base.join("recordings");
    cfg.cdr.dir = base.join("cdr");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        switchboard::run_with_ready(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send((r.sip, r.http));
            },
        )
        .await
    });
    let (sip, http) = tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();

    // Two callers in room "sales"; the first sends and hears real audio.
    let mut peer = support::rtp::RtpPeer::bind().await;
    let (a_tx, a_rx) = tokio::sync::oneshot::channel();
    let (b_tx, b_rx) = tokio::sync::oneshot::channel();
    let a = tokio::spawn(caller(
        sip,
        "conf-sales",
        peer.port(),
        a_tx,
        Duration::from_secs(90),
    ));
    let (a_id, a_media) = tokio::time::timeout(WAIT, a_rx).await.unwrap().unwrap();
    let b = tokio::spawn(caller(
        sip,
        "conf-sales",
        40000,
        b_tx,
        Duration::from_secs(90),
    ));
    let (b_id, _) = tokio::time::timeout(WAIT, b_rx).await.unwrap().unwrap();

    let (_driver, driver_addr) = support::browser::start_chromedriver(&driver).await;
    let c = support::browser::session(driver_addr, &browser).await;
    log_in(&c, http, None).await;

    // Both live calls are listed, and the room shows both members.
    for id in [&a_id, &b_id] {
        wait_for(&c, &format!("#calls tr[data-call='{id}']")).await;
    }
    let room = "#rooms [data-room='sales']";
    let a_row = format!("{room} tr[data-call='{a_id}']");
    let b_row = format!("{room} tr[data-call='{b_id}']");
    wait_for(&c, &a_row).await;
    wait_for(&c, &b_row).await;
    assert_eq!(
        text_of(&c, &format!("{a_row} .who .name")).await.unwrap(),
        "tester"
    );
    screenshot(&c, "real-1-room").await;

    // A talks: its light comes on while the tone lasts and goes off after it.
    let talk = tokio::spawn(async move {
        let tone = support::rtp::tone("440/2000@-10", 2000);
        peer.exchange(a_media, &tone, Duration::ZERO).await;
        peer
    });
    wait_for(&c, &format!("{a_row}.talking")).await;
    assert!(
        c.find_all(Locator::Css(&format!("{b_row}.talking")))
            .await
            .unwrap()
            .is_empty(),
        "the silent member is lit"
    );
    screenshot(&c, "real-2-talking").await;
    let mut peer = tokio::time::timeout(WAIT, talk).await.unwrap().unwrap();
    wait_gone(&c, &format!("{a_row}.talking")).await;

    // Deafen and undeafen A from the page; the API shows each change.
    click(&c, &format!("{a_row} button[data-action=deaf]")).await;
    eventually("deaf in the API", || async {
        (api_member(http, &a_id).await["deaf"] == true).then_some(())
    })
    .await;
    wait_for(&c, &format!("{a_row}.deaf button[data-action=undeaf]")).await;
    click(&c, &format!("{a_row} button[data-action=undeaf]")).await;
    eventually("undeaf in the API", || async {
        (api_member(http, &a_id).await["deaf"] == false).then_some(())
    })
    .await;
    wait_for(&c, &format!("{a_row} button[data-action=deaf]")).await;

    // Lock and unlock the room.
    click(&c, &format!("{room} button[data-action=lock]")).await;
    eventually("locked in the API", || async {
        (sales(http).await?["locked"] == true).then_some(())
    })
    .await;
    wait_for(&c, &format!("{room} .locked-tag")).await;
    screenshot(&c, "real-3-locked").await;
    click(&c, &format!("{room} button[data-action=unlock]")).await;
    eventually("unlocked in the API", || async {
        (sales(http).await?["locked"] == false).then_some(())
    })
    .await;
    wait_for(&c, &format!("{room} button[data-action=lock]")).await;

    // Play a prompt to the room: A hears the 1 kHz beep.
    let listen = tokio::spawn(async move {
        let heard = peer
            .exchange(a_media, &[0i16; 8 * 1500], Duration::ZERO)
            .await;
        (peer, heard)
    });
    js(
        &c,
        "document.querySelector(\"[data-room='sales'] input.prompt\").value = 'beep';",
    )
    .await;
    click(&c, &format!("{room} button[data-action=play-prompt]")).await;
    let (mut peer, heard) = tokio::time::timeout(WAIT, listen).await.unwrap().unwrap();
    let share = peak_beep_share(&heard);
    assert!(
        share > 0.8,
        "the played beep was not heard: 1 kHz share {share}"
    );
    assert!(
        text_of(&c, "#error").await.unwrap_or_default().is_empty(),
        "the page reported an error"
    );

    // Record the room while A talks, then stop: the recording is listed with its length and
    // level strip.
    click(&c, &format!("{room} button[data-action=record-start]")).await;
    let rec_id = eventually("recording in the API", || async {
        sales(http).await?["recording"].as_str().map(str::to_string)
    })
    .await;
    wait_for(&c, &format!("{room} button[data-action=record-stop]")).await;
    wait_for(&c, &format!("{room} .rec-tag")).await;
    screenshot(&c, "real-4-recording").await;
    peer.exchange(
        a_media,
        &support::rtp::tone("440/1500@-10", 1500),
        Duration::ZERO,
    )
    .await;
    wait_gone(&c, &format!("{a_row}.talking")).await;
    click(&c, &format!("{room} button[data-action=record-stop]")).await;
    eventually("recording stopped in the API", || async {
        sales(http).await?["recording"].is_null().then_some(())
    })
    .await;
    wait_for(&c, &format!("{room} button[data-action=record-start]")).await;
    let rec_row = format!("#recordings tr[data-recording='{rec_id}']");
    wait_for(&c, &format!("{rec_row} canvas.levels[data-levels]")).await;
    let length = text_of(&c, &format!("{rec_row} .length")).await.unwrap();
    let (_, rec) = api_get(http, &format!("/api/recordings/{rec_id}")).await;
    let rec_secs = rec["duration_ms"].as_u64().unwrap() / 1000;
    assert_eq!(seconds(&length), rec_secs, "{length} vs {rec}");
    assert!(rec_secs >= 1, "{rec}");
    let (_, levels) = api_get(http, &format!("/api/recordings/{rec_id}/levels?n=80")).await;
    let loudest = levels["peaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_f64())
        .fold(0.0, f64::max);
    assert!(loudest > 0.1, "the recorded tone is missing: {levels}");

    // Mute B from the page: the real room mutes the member and its event updates the page.
    click(&c, &format!("{b_row} button[data-action=mute]")).await;
    wait_for(&c, &format!("{b_row}.muted")).await;
    assert_eq!(api_member(http, &b_id).await["muted"], true);
    wait_for(&c, &format!("{b_row} button[data-action=unmute]")).await;

    // The live panel agrees with `/api/stats`.
    let (_, stats) = api_get(http, "/api/stats").await;
    assert_eq!(stats["calls"], 2);
    assert_eq!(stats["rooms"], 1);
    assert_eq!(stats["room_members"], 2);
    for key in ["calls", "rooms", "room_members", "legs"] {
        let want = stats[key].as_u64().unwrap();
        eventually(&format!("live panel {key} = {want}"), || async {
            let shown = text_of(&c, &format!("#live .stat[data-stat='{key}'] .n")).await?;
            (shown.parse::<u64>().ok() == Some(want)).then_some(())
        })
        .await;
    }
    screenshot(&c, "real-5-panel").await;

    // Hang up B from the page: its caller gets the server's BYE, and the call leaves the
    // list and enters the history.
    click(
        &c,
        &format!("#calls tr[data-call='{b_id}'] button[data-action=hangup]"),
    )
    .await;
    let byed = tokio::time::timeout(WAIT, b)
        .await
        .expect("BYE in time")
        .unwrap();
    assert!(byed, "the call hung up from the console got no BYE");
    wait_gone(&c, &format!("#calls tr[data-call='{b_id}']")).await;
    let b_cdr = format!("#history tr[data-cdr='{b_id}']");
    wait_for(&c, &b_cdr).await;
    // B talked from its answer until the hang-up, several seconds.
    let talked = text_of(&c, &format!("{b_cdr} .talk-time")).await.unwrap();
    assert!(seconds(&talked) >= 3, "{talked}");

    // End the room (two clicks): it is gone from the API and the page, and A is hung up.
    click(&c, &format!("{room} button[data-action=end]")).await;
    wait_for(&c, &format!("{room} button[data-action=end].armed")).await;
    click(&c, &format!("{room} button[data-action=end]")).await;
    eventually("room ended in the API", || async {
        sales(http).await.is_none().then_some(())
    })
    .await;
    wait_gone(&c, room).await;
    let byed = tokio::time::timeout(WAIT, a)
        .await
        .expect("A's call ends in time")
        .unwrap();
    assert!(byed, "the caller left in an ended room got no BYE");
    screenshot(&c, "real-6-ended").await;

    c.close().await.unwrap();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(WAIT, server).await;
    let _ = std::fs::remove_dir_all(base);
}
