//! What an application stream costs per call, on top of the call's leg.
//!
//! Criterion first, on the per-frame hot paths: one `StreamTap` tick as a leg runs it
//! (bidirectional, the application's audio queued and mixed back), and the socket task's
//! encoding of one frame (Twilio `media` JSON with base64 µ-law; L16 binary) and decoding of
//! the application's.
//!
//! Then the whole system, as switchboard runs it: 200 socket tasks on a two-worker tokio
//! runtime and one media thread ticking 200 taps every 20 ms on absolute deadlines, talking to
//! an echoing WebSocket application in a separate process (this binary re-run with
//! `SB_STREAM_APP=1`) so that only our side's CPU is counted (`getrusage`). It asserts the
//! streams really are bidirectional (the 1 kHz tone fed in comes back mixed into what the
//! caller hears) and prints CPU per stream, frames sent and dropped, marks echoed and the
//! media thread's median tick.
//!
//! `SB_STREAMS` and `SB_STREAM_SECS` change the size, `SB_STREAM_TRACK=both` runs Twilio
//! streams of both tracks instead; under `cargo test --benches` it runs 10 streams for 2 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use futures_util::{SinkExt, StreamExt};
use switchboard::media::frame::{samples_at, Frame, FRAME};
use switchboard::media::leg::AudioTap;
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::rtp::types::ClockRate;
use switchboard::stream::client::{loopback, Encoder};
use switchboard::stream::{
    spawn_watched, AppCommand, AudioFrame, EndReason, Format, Outbound, StartInfo, StreamConfig,
    StreamTap, TapConfig, Track,
};
use tokio_tungstenite::tungstenite::Message;

/// The env var that makes this binary the echoing application.
const APP_ENV: &str = "SB_STREAM_APP";
/// The tone the caller says.
const TONE_HZ: f64 = 1000.0;
/// The application sends a mark after this many echoed frames (once a second).
const MARK_EVERY: u64 = 50;

/// One stream setting measured: its wire format and the rate of the leg it taps.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    format: Format,
    leg_rate: ClockRate,
}

const CASES: [Case; 2] = [
    Case {
        name: "twilio 8k from 8k leg",
        format: Format::Twilio,
        leg_rate: ClockRate::HZ_8000,
    },
    Case {
        name: "l16 16k from 48k leg",
        format: Format::L16 { rate: 16000 },
        leg_rate: ClockRate::HZ_48000,
    },
];

impl Case {
    fn stream_rate(self) -> ClockRate {
        ClockRate::new(self.format.rate()).unwrap()
    }

    fn tap_config(self, track: Track) -> TapConfig {
        TapConfig {
            track,
            bidirectional: true,
            rate: self.stream_rate(),
        }
    }
}

/// 20 ms of the caller's tone at `rate`: a whole number of periods, so every frame is the same.
fn tone(rate: ClockRate) -> Vec<i16> {
    (0..samples_at(rate))
        .map(|i| {
            let t = i as f64 / f64::from(rate.hz());
            (8000.0 * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()) as i16
        })
        .collect()
}

