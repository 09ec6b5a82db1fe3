//! Calls offered over HTTP (`POST /api/webrtc/{number}`, WHIP style): the offer reaches the
//! dialplan as an INVITE's would, the answer comes back as `201 Created` with a `Location`,
//! `DELETE` on it hangs up, and bad offers get a clear 4xx with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::events::Events;
use support::rtp::RtpPeer;
use support::scripts::Scripts;
use support::server::{header, http_get, http_with, start_with};

/// A plain RTP offer for media at `port` on loopback.
fn plain_offer(port: u16, formats: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

/// What a browser offers, less what this test leaves out.
fn browser_offer(drop: &str) -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8",
        "c=IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
        "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
    ]
    .iter()
    .filter(|l| drop.is_empty() || !l.starts_with(drop))
    .map(|l| format!("{l}\r\n"))
    .collect()
}

fn answered_port(sdp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(sdp);
    text.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("an audio port in the answer")
}

async fn live_calls(http_addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(http_addr, "/api/calls").await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn an_offer_over_http_is_a_call_to_the_dialplan_and_delete_hangs_it_up() {
    let server = start_with((46000, 46019), |_| {}).await;
    let mut peer = RtpPeer::bind().await;
    let offer = plain_offer(peer.port(), "0 101");
    let (status, head, answer) = http_with(
        server.http,
        "POST",
        "/api/webrtc/echo",
        "application/sdp",
        offer.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{head}\n{}", String::from_utf8_lossy(&answer));
    assert_eq!(header(&head, "content-type"), Some("application/sdp"));
    let location = header(&head, "location").expect("a Location").to_string();
    assert!(location.starts_with("/api/webrtc/sessions/"), "{location}");
    let call_id = header(&head, "x-call-id")
        .expect("the call's id")
        .to_string();

    // The echo script answers: what the caller sends comes back.
    let to = SocketAddr::from(([127, 0, 0, 1], answered_port(&answer)));
    let power = peer.tone_back(to).await;
    assert!(power > 0.1, "the echo came back at {power}");
    let calls = live_calls(server.http).await;
    assert!(
        calls.as_array().unwrap().iter().any(|c| c["id"] == call_id),
        "{calls}"
    );

    let mut ended = Events::open(server.http, "call_ended").await;
    let (status, _, _) = http_with(server.http, "DELETE", &location, "text/plain", b"").await;
    assert_eq!(status, 200);
    let seen = ended
        .until(Duration::from_secs(5), |e| e["call_id"] == call_id)
        .await;
    assert_eq!(seen.last().unwrap()["reason"], "caller_bye", "{seen:?}");
    let (status, _, _) = http_with(server.http, "DELETE", &location, "text/plain", b"").await;
    assert_eq!(status, 404, "a session is hung up once");
    server.stop().await;
}

#[tokio::test]
async fn bad_offers_get_a_clear_4xx_with_the_reason() {
    // Without default.rhai, a number no rule matches is nobody's.
    let scripts = Scripts::with_shipped(&[]);
    std::fs::remove_file(scripts.0.join("default.rhai")).unwrap();
    let dir = scripts.0.clone();
    let server = start_with((46020, 46039), move |c| c.paths.scripts = dir).await;
    let post = |number: &'static str, ctype: &'static str, body: Vec<u8>| {
        let addr = server.http;
        async move {
            let (status, _, body) =
                http_with(addr, "POST", &format!("/api/webrtc/{number}"), ctype, &body).await;
            (status, String::from_utf8_lossy(&body).to_string())
        }
    };
    let plain = plain_offer(40000, "0").into_bytes();

    let (status, why) = post("nobody", "application/sdp", plain.clone()).await;
    assert_eq!(status, 404, "{why}");
    let (status, why) = post("echo", "application/sdp", b"hello".to_vec()).await;
    assert_eq!(status, 400, "a malformed offer: {why}");
    let (status, why) = post(
        "echo",
        "application/sdp",
        plain_offer(40000, "18").into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("no common audio codec"), "{why}");
    let (status, why) = post(
        "echo",
        "application/sdp",
        browser_offer("a=fingerprint").into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("fingerprint"), "{why}");
    let (status, why) = post(
        "echo",
        "application/sdp",
        browser_offer("a=ice-pwd").into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("ICE"), "{why}");
    let (status, why) = post("echo", "application/json", plain.clone()).await;
    assert_eq!(status, 415, "{why}");
    let (status, why) = post("ec ho", "application/sdp", plain.clone()).await;
    assert_eq!(status, 400, "{why}");
    let (status, why) = post("echo", "application/sdp", vec![b'a'; 40 * 1024]).await;
    assert_eq!(status, 413, "{why}");
    // None of them became a call that stayed.
    assert_eq!(live_calls(server.http).await, serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn sessions_per_source_are_limited_and_webrtc_can_be_off() {
    let server = start_with((46040, 46059), |c| c.webrtc.max_sessions_per_source = 1).await;
    let peer = RtpPeer::bind().await;
    let offer = plain_offer(peer.port(), "0");
    let (first, head, _) = http_with(
        server.http,
        "POST",
        "/api/webrtc/echo",
        "application/sdp",
        offer.as_bytes(),
    )
    .await;
    assert_eq!(first, 201);
    let (second, _, why) = http_with(
        server.http,
        "POST",
        "/api/webrtc/echo",
        "application/sdp",
        offer.as_bytes(),
    )
    .await;
    assert_eq!(second, 429, "{}", String::from_utf8_lossy(&why));
    let location = header(&head, "location").unwrap().to_string();
    let (status, _, _) = http_with(server.http, "DELETE", &location, "text/plain", b"").await;
    assert_eq!(status, 200);
    server.stop().await;

    let off = start_with((46060, 46069), |c| c.webrtc.enabled = false).await;
    let (status, _, why) = http_with(
        off.http,
        "POST",
        "/api/webrtc/echo",
        "application/sdp",
        offer.as_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&why));
    off.stop().await;
}
