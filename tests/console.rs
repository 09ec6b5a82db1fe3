//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver
//! started here on a free loopback port). One test runs the API router with a real call
//! registry and event bus and a fake conference side (every control checked precisely); the
//! other runs the whole server with real SIP calls in a real room.
//!
//! Needs `chromium` and `chromium-driver` (Debian). Without them the test fails under
//! `CI=true` and is skipped with a message otherwise. Screenshots of each step are written to
//! `target/console-screenshots/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
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

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
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

async fn start_chromedriver(driver: &Path) -> (Killed, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let child = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {addr} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_and_controls_live_state_in_a_browser() {
    let Some((driver, browser)) = browser_tools() else {
        return;
    };

    // The server: a recording on disk, a real registry and bus, a fake conference side.
    let base = std::env::temp_dir().join(format!("switchboard-console-{:016x}", fastrand::u64(..)));
    let rec_dir = base.join("recordings");
    std::fs::create_dir_all(&rec_dir).unwrap();
    write_recording(&rec_dir, "rec-console");
    let calls = CallRegistry::default();
    let bus = EventBus::default();
    let (actions_tx, mut actions) = mpsc::unbounded_channel();
    let rooms = Arc::new(FakeRooms {
        room: Mutex::new(RoomInfo {
            name: "sales".into(),
            members: vec![member(1, "alice"), member(2, "bob")],
            locked: false,
            recording: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }),
        actions: actions_tx,
    });
    let index = Arc::new(RecordingIndex::load(&rec_dir).unwrap());
    let app = router(
        ApiState::new(index, Some(TOKEN.into()))
            .with_calls(calls.clone())
            .with_rooms(rooms.clone())
            .with_events(bus.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_driver, driver_addr) = start_chromedriver(&driver).await;
    let c = browser_session(driver_addr, &browser).await;

    // First visit: the token is asked for once.
    log_in(&c, http, Some("1-login")).await;
    let stored = c
        .execute("return localStorage.getItem('switchboard-token');", vec![])
        .await
        .unwrap();
    assert_eq!(stored, TOKEN);

    // A call registers and announces itself: it appears.
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let _call = calls.register(
        CallInfo::new("call-console-1", "<sip:dave@example.com>", "ivr"),
        ctl_tx,
    );
    bus.publish(Event::CallStarted {
        call_id: "call-console-1".into(),
        from: "<sip:dave@example.com>".into(),
        to: "ivr".into(),
    });
    wait_for(&c, "#calls tr[data-call='call-console-1']").await;
    screenshot(&c, "2-call").await;

    // Hang it up from the page: the call task receives the control.
    c.find(Locator::Css(
        "#calls tr[data-call='call-console-1'] button[data-action=hangup]",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let ctl = tokio::time::timeout(WAIT, ctl_rx.recv())
        .await
        .expect("hangup in time");
    assert_eq!(ctl, Some(CallControl::Hangup));

    // The room and its members are shown; talking lights up from the event stream.
    let bob = "#rooms [data-room='sales'] tr[data-member='2']";
    wait_for(&c, bob).await;
    bus.publish(Event::MemberTalking {
        room: "sales".into(),
        member: 2,
        talking: true,
    });
    wait_for(&c, &format!("{bob}.talking")).await;

    // Mute: the room is asked, and once it reports the change the page shows it.
    c.find(Locator::Css(&format!("{bob} button[data-action=mute]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
    let muted = wait_for(&c, &format!("{bob}.muted")).await;
    assert_eq!(
        muted
            .find(Locator::Css(".mute-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "muted"
    );
    wait_for(&c, &format!("{bob} button[data-action=unmute]")).await;
    screenshot(&c, "3-room-muted").await;

    // The recording is listed and plays in the page.
    let row = "#recordings tr[data-recording='rec-console']";
    wait_for(&c, row).await;
    c.find(Locator::Css(&format!("{row} button[data-action=play]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (ready, time) = loop {
        let v = c
            .execute(
                "const p = document.getElementById('player'); return [p.readyState, p.currentTime, p.error && p.error.code];",
                vec![],
            )
            .await
            .unwrap();
        let ready = v[0].as_u64().unwrap_or(0);
        let time = v[1].as_f64().unwrap_or(0.0);
        assert!(v[2].is_null(), "audio error {}", v[2]);
        if ready >= 2 && time > 0.0 {
            break (ready, time);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audio did not play: readyState {ready}, currentTime {time}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ready >= 2 && time > 0.0);
    screenshot(&c, "4-recording-playing").await;
    let href = c
        .find(Locator::Css(&format!("{row} a[data-action=download]")))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(
        href.ends_with(&format!("/api/recordings/rec-console/audio?token={TOKEN}")),
        "{href}"
    );

    c.close().await.unwrap();
    server.abort();
    let _ = std::fs::remove_dir_all(base);
}

/// Opens the console at `http`, gives it the token when asked (screenshot of the login form
/// as `shot`), and waits until its event stream is live.
async fn log_in(c: &Client, http: SocketAddr, shot: Option<&str>) {
    c.goto(&format!("http://{http}/")).await.unwrap();
    let input = wait_for(c, "#login:not([hidden]) #token").await;
    if let Some(name) = shot {
        screenshot(c, name).await;
    }
    input.send_keys(TOKEN).await.unwrap();
    click(c, "#login button[type=submit]").await;
    wait_for(c, "#stream-state.on").await;
}

/// A headless Chromium session through chromedriver at `driver_addr`.
async fn browser_session(driver_addr: SocketAddr, browser: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": browser,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
                "--mute-audio"
            ]
        }),
    );
    tokio::time::timeout(
        WAIT,
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{driver_addr}")),
    )
    .await
    .expect("browser session in time")
    .expect("browser session")
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

/// Chromium and chromedriver, or None (a failure under `CI=true`).
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    match (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) {
        (Some(d), Some(b)) => Some((d, b)),
        _ => {
            let msg =
                "chromium and chromedriver are needed (apt-get install chromium chromium-driver)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("skipping the browser test: {msg}");
            None
        }
    }
}

/// A SIP caller over UDP, driven until its call ends (or `limit`); answers whether the server
/// ended it with BYE. `answered` fires once the call is up.
async fn caller(
    server: SocketAddr,
    user: &'static str,
    answered: tokio::sync::oneshot::Sender<String>,
    limit: Duration,
) -> bool {
    use support::uac::{offer, Uac, UacState};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut uac = Uac::new(socket.local_addr().unwrap(), server, false);
    uac.invite(
        std::time::Instant::now(),
        user,
        &offer("127.0.0.1", 40000, "sendrecv"),
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
                let _ = tx.send(uac.call_id.clone());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_mutes_a_real_member_and_hangs_up_a_real_call() {
    let Some((driver, browser)) = browser_tools() else {
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

    // Two callers in room "sales".
    let (a_tx, a_rx) = tokio::sync::oneshot::channel();
    let (b_tx, b_rx) = tokio::sync::oneshot::channel();
    let a = tokio::spawn(caller(sip, "conf-sales", a_tx, Duration::from_secs(60)));
    let b = tokio::spawn(caller(sip, "conf-sales", b_tx, Duration::from_secs(60)));
    let a_id = tokio::time::timeout(WAIT, a_rx).await.unwrap().unwrap();
    let b_id = tokio::time::timeout(WAIT, b_rx).await.unwrap().unwrap();

    let (_driver, driver_addr) = start_chromedriver(&driver).await;
    let c = browser_session(driver_addr, &browser).await;
    log_in(&c, http, None).await;

    // Both live calls are listed, and the room shows both members.
    for id in [&a_id, &b_id] {
        wait_for(&c, &format!("#calls tr[data-call='{id}']")).await;
    }
    // The page re-renders rows as events arrive, so ids are read in one script call.
    let deadline = tokio::time::Instant::now() + WAIT;
    let member = loop {
        let ids = c
            .execute(
                "return [...document.querySelectorAll(\"#rooms [data-room='sales'] tr[data-member]\")].map(r => r.dataset.member);",
                vec![],
            )
            .await
            .unwrap();
        if let Some([first, _]) = ids.as_array().map(Vec::as_slice) {
            break first.as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "members not shown: {ids}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    screenshot(&c, "real-1-room").await;

    // Mute from the page: the real room mutes the member and its event updates the page.
    let row = format!("#rooms [data-room='sales'] tr[data-member='{member}']");
    click(&c, &format!("{row} button[data-action=mute]")).await;
    wait_for(&c, &format!("{row}.muted")).await;
    wait_for(&c, &format!("{row} button[data-action=unmute]")).await;
    screenshot(&c, "real-2-muted").await;

    // Hang up the second call from the page: its caller gets the server's BYE.
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
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = c
            .find_all(Locator::Css(&format!("#calls tr[data-call='{b_id}']")))
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ended call still shown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&c, "real-3-hung-up").await;

    c.close().await.unwrap();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(WAIT, server).await;
    a.abort();
    let _ = std::fs::remove_dir_all(base);
}
