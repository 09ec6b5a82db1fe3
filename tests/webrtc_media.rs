//! WebRTC legs against a caller written for the tests (tests/support/webrtc.rs): its checks
//! and handshake are a browser's, so each bad input a browser-facing server meets can be
//! sent on purpose — a check with the wrong password, SRTP with a forged tag, a certificate
//! that is not the one offered, ICE or DTLS that never come, a flood of offers. None reaches
//! a call or stalls it; each is counted in `/metrics` or ends its call with a reason in the CDR.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::server::{header, http_with, metric, start_with};
use support::webrtc::WebRtcPeer;
use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::webrtc::stun::Class;

/// `POST /api/webrtc/{number}` with `offer`: status, the session's Location and Call-ID, and
/// the body.
async fn post(http: SocketAddr, number: &str, offer: &str) -> (u16, String, String, String) {
    let path = format!("/api/webrtc/{number}");
    let (status, head, body) =
        http_with(http, "POST", &path, "application/sdp", offer.as_bytes()).await;
    let get = |name| header(&head, name).unwrap_or_default().to_string();
    (
        status,
        get("location"),
        get("x-call-id"),
        String::from_utf8_lossy(&body).into(),
    )
}

/// One 20 ms PCMU packet of a sine at `freq` Hz (-12 dBFS), number `n`.
fn packet(n: u16, freq: f64) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&n.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(n) * 160).to_be_bytes());
    p.extend((0..160).map(|i| {
        let t = f64::from(u32::from(n) * 160 + i) / 8000.0;
        ulaw_encode((8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16)
    }));
    p
}