fn info(tracks: Track) -> StartInfo {
    StartInfo {
        call_id: "bench-call".into(),
        from: "alice".into(),
        to: "bot".into(),
        tracks,
        parameters: BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Criterion: the per-frame hot paths.

/// One tap's tick with the socket task's part played inline: the application's frame for
/// this tick arrives (as the echo sends one per tick), the tap mixes it in and hands the
/// caller's frame over, and the task's end takes it.
fn tap_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream tap tick");
    for case in CASES {
        let (handle, far) = loopback(50, 64);
        let (frames, commands) = (far.out, far.app);
        let mut tap = StreamTap::new(1, handle, case.tap_config(Track::Inbound));
        let caller = Frame::from_samples(case.leg_rate, &tone(case.leg_rate));
        let app = tone(case.stream_rate());
        // 200 ms queued ahead, as a jittery application keeps it.
        for _ in 0..10 {
            commands.try_send(AppCommand::Audio(app.clone())).unwrap();
        }
        let mut out = Frame::silence(case.leg_rate);
        let mut tick = |pcm: Vec<i16>, out: &mut Frame| {
            let _ = commands.try_send(AppCommand::Audio(pcm));
            out.clear(case.leg_rate);
            tap.tick(&caller, out);
            black_box(frames.try_recv().ok());
        };
        g.bench_function(case.name, |b| {
            b.iter_batched(
                || app.clone(),
                |pcm| tick(pcm, &mut out),
                BatchSize::SmallInput,
            )
        });
        // Past the resampler's start-up, however few runs the benchmark made.
        for _ in 0..5 {
            tick(app.clone(), &mut out);
        }
        assert!(tap.queued_samples() > 0, "{}: the queue ran dry", case.name);
        assert!(
            rms_dbfs(&out) > -30.0
                && tone_share(&out, TONE_HZ, f64::from(case.leg_rate.hz())) > 0.8,
            "{}: the application's tone is not in what the caller hears",
            case.name
        );
        assert_eq!(tap.handle().stats().dropped.load(Relaxed), 0);
    }
    g.finish();
}

/// The socket task's work on one frame before the WebSocket layer: the frame as the tap
/// hands it over, encoded into its message.
fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream encode frame");
    for case in CASES {
        let config = StreamConfig::new("ws://127.0.0.1:9/", case.format, info(Track::Inbound));
        let mut encoder = Encoder::new(&config);
        let pcm = tone(case.stream_rate());
        let mut batch = Vec::with_capacity(2);
        let mut at = 0u64;
        g.bench_function(case.name, |b| {
            b.iter(|| {
                let frame = AudioFrame::new(at, Some(&pcm), None);
                at += 20;
                encoder.encode(Outbound::Audio(frame), Track::Inbound, &mut batch);
                black_box(batch.drain(..).map(|m| m.len()).sum::<usize>())
            })
        });
        encoder.encode(
            Outbound::Audio(AudioFrame::new(0, Some(&pcm), None)),
            Track::Inbound,
            &mut batch,
        );
        let want = match case.format {
            Format::Twilio => 160,
            Format::L16 { .. } => 640,
        };
        assert_eq!(batch.len(), 1);
        assert!(batch[0].len() >= want, "{}: {:?}", case.name, batch[0]);
    }
    g.finish();
}

