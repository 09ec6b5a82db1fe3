//! End to end: taking the real `switchboard` binary out of service. On SIGTERM (or
//! `POST /api/admin/drain`) a new INVITE gets 503, `/api/info` says `draining`, the calls
//! in progress go on until `drain_secs`, then each gets BYE, every recording is finalised,
//! and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::server::{answered_port, call, wire, Wire};
use support::uac::{offer, Uac, UacState};

const DRAIN_SECS: u64 = 2;

fn start(label: &str, rtp_ports: u16) -> common::Server {
    common::Server::start_with(
        label,
        common::ServerOptions {
            config: Some(format!("[sip]\ndrain_secs = {DRAIN_SECS}\n")),
            rtp_port_count: rtp_ports,
        },
    )
}

fn json(http: SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = common::http(http, method, path);
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// A new INVITE, which must be refused with 503 now.
async fn refused_invite(sip: SocketAddr) {
    let (mut w, mut uac) = wire(false, sip).await;
    uac.invite(
        Instant::now(),
        "echo",
        &offer("127.0.0.1", 40000, "sendrecv"),
    );
    let refused = w
        .drive(&mut uac, Duration::from_secs(5), |u| {
            u.statuses.iter().any(|(m, c)| m == "INVITE" && *c >= 200)
        })
        .await;
    assert!(refused, "no final answer to an INVITE while draining");
    let finals: Vec<u16> = uac
        .statuses
        .iter()
        .filter(|(m, c)| m == "INVITE" && *c >= 200)
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(finals[0], 503, "{:?}", uac.statuses);
    w.flush(&mut uac).await;
}

/// Waits for the server's BYE on a live call: how long after `since` it came.
async fn await_bye(mut w: Wire, mut uac: Uac, since: Instant) -> Duration {
    let ended = w
        .drive(&mut uac, Duration::from_secs(DRAIN_SECS + 8), |u| {
            u.state == UacState::Terminated
        })
        .await;
    assert!(ended, "no BYE for a live call");
    assert_eq!(uac.requests_in, vec!["BYE".to_string()]);
    since.elapsed()
}

/// Every WAV in `dir`: whole (its header agrees with its size, hound reads every sample)
/// with its sidecar `complete`; the seconds of audio of each.
fn finished_recordings(dir: &Path) -> Vec<f64> {
    let mut secs = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.ends_with(".part"), "unfinished recording {name}");
        if path.extension().is_none_or(|x| x != "wav") {
            continue;
        }
        let reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        let declared = reader.len();
        let samples: Vec<i16> = reader.into_samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(samples.len() as u32, declared, "{name}");
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        assert_eq!(sidecar["state"], "complete", "{name}: {sidecar}");
        // The caller's tone is in the recording.
        let mono: Vec<i16> = samples
            .iter()
            .step_by(usize::from(spec.channels))
            .copied()
            .collect();
        let tone = support::rtp::peak_tone_power(&mono, 1000.0);
        assert!(tone > 0.5, "{name}: 1 kHz share {tone:.2}");
        secs.push(mono.len() as f64 / f64::from(spec.sample_rate));
    }
    secs
}

