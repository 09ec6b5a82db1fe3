//! Browser-style callers against the whole server: aiortc (`tests/fixtures/webrtc_client.py`;
//! its own ICE agent, OpenSSL's DTLS and libsrtp) posts an offer to `POST /api/webrtc/echo`,
//! sends a 1 kHz tone over DTLS-SRTP and records what comes back; the test decodes and
//! measures it. Every packet stays on 127.0.0.1 (the client gathers only loopback).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::rtp::measure_at;
use support::server::start_with;

/// Whether python3 has aiortc; a missing one skips the test, except under `CI=true`.
fn have_aiortc() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiortc, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "python3 with aiortc is needed under CI=true (.ci/run installs it)"
        );
        eprintln!("skipped: python3 with aiortc (pip install aiortc) is not installed");
    }
    ok
}

/// What the client reported, and what it heard.
struct Heard {
    report: serde_json::Value,
    pcm: Vec<i16>,
}

/// Runs the aiortc client against `url` offering `codec`, for `seconds` of audio.
async fn call(url: String, codec: &'static str, seconds: f64) -> Heard {
    let dir = std::env::temp_dir().join(format!("sb-webrtc-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("heard.wav");
    let out = {
        let wav = wav.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/webrtc_client.py"
                ))
                .args(["--url", &url, "--codec", codec])
                .args(["--seconds", &seconds.to_string()])
                .arg("--out")
                .arg(&wav)
                .output()
                .unwrap()
        })
    };
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the client finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the client: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let pcm = std::fs::read(&wav)
        .ok()
        .map(|b| {
            b.get(44..)
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]))
                .collect()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Heard { report, pcm }
}

/// The median level (dBFS) and 1 kHz share of what was heard after its first second (the
/// handshake and the jitter buffer filling).
fn measure(pcm: &[i16]) -> (f64, f64) {
    measure_at(pcm.get(48_000..).unwrap_or_default(), 48_000, 1000)
}

async fn echo_over_webrtc(codec: &'static str, ports: (u16, u16)) {
    if !have_aiortc() {
        return;
    }
    let cdrs = std::env::temp_dir().join(format!("sb-webrtc-cdr-{}", fastrand::u64(..)));
    let dir = cdrs.clone();
    let server = start_with(ports, move |c| c.cdr.dir = dir).await;
    let heard = call(
        format!("http://{}/api/webrtc/echo", server.http),
        codec,
        4.0,
    )
    .await;
    let r = &heard.report;
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["error"], serde_json::Value::Null, "{r}");
    let (dbfs, share) = measure(&heard.pcm);
    eprintln!("{codec}: heard {dbfs:.1} dBFS, 1 kHz share {share:.2}; {r}");
    // Sent at -12 dBFS; the echo comes back at that level, decoded and mostly the tone.
    assert!(share > 0.8, "{codec}: the 1 kHz share is {share:.2}");
    assert!(
        (-18.0..-8.0).contains(&dbfs),
        "{codec}: heard {dbfs:.1} dBFS"
    );
    assert_eq!(r["delete_status"], 200, "{r}");
    // The call was a WebRTC call, ended by the DELETE.
    let cdr = support::cdr_of(&cdrs, r["call_id"].as_str().unwrap()).await;
    assert_eq!(cdr["transport"], "webrtc", "{cdr}");
    assert_eq!(cdr["cause"], "caller_bye", "{cdr}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&cdrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_hears_its_tone_back_from_echo_over_dtls_srtp_in_pcmu() {
    echo_over_webrtc("pcmu", (46100, 46109)).await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_hears_its_tone_back_from_echo_over_dtls_srtp_in_opus() {
    echo_over_webrtc("opus", (46110, 46119)).await;
}
