//! The real server, started in-process on 127.0.0.1 port 0, called by the test caller over
//! real UDP and TCP sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::server::*;
use support::uac::{offer, Uac, UacState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn call_and_hang_up(tcp: bool, rtp: (u16, u16)) {
    let server = start(0, rtp).await;
    let (mut w, mut uac) = wire(tcp, server.sip).await;
    call(&mut w, &mut uac, "echo", 40000).await;
    let port = answered_port(&uac);
    assert!(
        (rtp.0..=rtp.1).contains(&port) && port.is_multiple_of(2),
        "port {port}"
    );
    // The port is really held by the server for the call.
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
    hang_up(&mut w, &mut uac).await;
    // ...and released once the call is over.
    let mut freed = false;
    for _ in 0..100 {
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "RTP port {port} not released");
    server.stop().await;
}

#[tokio::test]
async fn udp_call_answered_and_hung_up_by_the_caller() {
    call_and_hang_up(false, (43000, 43099)).await;
}

#[tokio::test]
async fn tcp_call_answered_and_hung_up_by_the_caller() {
    call_and_hang_up(true, (43100, 43199)).await;
}

#[tokio::test]
async fn server_ends_the_call_after_max_call_secs() {
    let server = start(1, (43200, 43299)).await;
    for tcp in [false, true] {
        let (mut w, mut uac) = wire(tcp, server.sip).await;
        expect_server_bye(
            &mut w,
            &mut uac,
            &format!("tcp={tcp}: no BYE from the server"),
        )
        .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_live_calls_with_bye() {
    let server = start(0, (43300, 43399)).await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "echo", 40000).await;
    let stopping = tokio::spawn(server.stop());
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| u.state
            == UacState::Terminated)
            .await,
        "no BYE on shutdown"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn echo_returns_the_callers_tone() {
    let server = start(0, (43400, 43499)).await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "echo", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let sent = support::rtp::tone("1000/1000@-10", 1000);
    let back = rtp.exchange(media, &sent, Duration::from_millis(300)).await;
    // Every 20 ms the server sends a frame: about 65 frames over 1.3 s.
    assert!(
        back.len() >= 50 * 160,
        "only {} samples came back",
        back.len()
    );
    // The echo of the tone is in there (after the jitter buffer's delay).
    let best = support::rtp::peak_tone_power(&back, 1000.0);
    assert!(best > 0.9, "1 kHz power {best}");
    let level = switchboard::media::level::rms_dbfs(&back[back.len() / 4..back.len() / 2]);
    assert!(level > -25.0, "echo level {level} dBFS");
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}

/// A caller that asks for 40 ms packets (`a=ptime:40`) and sends them gets 40 ms packets
/// back, carrying its own tone.
#[tokio::test]
async fn echo_answers_forty_ms_packets_with_forty_ms_packets() {
    let server = start(0, (44000, 44099)).await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    let sdp = String::from_utf8(offer("127.0.0.1", rtp.port(), "sendrecv"))
        .unwrap()
        .replace("a=ptime:20", "a=ptime:40");
    uac.invite(Instant::now(), "echo", sdp.as_bytes());
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| u.state
            == UacState::Confirmed)
            .await
    );
    let answer = String::from_utf8(uac.answer.clone().unwrap()).unwrap();
    assert!(answer.contains("a=ptime:40"), "{answer}");
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let sent = support::rtp::tone("1000/1600@-10", 1600);
    let back = rtp
        .exchange_packets(media, &sent, 320, Duration::from_millis(300))
        .await;
    // 1.9 s at one packet per 40 ms: about 47 packets.
    assert!(back.packets.len() >= 35, "{} packets", back.packets.len());
    assert!(back.packets.iter().all(|&(_, len)| len == 320));
    for pair in back.packets.windows(2) {
        let (a, b) = (&pair[0].0, &pair[1].0);
        assert_eq!(b.seq.get(), a.seq.get().wrapping_add(1));
        assert_eq!(b.timestamp.get().wrapping_sub(a.timestamp.get()), 320);
    }
    // The echo of the tone is in there, unbroken, after the jitter buffer's delay.
    let best = back
        .audio
        .chunks(320 * 10)
        .map(|c| support::rtp::tone_power(c, 1000.0))
        .fold(0.0, f64::max);
    assert!(best > 0.95, "1 kHz power {best}");
    let level = switchboard::media::level::rms_dbfs(
        &back.audio[back.audio.len() / 4..back.audio.len() / 2],
    );
    assert!(level > -25.0, "echo level {level} dBFS");
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}

