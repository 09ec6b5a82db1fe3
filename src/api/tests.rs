//! Router tests: real WAVs and sidecars in a temporary folder, requests through
//! `tower::ServiceExt::oneshot`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use super::*;
use crate::media::record::{Format, RecordMode, Sidecar, SidecarState, StopReason};

const TOKEN: &str = "test-token";

/// A folder removed on drop, with a `recordings` folder inside so that files can be put
/// next to it, where no request may reach.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "switchboard-api-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(p.join("recordings")).unwrap();
        TempDir(p)
    }

    fn recordings(&self) -> PathBuf {
        self.0.join("recordings")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sidecar(id: &str, from: &str, to: &str, room: Option<&str>, started: &str) -> Sidecar {
    Sidecar {
        id: id.into(),
        call_id: format!("call-{id}"),
        from: from.into(),
        to: to.into(),
        room: room.map(Into::into),
        started: started.into(),
        duration_ms: 1000,
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
}

/// The format of every test WAV.
const MONO_8K: hound::WavSpec = hound::WavSpec {
    channels: 1,
    sample_rate: 8000,
    bits_per_sample: 16,
    sample_format: hound::SampleFormat::Int,
};

/// One second of 8 kHz noise, so every byte range has distinct content.
fn write_wav(dir: &Path, id: &str) -> Vec<u8> {
    let path = dir.join(format!("{id}.wav"));
    let spec = MONO_8K;
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..8000 {
        w.write_sample(fastrand::i16(..)).unwrap();
    }
    w.finalize().unwrap();
    std::fs::read(&path).unwrap()
}

/// The fixture set, oldest first in the vector.
fn fixtures() -> Vec<Sidecar> {
    let mut room = sidecar(
        "rec-c",
        "sip:carol@example.com",
        "sip:conf@pbx.example.com",
        Some("sales"),
        "2024-05-03T09:00:00.000Z",
    );
    room.mode = RecordMode::MixedMono;
    vec![
        sidecar(
            "rec-a",
            "sip:Alice@example.com",
            "sip:ivr@pbx.example.com",
            None,
            "2024-05-01T12:00:00.000Z",
        ),
        sidecar(
            "rec-b",
            "sip:bob@example.org",
            "sip:ivr@pbx.example.com",
            None,
            "2024-05-02T08:30:00.000Z",
        ),
        room,
        sidecar(
            "rec-d",
            "sip:alice@example.com",
            "sip:conf@pbx.example.com",
            Some("support"),
            "2024-05-04T17:45:00.000Z",
        ),
        // Same instant as rec-d written in another offset; the id breaks the tie.
        sidecar(
            "rec-e",
            "sip:dave@example.net",
            "sip:voicemail@pbx.example.com",
            None,
            "2024-05-04T19:45:00.000+02:00",
        ),
    ]
}

struct Fixture {
    tmp: TempDir,
    app: Router,
    index: Arc<RecordingIndex>,
    wavs: Vec<(String, Vec<u8>)>,
}

fn fixture_with_token(token: Option<&str>) -> Fixture {
    let tmp = TempDir::new();
    let dir = tmp.recordings();
    let mut wavs = Vec::new();
    for s in fixtures() {
        wavs.push((s.id.clone(), write_wav(&dir, &s.id)));
        s.write(&dir).unwrap();
    }
    let index = Arc::new(RecordingIndex::load(&dir).unwrap());
    let app = router(ApiState::new(index.clone(), token.map(Into::into)));
    Fixture {
        tmp,
        app,
        index,
        wavs,
    }
}

fn fixture() -> Fixture {
    fixture_with_token(Some(TOKEN))
}

impl Fixture {
    fn wav(&self, id: &str) -> &[u8] {
        &self.wavs.iter().find(|(i, _)| i == id).unwrap().1
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.get_with(uri, &[]).await
    }

    async fn get_with(&self, uri: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        let mut b = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn delete(&self, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
        let req = Request::builder()
            .method(Method::DELETE)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    async fn list(&self, query: &str) -> (usize, Vec<String>) {
        let (status, _, body) = self.get(&format!("/api/recordings{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ids = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        (v["total"].as_u64().unwrap() as usize, ids)
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

// ---- authentication ----

#[tokio::test]
async fn requests_need_the_bearer_token() {
    let f = fixture();
    let bare = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    for uri in [
        "/api/recordings",
        "/api/recordings/rec-a",
        "/api/recordings/rec-a/audio",
        "/api/openapi.json",
        "/api/nothing-here",
    ] {
        let (status, headers, _) = f.send(bare(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(header_str(&headers, header::WWW_AUTHENTICATE).starts_with("Bearer"));
    }
    for wrong in [
        "Bearer nope",
        "Bearer test-token2",
        "Basic dGVzdDp0ZXN0",
        "Bearer ",
    ] {
        let req = Request::get("/api/recordings")
            .header(header::AUTHORIZATION, wrong)
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = f.send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(header_str(&headers, header::WWW_AUTHENTICATE).starts_with("Bearer"));
    }
    // A wrong token must not delete anything.
    let req = Request::delete("/api/recordings/rec-a")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(req).await.0, StatusCode::UNAUTHORIZED);
    assert!(f.tmp.recordings().join("rec-a.wav").exists());

    assert_eq!(f.get("/api/recordings").await.0, StatusCode::OK);
    assert_eq!(f.get("/api/openapi.json").await.0, StatusCode::OK);
    assert_eq!(f.get("/api/nothing-here").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_token_requests_pass() {
    for token in [None, Some(""), Some("   ")] {
        let f = fixture_with_token(token);
        let req = Request::get("/api/recordings").body(Body::empty()).unwrap();
        assert_eq!(f.send(req).await.0, StatusCode::OK, "{token:?}");
    }
    // Only allowed on loopback.
    assert!(check_token_policy("127.0.0.1:8080".parse().unwrap(), &None).is_ok());
    assert!(check_token_policy("0.0.0.0:8080".parse().unwrap(), &None).is_err());
    assert!(check_token_policy("0.0.0.0:8080".parse().unwrap(), &Some(TOKEN.into())).is_ok());
}

// ---- listing ----

#[tokio::test]
async fn list_is_newest_first_with_total() {
    let f = fixture();
    let (total, ids) = f.list("").await;
    assert_eq!(total, 5);
    assert_eq!(ids, ["rec-e", "rec-d", "rec-c", "rec-b", "rec-a"]);

    let (_, _, body) = f.get("/api/recordings?limit=1").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.tmp.recordings().join("rec-e.json")).unwrap())
            .unwrap();
    assert_eq!(v["items"][0], disk, "items are the sidecars as stored");
}

#[tokio::test]
async fn list_filters() {
    let f = fixture();
    let cases: &[(&str, &[&str])] = &[
        ("?caller=alice", &["rec-d", "rec-a"]),
        ("?caller=ALICE%40example", &["rec-d", "rec-a"]),
        ("?caller=example.org", &["rec-b"]),
        ("?caller=nobody", &[]),
        ("?callee=conf", &["rec-d", "rec-c"]),
        ("?callee=voicemail", &["rec-e"]),
        ("?room=sales", &["rec-c"]),
        ("?room=sale", &[]),
        ("?room=support&caller=alice", &["rec-d"]),
        ("?caller=alice&callee=ivr", &["rec-a"]),
        // `from` inclusive, `to` exclusive.
        (
            "?from=2024-05-02T08:30:00Z",
            &["rec-e", "rec-d", "rec-c", "rec-b"],
        ),
        ("?to=2024-05-02T08:30:00Z", &["rec-a"]),
        ("?from=2024-05-02&to=2024-05-04", &["rec-c", "rec-b"]),
        (
            "?from=2024-05-02T10:30:00%2B02:00&to=2024-05-03T09:00:00.001Z",
            &["rec-c", "rec-b"],
        ),
        (
            "?from=2024-05-04T17:45:00Z&to=2024-05-04T17:45:00.001Z",
            &["rec-e", "rec-d"],
        ),
        ("?from=2024-05-05", &[]),
        ("?from=2024-05-04&to=2024-05-01", &[]),
        ("?from=2024-05-01&caller=alice&room=support", &["rec-d"]),
        (
            "?caller=&room=",
            &["rec-e", "rec-d", "rec-c", "rec-b", "rec-a"],
        ),
    ];
    for (query, want) in cases {
        let (total, ids) = f.list(query).await;
        assert_eq!(ids, *want, "{query}");
        assert_eq!(total, want.len(), "{query}");
    }
}

#[tokio::test]
async fn list_paging() {
    let f = fixture();
    let all = ["rec-e", "rec-d", "rec-c", "rec-b", "rec-a"];
    for (query, want) in [
        ("?limit=2", &all[0..2]),
        ("?limit=2&offset=2", &all[2..4]),
        ("?limit=2&offset=4", &all[4..5]),
        ("?limit=2&offset=5", &all[5..5]),
        ("?offset=100", &all[5..5]),
        ("?limit=0", &all[0..0]),
        ("?limit=5000", &all[..]),
        ("?offset=1", &all[1..]),
        ("?caller=alice&limit=1&offset=1", &all[4..5]),
        ("?caller=alice&limit=1&offset=2", &all[5..5]),
    ] {
        let (total, ids) = f.list(query).await;
        assert_eq!(ids, want, "{query}");
        let expect_total = if query.contains("alice") { 2 } else { 5 };
        assert_eq!(total, expect_total, "{query}");
    }
}

#[tokio::test]
async fn list_rejects_bad_queries() {
    let f = fixture();
    for query in [
        "?limit=abc",
        "?limit=-1",
        "?offset=x",
        "?from=yesterday",
        "?to=2024-05-01T12:00:00",
        "?from=2024-05-01T12:00:00+02:00",
        "?colour=blue",
    ] {
        let (status, _, body) = f.get(&format!("/api/recordings{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string(), "{query}");
    }
}

#[test]
fn limit_is_capped() {
    let p = recordings::ListParams {
        limit: Some(5000),
        ..Default::default()
    };
    assert_eq!(p.to_filter().unwrap().limit, recordings::MAX_LIMIT);
    let p = recordings::ListParams::default();
    assert_eq!(p.to_filter().unwrap().limit, recordings::DEFAULT_LIMIT);
}

// ---- metadata and path safety ----

#[tokio::test]
async fn metadata_and_unknown_ids() {
    let f = fixture();
    let (status, headers, body) = f.get("/api/recordings/rec-c").await;
    assert_eq!(status, StatusCode::OK);
    assert!(header_str(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    let got: Sidecar = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, fixtures()[2]);

    for uri in [
        "/api/recordings/rec-zzz",
        "/api/recordings/rec-zzz/audio",
        "/api/recordings/rec-a/nothing",
        "/api/recordings/",
    ] {
        assert_eq!(f.get(uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    assert_eq!(
        f.delete("/api/recordings/rec-zzz").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn traversal_attempts_never_reach_outside_files() {
    let f = fixture();
    let outside = &f.tmp.0;
    let secret = b"SECRET-OUTSIDE-THE-FOLDER";
    std::fs::write(outside.join("secret.wav"), secret).unwrap();
    let mut s = sidecar("secret", "x", "y", None, "2030-01-01T00:00:00Z");
    s.file = "secret.wav".into();
    s.write(outside).unwrap();

    let ids = [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2Fsecret",
        "%2e%2e%2fsecret",
        "%2e%2e",
        "..",
        "a%2Fb",
        "..%5Csecret",
        "..\\secret",
        "%2Fetc%2Fpasswd",
        "%2F..%2Fsecret",
        "rec-a%00",
        "rec-a.json",
        "%C0%AE%C0%AE",
        "%FF",
    ];
    for id in ids {
        for suffix in ["", "/audio"] {
            let uri = format!("/api/recordings/{id}{suffix}");
            let Ok(req) = Request::get(uri.as_str())
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
            else {
                continue; // not even a valid URI
            };
            let (status, _, body) = f.send(req).await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{uri}: {status}"
            );
            assert!(!body.windows(secret.len()).any(|w| w == secret), "{uri}");
            assert!(!String::from_utf8_lossy(&body).contains("2030"), "{uri}");
        }
        let (status, _, _) = f.delete(&format!("/api/recordings/{id}")).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "DELETE {id}: {status}"
        );
    }
    for uri in [
        "/api/recordings/a/b",
        "/api/recordings/../secret",
        "/api/recordings/../../etc/passwd",
        "/api/recordings//etc/passwd",
        "/api/recordings/a/b/audio",
    ] {
        let (status, _, body) = f.get(uri).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{uri}: {status}"
        );
        assert!(!body.windows(secret.len()).any(|w| w == secret), "{uri}");
    }
    assert!(outside.join("secret.wav").exists());
    assert!(outside.join("secret.json").exists());
}

#[tokio::test]
async fn sidecar_file_field_is_not_trusted() {
    let f = fixture();
    let dir = f.tmp.recordings();
    std::fs::write(f.tmp.0.join("secret.wav"), b"SECRET").unwrap();
    // A sidecar pointing its `file` outside the folder: the audio served is still ID.wav.
    let mut s = sidecar("rec-f", "x", "y", None, "2024-06-01T00:00:00Z");
    s.file = "../secret.wav".into();
    s.write(&dir).unwrap();
    let wav = write_wav(&dir, "rec-f");
    // A sidecar whose id disagrees with its file name is not indexed at all.
    let mut liar = sidecar("rec-g", "x", "y", None, "2024-06-01T00:00:00Z");
    liar.id = "rec-a".into();
    std::fs::write(dir.join("rec-g.json"), serde_json::to_vec(&liar).unwrap()).unwrap();
    f.index.refresh().unwrap();

    let (status, _, body) = f.get("/api/recordings/rec-f/audio").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &wav[..]);
    assert_eq!(
        f.get("/api/recordings/rec-g").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, ids) = f.list("?limit=1000").await;
    assert_eq!(ids.iter().filter(|i| *i == "rec-a").count(), 1);
}

// ---- audio ----

#[tokio::test]
async fn audio_full_body() {
    let f = fixture();
    let wav = f.wav("rec-b");
    let (status, headers, body) = f.get("/api/recordings/rec-b/audio").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], wav);
    assert_eq!(header_str(&headers, header::CONTENT_TYPE), "audio/wav");
    assert_eq!(
        header_str(&headers, header::CONTENT_LENGTH),
        wav.len().to_string()
    );
    assert_eq!(header_str(&headers, header::ACCEPT_RANGES), "bytes");
    let tag = header_str(&headers, header::ETAG);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
        "{tag}"
    );

    // HEAD: the same headers, no body.
    let req = Request::head("/api/recordings/rec-b/audio")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, h, body) = f.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(
        header_str(&h, header::CONTENT_LENGTH),
        wav.len().to_string()
    );
}

#[tokio::test]
async fn audio_ranges() {
    let f = fixture();
    let wav = f.wav("rec-a").to_vec();
    let len = wav.len();
    assert!(len > 1000);
    let uri = "/api/recordings/rec-a/audio";
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len - 1),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=10-10", 10, 10),
        (
            &format!("bytes={}-{}", len - 1, len + 100),
            len - 1,
            len - 1,
        ),
        ("bytes=20-29, 40-49", 20, 29),
    ] {
        let (status, headers, body) = f.get_with(uri, &[("range", range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_str(&headers, header::CONTENT_RANGE),
            format!("bytes {start}-{end}/{len}"),
            "{range}"
        );
        assert_eq!(
            header_str(&headers, header::CONTENT_LENGTH),
            (end - start + 1).to_string()
        );
        assert_eq!(header_str(&headers, header::CONTENT_TYPE), "audio/wav");
        assert_eq!(&body[..], &wav[start..=end], "{range}");
    }
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-", len + 10),
        "bytes=-0".into(),
    ] {
        let (status, headers, body) = f.get_with(uri, &[("range", &range)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            header_str(&headers, header::CONTENT_RANGE),
            format!("bytes */{len}")
        );
        assert!(body.is_empty());
    }
    // Malformed ranges are ignored: the whole file.
    for range in ["bytes=9-1", "pages=1-2", "bytes=x-"] {
        let (status, _, body) = f.get_with(uri, &[("range", range)]).await;
        assert_eq!(status, StatusCode::OK, "{range}");
        assert_eq!(&body[..], &wav[..]);
    }
}

#[tokio::test]
async fn audio_etag_and_conditional_requests() {
    let f = fixture();
    let uri = "/api/recordings/rec-d/audio";
    let (_, headers, _) = f.get(uri).await;
    let tag = header_str(&headers, header::ETAG).to_string();
    assert!(!tag.starts_with("W/"), "strong tag: {tag}");

    let (status, h, body) = f.get_with(uri, &[("if-none-match", &tag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header_str(&h, header::ETAG), tag);
    assert!(body.is_empty());
    let (status, _, _) = f
        .get_with(uri, &[("if-none-match", &format!("\"other\", {tag}"))])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, body) = f.get_with(uri, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], f.wav("rec-d"));

    // Another recording has another tag.
    let (_, h, _) = f.get("/api/recordings/rec-a/audio").await;
    assert_ne!(header_str(&h, header::ETAG), tag);

    // If-Range: the range applies only while the tag still matches.
    let (status, _, _) = f
        .get_with(uri, &[("range", "bytes=0-9"), ("if-range", &tag)])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let (status, _, body) = f
        .get_with(uri, &[("range", "bytes=0-9"), ("if-range", "\"stale\"")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), f.wav("rec-d").len());

    // Rewriting the file changes the tag.
    std::fs::write(f.tmp.recordings().join("rec-d.wav"), b"RIFF-short").unwrap();
    let (status, h, _) = f.get_with(uri, &[("if-none-match", &tag)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(header_str(&h, header::ETAG), tag);
}

#[tokio::test]
async fn recording_in_progress_is_listed_but_not_served() {
    let f = fixture();
    let dir = f.tmp.recordings();
    let mut s = sidecar(
        "rec-live",
        "sip:x@y",
        "sip:z@y",
        None,
        "2024-06-01T00:00:00Z",
    );
    s.state = SidecarState::Recording;
    s.stop_reason = None;
    std::fs::write(dir.join("rec-live.wav.part"), b"partial").unwrap();
    s.write(&dir).unwrap();
    f.index.upsert(s);

    let (total, ids) = f.list("").await;
    assert_eq!(total, 6);
    assert_eq!(ids[0], "rec-live");
    assert_eq!(f.get("/api/recordings/rec-live").await.0, StatusCode::OK);
    assert_eq!(
        f.get("/api/recordings/rec-live/audio").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.get("/api/recordings/rec-live/levels").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.delete("/api/recordings/rec-live").await.0,
        StatusCode::CONFLICT
    );
    assert!(dir.join("rec-live.wav.part").exists());
}

#[tokio::test]
async fn audio_file_missing_is_404() {
    let f = fixture();
    std::fs::remove_file(f.tmp.recordings().join("rec-b.wav")).unwrap();
    let (status, _, _) = f.get("/api/recordings/rec-b/audio").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/api/recordings/rec-b").await.0, StatusCode::OK);
}

#[cfg(unix)]
#[tokio::test]
async fn symlinked_audio_is_not_served() {
    let f = fixture();
    let dir = f.tmp.recordings();
    std::fs::write(f.tmp.0.join("secret.wav"), b"SECRET").unwrap();
    std::fs::remove_file(dir.join("rec-b.wav")).unwrap();
    std::os::unix::fs::symlink(f.tmp.0.join("secret.wav"), dir.join("rec-b.wav")).unwrap();
    let (status, _, body) = f.get("/api/recordings/rec-b/audio").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.windows(6).any(|w| w == b"SECRET"));
}

// ---- delete ----

#[tokio::test]
async fn delete_removes_files_and_entry() {
    let f = fixture();
    let dir = f.tmp.recordings();
    assert!(dir.join("rec-c.wav").exists() && dir.join("rec-c.json").exists());
    let (status, _, body) = f.delete("/api/recordings/rec-c").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert!(!dir.join("rec-c.wav").exists());
    assert!(!dir.join("rec-c.json").exists());
    assert_eq!(
        f.get("/api/recordings/rec-c").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get("/api/recordings/rec-c/audio").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.delete("/api/recordings/rec-c").await.0,
        StatusCode::NOT_FOUND
    );
    let (total, ids) = f.list("").await;
    assert_eq!(total, 4);
    assert!(!ids.contains(&"rec-c".to_string()));
    // Others untouched.
    assert!(dir.join("rec-b.wav").exists() && dir.join("rec-b.json").exists());
    // A refresh does not bring it back.
    f.index.refresh().unwrap();
    assert!(f.index.get("rec-c").is_none());
    assert_eq!(f.index.len(), 4);
}

// ---- index ----

#[test]
fn index_refresh_follows_the_folder() {
    let tmp = TempDir::new();
    let dir = tmp.recordings();
    let all = fixtures();
    for s in &all[..3] {
        s.write(&dir).unwrap();
    }
    // Things that are not sidecars are ignored.
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.join(".rec-x.json.tmp"), b"{").unwrap();
    std::fs::write(dir.join("broken.json"), b"{ not json").unwrap();
    let index = RecordingIndex::load(&dir).unwrap();
    assert_eq!(index.len(), 3);

    all[3].write(&dir).unwrap();
    all[4].write(&dir).unwrap();
    assert!(index.refresh().unwrap());
    assert_eq!(index.len(), 5);
    assert_eq!(
        index
            .list(&ListFilter {
                limit: 10,
                ..Default::default()
            })
            .items[0]
            .id,
        "rec-e"
    );

    // A rewrite (always by rename) is picked up.
    let mut changed = all[0].clone();
    changed.digits = "42".into();
    changed.write(&dir).unwrap();
    index.refresh().unwrap();
    assert_eq!(index.get("rec-a").unwrap().digits, "42");

    std::fs::remove_file(dir.join("rec-b.json")).unwrap();
    index.refresh().unwrap();
    assert!(index.get("rec-b").is_none());
    assert_eq!(index.len(), 4);
}

#[test]
fn index_upsert_and_remove_keep_order() {
    let index = RecordingIndex::from_sidecars("/nonexistent", fixtures());
    let page = |f: ListFilter| -> Vec<String> {
        index.list(&f).items.iter().map(|s| s.id.clone()).collect()
    };
    let all = ListFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        page(all.clone()),
        ["rec-e", "rec-d", "rec-c", "rec-b", "rec-a"]
    );
    let mut moved = fixtures()[0].clone();
    moved.started = "2024-05-03T10:00:00Z".into();
    index.upsert(moved);
    assert_eq!(
        page(all.clone()),
        ["rec-e", "rec-d", "rec-a", "rec-c", "rec-b"]
    );
    assert_eq!(index.len(), 5);
    assert!(index.remove("rec-c").is_some());
    assert!(index.remove("rec-c").is_none());
    assert_eq!(page(all.clone()), ["rec-e", "rec-d", "rec-a", "rec-b"]);
    let mut unsafe_id = fixtures()[0].clone();
    unsafe_id.id = "../x".into();
    index.upsert(unsafe_id);
    assert_eq!(index.len(), 4);
    // Unparseable start times sort last rather than vanish.
    let mut odd = fixtures()[0].clone();
    odd.id = "rec-odd".into();
    odd.started = "yesterday".into();
    index.upsert(odd);
    assert_eq!(page(all).last().map(String::as_str), Some("rec-odd"));
}

#[test]
fn refresh_is_rate_limited() {
    let tmp = TempDir::new();
    let index = RecordingIndex::from_sidecars(tmp.recordings(), Vec::new())
        .with_refresh_interval(Some(std::time::Duration::from_secs(60)));
    let t0 = std::time::Instant::now();
    assert!(index.refresh_due(t0));
    assert!(index.refresh_if_due(t0).unwrap());
    assert!(!index.refresh_due(t0 + std::time::Duration::from_secs(1)));
    assert!(!index
        .refresh_if_due(t0 + std::time::Duration::from_secs(1))
        .unwrap());
    assert!(index.refresh_due(t0 + std::time::Duration::from_secs(61)));
    let never =
        RecordingIndex::from_sidecars(tmp.recordings(), Vec::new()).with_refresh_interval(None);
    assert!(!never.refresh_due(t0));
}

#[tokio::test]
async fn new_recordings_on_disk_appear_in_the_api() {
    let f = fixture();
    let dir = f.tmp.recordings();
    let s = sidecar(
        "rec-new",
        "sip:n@x",
        "sip:m@x",
        None,
        "2025-01-01T00:00:00Z",
    );
    write_wav(&dir, "rec-new");
    s.write(&dir).unwrap();
    f.index.refresh().unwrap();
    let (total, ids) = f.list("").await;
    assert_eq!(total, 6);
    assert_eq!(ids[0], "rec-new");
    assert_eq!(
        f.get("/api/recordings/rec-new/audio").await.0,
        StatusCode::OK
    );
}

// ---- OpenAPI ----

#[tokio::test]
async fn openapi_document_is_served() {
    let f = fixture();
    let (status, headers, body) = f.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(header_str(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    assert!(v["paths"]["/api/recordings/{id}/audio"]["get"].is_object());
    assert!(v["components"]["schemas"]["RecordingList"].is_object());
    for path in ["/api/recordings/{id}/levels", "/api/stats", "/api/info"] {
        assert!(v["paths"][path]["get"].is_object(), "{path}");
    }
    assert!(v["paths"]["/api/admin/drain"]["post"].is_object());
    for schema in ["Levels", "Stats", "ServerInfo", "DrainStarted"] {
        assert!(v["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // `/api/info` is the one operation that needs no token.
    assert_eq!(
        v["paths"]["/api/info"]["get"]["security"],
        serde_json::json!([{}])
    );
}

#[tokio::test]
async fn audio_takes_the_token_in_the_query_for_audio_elements() {
    let f = fixture();
    let get = |uri: String| Request::get(uri).body(Body::empty()).unwrap();
    let (status, _, body) = f
        .send(get(format!("/api/recordings/rec-a/audio?token={TOKEN}")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], f.wav("rec-a"));
    let (status, _, _) = f
        .send(get("/api/recordings/rec-a/audio?token=wrong".into()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Metadata and listing take only the header.
    for uri in ["/api/recordings/rec-a", "/api/recordings"] {
        let (status, _, _) = f.send(get(format!("{uri}?token={TOKEN}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

// ---- server info ----

#[tokio::test]
async fn info_names_the_number_that_joins_a_room_when_webrtc_calls_are_on() {
    let tmp = TempDir::new();
    let index = Arc::new(RecordingIndex::load(tmp.recordings()).unwrap());
    let (sip, _sip_rx) = tokio::sync::mpsc::channel(1);
    let whip = crate::call::whip::WhipCalls::new(
        Arc::new(|_, _, _, _| {}),
        sip,
        [127, 0, 0, 1].into(),
        crate::call::whip::WhipLimits {
            per_source: 1,
            answer_timeout: std::time::Duration::from_secs(1),
        },
    );
    let app = router(ApiState::new(index, None).with_whip(whip, "conf-{room}"));
    let resp = app
        .oneshot(Request::get("/api/info").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["room_number"], "conf-{room}");
}

#[tokio::test]
async fn info_needs_no_token_and_tells_only_whether_one_is_needed() {
    async fn get(f: &Fixture) -> (StatusCode, HeaderMap, Bytes) {
        f.send(Request::get("/api/info").body(Body::empty()).unwrap())
            .await
    }
    let f = fixture();
    let (status, headers, body) = get(&f).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header_str(&headers, header::CONTENT_TYPE).starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "name": "switchboard",
            "version": env!("CARGO_PKG_VERSION"),
            "auth": "token",
            "draining": false,
            "instance": "switchboard",
            "calls": 0,
        })
    );
    // Nothing of the token, the folder or the data leaks.
    let text = std::str::from_utf8(&body).unwrap();
    for secret in [TOKEN, "recordings", "rec-a", "switchboard-api"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // A wrong token does not turn it into a 401 either.
    let (status, _, _) = f
        .send(
            Request::get("/api/info")
                .header(header::AUTHORIZATION, "Bearer wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let open = fixture_with_token(None);
    let (status, _, body) = get(&open).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["auth"], "none");
    // Only `/api/info` is open: its neighbours still need the token.
    for uri in ["/api/info/x", "/api/infos", "/api/stats"] {
        let (status, _, _) = f.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn drain_needs_the_token_and_then_shows_in_info() {
    let f = fixture();
    let post = |auth: Option<&str>| {
        let mut b = Request::post("/api/admin/drain");
        if let Some(t) = auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    for auth in [None, Some("wrong")] {
        let (status, _, _) = f.send(post(auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let (_, _, body) = f.get("/api/info").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["draining"], false, "a refused request drains nothing");
    for _ in 0..2 {
        let (status, _, body) = f.send(post(Some(TOKEN))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({ "draining": true, "calls": 0 }));
    }
    let (_, _, body) = f.get("/api/info").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["draining"], true);
    let (status, _, _) = f.get("/api/admin/drain").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

// ---- levels ----

/// Two seconds at 8 kHz: a 1 kHz tone at 0.8 of full scale, then the same at 0.1.
fn write_loud_then_quiet(dir: &Path, id: &str) -> Sidecar {
    let spec = MONO_8K;
    let mut w = hound::WavWriter::create(dir.join(format!("{id}.wav")), spec).unwrap();
    for i in 0..16_000 {
        let amp = if i < 8000 { 0.8 } else { 0.1 };
        let phase = 2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 8000.0;
        w.write_sample((amp * 32767.0 * phase.sin()).round() as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    let mut s = sidecar(id, "a", "b", None, "2024-06-01T00:00:00.000Z");
    s.duration_ms = 2000;
    s.write(dir).unwrap();
    s
}

#[tokio::test]
async fn levels_show_a_loud_half_then_a_quiet_half() {
    let f = fixture();
    f.index
        .upsert(write_loud_then_quiet(&f.tmp.recordings(), "rec-levels"));
    let (status, _, body) = f.get("/api/recordings/rec-levels/levels?n=20").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], "rec-levels");
    assert_eq!(v["duration_ms"], 2000);
    let peaks: Vec<f64> = v["peaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(peaks.len(), 20);
    for (i, p) in peaks.iter().enumerate() {
        let want = if i < 10 { 0.8 } else { 0.1 };
        assert!((p - want).abs() < 0.01, "slice {i}: {p} (want {want})");
    }
    // The default is 200 slices; a second request is answered the same (from the cache).
    let (_, _, first) = f.get("/api/recordings/rec-levels/levels").await;
    let (_, _, again) = f.get("/api/recordings/rec-levels/levels").await;
    assert_eq!(first, again);
    let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(v["peaks"].as_array().unwrap().len(), 200);
    // A rewritten file is read again, not answered from the cache.
    let spec = MONO_8K;
    let path = f.tmp.recordings().join("rec-levels.wav");
    std::fs::remove_file(&path).unwrap();
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..4000 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let (_, _, body) = f.get("/api/recordings/rec-levels/levels?n=4").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["peaks"], serde_json::json!([0.0, 0.0, 0.0, 0.0]));
    assert_eq!(v["duration_ms"], 500);
}

#[tokio::test]
async fn levels_edges_and_errors() {
    let f = fixture();
    for (n, status) in [
        ("1", StatusCode::OK),
        ("2000", StatusCode::OK),
        ("0", StatusCode::BAD_REQUEST),
        ("2001", StatusCode::BAD_REQUEST),
        ("x", StatusCode::BAD_REQUEST),
    ] {
        let (got, _, body) = f.get(&format!("/api/recordings/rec-a/levels?n={n}")).await;
        assert_eq!(got, status, "n={n}: {body:?}");
    }
    let (_, _, body) = f.get("/api/recordings/rec-a/levels?n=1").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["peaks"].as_array().unwrap().len(), 1);
    assert_eq!(v["duration_ms"], 1000);
    let (status, _, _) = f.get("/api/recordings/nope/levels").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = f.get("/api/recordings/..%2Fx/levels").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = f
        .send(
            Request::get("/api/recordings/rec-a/levels")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Not a WAV: an error, not a panic or a hang.
    std::fs::write(f.tmp.recordings().join("rec-b.wav"), b"not a wav").unwrap();
    let (status, _, _) = f.get("/api/recordings/rec-b/levels").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn trunks_are_listed_with_their_state_behind_the_token() {
    use crate::sip::register::RegistrationState;
    use crate::sip::trunks::Trunks;
    let tmp = TempDir::new();
    let index = Arc::new(RecordingIndex::load(tmp.recordings()).unwrap());
    let cfg = crate::Config::from_toml_str(
        "t",
        "[[trunks]]\nname = \"a\"\nproxy = \"sip:192.0.2.1\"\nregister = true\nmax_calls = 5\n\
         [[trunks]]\nname = \"b\"\nproxy = \"sip:192.0.2.2:5080;transport=tcp\"\n",
    )
    .unwrap();
    let trunks = Arc::new(Trunks::new(&cfg.trunks).unwrap());
    let now = std::time::Instant::now();
    trunks.set_registration(
        "a",
        RegistrationState::Failed {
            code: 403,
            retry_at: now + std::time::Duration::from_secs(30),
        },
    );
    let _slot = trunks.route("a", "123", now).unwrap();
    trunks.report("b", 503, Some(120), now);
    let app = router(ApiState::new(index.clone(), Some(TOKEN.into())).with_trunks(trunks));
    let f = Fixture {
        tmp,
        app,
        index,
        wavs: Vec::new(),
    };
    let (status, _, _) = f
        .send(Request::get("/api/trunks").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = f.get("/api/trunks").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (a, b) = (&v[0], &v[1]);
    assert_eq!(a["name"], "a");
    assert_eq!(a["registration"]["state"], "failed");
    assert_eq!(a["registration"]["code"], 403);
    assert!(a["registration"]["retry_in_secs"].as_u64().unwrap() <= 30);
    assert_eq!(
        (a["calls"].as_u64(), a["max_calls"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(a["up"], true);
    assert_eq!(b["registration"]["state"], "off");
    assert_eq!(b["up"], false);
    assert!(b["down_for_secs"].as_u64().unwrap() <= 120);
    assert_eq!(b["results"]["5xx"], 1);
    assert_eq!(b["domain"], "192.0.2.2:5080");
    let (_, _, doc) = f.get("/api/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"]["/api/trunks"]["get"].is_object());
    for schema in ["TrunkStatus", "RegistrationStatus", "TrunkResults"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