/// The socket task's work on one message from the application before it is queued for the
/// tap: the echo of one frame decoded to PCM.
fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream decode frame");
    let pcm = tone(ClockRate::HZ_8000);
    let mut encoder = switchboard::stream::twilio::Encoder::new("MZbench", "bench-call");
    let sent = encoder.media(false, 0, &pcm);
    let v: serde_json::Value = serde_json::from_str(&sent).unwrap();
    // What an application sends back: the same payload, no track, chunk or timestamp.
    let echo = serde_json::json!({"event": "media", "streamSid": "MZbench",
        "media": {"payload": v["media"]["payload"]}})
    .to_string();
    g.bench_function("twilio media", |b| {
        b.iter(|| switchboard::stream::twilio::parse_app(black_box(&echo)))
    });
    let AppCommand::Audio(back) = switchboard::stream::twilio::parse_app(&echo).unwrap() else {
        panic!("not audio");
    };
    assert_eq!(back.len(), 160);
    assert!(tone_share(&back, TONE_HZ, 8000.0) > 0.9);
    let mut bytes = Vec::new();
    switchboard::stream::l16::encode_pcm(&tone(ClockRate::HZ_16000), None, &mut bytes);
    g.bench_function("l16 16k binary", |b| {
        b.iter(|| switchboard::stream::l16::decode_pcm(black_box(&bytes)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the medians settle within a second, and the whole binary stays near a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = tap_tick, encode, decode
}

// ---------------------------------------------------------------------------------------
// The echoing application, in its own process.

static MEDIA_ECHOED: AtomicU64 = AtomicU64::new(0);
static MARKS_SENT: AtomicU64 = AtomicU64::new(0);
static MARKS_BACK: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);

/// Listens on 127.0.0.1, prints `port N`, echoes every stream's audio with a mark once a
/// second; at end of stdin waits for the streams to close and prints its counters.
fn app_main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("port {}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        let (eof_tx, mut eof_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = eof_tx.send(());
        });
        loop {
            tokio::select! {
                a = listener.accept() => {
                    let Ok((tcp, _)) = a else { continue };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(echo(tcp));
                }
                _ = &mut eof_rx => break,
            }
        }
        for _ in 0..300 {
            if OPEN.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    println!(
        "media_echoed {} marks_sent {} marks_back {} open {}",
        MEDIA_ECHOED.load(Relaxed),
        MARKS_SENT.load(Relaxed),
        MARKS_BACK.load(Relaxed),
        OPEN.load(Relaxed)
    );
}

/// One stream's application: audio straight back, a mark after every [`MARK_EVERY`] frames.
async fn echo(tcp: tokio::net::TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    OPEN.fetch_add(1, Relaxed);
    let mut frames = 0u64;
    let mut sid = serde_json::Value::Null;
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
                    continue;
                };
                match v["event"].as_str() {
                    Some("start") => {
                        sid = v["streamSid"].clone();
                        continue;
                    }
                    // Only what the caller said goes back, as a bot's reply would.
                    Some("media") if v["media"]["track"] == "outbound" => continue,
                    Some("media") => Message::text(
                        serde_json::json!({"event": "media", "streamSid": sid,
                            "media": {"payload": v["media"]["payload"]}})
                        .to_string(),
                    ),
                    Some("mark") => {
                        MARKS_BACK.fetch_add(1, Relaxed);
                        continue;
                    }
                    _ => continue,
                }
            }
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        let twilio = reply.is_text();
        if ws.send(reply).await.is_err() {
            break;
        }
        MEDIA_ECHOED.fetch_add(1, Relaxed);
        frames += 1;
        if frames.is_multiple_of(MARK_EVERY) {
            let name = format!("m{frames}");
            let mark = if twilio {
                serde_json::json!({"event": "mark", "streamSid": sid, "mark": {"name": name}})
            } else {
                serde_json::json!({"event": "mark", "name": name})
            };
            if ws.send(Message::text(mark.to_string())).await.is_err() {
                break;
            }
            MARKS_SENT.fetch_add(1, Relaxed);
        }
    }
    OPEN.fetch_sub(1, Relaxed);
}

// ---------------------------------------------------------------------------------------
// The whole system.

/// CPU time (user and system) of the process or of the calling thread.
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    d(u.ru_utime) + d(u.ru_stime)
}

/// What the media thread saw over the measured window.
struct Window {
    wall: Duration,
    process_cpu: Duration,
    thread_cpu: Duration,
    tick_times: Vec<Duration>,
    late: usize,
    ticks: u64,
    /// Per tap: measured ticks whose mixed frame held the application's audio.
    heard: Vec<u64>,
    /// Spot checks of the mixed frame: (made, with the tone).
    tone_checks: (u64, u64),
}

