//! `GET /api/recordings` through the whole router (auth, query parsing, index, JSON) with
//! 100,000 recordings in the index, built in memory; and the event stream: events published
//! on the bus and delivered as Server-Sent Events over loopback TCP to 1 and 4 clients, as a
//! criterion burst (`sse/*`) and, under `cargo bench`, a paced run at 1,000 calls per second
//! (5 events per call) reporting delivery latency and CPU per event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use criterion::{black_box, criterion_group, Criterion, Throughput};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchboard::api::{router, ApiState, ListFilter, RecordingIndex};
use switchboard::events::{Event, EventBus};
use switchboard::media::record::{Format, RecordMode, Sidecar, SidecarState, StopReason};
use tokio::sync::Notify;
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

// ---- event stream ----

/// Events per call: started, answered, dtmf, ended, recording finished.
const EVENTS_PER_CALL: usize = 5;
/// Calls per criterion iteration.
const BURST_CALLS: usize = 1000;

fn publish_call(bus: &EventBus, n: usize) {
    let call_id = format!("{n:016x}@bench");
    bus.publish(Event::CallStarted {
        call_id: call_id.clone(),
        from: format!("<sip:caller{}@example.com>;tag=a{n}", n % 97),
        to: "ivr".into(),
    });
    bus.publish(Event::CallAnswered {
        call_id: call_id.clone(),
    });
    bus.publish(Event::Dtmf {
        call_id: call_id.clone(),
        digit: "5".into(),
        method: "rfc4733".into(),
    });
    bus.publish(Event::CallEnded {
        call_id,
        reason: "caller_bye".into(),
        code: None,
    });
    bus.publish(Event::RecordingFinished {
        id: format!("rec-{n:08}"),
        duration_ms: 30_000,
        reason: "hangup".into(),
        discarded: false,
    });
}

/// One SSE client: counts frames, and records each event's delivery latency when
/// `published` holds its publishing time.
struct SseClient {
    received: Arc<AtomicU64>,
    lagged: Arc<AtomicU64>,
    progress: Arc<Notify>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

async fn connect_sse(addr: SocketAddr, t0: Instant, published: Arc<Vec<AtomicU64>>) -> SseClient {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::get(format!("http://{addr}/api/events"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let c = SseClient {
        received: Arc::new(AtomicU64::new(0)),
        lagged: Arc::new(AtomicU64::new(0)),
        progress: Arc::new(Notify::new()),
        latencies_us: Arc::new(Mutex::new(Vec::new())),
    };
    let (received, lagged, progress, lat) = (
        c.received.clone(),
        c.lagged.clone(),
        c.progress.clone(),
        c.latencies_us.clone(),
    );
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.into_data().unwrap().starts_with(b": connected"));
    tokio::spawn(async move {
        let mut carry = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let now = t0.elapsed().as_nanos() as u64;
            carry.push_str(&String::from_utf8_lossy(&data));
            let mut n = 0;
            let cut = carry.rfind('\n').map_or(0, |i| i + 1);
            for line in carry[..cut].lines() {
                if let Some(id) = line.strip_prefix("id:") {
                    n += 1;
                    let seq: usize = id.trim().parse().unwrap_or(0);
                    let at = published.get(seq).map_or(0, |p| p.load(Relaxed));
                    if at > 0 {
                        lat.lock().unwrap().push(now.saturating_sub(at) / 1000);
                    }
                } else if line == "event: lagged" {
                    lagged.fetch_add(1, Relaxed);
                }
            }
            carry.drain(..cut);
            received.fetch_add(n, Relaxed);
            progress.notify_one();
        }
    });
    c
}

async fn wait_all(clients: &[SseClient], target: u64) {
    for c in clients {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while c.received.load(Relaxed) < target {
            tokio::time::timeout_at(deadline, c.progress.notified())
                .await
                .unwrap_or_else(|_| panic!("only {} of {target} events", c.received.load(Relaxed)));
        }
    }
}

struct SseRig {
    rt: tokio::runtime::Runtime,
    bus: EventBus,
    addr: SocketAddr,
    t0: Instant,
    published: Arc<Vec<AtomicU64>>,
}

fn sse_rig(max_events: usize) -> SseRig {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Room for a whole burst, so the burst measures delivery, not lag.
    let bus = EventBus::new(16 * 1024);
    let index = Arc::new(
        RecordingIndex::from_sidecars(std::env::temp_dir().join("switchboard-sse-bench"), vec![])
            .with_refresh_interval(None),
    );
    let app = router(ApiState::new(index, Some(TOKEN.into())).with_events(bus.clone()));
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    });
    SseRig {
        rt,
        bus,
        addr,
        t0: Instant::now(),
        published: Arc::new((0..=max_events).map(|_| AtomicU64::new(0)).collect()),
    }
}