#[tokio::test]
async fn a_call_hears_the_greeting_prompts() {
    let server = start(0, (43500, 43599)).await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "message", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let cache = switchboard::media::prompt::PromptCache::new("prompts".into());
    let spoken: Vec<i16> = ["welcome", "record-after-tone", "beep"]
        .iter()
        .flat_map(|p| {
            cache
                .load(p, switchboard::rtp::types::ClockRate::HZ_8000)
                .unwrap()
                .samples
                .to_vec()
        })
        .collect();
    let secs = spoken.len() as f64 / 8000.0;
    // Send silence (so the server latches) for the prompt's length plus a second.
    let silence = vec![0i16; ((secs + 1.0) * 8000.0) as usize];
    let heard = rtp
        .exchange(media, &silence, Duration::from_millis(200))
        .await;
    let spoken = &spoken[..];
    let level = |pcm: &[i16]| switchboard::media::level::rms_dbfs(pcm);
    // Find the prompt in what came back: the loudest stretch of its length.
    let n = spoken.len();
    assert!(
        heard.len() > n,
        "heard {} samples, the prompt has {n}",
        heard.len()
    );
    let start = (0..heard.len() - n)
        .step_by(160)
        .max_by(|&a, &b| level(&heard[a..a + n]).total_cmp(&level(&heard[b..b + n])))
        .unwrap();
    let got = level(&heard[start..start + n]);
    let want = level(spoken);
    assert!(
        (got - want).abs() < 2.0,
        "prompt level {got:.1} dBFS, file {want:.1} dBFS"
    );
    // After the prompt the line is quiet again.
    let after = &heard[(start + n + 1600).min(heard.len())..];
    if after.len() >= 1600 {
        assert!(
            level(after) < -60.0,
            "not silent after the prompt: {}",
            level(after)
        );
    }
    // Same audio: the envelope correlates with the file's.
    let env = |pcm: &[i16]| -> Vec<f64> { pcm.chunks(160).map(level).collect() };
    let (a, b) = (env(&heard[start..start + n]), env(spoken));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(&a), mean(&b));
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let r = cov / (var(&a, ma) * var(&b, mb)).sqrt();
    assert!(r > 0.9, "envelope correlation {r:.2}");
    server.stop().await;
}

#[tokio::test]
async fn a_caller_that_sends_no_rtp_is_hung_up_after_the_rtp_timeout() {
    let server = start_with((43600, 43699), |c| c.media.rtp_timeout_secs = 1).await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    expect_server_bye(&mut w, &mut uac, "no BYE after the RTP timeout").await;
    server.stop().await;
}

/// A server recording into a fresh folder, with a caller in the built-in message flow who
/// has heard the greeting (sending silence meanwhile) and is now being recorded.
struct MessageCall {
    server: Server,
    dir: std::path::PathBuf,
    w: Wire,
    uac: Uac,
    rtp: support::rtp::RtpPeer,
    media: std::net::SocketAddr,
    greeting: Vec<i16>,
}

async fn message_call(rtp_range: (u16, u16)) -> MessageCall {
    let dir = std::env::temp_dir().join(format!("sb-msg-{}", fastrand::u64(..)));
    let rec_dir = dir.clone();
    let server = start_with(rtp_range, move |c| c.paths.recordings = rec_dir).await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "message", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let quiet = vec![0i16; ((support::greeting_secs() + 0.4) * 8000.0) as usize];
    let greeting = rtp.exchange(media, &quiet, Duration::ZERO).await;
    MessageCall {
        server,
        dir,
        w,
        uac,
        rtp,
        media,
        greeting,
    }
}

