//! Calls streamed to an application over WebSocket, end to end: a real server on 127.0.0.1,
//! an in-process phone sending PCMU, and a WebSocket application in the test. The
//! application sees `connected` and `start` with the call's fields, gets the caller's tone
//! (decoded and measured) in 20 ms `media` messages, is heard by the caller when it talks
//! back, has its marks echoed after their audio, cuts playback with `clear`, receives the
//! caller's keys, and sees `stop` and the socket close on hangup. A stream to a dead or
//! slow application leaves the call unharmed; operators start and stop streams over HTTP;
//! the round trip caller → application → caller is measured against the plain echo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
mod support;

#[path = "../examples/stream_bot.rs"]
#[allow(dead_code)]
mod stream_bot;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::events::Events;
use support::rtp::{tone, RtpPeer};
use support::scripts::{rule, Scripts};
use support::server::*;
use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::stream::l16;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// What the application does with the caller's audio.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keeps it.
    Listen,
    /// Sends each inbound frame straight back (for the round trip).
    Echo,
    /// Completes the handshake, then never reads again.
    Stuck,
}

/// The application's side: every message it got (with when), and a way to send.
struct App {
    got: mpsc::UnboundedReceiver<(Instant, Value)>,
    send: mpsc::UnboundedSender<Message>,
    /// Messages taken from `got` but not yet looked at by `until`.
    seen: Vec<(Instant, Value)>,
}