/// Ticks every tap each 20 ms on absolute deadlines: the caller's tone in, the mixed frame
/// out; the measured window follows `warm` ticks.
fn media_thread(taps: &mut [StreamTap], case: Case, warm: u64, measured: u64) -> Window {
    let caller = Frame::from_samples(case.leg_rate, &tone(case.leg_rate));
    let hz = f64::from(case.leg_rate.hz());
    let mut out = Frame::silence(case.leg_rate);
    let mut heard = vec![0u64; taps.len()];
    let mut tick_times = Vec::with_capacity(measured as usize);
    let mut tone_checks = (0, 0);
    let mut late = 0;
    let t0 = Instant::now() + FRAME;
    let (mut wall0, mut cpu0, mut thread0) = (t0, Duration::ZERO, Duration::ZERO);
    for k in 0..warm + measured {
        let due = t0 + FRAME * k as u32;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None if k > warm => late += 1,
            None => {}
        }
        if k == warm {
            wall0 = Instant::now();
            cpu0 = cpu(libc::RUSAGE_SELF);
            thread0 = cpu(libc::RUSAGE_THREAD);
        }
        let counting = k >= warm;
        let start = Instant::now();
        for (i, tap) in taps.iter_mut().enumerate() {
            out.clear(case.leg_rate);
            tap.tick(&caller, &mut out);
            // Cheap: the tone's first samples already pass the threshold.
            if counting && out.iter().any(|&s| s.unsigned_abs() > 1000) {
                heard[i] += 1;
                if k % 50 == 0 {
                    tone_checks.0 += 1;
                    if tone_share(&out, TONE_HZ, hz) > 0.5 {
                        tone_checks.1 += 1;
                    }
                }
            }
        }
        if counting {
            tick_times.push(start.elapsed());
        }
    }
    // The window ends where the next tick would be due: `measured` whole ticks.
    let end = t0 + FRAME * (warm + measured) as u32;
    if let Some(wait) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    Window {
        wall: wall0.elapsed(),
        process_cpu: cpu(libc::RUSAGE_SELF) - cpu0,
        thread_cpu: cpu(libc::RUSAGE_THREAD) - thread0,
        tick_times,
        late,
        ticks: measured,
        heard,
        tone_checks,
    }
}

/// Starts the echoing application and reads its port.
fn start_app() -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(APP_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
    (child, port)
}

/// Ends the application and returns its counters (media echoed, marks sent, marks back).
fn stop_app(mut child: Child) -> [u64; 3] {
    drop(child.stdin.take());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> u64 {
        let at = words.iter().position(|w| *w == name).unwrap();
        words[at + 1].parse().unwrap()
    };
    assert_eq!(field("open"), 0, "streams left open: {line}");
    [
        field("media_echoed"),
        field("marks_sent"),
        field("marks_back"),
    ]
}