#[test]
fn sigterm_drains_live_calls_then_exits_cleanly() {
    const ECHO_CALLS: usize = 15;
    const RECORDING_CALLS: usize = 5;
    let mut server = start("drain-sigterm", 100);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sip = server.sip;
    let http = server.http;
    let (calls, talkers) = rt.block_on(async {
        let mut calls = Vec::new();
        for i in 0..ECHO_CALLS {
            let (mut w, mut uac) = wire(false, sip).await;
            call(&mut w, &mut uac, "echo", 41000 + 2 * i as u16).await;
            calls.push((w, uac));
        }
        // Answering-machine calls: they record the caller's tone after the greeting.
        let mut talkers = Vec::new();
        for _ in 0..RECORDING_CALLS {
            let mut rtp = support::rtp::RtpPeer::bind().await;
            let (mut w, mut uac) = wire(false, sip).await;
            call(&mut w, &mut uac, "message", rtp.port()).await;
            let media = SocketAddr::new(sip.ip(), answered_port(&uac));
            let tone = support::rtp::tone("1000/30000@-10", 30_000);
            talkers.push(tokio::spawn(async move {
                rtp.exchange(media, &tone, Duration::ZERO).await;
            }));
            calls.push((w, uac));
        }
        (calls, talkers)
    });
    // SIGTERM once every answering machine records.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = json(http, "GET", "/api/calls");
        let list = v.as_array().cloned().unwrap_or_default();
        let recording = list.iter().filter(|c| !c["recording"].is_null()).count();
        if list.len() == ECHO_CALLS + RECORDING_CALLS && recording == RECORDING_CALLS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls not all up and recording: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, v) = json(http, "GET", "/api/info");
    assert_eq!(v["draining"], false);
    // SAFETY: kill(2) on the process this test started.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    // The signal is handled asynchronously: once /api/info says so, the SIP side drains.
    while json(http, "GET", "/api/info").1["draining"] != true {
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "not draining after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.block_on(refused_invite(sip));
    let (_, v) = json(http, "GET", "/api/calls");
    let still_up = v.as_array().map_or(0, Vec::len);
    let early = signalled.elapsed();
    assert!(
        early < Duration::from_secs(DRAIN_SECS),
        "checked too late: {early:?}"
    );
    assert_eq!(
        still_up,
        ECHO_CALLS + RECORDING_CALLS,
        "calls went on draining"
    );

    let waits: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(w, uac)| tokio::spawn(await_bye(w, uac, signalled)))
            .collect();
        let mut waits = Vec::new();
        for t in tasks {
            waits.push(t.await.unwrap());
        }
        for t in talkers {
            t.abort();
        }
        waits
    });
    for wait in &waits {
        assert!(
            *wait >= Duration::from_millis(DRAIN_SECS * 1000 - 100),
            "BYE after {wait:?}, before drain_secs"
        );
        assert!(
            *wait <= Duration::from_secs(DRAIN_SECS + 4),
            "BYE after {wait:?}"
        );
    }
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        server.log_text()
    );
    let secs = finished_recordings(&server.dir().join("recordings"));
    assert_eq!(secs.len(), RECORDING_CALLS, "{secs:?}");
    for s in secs {
        // The recording ran from before the signal until the BYE.
        assert!(s >= DRAIN_SECS as f64 - 0.3, "{s:.2} s recorded");
        assert!(s <= 25.0, "{s:.2} s recorded");
    }
}

#[test]
fn drain_over_the_api_refuses_new_calls_and_exits_when_the_last_call_ends() {
    let mut server = start("drain-api", 20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sip = server.sip;
    let (mut w, mut uac) = rt.block_on(async {
        let (mut w, mut uac) = wire(false, sip).await;
        call(&mut w, &mut uac, "echo", 40000).await;
        (w, uac)
    });
    let (status, v) = json(server.http, "POST", "/api/admin/drain");
    assert_eq!(status, 202, "{v}");
    assert_eq!(v, serde_json::json!({ "draining": true, "calls": 1 }));
    let (_, v) = json(server.http, "GET", "/api/info");
    assert_eq!(v["draining"], true);
    rt.block_on(refused_invite(sip));
    // OPTIONS too: a dispatcher probing the node sees it out of service.
    rt.block_on(async {
        let (mut pw, mut probe) = wire(false, sip).await;
        probe.request(Instant::now(), "OPTIONS", "", b"");
        let answered = pw
            .drive(&mut probe, Duration::from_secs(5), |u| {
                !u.statuses.is_empty()
            })
            .await;
        assert!(answered);
        assert_eq!(probe.statuses[0], ("OPTIONS".to_string(), 503));
    });
    assert_eq!(
        server.wait_exit(Duration::ZERO),
        None,
        "exited with a call up"
    );
    // The caller hangs up before drain_secs: the server exits at once, 0.
    let hung_up = Instant::now();
    rt.block_on(support::server::hang_up(&mut w, &mut uac));
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        server.log_text()
    );
    assert!(hung_up.elapsed() < Duration::from_secs(DRAIN_SECS + 3));
}
