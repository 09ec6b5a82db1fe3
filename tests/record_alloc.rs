//! The recording path the media tick uses — `RecordSession::push_frame` and
//! `RecorderHandle::push` — must not allocate. A counting global allocator proves it for the
//! calling thread (the writer thread may allocate as it likes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard::media::dtmf::Digit;
use switchboard::media::record::{
    DigitSet, RecordMode, RecordOutcome, RecordPolicy, RecordSession, RecordingMeta,
    RecordingWriter, StopReason, WriterConfig,
};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

fn frame(i: usize, len: usize) -> Vec<i16> {
    (0..len)
        .map(|k| ((i * len + k) as i16).wrapping_mul(31))
        .collect()
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn tick_side_of_recording_does_not_allocate() {
    let dir = std::env::temp_dir().join(format!("switchboard-record-alloc-{}", std::process::id()));
    for (queue, frames) in [(4096, 2000), (1, 5000)] {
        let config = WriterConfig {
            queue_chunks: queue,
            ..WriterConfig::default()
        };
        let (factory, thread) = RecordingWriter::spawn_with(&dir, config).unwrap();
        for mode in [
            RecordMode::Inbound,
            RecordMode::Outbound,
            RecordMode::MixedMono,
            RecordMode::Stereo,
        ] {
            let mut session = RecordSession::new(RecordPolicy {
                mode,
                max_duration: Some(Duration::from_secs(3600)),
                silence_timeout: Some(Duration::from_secs(3600)),
                terminators: DigitSet::from_chars("#"),
                ..RecordPolicy::default()
            });
            let handle = factory
                .start(RecordingMeta {
                    call_id: "alloc".into(),
                    from: "a".into(),
                    to: "b".into(),
                    room: None,
                    mode,
                    rate: switchboard::rtp::types::ClockRate::HZ_8000,
                })
                .unwrap();
            let inbound: Vec<Vec<i16>> = (0..frames).map(|i| frame(i, 160)).collect();
            let outbound: Vec<Vec<i16>> = (0..frames).map(|i| frame(i + 7, 160)).collect();
            let digit = Digit::from_char('5').unwrap();
            let n = allocations(|| {
                for (a, b) in inbound.iter().zip(&outbound) {
                    session.push_frame(a, b);
                    handle.push(session.frame());
                }
                session.on_digit(digit);
            });
            assert_eq!(n, 0, "{mode:?}, queue {queue}: {n} allocations");
            session.hangup();
            handle.finish(
                session
                    .outcome()
                    .unwrap_or(RecordOutcome::new(StopReason::Hangup)),
            );
        }
        drop(factory);
        thread.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