/// A WebSocket application on 127.0.0.1: its URL, and the application once a stream
/// connects.
async fn application(mode: Mode) -> (String, tokio::task::JoinHandle<App>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media", listener.local_addr().unwrap());
    let accept = tokio::spawn(async move {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("a stream connects")
            .unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let (got_tx, got) = mpsc::unbounded_channel();
        let (send, mut out) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            if mode == Mode::Stuck {
                // Holds the socket without reading: the server's writes back up.
                let _keep = ws;
                std::future::pending::<()>().await;
                return;
            }
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if mode == Mode::Echo && v["event"] == "media" {
                                let back = json!({"event": "media", "streamSid": v["streamSid"],
                                    "media": {"payload": v["media"]["payload"]}});
                                let _ = ws.send(Message::text(back.to_string())).await;
                            }
                            let _ = got_tx.send((Instant::now(), v));
                        }
                        Some(Ok(Message::Binary(b))) => {
                            if mode == Mode::Echo {
                                let _ = ws.send(Message::binary(b.clone())).await;
                            }
                            let v = json!({"event": "binary", "pcm": STANDARD.encode(&b)});
                            let _ = got_tx.send((Instant::now(), v));
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            let _ = got_tx.send((Instant::now(), json!({"event": "closed"})));
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                    Some(m) = out.recv() => {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        App {
            got,
            send,
            seen: Vec::new(),
        }
    });
    (url, accept)
}

impl App {
    /// Messages up to and including the first that satisfies `want` (within `limit`).
    async fn until(
        &mut self,
        limit: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Vec<(Instant, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        let mut pending = std::mem::take(&mut self.seen).into_iter();
        loop {
            let next = match pending.next() {
                Some(m) => m,
                None => match tokio::time::timeout_at(deadline, self.got.recv()).await {
                    Ok(Some(m)) => m,
                    _ => panic!(
                        "the application did not see that within {limit:?}; saw {:?}",
                        out.iter()
                            .map(|(_, v): &(Instant, Value)| v["event"].clone())
                            .collect::<Vec<_>>()
                    ),
                },
            };
            let done = want(&next.1);
            out.push(next);
            if done {
                self.seen.extend(pending);
                return out;
            }
        }
    }

    /// Everything that came so far.
    fn drain(&mut self) -> Vec<(Instant, Value)> {
        let mut out = std::mem::take(&mut self.seen);
        while let Ok(m) = self.got.try_recv() {
            out.push(m);
        }
        out
    }

    fn send(&self, v: Value) {
        self.send.send(Message::text(v.to_string())).unwrap();
    }

    /// Sends `pcm` (8 kHz) as `media` messages of 20 ms each.
    fn say(&self, pcm: &[i16]) {
        for chunk in pcm.chunks(160) {
            let bytes: Vec<u8> = chunk.iter().map(|&s| ulaw_encode(s)).collect();
            self.send(json!({"event": "media", "media": {"payload": STANDARD.encode(bytes)}}));
        }
    }
}

/// The inbound audio of `media` messages, decoded, with their timestamps and chunks.
fn inbound(msgs: &[(Instant, Value)], track: &str) -> (Vec<i16>, Vec<u64>, Vec<u64>) {
    let mut pcm = Vec::new();
    let (mut stamps, mut chunks) = (Vec::new(), Vec::new());
    for (_, v) in msgs {
        if v["event"] == "media" && v["media"]["track"] == track {
            let bytes = STANDARD
                .decode(v["media"]["payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 160, "20 ms of µ-law per message");
            pcm.extend(bytes.iter().map(|&b| ulaw_decode(b)));
            stamps.push(v["media"]["timestamp"].as_str().unwrap().parse().unwrap());
            chunks.push(v["media"]["chunk"].as_str().unwrap().parse().unwrap());
        }
    }
    (pcm, stamps, chunks)
}

/// The lowest share of `hz` in 100 ms stretches of what `pcm` holds louder than −30 dBFS
/// (20 ms frames): the tone is all that is heard wherever something is.
fn loud_share(pcm: &[i16], hz: f64) -> f64 {
    loud(pcm, 160)
        .chunks_exact(800)
        .map(|c| tone_share(c, hz, 8000.0))
        .fold(1.0, f64::min)
}

/// The frames of `frame` samples in `pcm` louder than −30 dBFS, one after another.
fn loud(pcm: &[i16], frame: usize) -> Vec<i16> {
    pcm.chunks_exact(frame)
        .filter(|f| rms_dbfs(f) > -30.0)
        .flatten()
        .copied()
        .collect()
}

/// 20 ms frames of `pcm` louder than −30 dBFS.
fn loud_frames(pcm: &[i16]) -> usize {
    pcm.chunks_exact(160)
        .filter(|f| rms_dbfs(f) > -30.0)
        .count()
}

/// An echo without the shipped script's beep first.
const ECHO_NOW: &str = "answer(); echo(60000); hangup();";

async fn bot_server(
    url: &str,
    extra_vars: &[(&str, String)],
    cdr: Option<std::path::PathBuf>,
) -> (Server, Scripts) {
    let scripts = Scripts::with_shipped(&[("echo_now.rhai", ECHO_NOW)]);
    let dir = scripts.0.clone();
    let mut vars = vec![("stream_url", url.to_string())];
    vars.extend(extra_vars.iter().cloned());
    let rules = vec![rule("bot", "bot", &vars), rule("echo-now", "echo_now", &[])];
    let server = start_with(common::rtp_ports(4), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, rules);
        if let Some(cdr) = cdr {
            c.cdr.dir = cdr;
        }
    })
    .await;
    (server, scripts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_hears_the_caller_talks_back_marks_clears_gets_keys_and_sees_the_hangup() {
    let (url, app) = application(Mode::Listen).await;
    let cdrs = std::env::temp_dir().join(format!("sb-stream-cdr-{}", fastrand::u64(..)));
    let (server, _scripts) = bot_server(&url, &[], Some(cdrs.clone())).await;
    let mut events = Events::open(server.http, "stream_started,stream_stopped,call_ended").await;
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "bot", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let mut app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();

    // connected, then start with the call's fields.
    let opening = app.until(WAIT, |v| v["event"] == "start").await;
    assert_eq!(opening[0].1["event"], "connected", "{opening:?}");
    let start = &opening.last().unwrap().1;
    assert_eq!(start["start"]["callSid"], uac.call_id.as_str());
    assert_eq!(start["start"]["to"], "bot");
    assert_eq!(start["start"]["tracks"], json!(["inbound"]));
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
    assert_eq!(start["start"]["customParameters"]["to"], "bot");
    let sid = start["streamSid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("MZ"), "{sid}");
    let started = events.until(WAIT, |e| e["type"] == "stream_started").await;
    let started = started.last().unwrap();
    assert_eq!(started["call_id"], uac.call_id.as_str());
    assert_eq!(started["stream_id"], sid.as_str());
    assert_eq!(started["bidirectional"], true);

    // The caller's 1 kHz tone reaches the application in 20 ms frames.
    peer.exchange(to, &tone("1000/1000@-10", 1000), Duration::from_millis(200))
        .await;
    let got = app.drain();
    let (pcm, stamps, chunks) = inbound(&got, "inbound");
    assert!(pcm.len() >= 160 * 55, "{} samples", pcm.len());
    assert!(
        got.iter()
            .all(|(_, v)| v["event"] != "media" || v["streamSid"] == sid.as_str()),
        "every message names the stream"
    );
    for w in stamps.windows(2) {
        assert_eq!(w[1] - w[0], 20, "timestamps 20 ms apart: {stamps:?}");
    }
    for w in chunks.windows(2) {
        assert_eq!(w[1], w[0] + 1, "chunks counted: {chunks:?}");
    }
    let loud = loud_frames(&pcm);
    assert!(loud >= 45, "about a second of tone: {loud} frames");
    let share = loud_share(&pcm, 1000.0);
    assert!(share > 0.85, "1 kHz share {share}");

    // The application talks back: a second of 600 Hz, then a mark.
    let sent_at = Instant::now();
    app.say(&tone("600/1000@-10", 1000));
    app.send(json!({"event": "mark", "mark": {"name": "m1"}}));
    let heard = peer
        .exchange(to, &vec![0; 8 * 1500], Duration::from_millis(100))
        .await;
    let loud = loud_frames(&heard);
    assert!(
        (45..=55).contains(&loud),
        "a second of the reply heard: {loud} frames"
    );
    let share = loud_share(&heard, 600.0);
    assert!(share > 0.85, "600 Hz share {share}");
    let marked = app.until(WAIT, |v| v["event"] == "mark").await;
    let (at, mark) = marked.last().unwrap();
    assert_eq!(mark["mark"]["name"], "m1");
    assert!(
        at.duration_since(sent_at) >= Duration::from_millis(900),
        "the mark comes after its second of audio, not {:?}",
        at.duration_since(sent_at)
    );

    // clear cuts a long reply short, and its mark comes back at once.
    app.say(&tone("600/5000@-10", 5000));
    app.send(json!({"event": "mark", "mark": {"name": "m2"}}));
    let before = peer.exchange(to, &vec![0; 8 * 500], Duration::ZERO).await;
    assert!(loud_frames(&before) >= 15, "the long reply is playing");
    let cleared_at = Instant::now();
    app.send(json!({"event": "clear"}));
    let after = peer.exchange(to, &vec![0; 8 * 1000], Duration::ZERO).await;
    let still = loud_frames(&after);
    assert!(
        still <= 3,
        "playback stops within a frame or so of clear: {still} loud frames"
    );
    let marked = app.until(WAIT, |v| v["event"] == "mark").await;
    let (at, mark) = marked.last().unwrap();
    assert_eq!(mark["mark"]["name"], "m2");
    assert!(at.duration_since(cleared_at) < Duration::from_millis(500));

    // A key pressed by the caller.
    peer.send_dtmf(to, "5").await;
    let dtmf = app.until(WAIT, |v| v["event"] == "dtmf").await;
    assert_eq!(dtmf.last().unwrap().1["dtmf"]["digit"], "5");

    // Hangup: stop, then the socket closes; the stream's end is announced.
    hang_up(&mut w, &mut uac).await;
    let end = app.until(WAIT, |v| v["event"] == "closed").await;
    let stop = end
        .iter()
        .find(|(_, v)| v["event"] == "stop")
        .expect("stop before the close");
    assert_eq!(stop.1["stop"]["callSid"], uac.call_id.as_str());
    let stopped = events.until(WAIT, |e| e["type"] == "stream_stopped").await;
    let stopped = stopped.last().unwrap();
    assert_eq!(stopped["reason"], "hangup");
    assert_eq!(stopped["stream_id"], sid.as_str());
    // The call's record lists the stream.
    events.until(WAIT, |e| e["type"] == "call_ended").await;
    server.stop().await;
    let cdr = support::cdr_of(&cdrs, &uac.call_id).await;
    let streams = cdr["streams"].as_array().expect("streams in the CDR");
    assert_eq!(streams.len(), 1, "{cdr}");
    assert_eq!(streams[0]["stream_id"], sid.as_str());
    assert_eq!(streams[0]["url"], url.as_str());
    assert_eq!(streams[0]["reason"], "hangup");
    assert!(streams[0]["sent"].as_u64().unwrap() >= 50, "{cdr}");
    assert_eq!(streams[0]["dropped"], 0, "{cdr}");
    let _ = std::fs::remove_dir_all(&cdrs);
}

/// The record of call `call_id` in the CDR folder (written off the call path: waited for).
const STREAM_THEN_ECHO: &str = r#"
answer();
stream_start(session.vars.url);
echo(20000);
hangup();
"#;

/// A call that streams in the background and echoes, and a plain echo call beside it.
async fn echo_beside(url: &str) -> (Server, Events, Scripts) {
    let scripts = Scripts::with_shipped(&[("stream_echo.rhai", STREAM_THEN_ECHO)]);
    let dir = scripts.0.clone();
    let rules = vec![rule(
        "stream-echo",
        "stream_echo",
        &[("url", url.to_string())],
    )];
    let server = start_with(common::rtp_ports(6), move |c| {
        c.paths.scripts = dir;
        c.dialplan.splice(0..0, rules);
    })
    .await;
    let events = Events::open(server.http, "stream_started,stream_stopped").await;
    (server, events, scripts)
}

/// Both calls hear their echo while the stream is in trouble.
async fn both_echo(server: &Server) -> (Wire, support::uac::Uac, Wire, support::uac::Uac) {
    let mut a = RtpPeer::bind().await;
    let (mut wa, mut ua) = wire(false, server.sip).await;
    call(&mut wa, &mut ua, "stream-echo", a.port()).await;
    let mut b = RtpPeer::bind().await;
    let (mut wb, mut ub) = wire(false, server.sip).await;
    call(&mut wb, &mut ub, "echo", b.port()).await;
    let to_a = SocketAddr::new(server.sip.ip(), answered_port(&ua));
    let to_b = SocketAddr::new(server.sip.ip(), answered_port(&ub));
    let (ea, eb) = tokio::join!(a.tone_back(to_a), b.tone_back(to_b));
    assert!(ea > 0.5, "the streamed call's echo: {ea}");
    assert!(eb > 0.5, "the other call's echo: {eb}");
    (wa, ua, wb, ub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_application_leaves_the_call_and_others_unharmed() {
    // A port bound but never listened on: the connection is refused, and no other test's
    // listener can take the port meanwhile (as it could if it were only freed).
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("ws://{}/media", dead.local_addr().unwrap());
    let (server, mut events, _scripts) = echo_beside(&url).await;
    let (mut wa, mut ua, mut wb, mut ub) = both_echo(&server).await;
    let stopped = events.until(WAIT, |e| e["type"] == "stream_stopped").await;
    assert!(
        stopped.iter().all(|e| e["type"] != "stream_started"),
        "never started: {stopped:?}"
    );
    assert_eq!(stopped.last().unwrap()["reason"], "connect_failed");
    assert_eq!(stopped.last().unwrap()["call_id"], ua.call_id.as_str());
    hang_up(&mut wa, &mut ua).await;
    hang_up(&mut wb, &mut ub).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_application_leaves_the_call_and_others_unharmed() {
    let (url, app) = application(Mode::Stuck).await;
    let (server, mut events, _scripts) = echo_beside(&url).await;
    let (mut wa, mut ua, mut wb, mut ub) = both_echo(&server).await;
    let _app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();
    events.until(WAIT, |e| e["type"] == "stream_started").await;
    // The hangup is answered at once, and the stream let go within its grace.
    let t0 = Instant::now();
    hang_up(&mut wa, &mut ua).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let stopped = events.until(WAIT, |e| e["type"] == "stream_stopped").await;
    assert_eq!(stopped.last().unwrap()["reason"], "hangup");
    hang_up(&mut wb, &mut ub).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_streams_both_tracks_of_a_live_call_and_stops_it() {
    let (url, app) = application(Mode::Listen).await;
    let (server, _scripts) = bot_server("ws://127.0.0.1:9/unused", &[], None).await;
    let mut events = Events::open(server.http, "stream_started,stream_stopped").await;
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "echo-now", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let path = format!("/api/calls/{}/stream", uac.call_id);

    // Bad requests are refused with why.
    for (body, why) in [
        (json!({"url": "http://127.0.0.1:1/"}), "ws://"),
        (json!({"url": url, "format": "mp3"}), "format"),
        (
            json!({"url": url, "format": "l16", "rate": 44100}),
            "8000 or 16000",
        ),
        (json!({"url": url, "track": "sideways"}), "track"),
        (json!({"url": url, "colour": "blue"}), "colour"),
    ] {
        let (code, text) = http_send(server.http, "POST", &path, body.to_string().as_bytes()).await;
        assert_eq!(code, 400, "{body}: {}", String::from_utf8_lossy(&text));
        assert!(
            String::from_utf8_lossy(&text).contains(why),
            "{body}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let (code, _) = http_send(
        server.http,
        "POST",
        "/api/calls/nobody/stream",
        json!({"url": url}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 404);

    let body = json!({"url": url, "track": "both", "parameters": {"agent": "7"}});
    let (code, _) = http_send(server.http, "POST", &path, body.to_string().as_bytes()).await;
    assert_eq!(code, 202);
    let mut app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();
    let start = app.until(WAIT, |v| v["event"] == "start").await;
    let start = &start.last().unwrap().1;
    assert_eq!(start["start"]["tracks"], json!(["inbound", "outbound"]));
    assert_eq!(start["start"]["customParameters"]["agent"], "7");
    events.until(WAIT, |e| e["type"] == "stream_started").await;
    let live = format!("/api/calls/{}", uac.call_id);
    let (_, info) = http_get(server.http, &live).await;
    let info: Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(
        info["stream"], start["streamSid"],
        "the live call shows its stream"
    );

    // The caller's tone is on the inbound track and, echoed, on the outbound one.
    peer.exchange(to, &tone("1000/1000@-10", 1000), Duration::from_millis(300))
        .await;
    let got = app.drain();
    for track in ["inbound", "outbound"] {
        let (pcm, _, _) = inbound(&got, track);
        let loud = loud_frames(&pcm);
        assert!(loud >= 40, "{track}: {loud} loud frames");
        let share = loud_share(&pcm, 1000.0);
        assert!(share > 0.85, "{track}: 1 kHz share {share}");
    }

    let (code, _) = http_request(server.http, "DELETE", &path).await;
    assert_eq!(code, 202);
    let end = app.until(WAIT, |v| v["event"] == "closed").await;
    assert!(
        end.iter().any(|(_, v)| v["event"] == "stop"),
        "stop before the close"
    );
    let stopped = events.until(WAIT, |e| e["type"] == "stream_stopped").await;
    assert_eq!(stopped.last().unwrap()["reason"], "stopped");
    let (_, info) = http_get(server.http, &live).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&info).unwrap()["stream"],
        Value::Null
    );
    // The call goes on: its echo still works.
    assert!(peer.tone_back(to).await > 0.5);
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}

/// A tone burst's way back: when its first packet went out, and when the first loud packet
/// came back.
struct Trip {
    sent: Instant,
    back: Instant,
}

/// Sends 500 ms of silence (the path settles), a 300 ms tone burst, then silence, and times
/// the burst.
async fn burst(peer: &mut RtpPeer, to: SocketAddr) -> Trip {
    let mut pcm = vec![0i16; 8 * 500];
    pcm.extend(tone("1000/300@-10", 300));
    pcm.extend(vec![0i16; 8 * 300]);
    let got = peer
        .exchange_packets(to, &pcm, 160, Duration::from_millis(200))
        .await;
    let back = got
        .timed()
        .into_iter()
        .find(|(_, pcm)| rms_dbfs(pcm) > -30.0)
        .expect("the burst comes back")
        .0;
    Trip {
        sent: got.sent[500 / 20],
        back,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The round trip caller → application → caller, split where the application sees the
/// burst (the application in the test sends every frame straight back, so its own time is
/// nil), beside a plain echo on the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_round_trip_adds_little_to_the_echos() {
    let (url, app) = application(Mode::Echo).await;
    let (server, _scripts) = bot_server(&url, &[], None).await;
    let mut bot = RtpPeer::bind().await;
    let (mut wb, mut ub) = wire(false, server.sip).await;
    call(&mut wb, &mut ub, "bot", bot.port()).await;
    let mut app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();
    let mut echo = RtpPeer::bind().await;
    let (mut we, mut ue) = wire(false, server.sip).await;
    call(&mut we, &mut ue, "echo-now", echo.port()).await;
    let to_bot = SocketAddr::new(server.sip.ip(), answered_port(&ub));
    let to_echo = SocketAddr::new(server.sip.ip(), answered_port(&ue));
    let (mut total, mut to_app, mut from_app, mut plain) = (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        app.drain();
        let t = burst(&mut bot, to_bot).await;
        // When the application got the burst's first loud frame (and sent it back).
        let at_app = app
            .drain()
            .into_iter()
            .filter(|(at, v)| *at >= t.sent && v["event"] == "media")
            .find(|(_, v)| {
                let bytes = STANDARD
                    .decode(v["media"]["payload"].as_str().unwrap())
                    .unwrap();
                let pcm: Vec<i16> = bytes.iter().map(|&b| ulaw_decode(b)).collect();
                rms_dbfs(&pcm) > -30.0
            })
            .expect("the application got the burst")
            .0;
        total.push(ms(t.back - t.sent));
        to_app.push(ms(at_app - t.sent));
        from_app.push(ms(t.back - at_app));
        let e = burst(&mut echo, to_echo).await;
        plain.push(ms(e.back - e.sent));
    }
    println!(
        "round trip through the stream {total:?} ms (to the application {to_app:?}, back {from_app:?}); plain echo {plain:?} ms"
    );
    let (total, to_app, from_app, plain) = (
        median(total),
        median(to_app),
        median(from_app),
        median(plain),
    );
    println!("medians: through the stream {total:.1} ms = {to_app:.1} to the application + {from_app:.1} back; plain echo {plain:.1} ms");
    // The way back is the stream's own: the socket, then the wait for the next tick (at most
    // 20 ms by design). The target: at most 40 ms beyond the application's own time.
    assert!(from_app <= 40.0, "the way back takes {from_app:.1} ms");
    hang_up(&mut wb, &mut ub).await;
    hang_up(&mut we, &mut ue).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_stream_carries_the_mix_of_its_members() {
    let (url, app) = application(Mode::Listen).await;
    let server = start_with(common::rtp_ports(6), |_| {}).await;
    let mut events = Events::open(server.http, "member_joined,stream_started,stream_stopped").await;
    let (mut a, mut b) = (RtpPeer::bind().await, RtpPeer::bind().await);
    let (mut wa, mut ua) = wire(false, server.sip).await;
    call(&mut wa, &mut ua, "conf-s1", a.port()).await;
    let (mut wb, mut ub) = wire(false, server.sip).await;
    call(&mut wb, &mut ub, "conf-s1", b.port()).await;
    for _ in 0..2 {
        events.until(WAIT, |e| e["type"] == "member_joined").await;
    }
    let to_a = SocketAddr::new(server.sip.ip(), answered_port(&ua));
    let to_b = SocketAddr::new(server.sip.ip(), answered_port(&ub));

    // A room stream only listens.
    for (body, why) in [
        (json!({"url": url, "bidirectional": true}), "only listens"),
        (json!({"url": url, "track": "both"}), "track inbound"),
    ] {
        let (code, text) = http_send(
            server.http,
            "POST",
            "/api/rooms/s1/stream",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert!(
            String::from_utf8_lossy(&text).contains(why),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    let body = json!({"url": url, "parameters": {"meeting": "weekly"}}).to_string();
    let (code, text) =
        http_send(server.http, "POST", "/api/rooms/s1/stream", body.as_bytes()).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&text));
    let sid = serde_json::from_slice::<Value>(&text).unwrap()["stream_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = http_send(server.http, "POST", "/api/rooms/s1/stream", body.as_bytes()).await;
    assert_eq!(code, 409, "one stream per room");
    let (_, room) = http_get(server.http, "/api/rooms/s1").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&room).unwrap()["stream"],
        sid.as_str()
    );

    let mut app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();
    let start = app.until(WAIT, |v| v["event"] == "start").await;
    let start = &start.last().unwrap().1;
    assert_eq!(start["streamSid"], sid.as_str());
    assert_eq!(start["start"]["to"], "s1");
    assert_eq!(start["start"]["customParameters"]["meeting"], "weekly");
    let started = events.until(WAIT, |e| e["type"] == "stream_started").await;
    assert_eq!(started.last().unwrap()["room"], "s1");

    // Both members talk at once: the stream carries both tones.
    let a_says = tone("600/1500@-13", 1500);
    let b_says = tone("1000/1500@-13", 1500);
    tokio::join!(
        a.exchange(to_a, &a_says, Duration::from_millis(200)),
        b.exchange(to_b, &b_says, Duration::from_millis(200)),
    );
    let (pcm, stamps, _) = inbound(&app.drain(), "inbound");
    for w in stamps.windows(2) {
        assert_eq!(w[1] - w[0], 20, "timestamps 20 ms apart");
    }
    let loud = loud(&pcm, 160);
    assert!(
        loud.len() >= 160 * 50,
        "the mix heard: {} samples",
        loud.len()
    );
    let mid = &loud[loud.len() / 4..loud.len() * 3 / 4];
    let (low, high) = (
        tone_share(mid, 600.0, 8000.0),
        tone_share(mid, 1000.0, 8000.0),
    );
    assert!(
        low > 0.3 && high > 0.3,
        "both members in the mix: 600 Hz {low}, 1 kHz {high}"
    );
    assert!(low + high > 0.85, "little else: {low} + {high}");

    let (code, _) = http_request(server.http, "DELETE", "/api/rooms/s1/stream").await;
    assert_eq!(code, 202);
    let end = app.until(WAIT, |v| v["event"] == "closed").await;
    assert!(end.iter().any(|(_, v)| v["event"] == "stop"));
    let stopped = events.until(WAIT, |e| e["type"] == "stream_stopped").await;
    assert_eq!(stopped.last().unwrap()["reason"], "stopped");
    assert_eq!(stopped.last().unwrap()["room"], "s1");
    let (code, _) = http_request(server.http, "DELETE", "/api/rooms/s1/stream").await;
    assert_eq!(code, 409, "nothing left to stop");
    hang_up(&mut wa, &mut ua).await;
    hang_up(&mut wb, &mut ub).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_stream_at_16_khz_carries_pcm_both_ways_and_the_application_ends_the_call() {
    let (url, app) = application(Mode::Listen).await;
    let vars = [("format", "l16".to_string()), ("rate", "16000".to_string())];
    let (server, _scripts) = bot_server(&url, &vars, None).await;
    let mut events = Events::open(server.http, "call_step,stream_stopped").await;
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "bot", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let mut app = tokio::time::timeout(WAIT, app).await.unwrap().unwrap();
    let start = app.until(WAIT, |v| v["event"] == "start").await;
    let start = &start.last().unwrap().1;
    assert_eq!(start["callId"], uac.call_id.as_str());
    assert_eq!(start["sampleRate"], 16000);
    assert_eq!(start["channels"], 1);

    peer.exchange(to, &tone("1000/1000@-10", 1000), Duration::from_millis(200))
        .await;
    let frames: Vec<Vec<i16>> = app
        .drain()
        .iter()
        .filter(|(_, v)| v["event"] == "binary")
        .map(|(_, v)| {
            l16::decode_pcm(&STANDARD.decode(v["pcm"].as_str().unwrap()).unwrap()).unwrap()
        })
        .collect();
    assert!(frames.len() >= 50, "{} frames", frames.len());
    assert!(
        frames.iter().all(|f| f.len() == 320),
        "20 ms at 16 kHz each"
    );
    let pcm: Vec<i16> = frames.concat();
    let loud = loud(&pcm, 320);
    assert!(loud.len() >= 320 * 45, "{} loud samples", loud.len());
    let share = tone_share(&loud[..320 * 40], 1000.0, 16000.0);
    assert!(share > 0.85, "1 kHz at 16 kHz: {share}");

    // A second of 600 Hz at 16 kHz, in binary frames, is heard by the PCMU caller.
    let reply: Vec<i16> = (0..16000)
        .map(|i| {
            (8000.0 * (2.0 * std::f64::consts::PI * 600.0 * f64::from(i) / 16000.0).sin()) as i16
        })
        .collect();
    for f in reply.chunks(320) {
        let bytes: Vec<u8> = f.iter().flat_map(|s| s.to_le_bytes()).collect();
        app.send.send(Message::binary(bytes)).unwrap();
    }
    app.send(json!({"event": "mark", "name": "said"}));
    let heard = peer
        .exchange(to, &vec![0; 8 * 1500], Duration::from_millis(100))
        .await;
    let loud = loud_frames(&heard);
    assert!((45..=55).contains(&loud), "a second heard: {loud} frames");
    let share = loud_share(&heard, 600.0);
    assert!(share > 0.85, "600 Hz share {share}");
    let marked = app.until(WAIT, |v| v["event"] == "mark").await;
    assert_eq!(marked.last().unwrap().1["name"], "said");
    // The application hangs up: the bot's stream() returns why, it says goodbye and ends
    // the call.
    app.send.send(Message::Close(None)).unwrap();
    let seen = events
        .until(WAIT, |e| e["type"] == "call_step" && e["step"] == "hung up")
        .await;
    let steps: Vec<&str> = seen.iter().filter_map(|e| e["step"].as_str()).collect();
    let want = [
        "stream ended (app_closed)",
        "log: bot: stream ended app_closed",
        "played goodbye",
        "hung up",
    ];
    assert!(steps.ends_with(&want), "{steps:?}");
    let stopped = seen.iter().find(|e| e["type"] == "stream_stopped");
    assert_eq!(stopped.expect("stream_stopped")["reason"], "app_closed");
    assert!(
        w.drive(&mut uac, WAIT, |u| u.state
            == support::uac::UacState::Terminated)
            .await,
        "the server's BYE"
    );
    assert_eq!(uac.requests_in, vec!["BYE".to_string()]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_parrot_says_back_what_the_caller_said() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/parrot", listener.local_addr().unwrap());
    let parrot = tokio::spawn(stream_bot::serve(listener));
    let (server, _scripts) = bot_server(&url, &[], None).await;
    let mut events = Events::open(server.http, "stream_started").await;
    let mut peer = RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "bot", peer.port()).await;
    let to = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    events.until(WAIT, |e| e["type"] == "stream_started").await;
    peer.exchange(to, &tone("1000/800@-10", 800), Duration::ZERO)
        .await;
    peer.send_dtmf(to, "#").await;
    let heard = peer.exchange(to, &vec![0; 8 * 1500], Duration::ZERO).await;
    let loud = loud_frames(&heard);
    assert!(
        (35..=45).contains(&loud),
        "the 800 ms said back: {loud} frames"
    );
    let share = loud_share(&heard, 1000.0);
    assert!(share > 0.85, "1 kHz share {share}");
    hang_up(&mut w, &mut uac).await;
    parrot.abort();
    server.stop().await;
}