fn bench_sse(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements((BURST_CALLS * EVENTS_PER_CALL) as u64));
    group.sample_size(20);
    for n_clients in [1usize, 4] {
        let rig = sse_rig(0);
        let clients: Vec<SseClient> = rig.rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..n_clients {
                v.push(connect_sse(rig.addr, rig.t0, rig.published.clone()).await);
            }
            v
        });
        let mut sent = 0u64;
        let mut call = 0usize;
        group.bench_function(format!("burst_1000_calls_{n_clients}_clients"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BURST_CALLS {
                        publish_call(&rig.bus, call);
                        call += 1;
                    }
                    sent += (BURST_CALLS * EVENTS_PER_CALL) as u64;
                    rig.rt.block_on(wait_all(&clients, sent));
                }
                start.elapsed()
            })
        });
        assert!(clients.iter().all(|c| c.lagged.load(Relaxed) == 0));
    }
    group.finish();
}

/// CPU time of the whole process (server, clients and publisher), in microseconds.
fn cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}

/// 1,000 calls per second (5,000 events/s) for 5 s, paced every 10 ms, to 1 and 4 clients.
fn sse_sustained() {
    const SECONDS: usize = 5;
    const CALLS_PER_SEC: usize = 1000;
    const TICK_MS: usize = 10;
    let total_events = SECONDS * CALLS_PER_SEC * EVENTS_PER_CALL;
    for n_clients in [1usize, 4] {
        let rig = sse_rig(total_events);
        let clients: Vec<SseClient> = rig.rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..n_clients {
                v.push(connect_sse(rig.addr, rig.t0, rig.published.clone()).await);
            }
            v
        });
        let cpu0 = cpu_us();
        let wall0 = Instant::now();
        let calls_per_tick = CALLS_PER_SEC * TICK_MS / 1000;
        let mut call = 0;
        let mut seq = 0;
        for tick in 0..SECONDS * 1000 / TICK_MS {
            // Absolute deadlines, so pacing does not drift.
            let due = wall0 + Duration::from_millis((tick * TICK_MS) as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for _ in 0..calls_per_tick {
                for k in 1..=EVENTS_PER_CALL {
                    rig.published[seq + k].store(rig.t0.elapsed().as_nanos() as u64, Relaxed);
                }
                seq += EVENTS_PER_CALL;
                publish_call(&rig.bus, call);
                call += 1;
            }
        }
        rig.rt.block_on(wait_all(&clients, total_events as u64));
        let wall = wall0.elapsed();
        let cpu = cpu_us() - cpu0;
        let mut lat: Vec<u64> = clients
            .iter()
            .flat_map(|c| c.latencies_us.lock().unwrap().clone())
            .collect();
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        let lagged: u64 = clients.iter().map(|c| c.lagged.load(Relaxed)).sum();
        eprintln!(
            "sse sustained: {CALLS_PER_SEC} calls/s x {EVENTS_PER_CALL} events for {SECONDS} s to {n_clients} client(s): \
             {total_events} events in {:.2} s, CPU {:.1}% of a core, {:.2} us CPU per event published \
             ({:.2} us per event delivered), latency p50 {} us, p99 {} us, max {} us, lagged {lagged}",
            wall.as_secs_f64(),
            cpu as f64 / wall.as_secs_f64() / 1e4,
            cpu as f64 / total_events as f64,
            cpu as f64 / (total_events * n_clients) as f64,
            pct(0.5),
            pct(0.99),
            lat[lat.len() - 1],
        );
    }
}

criterion_group!(benches, bench, bench_sse);

fn main() {
    benches();
    // Only under `cargo bench` (not `cargo test --benches`), and unless filtered away.
    let args: Vec<String> = std::env::args().collect();
    let filtered = args
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"sse_sustained".contains(a.as_str()));
    if args.iter().any(|a| a == "--bench") && !filtered {
        sse_sustained();
    }
    Criterion::default().configure_from_args().final_summary();
}
