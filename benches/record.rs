//! Per-frame cost of recording on the media tick: the policy's `push_frame` and the
//! handle's non-blocking `push` onto the writer queue.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::media::record::{
    RecordMode, RecordOutcome, RecordPolicy, RecordSession, RecorderFactory, RecorderHandle,
    RecordingMeta, RecordingWriter, StopReason, WriterConfig,
};

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn policy_bench(c: &mut Criterion) {
    let pcm = speech();
    let a = &pcm[8000..8160];
    let b = &pcm[16000..16160];
    for (name, mode) in [
        ("inbound", RecordMode::Inbound),
        ("mixed_mono", RecordMode::MixedMono),
        ("stereo", RecordMode::Stereo),
    ] {
        let mut s = RecordSession::new(RecordPolicy {
            mode,
            silence_timeout: Some(Duration::from_secs(1_000_000)),
            ..RecordPolicy::default()
        });
        c.bench_function(&format!("record/policy_push_frame_{name}_160"), |bench| {
            bench.iter(|| {
                black_box(s.push_frame(black_box(a), black_box(b)));
                black_box(s.frame());
            })
        });
    }
}

fn start(factory: &RecorderFactory, mode: RecordMode) -> RecorderHandle {
    factory
        .start(RecordingMeta {
            call_id: "bench".into(),
            from: "a".into(),
            to: "b".into(),
            room: None,
            mode,
            rate: 8000,
        })
        .expect("writer running")
}

/// Ends a recording so that the writer deletes its file, keeping the bench's disk use flat.
fn discard(h: RecorderHandle) {
    let mut o = RecordOutcome::new(StopReason::Requested);
    o.min_frames = u64::MAX;
    h.finish(o);
}

fn push_bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-record-{}", std::process::id()));
    const BATCH: u64 = 1024;
    let config = WriterConfig {
        queue_chunks: 2 * BATCH as usize,
        ..WriterConfig::default()
    };
    let (factory, thread) = RecordingWriter::spawn_with(&dir, config).expect("spawn writer");
    let pcm = speech();

    for (name, mode, len) in [
        ("mono_160", RecordMode::Inbound, 160),
        ("stereo_320", RecordMode::Stereo, 320),
    ] {
        let frame = &pcm[8000..8000 + len];
        // Timed in batches that fit the queue; the writer drains it between batches, so
        // this is the cost with room in the queue, as in normal operation.
        c.bench_function(&format!("record/handle_push_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut h = start(&factory, mode);
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = BATCH.min(iters - done);
                    let t = Instant::now();
                    for _ in 0..n {
                        black_box(h.push(black_box(frame)));
                    }
                    total += t.elapsed();
                    done += n;
                    factory.sync().expect("writer running");
                    if done % (64 * BATCH) == 0 {
                        discard(h);
                        h = start(&factory, mode);
                    }
                }
                discard(h);
                total
            })
        });
    }

    // With the queue full every push is a failed try_send plus counters.
    let full = {
        let config = WriterConfig {
            queue_chunks: 1,
            ..WriterConfig::default()
        };
        let (f, t) = RecordingWriter::spawn_with(&dir, config).expect("spawn writer");
        (f, t)
    };
    let frame = &pcm[8000..8160];
    let h = start(&full.0, RecordMode::Inbound);
    c.bench_function("record/handle_push_mono_160_queue_full", |b| {
        b.iter(|| black_box(h.push(black_box(frame))))
    });
    discard(h);
    drop(full.0);
    let _ = full.1.join();

    drop(factory);
    let _ = thread.join();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, policy_bench, push_bench);
criterion_main!(benches);
