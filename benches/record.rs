//! Per-frame cost of recording on the media tick: the policy's `push_frame`, the
//! handle's non-blocking `push` onto the writer queue, and a conference room recorder's
//! `push_tick` (mix plus, with multitrack, one track per member).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::conference::recording::{RoomRecordOptions, RoomRecorder};
use switchboard::conference::{MemberId, MemberKind, Mixer, VadConfig};
use switchboard::media::frame::{Frame, NARROW_RATE};
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
            rate: switchboard::rtp::types::ClockRate::HZ_8000,
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

const ROOM_MEMBERS: usize = 500;

/// A recorder of a room of [`ROOM_MEMBERS`] who have all joined.
fn room(factory: &RecorderFactory, multitrack: bool) -> (RoomRecorder, Vec<MemberId>) {
    let now = Instant::now();
    let mut mixer = Mixer::new(VadConfig::default()).expect("default VAD");
    let mut rec = RoomRecorder::start(factory, "bench", RoomRecordOptions { multitrack }, now)
        .expect("writer running");
    let members = (0..ROOM_MEMBERS)
        .map(|i| {
            let m = mixer
                .add_member(MemberKind::Speaker)
                .expect("room not full");
            rec.member_joined(
                now,
                m,
                &format!("call-{i}"),
                "sip:bench@example.com",
                NARROW_RATE,
            );
            m
        })
        .collect();
    (rec, members)
}

fn room_bench(c: &mut Criterion) {
    // tmpfs where there is one: multitrack writes 8 MB per second of audio.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("switchboard-bench-room-{}", std::process::id()));
    const BATCH: u64 = 16;
    // Ticks per recorder; its files are then deleted so the bench's disk use stays flat.
    const CYCLE: u64 = 256;
    let config = WriterConfig {
        queue_chunks: (ROOM_MEMBERS + 1) * BATCH as usize + 64,
        ..WriterConfig::default()
    };
    let (factory, thread) = RecordingWriter::spawn_with(&dir, config).expect("spawn writer");
    let pcm = speech();
    let mix = Frame::from_samples(NARROW_RATE, &pcm[8000..8160]);
    let frames: Vec<Frame> = (0..ROOM_MEMBERS)
        .map(|i| {
            let at = 8000 + (i * 160) % 40_000;
            Frame::from_samples(NARROW_RATE, &pcm[at..at + 160])
        })
        .collect();
    let clear = |dir: &std::path::Path| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    };

    let mut group = c.benchmark_group("record");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // `_with_writer`: the time until the writer thread has also written the batch, i.e.
    // what one tick costs the writer; the others time the media tick's side alone.
    for (multitrack, with_writer) in [(false, false), (true, false), (false, true), (true, true)] {
        let name = if multitrack { "on" } else { "off" };
        let suffix = if with_writer { "_with_writer" } else { "" };
        group.bench_function(
            format!("room_push_tick_{ROOM_MEMBERS}_members_multitrack_{name}{suffix}"),
            |b| {
                b.iter_custom(|iters| {
                    let (mut rec, mut members) = room(&factory, multitrack);
                    factory.sync().expect("writer running");
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let n = BATCH.min(iters - done);
                        let t = Instant::now();
                        for _ in 0..n {
                            // Every fifth member silent, as a room mostly listens.
                            let mut inputs = members
                                .iter()
                                .zip(&frames)
                                .enumerate()
                                .map(|(i, (&m, f))| (m, (i % 5 != 0).then_some(f)));
                            rec.push_tick(black_box(&mix), &mut inputs);
                        }
                        if !with_writer {
                            total += t.elapsed();
                        }
                        factory.sync().expect("writer running");
                        if with_writer {
                            total += t.elapsed();
                        }
                        done += n;
                        if done % CYCLE == 0 && done < iters {
                            rec.finish(Instant::now());
                            factory.sync().expect("writer running");
                            clear(&dir);
                            (rec, members) = room(&factory, multitrack);
                            factory.sync().expect("writer running");
                        }
                    }
                    assert_eq!(rec.dropped_chunks(), 0, "the queue never filled");
                    rec.finish(Instant::now());
                    factory.sync().expect("writer running");
                    clear(&dir);
                    total
                })
            },
        );
    }
    group.finish();
    drop(factory);
    let _ = thread.join();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, policy_bench, push_bench, room_bench);
criterion_main!(benches);
