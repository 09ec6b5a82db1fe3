//! `GET /api/recordings` through the whole router (auth, query parsing, index, JSON) with
//! 100,000 recordings in the index, built in memory.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::api::{router, ApiState, ListFilter, RecordingIndex};
use switchboard::media::record::{Format, RecordMode, Sidecar, SidecarState, StopReason};
use tower::ServiceExt;

const RECORDINGS: usize = 100_000;
const TOKEN: &str = "bench-token";

fn sidecars(n: usize) -> Vec<Sidecar> {
    let callers = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let rooms = ["sales", "support", "board"];
    (0..n)
        .map(|i| {
            // One recording a minute, back from 2024-12-31.
            let t = 1_735_603_200i64 - 60 * i as i64;
            let (days, secs) = (t / 86_400, t % 86_400);
            let (y, m, d) = civil_from_days(days);
            let started = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            let caller = callers[i % callers.len()];
            Sidecar {
                id: format!("rec-{i:08}"),
                call_id: format!("{i:016x}@bench"),
                from: format!("sip:{caller}{}@example.com", i % 97),
                to: format!("sip:ivr{}@pbx.example.com", i % 5),
                room: (i % 4 == 0).then(|| rooms[i % rooms.len()].to_string()),
                started,
                duration_ms: 30_000 + (i as u64 % 600) * 100,
                format: Format {
                    rate: 8000,
                    channels: 1,
                    bits: 16,
                },
                mode: RecordMode::MixedMono,
                digits: "12#".into(),
                stop_reason: Some(StopReason::Hangup),
                state: SidecarState::Complete,
                file: format!("rec-{i:08}.wav"),
            }
        })
        .collect()
}

/// Inverse of days-since-epoch (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

async fn get(app: &Router, uri: &str) -> usize {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_or(0, |b| b.len())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    // No folder behind it: the index is what is measured, never a rescan.
    let index = RecordingIndex::from_sidecars(
        std::env::temp_dir().join("switchboard-api-bench-none"),
        sidecars(RECORDINGS),
    )
    .with_refresh_interval(None);
    assert_eq!(index.len(), RECORDINGS);
    let index = Arc::new(index);
    let app = router(ApiState::new(index.clone(), Some(TOKEN.into())));

    let queries = [
        ("list_limit50", "/api/recordings?limit=50"),
        (
            "list_limit50_offset90000",
            "/api/recordings?limit=50&offset=90000",
        ),
        (
            "list_caller_substring",
            "/api/recordings?caller=carol4&limit=50",
        ),
        (
            "list_caller_callee_room",
            "/api/recordings?caller=alice&callee=ivr0&room=sales&limit=50",
        ),
        (
            "list_date_window",
            "/api/recordings?from=2024-12-01&to=2024-12-15&limit=50",
        ),
        ("list_limit1000", "/api/recordings?limit=1000"),
    ];
    let mut group = c.benchmark_group("api");
    for (name, uri) in queries {
        let bytes = rt.block_on(get(&app, uri));
        eprintln!("{name}: {bytes} bytes of JSON");
        group.bench_function(name, |b| b.iter(|| rt.block_on(get(&app, black_box(uri)))));
    }
    // The index alone, without HTTP and JSON.
    group.bench_function("index_caller_substring", |b| {
        let filter = ListFilter {
            caller: Some("carol4".into()),
            limit: 50,
            ..Default::default()
        };
        b.iter(|| black_box(index.list(black_box(&filter)).total))
    });
    group.bench_function("index_upsert_newest", |b| {
        let mut s = sidecars(1).remove(0);
        s.id = "rec-new".into();
        s.started = "2025-01-01T00:00:00.000Z".into();
        b.iter(|| index.upsert(black_box(s.clone())))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
