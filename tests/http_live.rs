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

const TOKEN: &str = "live-http-token";

struct Server {
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

async fn start() -> Server {
    let dir =
        std::env::temp_dir().join(format!("switchboard-http-live-{:016x}", fastrand::u64(..)));
    let mut cfg = switchboard::Config::embedded().unwrap();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http.token = TOKEN.into();
    cfg.rtp.port_min = 47000;
    cfg.rtp.port_max = 47099;
    cfg.media.workers = 1;
    cfg.paths.recordings = dir.join("recordings");
    cfg.cdr.dir = dir.join("cdr");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = switchboard::run_with_ready(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send(r.http);
            },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    });
    let http = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("ready in time")
        .expect("ready");
    Server {
        http,
        stop: Some(stop_tx),
        task,
        dir,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops in time")
            .unwrap();
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
