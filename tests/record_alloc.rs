//! The recording path the media tick uses — `RecordSession::push_frame` and
//! `RecorderHandle::push` — must not allocate. A counting global allocator proves it for the
//! calling thread (the writer thread may allocate as it likes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use switchboard::media::dtmf::Digit;
use switchboard::media::record::{
    DigitSet, RecordMode, RecordOutcome, RecordPolicy, RecordSession, RecordingMeta,
    RecordingWriter, StopReason, WriterConfig,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(|n| n.get())
}

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
                    rate: 8000,
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