/// `n` bidirectional streams of `case` carrying `track` for `warm` + `measured` ticks.
fn system(case: Case, track: Track, n: usize, warm: u64, measured: u64) {
    let (child, port) = start_app();
    let url = format!("ws://127.0.0.1:{port}/media");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut taps, tasks) = {
        let _in_rt = rt.enter();
        let mut taps = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        let mut ups = Vec::with_capacity(n);
        for i in 0..n {
            let mut config = StreamConfig::new(&url, case.format, info(track));
            config.stream_id = format!("MZbench{i}");
            let (handle, task, up) = spawn_watched(config);
            taps.push(StreamTap::new(i as u64, handle, case.tap_config(track)));
            tasks.push(task);
            ups.push(up);
        }
        rt.block_on(async {
            for up in ups {
                tokio::time::timeout(Duration::from_secs(10), up)
                    .await
                    .expect("a stream did not connect in 10 s")
                    .expect("a stream ended before it was up");
            }
        });
        (taps, tasks)
    };

    let w = std::thread::scope(|s| {
        s.spawn(|| media_thread(&mut taps, case, warm, measured))
            .join()
            .unwrap()
    });

    let frames = (warm + measured) * n as u64;
    let dropped: u64 = taps
        .iter()
        .map(|t| t.handle().stats().dropped.load(Relaxed))
        .sum();
    let stats: Vec<_> = taps.iter().map(|t| t.handle().shared_stats()).collect();
    drop(taps);
    let reasons = rt.block_on(async {
        let mut reasons = Vec::with_capacity(n);
        for task in tasks {
            reasons.push(
                tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .expect("a stream did not end in 5 s")
                    .unwrap(),
            );
        }
        reasons
    });
    drop(rt);
    let sent: u64 = stats.iter().map(|s| s.sent.load(Relaxed)).sum();
    let malformed: u64 = stats.iter().map(|s| s.malformed.load(Relaxed)).sum();
    let [echoed, marks_sent, marks_back] = stop_app(child);

    let mut times = w.tick_times.clone();
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    let heard_min = w.heard.iter().copied().min().unwrap_or(0);
    let heard_all: u64 = w.heard.iter().sum();
    let per_tick_us = w.process_cpu.as_secs_f64() * 1e6 / (n as f64 * w.ticks as f64);
    let core = |d: Duration| 100.0 * d.as_secs_f64() / w.wall.as_secs_f64();
    println!(
        "{n} streams, {}, {} track, {:.1} s measured: CPU {:.1}% of a core in all, per stream {per_tick_us:.1} µs \
         per 20 ms tick = {:.3}% of a core (media thread {:.1}%, socket tasks and the rest {:.1}%); \
         whole run: frames handed over {frames}, dropped {dropped}; messages sent {sent}, echoed \
         by the application {echoed}, malformed {malformed}; marks sent {marks_sent}, echoed \
         {marks_back}; \
         media thread tick for all {n} taps: median {median:?}, p99 {p99:?}, max {:?}, late {}; \
         application audio heard in {:.2}% of tap ticks (worst tap {:.2}%), tone checks {}/{}",
        case.name,
        track.as_str(),
        w.wall.as_secs_f64(),
        core(w.process_cpu),
        core(w.process_cpu) / n as f64,
        core(w.thread_cpu),
        core(w.process_cpu.saturating_sub(w.thread_cpu)),
        times[times.len() - 1],
        w.late,
        100.0 * heard_all as f64 / (w.ticks * n as u64) as f64,
        100.0 * heard_min as f64 / w.ticks as f64,
        w.tone_checks.1,
        w.tone_checks.0,
    );
    assert!(
        reasons.iter().all(|r| *r == EndReason::Hangup),
        "{reasons:?}"
    );
    assert_eq!(malformed, 0);
    // Bidirectional: every stream's tone came back into what its caller hears.
    assert!(
        heard_min * 10 >= w.ticks * 9,
        "a stream heard its application in only {heard_min} of {} ticks",
        w.ticks
    );
    assert!(w.tone_checks.0 > 0 && w.tone_checks.1 * 10 >= w.tone_checks.0 * 9);
    assert!(
        dropped * 100 <= frames,
        "{dropped} of {frames} frames dropped"
    );
    assert!(echoed > 0 && marks_sent > 0);
    // Marks still in flight when the streams stop are not echoed: at most one per stream.
    assert!(marks_back + n as u64 >= marks_sent && marks_back <= marks_sent);
}

/// The size of the whole-system run: streams, warm-up ticks, measured ticks.
fn system_size(smoke: bool) -> (usize, u64, u64) {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (n, secs) = if smoke { (10, 2) } else { (200, 10) };
    let n = env("SB_STREAMS").map_or(n, |v| v as usize);
    let secs = env("SB_STREAM_SECS").unwrap_or(secs);
    (n, 100, secs * 50)
}

fn main() {
    if std::env::var_os(APP_ENV).is_some() {
        app_main();
        return;
    }
    benches();
    let args: Vec<String> = std::env::args().collect();
    let filtered = args
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"system".contains(a.as_str()));
    if !filtered {
        // `cargo test --benches` runs without `--bench`: a smoke size, with every assert.
        let smoke = !args.iter().any(|a| a == "--bench");
        let (n, warm, measured) = system_size(smoke);
        // SB_STREAM_TRACK=both: the Twilio streams carry both tracks (two messages a tick).
        if std::env::var("SB_STREAM_TRACK").is_ok_and(|t| t == "both") {
            system(CASES[0], Track::Both, n, warm, measured);
        } else {
            for case in CASES {
                system(case, Track::Inbound, n, warm, measured);
            }
        }
    }
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
