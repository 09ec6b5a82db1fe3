//! The real server started in-process, its HTTP side checked over real HTTP on 127.0.0.1:
//! the console, live calls, CDRs, metrics and the event stream with its keep-alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod support;

const TOKEN: &str = "live-http-token";

/// The in-process server with a token, one media worker, and its recordings and CDRs in a
/// folder of its own.
struct Server {
    http: SocketAddr,
    inner: support::server::Server,
    dir: PathBuf,
}

async fn start() -> Server {
    let dir =
        std::env::temp_dir().join(format!("switchboard-http-live-{:016x}", fastrand::u64(..)));
    let folder = dir.clone();
    let inner = support::server::start_with((47000, 47099), move |cfg| {
        cfg.http.token = TOKEN.into();
        cfg.media.workers = 1;
        cfg.paths.recordings = folder.join("recordings");
        cfg.cdr.dir = folder.join("cdr");
    })
    .await;
    Server {
        http: inner.http,
        inner,
        dir,
    }
}

impl Server {
    async fn stop(self) {
        self.inner.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn request(&self, path: &str, token: bool) -> Response<Incoming> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut b = Request::get(format!("http://{}{path}", self.http));
        if token {
            b = b.header("authorization", format!("Bearer {TOKEN}"));
        }
        tokio::time::timeout(
            Duration::from_secs(10),
            client.request(b.body(Empty::new()).unwrap()),
        )
        .await
        .expect("answer in time")
        .expect("answer")
    }

    async fn get(&self, path: &str, token: bool) -> (StatusCode, String, String) {
        let resp = self.request(path, token).await;
        let status = resp.status();
        let ty = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("body in time")
            .unwrap()
            .to_bytes();
        (status, ty, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_side_answers_over_real_http() {
    let s = start().await;

    let (status, ty, body) = s.get("/", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ty.starts_with("text/html"), "{ty}");
    assert!(body.contains("console.js"));

    for path in ["/api/calls", "/metrics", "/api/cdrs", "/api/events"] {
        assert_eq!(
            s.get(path, false).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }

    let (status, _, body) = s.get("/api/calls", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "[]");

    let (status, _, body) = s.get("/api/rooms", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "[]");

    let (status, _, body) = s.get("/api/cdrs?date=2026-01-01", true).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 0);

    let (status, ty, body) = s.get("/metrics", true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ty.starts_with("text/plain; version=0.0.4"), "{ty}");
    assert!(body.contains("\nswitchboard_active_calls 0\n"), "{body}");
    assert!(
        body.contains("switchboard_media_worker_ticks_total{worker=\"0\"}"),
        "the real media worker is reported: {body}"
    );

    // The event stream: a comment at once, then the periodic keep-alive (every 15 s).
    let resp = s
        .request(&format!("/api/events?token={TOKEN}"), false)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while !text.contains(": keep-alive") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no keep-alive within 25 s; got {text:?}"))
            .expect("stream open")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(text.starts_with(": connected\n\n"), "{text:?}");
    drop(body);

    s.stop().await;
}