impl MessageCall {
    /// Waits for goodbye and the server's BYE; returns the sidecar, its folder and the server
    /// (still running).
    async fn finish(mut self) -> (serde_json::Value, std::path::PathBuf, Server) {
        assert!(
            self.w
                .drive(&mut self.uac, Duration::from_secs(10), |u| u.state
                    == UacState::Terminated)
                .await,
            "the server did not hang up after the message"
        );
        self.w.flush(&mut self.uac).await;
        // The writer finalises the file just after the call ends.
        let until = Instant::now() + Duration::from_secs(5);
        let meta = loop {
            let has_sidecar = std::fs::read_dir(&self.dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .any(|p| p.extension().is_some_and(|x| x == "json"));
            if has_sidecar {
                let m = support::sole_sidecar(&self.dir);
                if m["state"] == "complete" {
                    break m;
                }
            }
            assert!(Instant::now() < until, "no recording finalised");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(meta["call_id"], self.uac.call_id.as_str());
        (meta, self.dir, self.server)
    }
}

#[tokio::test]
async fn a_message_is_recorded_until_hash_with_its_sidecar() {
    let mut c = message_call((43700, 43799)).await;
    assert!(
        switchboard::media::level::rms_dbfs(&c.greeting) > -40.0,
        "no greeting heard"
    );
    // 2 s of a 1 kHz tone, then '#'.
    c.rtp
        .exchange(
            c.media,
            &support::rtp::tone("1000/2000@-10", 2000),
            Duration::ZERO,
        )
        .await;
    c.rtp.send_dtmf(c.media, "#").await;
    let (meta, dir, server) = c.finish().await;
    let http = server.http;
    assert_eq!(meta["digits"], "#");
    // The HTTP API lists it and serves the same WAV.
    let id = meta["id"].as_str().unwrap().to_string();
    let (status, body) = http_get(http, "/api/recordings").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (status, audio) = http_get(http, &format!("/api/recordings/{id}/audio")).await;
    assert_eq!(status, 200);
    let on_disk = std::fs::read(dir.join(meta["file"].as_str().unwrap())).unwrap();
    assert_eq!(audio, on_disk, "served audio differs from the file");
    server.stop().await;
    let wav = dir.join(meta["file"].as_str().unwrap());
    let mut r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.spec().sample_rate, 8000);
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let secs = samples.len() as f64 / 8000.0;
    assert!((1.8..3.0).contains(&secs), "recorded {secs:.2} s");
    // The caller's tone is in there (judged on its clearest half second: a loaded machine can
    // delay packets enough for the jitter buffer to conceal a few frames elsewhere).
    let tone = samples
        .chunks(4000)
        .map(|c| support::rtp::tone_power(c, 1000.0))
        .fold(0.0, f64::max);
    assert!(
        tone > 0.9,
        "the recording is not the caller's tone: {tone:.2}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dtmf_by_each_method_is_seen_exactly_once() {
    let mut c = message_call((43900, 43999)).await;
    let quiet = |ms: f64| vec![0i16; (ms * 8.0) as usize];
    // In-band: a '5' tone in the audio, with speech-level audio around it.
    let mut audio = support::rtp::tone("440/500@-20", 500);
    audio.extend(support::rtp::tone("770+1336/120@-10", 120));
    audio.extend(quiet(300.0));
    c.rtp.exchange(c.media, &audio, Duration::ZERO).await;
    // SIP INFO: '7'.
    c.uac.request(
        Instant::now(),
        "INFO",
        "application/dtmf-relay",
        b"Signal=7\r\nDuration=160\r\n",
    );
    assert!(
        c.w.drive(&mut c.uac, Duration::from_secs(2), |u| u
            .statuses
            .contains(&("INFO".into(), 200)))
            .await
    );
    c.rtp.exchange(c.media, &quiet(300.0), Duration::ZERO).await;
    // RFC 4733: '#' ends the recording.
    c.rtp.send_dtmf(c.media, "#").await;
    let (meta, dir, server) = c.finish().await;
    server.stop().await;
    assert_eq!(meta["digits"], "57#", "{meta}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A folder of call-flow scripts for one test, removed when dropped.
struct Scripts(std::path::PathBuf);

impl Scripts {
    fn new(files: &[(&str, &str)]) -> Scripts {
        let dir = std::env::temp_dir().join(format!("sb-scripts-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Scripts(dir)
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rule(exact: &str, script: &str) -> switchboard::script::dialplan::RuleConfig {
    switchboard::script::dialplan::RuleConfig {
        exact: Some(exact.into()),
        prefix: None,
        regex: None,
        script: script.into(),
        vars: Default::default(),
        auth: false,
    }
}

/// Waits for the server to end the call, within `limit`.
async fn server_hangs_up(w: &mut Wire, uac: &mut Uac, limit: Duration) -> bool {
    let ended = w
        .drive(uac, limit, |u| u.state == UacState::Terminated)
        .await;
    w.flush(uac).await;
    ended && uac.requests_in.contains(&"BYE".to_string())
}

/// Places a call that the server refuses; the final status.
async fn refused(w: &mut Wire, uac: &mut Uac, user: &str) -> Option<u16> {
    uac.invite(Instant::now(), user, &offer("127.0.0.1", 40000, "sendrecv"));
    w.drive(uac, Duration::from_secs(5), |u| {
        u.state == UacState::Terminated
    })
    .await;
    uac.statuses
        .iter()
        .filter(|(m, c)| m == "INVITE" && *c >= 300)
        .map(|(_, c)| *c)
        .next()
}

#[tokio::test]
async fn scripts_picked_by_the_dialplan_and_a_failing_script_ends_only_its_call() {
    let scripts = Scripts::new(&[
        ("wait.rhai", "answer();\nsleep(60000);\n"),
        ("error.rhai", "answer();\nlet x = [1, 2];\nlet y = x[5];\n"),
        ("spin.rhai", "answer();\nloop {}\n"),
        (
            "vars.rhai",
            "if session.vars.code == \"486\" { hangup(486); }\nhangup(603);\n",
        ),
    ]);
    let dir = scripts.0.clone();
    let server = start_with((44100, 44199), move |c| {
        c.paths.scripts = dir;
        let mut vars = rule("", "vars");
        vars.exact = None;
        vars.regex = Some("v-(?<code>[0-9]+)".into());
        c.dialplan = vec![
            rule("wait", "wait"),
            rule("error", "error.rhai"),
            rule("spin", "spin"),
            vars,
        ];
    })
    .await;
    // A call that stays up meanwhile.
    let (mut wa, mut a) = wire(false, server.sip).await;
    call(&mut wa, &mut a, "wait", 40000).await;

    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "error", 40002).await;
    assert!(
        server_hangs_up(&mut w, &mut uac, Duration::from_secs(3)).await,
        "no BYE after a script error"
    );
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "spin", 40004).await;
    assert!(
        server_hangs_up(&mut w, &mut uac, Duration::from_secs(10)).await,
        "no BYE after a runaway loop"
    );
    // Dialplan variables reach the script; no rule and no default.rhai is 404.
    for (user, want) in [("v-486", 486), ("v-1", 603), ("nobody", 404)] {
        let (mut w, mut uac) = wire(false, server.sip).await;
        assert_eq!(refused(&mut w, &mut uac, user).await, Some(want), "{user}");
    }
    // The first call never noticed.
    assert_eq!(a.state, UacState::Confirmed);
    hang_up(&mut wa, &mut a).await;
    server.stop().await;
}

#[tokio::test]
async fn a_changed_script_serves_the_next_call_and_calls_in_progress_keep_theirs() {
    let scripts = Scripts::new(&[("flow.rhai", "answer();\nsleep(60000);\n")]);
    let dir = scripts.0.clone();
    let server = start_with((44200, 44299), move |c| {
        c.paths.scripts = dir;
        c.scripts.reload_secs = 1;
        c.dialplan = vec![rule("flow", "flow")];
    })
    .await;
    let (mut wa, mut a) = wire(false, server.sip).await;
    call(&mut wa, &mut a, "flow", 40000).await;

    let path = scripts.0.join("flow.rhai");
    std::fs::write(&path, "hangup(486);\n").unwrap();
    // A later modification time than the first version, whatever the file system's grain.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let mut new_version = false;
    for _ in 0..40 {
        let (mut w, mut uac) = wire(false, server.sip).await;
        uac.invite(
            Instant::now(),
            "flow",
            &offer("127.0.0.1", 40002, "sendrecv"),
        );
        w.drive(&mut uac, Duration::from_secs(5), |u| {
            matches!(u.state, UacState::Terminated | UacState::Confirmed)
        })
        .await;
        if uac.statuses.contains(&("INVITE".into(), 486)) {
            new_version = true;
            break;
        }
        // Still the old version: hang up and look again after the next reload.
        uac.request(Instant::now(), "BYE", "", b"");
        w.drive(&mut uac, Duration::from_secs(5), |u| {
            u.state == UacState::Terminated
        })
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(new_version, "the changed script was never used");
    assert_eq!(a.state, UacState::Confirmed, "the first call was dropped");
    hang_up(&mut wa, &mut a).await;
    server.stop().await;
}

#[tokio::test]
async fn a_script_with_a_syntax_error_stops_start_up_with_file_and_line() {
    let scripts = Scripts::new(&[("bad.rhai", "answer();\nlet x = ;\n")]);
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.paths.scripts = scripts.0.clone();
    cfg.cdr.dir = std::path::PathBuf::new();
    cfg.dialplan.clear();
    let r = switchboard::run_with_ready(cfg, std::future::pending(), |_| {
        panic!("started with a broken script")
    })
    .await;
    let text = r.unwrap_err().to_string();
    assert!(text.contains("bad.rhai:2:"), "{text}");
}

#[tokio::test]
async fn collected_keys_decide_the_flow() {
    let scripts = Scripts::new(&[(
        "pin.rhai",
        "answer();\n\
         let d = collect(#{max: 4, terminators: \"#\", first_digit_timeout: 5000});\n\
         if d == \"42\" { hangup(); }\n\
         sleep(60000);\n",
    )]);
    let dir = scripts.0.clone();
    let server = start_with((44300, 44399), move |c| {
        c.paths.scripts = dir;
        c.dialplan = vec![rule("pin", "pin")];
    })
    .await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "pin", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    rtp.exchange(media, &[0i16; 1600], Duration::ZERO).await;
    rtp.send_dtmf(media, "42#").await;
    assert!(
        server_hangs_up(&mut w, &mut uac, Duration::from_secs(3)).await,
        "the script did not get 42"
    );
    server.stop().await;
}

#[tokio::test]
async fn early_media_reaches_the_caller_before_a_refusal() {
    let scripts = Scripts::new(&[(
        "closed.rhai",
        "early_media();\ntone(\"1000/600@-10\");\nhangup(480);\n",
    )]);
    let dir = scripts.0.clone();
    // One port pair, so the test knows where the server's media is.
    let server = start_with((44400, 44401), move |c| {
        c.paths.scripts = dir;
        c.dialplan = vec![rule("closed", "closed")];
    })
    .await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    uac.invite(
        Instant::now(),
        "closed",
        &offer("127.0.0.1", rtp.port(), "sendrecv"),
    );
    let media = std::net::SocketAddr::new(server.sip.ip(), 44400);
    let (heard, ()) = tokio::join!(
        rtp.exchange(media, &[0i16; 8000], Duration::from_millis(200)),
        async {
            w.drive(&mut uac, Duration::from_secs(5), |u| {
                u.state == UacState::Terminated
            })
            .await;
        }
    );
    assert!(
        uac.statuses.contains(&("INVITE".into(), 183)),
        "{:?}",
        uac.statuses
    );
    assert!(
        uac.statuses.contains(&("INVITE".into(), 480)),
        "{:?}",
        uac.statuses
    );
    assert!(uac.answer.is_none(), "never answered");
    let best = heard
        .chunks(160 * 10)
        .map(|c| support::rtp::tone_power(c, 1000.0))
        .fold(0.0, f64::max);
    assert!(best > 0.9, "no early tone heard: 1 kHz share {best:.2}");
    server.stop().await;
}

#[tokio::test]
async fn a_script_names_its_recording() {
    let scripts = Scripts::new(&[(
        "named.rhai",
        "answer();\n\
         let r = record(#{file: \"named-msg\", beep: false, max_secs: 1, silence_secs: 0});\n\
         if r.id == \"named-msg\" && !r.discarded { hangup(); }\n\
         sleep(60000);\n",
    )]);
    let dir = scripts.0.clone();
    let rec = Scripts::new(&[]);
    let rec_dir = rec.0.clone();
    let server = start_with((44500, 44599), move |c| {
        c.paths.scripts = dir;
        c.paths.recordings = rec_dir;
        c.dialplan = vec![rule("named", "named")];
    })
    .await;
    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "named", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let speech = support::rtp::tone("440/1500@-10", 1500);
    let (_, ended) = tokio::join!(
        rtp.exchange(media, &speech, Duration::ZERO),
        server_hangs_up(&mut w, &mut uac, Duration::from_secs(4))
    );
    assert!(ended, "the recording was not named as asked");
    assert!(rec.0.join("named-msg.wav").is_file());
    assert!(rec.0.join("named-msg.json").is_file());
    server.stop().await;
}

/// Each frequency's share of `pcm`'s energy, over its last `ms` milliseconds.
fn shares(pcm: &[i16], ms: usize, freqs: &[f64]) -> Vec<f64> {
    let tail = &pcm[pcm.len().saturating_sub(ms * 8)..];
    freqs
        .iter()
        .map(|f| support::rtp::tone_power(tail, *f))
        .collect()
}

#[tokio::test]
async fn conference_callers_hear_each_other_mute_kick_and_the_room_is_recorded() {
    let rec = Scripts::new(&[]);
    let rec_dir = rec.0.clone();
    let server = start_with((44600, 44699), move |c| {
        c.paths.recordings = rec_dir;
        c.conference.auto_record = true;
        c.conference.multitrack = true;
    })
    .await;
    const FREQS: [f64; 3] = [400.0, 600.0, 1000.0];
    let mut callers = Vec::new();
    for _ in 0..3 {
        let rtp = support::rtp::RtpPeer::bind().await;
        let (mut w, mut uac) = wire(false, server.sip).await;
        call(&mut w, &mut uac, "conf-e2e", rtp.port()).await;
        let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
        callers.push((w, uac, rtp, media));
    }
    // Members in the room (the API lists them), and past their join prompts and sounds.
    let members = {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = http_get(server.http, "/api/rooms/e2e").await;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if v["members"].as_array().is_some_and(|m| m.len() == 3) {
                    break v["members"].as_array().unwrap().clone();
                }
            }
            assert!(Instant::now() < until, "three members never joined");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let quiet = vec![0i16; 8 * 3000];
    let tones: Vec<Vec<i16>> = FREQS
        .iter()
        .map(|f| support::rtp::tone(&format!("{f}/2500@-15"), 2500))
        .collect();
    async fn round(
        callers: &mut [(Wire, Uac, support::rtp::RtpPeer, std::net::SocketAddr)],
        audio: &[Vec<i16>],
    ) -> Vec<Vec<i16>> {
        let mut it = callers.iter_mut().zip(audio);
        let (a, b, c) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let (x, y, z) = tokio::join!(
            a.0 .2.exchange(a.0 .3, a.1, Duration::from_millis(100)),
            b.0 .2.exchange(b.0 .3, b.1, Duration::from_millis(100)),
            c.0 .2.exchange(c.0 .3, c.1, Duration::from_millis(100)),
        );
        vec![x, y, z]
    }
    round(&mut callers, &[quiet.clone(), quiet.clone(), quiet.clone()]).await;
    let heard = round(&mut callers, &tones).await;
    for (k, pcm) in heard.iter().enumerate() {
        let s = shares(pcm, 1500, &FREQS);
        for (j, share) in s.iter().enumerate() {
            if j == k {
                assert!(*share < 0.05, "caller {k} hears itself: {s:?}");
            } else {
                assert!(*share > 0.15, "caller {k} does not hear caller {j}: {s:?}");
            }
        }
    }
    // Mute the first caller: the others stop hearing it.
    let id_of = |call_id: &str| {
        members
            .iter()
            .find(|m| m["call_id"] == call_id)
            .map(|m| m["id"].as_u64().unwrap())
            .unwrap()
    };
    let first = id_of(&callers[0].1.call_id);
    let (status, _) = http_request(
        server.http,
        "POST",
        &format!("/api/rooms/e2e/members/{first}/mute"),
    )
    .await;
    assert_eq!(status, 202);
    let heard = round(&mut callers, &tones).await;
    for pcm in &heard[1..] {
        let s = shares(pcm, 1500, &FREQS);
        assert!(s[0] < 0.05, "the muted caller is still heard: {s:?}");
    }
    // Kick the third caller: its call is hung up.
    let third = id_of(&callers[2].1.call_id);
    let (status, _) = http_request(
        server.http,
        "POST",
        &format!("/api/rooms/e2e/members/{third}/kick"),
    )
    .await;
    assert_eq!(status, 202);
    {
        let (w, uac, _, _) = &mut callers[2];
        assert!(
            server_hangs_up(w, uac, Duration::from_secs(3)).await,
            "the kicked caller's call goes on"
        );
    }
    for (w, uac, _, _) in callers.iter_mut().take(2) {
        hang_up(w, uac).await;
    }
    // The room recording: the mix holds every caller, each track its own caller.
    let sidecars = support::complete_sidecars(&rec.0, 4).await;
    let wav = |v: &serde_json::Value| -> Vec<i16> {
        hound::WavReader::open(rec.0.join(v["file"].as_str().unwrap()))
            .unwrap()
            .samples::<i16>()
            .map(|s| s.unwrap())
            .collect()
    };
    let best = |pcm: &[i16], f: f64| {
        pcm.chunks(8000)
            .map(|c| support::rtp::tone_power(c, f))
            .fold(0.0, f64::max)
    };
    let mixed = sidecars
        .iter()
        .find(|v| v["room"] == "e2e" && v.get("track_of").is_none_or(|t| t.is_null()))
        .expect("a mixed room recording");
    let mix = wav(mixed);
    for f in FREQS {
        assert!(best(&mix, f) > 0.2, "{f} Hz missing from the mix");
    }
    for (k, caller) in callers.iter().enumerate() {
        let track = sidecars
            .iter()
            .find(|v| v["call_id"] == caller.1.call_id.as_str() && v["room"] == "e2e")
            .unwrap_or_else(|| panic!("no track for caller {k}: {sidecars:?}"));
        let pcm = wav(track);
        assert!(best(&pcm, FREQS[k]) > 0.8, "track {k} is not its caller");
    }
    assert!(rec
        .0
        .join(format!("{}.timeline.json", mixed["id"].as_str().unwrap()))
        .is_file());
    server.stop().await;
}

/// Reads Server-Sent Events from `/api/events` until one of type `last`, within 15 s: the
/// event types in order.
async fn read_events(mut s: TcpStream, last: &str) -> Vec<String> {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let types: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect();
        if types.iter().any(|t| t == last) {
            return types;
        }
        let n = tokio::time::timeout_at(until, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {last} event; got:\n{text}"))
            .unwrap();
        assert!(n > 0, "event stream closed:\n{text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn a_recorded_call_shows_in_the_event_stream_metrics_and_cdrs() {
    let rec = Scripts::new(&[]);
    let cdr = Scripts::new(&[]);
    let (rec_dir, cdr_dir) = (rec.0.clone(), cdr.0.clone());
    let server = start_with((44700, 44799), move |c| {
        c.paths.recordings = rec_dir;
        c.cdr.dir = cdr_dir;
    })
    .await;
    let mut sse = TcpStream::connect(server.http).await.unwrap();
    let req = format!(
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.http
    );
    sse.write_all(req.as_bytes()).await.unwrap();
    // The stream is open once its response head arrives.
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).contains("200"));

    let mut rtp = support::rtp::RtpPeer::bind().await;
    let (mut w, mut uac) = wire(false, server.sip).await;
    call(&mut w, &mut uac, "message", rtp.port()).await;
    let media = std::net::SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let greeting = vec![0i16; ((support::greeting_secs() + 0.4) * 8000.0) as usize];
    rtp.exchange(media, &greeting, Duration::ZERO).await;
    rtp.exchange(
        media,
        &support::rtp::tone("1000/1000@-10", 1000),
        Duration::ZERO,
    )
    .await;
    rtp.send_dtmf(media, "#").await;
    assert!(server_hangs_up(&mut w, &mut uac, Duration::from_secs(10)).await);

    let types = read_events(sse, "call_ended").await;
    let want = [
        "call_started",
        "call_answered",
        "recording_started",
        "dtmf",
        "recording_finished",
        "call_ended",
    ];
    let seen: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| want.contains(t))
        .collect();
    assert_eq!(seen, want, "{types:?}");

    let (status, body) = http_get(server.http, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(value("switchboard_calls_started_total"), 1.0, "{text}");
    assert_eq!(value("switchboard_calls_ended_total"), 1.0, "{text}");
    assert_eq!(
        value("switchboard_recordings_finished_total"),
        1.0,
        "{text}"
    );
    assert!(
        value("switchboard_recording_bytes_total") > 8000.0,
        "{text}"
    );
    assert!(value("switchboard_dtmf_digits_total") >= 1.0, "{text}");
    assert!(
        value("switchboard_sip_responses_total{code=\"200\"") >= 1.0,
        "{text}"
    );
    assert_eq!(value("switchboard_script_errors_total"), 0.0, "{text}");
    assert!(
        value("switchboard_media_worker_rtp_packets_in_total") > 50.0,
        "{text}"
    );

    // The CDR is written off the call path: wait for it.
    let until = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = std::fs::read_dir(&cdr.0)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"));
        if let Some(p) = found {
            let text = std::fs::read_to_string(p).unwrap();
            if let Some(l) = text.lines().next() {
                break serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
        assert!(Instant::now() < until, "no CDR written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(line["call_id"], uac.call_id.as_str());
    assert_eq!(line["to"], "message");
    assert_eq!(line["hangup"], "server");
    assert_eq!(line["digits"], "#");
    assert_eq!(line["recordings"].as_array().map(Vec::len), Some(1));
    assert!(line["rtp"]["packets"].as_u64().unwrap() > 50, "{line}");
    assert_eq!(line["rtp"]["lost"], 0, "{line}");
    server.stop().await;
}

#[tokio::test]
async fn a_script_controls_another_callers_room() {
    let scripts = Scripts::new(&[
        ("join.rhai", "answer();\nconference(\"ops\", #{});\n"),
        (
            "moderate.rhai",
            "answer();\n\
             room_lock(\"ops\");\n\
             let ms = room_members(\"ops\");\n\
             if ms.len() == 1 { room_kick(\"ops\", ms[0].id); }\n\
             hangup();\n",
        ),
    ]);
    let dir = scripts.0.clone();
    let server = start_with((44900, 44999), move |c| {
        c.paths.scripts = dir;
        c.dialplan = vec![rule("join", "join"), rule("moderate", "moderate")];
    })
    .await;
    let (mut wa, mut a) = wire(false, server.sip).await;
    call(&mut wa, &mut a, "join", 40000).await;
    // In the room (the API lists the member).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(server.http, "/api/rooms/ops").await;
        if status == 200 && String::from_utf8_lossy(&body).contains(a.call_id.as_str()) {
            break;
        }
        assert!(Instant::now() < until, "the caller never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut wb, mut b) = wire(false, server.sip).await;
    call(&mut wb, &mut b, "moderate", 40002).await;
    assert!(
        server_hangs_up(&mut wa, &mut a, Duration::from_secs(5)).await,
        "the member the script kicked was not hung up"
    );
    assert!(server_hangs_up(&mut wb, &mut b, Duration::from_secs(5)).await);
    server.stop().await;
}