fn cdr_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-webrtc-cdr-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_like_caller_is_heard_and_forged_checks_and_srtp_never_reach_the_call() {
    let server = start_with((46120, 46129), |_| {}).await;
    let mut peer = WebRtcPeer::new();
    let (status, location, _, answer) = post(server.http, "echo", &peer.offer(None)).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    let (peer, ..) = tokio::task::spawn_blocking(move || {
        // A check with the wrong password is refused, and counted.
        assert_eq!(peer.check(false), Some((Class::Error, Some(401))));
        assert_eq!(peer.check(true), Some((Class::Success, None)));
        peer.handshake(Duration::from_secs(5)).unwrap();
        (peer, ())
    })
    .await
    .unwrap();
    assert_eq!(
        metric(server.http, "switchboard_webrtc_stun_rejected_total").await,
        1.0
    );
    assert_eq!(
        metric(
            server.http,
            "switchboard_webrtc_sessions_total{outcome=\"connected\"}"
        )
        .await,
        1.0
    );

    // 1 kHz with good tags, 600 Hz with forged ones, interleaved: only 1 kHz comes back.
    let heard = tokio::task::spawn_blocking(move || {
        let mut srtp = peer.srtp();
        let server = peer.server.unwrap();
        let mut heard = Vec::new();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        for n in 0..150u16 {
            let due = start + Duration::from_millis(20 * u64::from(n));
            while Instant::now() < due {
                if let Ok((len, _)) = peer.sock.recv_from(&mut buf) {
                    if (128..=191).contains(&buf[0]) && buf[1] & 0x7f == 0 {
                        if let Ok(clear) = srtp.unprotect_rtp(&mut buf[..len]) {
                            heard.extend(buf[12..clear].iter().map(|&b| ulaw_decode(b)));
                        }
                    }
                }
            }
            for (seq, freq, forge) in [(2 * n, 1000.0, false), (2 * n + 1, 600.0, true)] {
                let mut p = packet(seq, freq);
                let len = p.len();
                p.resize(len + 16, 0);
                let sealed = srtp.protect_rtp(&mut p, len).unwrap();
                p.truncate(sealed);
                if forge {
                    let last = p.len() - 1;
                    p[last] ^= 0x55;
                }
                peer.sock.send_to(&p, server).unwrap();
            }
        }
        heard
    })
    .await
    .unwrap();
    let tail = &heard[heard.len().saturating_sub(8000)..];
    let share_1k = switchboard::media::level::tone_share(tail, 1000.0, 8000.0);
    let share_600 = switchboard::media::level::tone_share(tail, 600.0, 8000.0);
    let dbfs = switchboard::media::level::rms_dbfs(tail);
    eprintln!("heard {dbfs:.1} dBFS: 1 kHz {share_1k:.2}, 600 Hz {share_600:.3}");
    assert!(share_1k > 0.8, "1 kHz share {share_1k}");
    assert!(share_600 < 0.05, "the forged 600 Hz was heard: {share_600}");
    assert!(
        metric(
            server.http,
            "switchboard_srtp_dropped_total{reason=\"auth\",stream=\"rtp\"}"
        )
        .await
            >= 100.0
    );

    // The session is hung up by its DELETE.
    let (status, _, _) = http_with(server.http, "DELETE", &location, "text/plain", b"").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_other_than_the_offered_one_ends_the_call_with_its_cause() {
    let dir = cdr_dir();
    let cdrs = dir.clone();
    let server = start_with((46130, 46139), move |c| c.cdr.dir = cdrs).await;
    let mut peer = WebRtcPeer::new();
    let other = switchboard::webrtc::Certificate::generate()
        .unwrap()
        .fingerprint()
        .to_string();
    let (status, _, call_id, answer) = post(server.http, "echo", &peer.offer(Some(&other))).await;
    assert_eq!(status, 201, "{answer}");
    peer.accept(&answer);
    let result = tokio::task::spawn_blocking(move || {
        assert_eq!(peer.check(true), Some((Class::Success, None)));
        peer.handshake(Duration::from_secs(3))
    })
    .await
    .unwrap();
    assert!(
        result.is_err(),
        "a handshake with the wrong certificate: {result:?}"
    );
    let cdr = support::cdr_of(&dir, &call_id).await;
    assert!(
        cdr["reason"]
            .as_str()
            .unwrap_or("")
            .contains("media transport"),
        "{cdr}"
    );
    assert_eq!(cdr["transport"], "webrtc", "{cdr}");
    assert_eq!(
        metric(
            server.http,
            "switchboard_webrtc_sessions_total{outcome=\"handshake_failed\"}"
        )
        .await,
        1.0
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_or_dtls_that_never_come_end_the_call_when_the_connect_timeout_passes() {
    let dir = cdr_dir();
    let cdrs = dir.clone();
    let server = start_with((46140, 46149), move |c| {
        c.cdr.dir = cdrs;
        c.webrtc.connect_timeout_secs = 1;
    })
    .await;
    // No check at all.
    let silent = WebRtcPeer::new();
    let (status, _, no_ice, answer) = post(server.http, "echo", &silent.offer(None)).await;
    assert_eq!(status, 201, "{answer}");
    // A check, then no handshake.
    let mut quiet = WebRtcPeer::new();
    let (status, _, no_dtls, answer) = post(server.http, "echo", &quiet.offer(None)).await;
    assert_eq!(status, 201, "{answer}");
    quiet.accept(&answer);
    let quiet = tokio::task::spawn_blocking(move || {
        assert_eq!(quiet.check(true), Some((Class::Success, None)));
        quiet
    })
    .await
    .unwrap();
    let started = Instant::now();
    for call_id in [&no_ice, &no_dtls] {
        let cdr = support::cdr_of(&dir, call_id).await;
        assert!(
            cdr["reason"]
                .as_str()
                .unwrap_or("")
                .contains("media transport"),
            "{cdr}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    for outcome in ["ice_timeout", "handshake_timeout"] {
        assert_eq!(
            metric(
                server.http,
                &format!("switchboard_webrtc_sessions_total{{outcome=\"{outcome}\"}}")
            )
            .await,
            1.0,
            "{outcome}"
        );
    }
    drop(quiet);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_from_one_source_is_held_to_its_limit() {
    let server = start_with((46150, 46169), |c| c.webrtc.max_sessions_per_source = 3).await;
    let peers: Vec<WebRtcPeer> = (0..20).map(|_| WebRtcPeer::new()).collect();
    let offers = peers.iter().map(|p| {
        let offer = p.offer(None);
        let http = server.http;
        tokio::spawn(async move { post(http, "echo", &offer).await })
    });
    let mut statuses = Vec::new();
    for o in offers.collect::<Vec<_>>() {
        statuses.push(o.await.unwrap().0);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [vec![201; 3], vec![429; 17]].concat(),
        "three sessions, the rest refused"
    );
    assert_eq!(
        metric(
            server.http,
            "switchboard_webrtc_offers_refused_total{reason=\"too_many\"}"
        )
        .await,
        17.0
    );
    server.stop().await;
}
