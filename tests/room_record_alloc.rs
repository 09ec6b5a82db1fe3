//! A room recorder's steady state — `push_tick` with no membership change, and talk and mute
//! changes while the writer keeps up — must not allocate on the media tick. A counting global
//! allocator proves it for the calling thread (the writer thread may allocate as it likes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchboard::conference::recording::{RoomRecordOptions, RoomRecorder};
use switchboard::conference::{MemberId, MemberKind, Mixer, VadConfig};
use switchboard::media::frame::{Frame, NARROW_RATE};
use switchboard::media::record::{RecordingWriter, WriterConfig};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

const MEMBERS: usize = 100;
const TICKS: u64 = 50;

#[test]
fn push_tick_in_the_steady_state_does_not_allocate() {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-room-record-alloc-{}",
        std::process::id()
    ));
    // Room for every chunk, then a queue that is always full (every push dropped).
    for queue in [(MEMBERS + 3) * TICKS as usize + 64, 1] {
        let config = WriterConfig {
            queue_chunks: queue,
            ..WriterConfig::default()
        };
        let (factory, thread) = RecordingWriter::spawn_with(&dir, config).unwrap();
        for multitrack in [false, true] {
            let t0 = Instant::now();
            let mut mixer = Mixer::new(VadConfig::default()).unwrap();
            let mut rec =
                RoomRecorder::start(&factory, "alloc", RoomRecordOptions { multitrack }, t0)
                    .unwrap();
            let members: Vec<MemberId> = (0..MEMBERS)
                .map(|i| {
                    let m = mixer.add_member(MemberKind::Speaker).unwrap();
                    rec.member_joined(t0, m, &format!("call-{i}"), "sip:x@y", NARROW_RATE);
                    m
                })
                .collect();
            let frames: Vec<Frame> = (0..MEMBERS)
                .map(|i| Frame::from([i as i16 + 1; 160]))
                .collect();
            let mix = Frame::from([7i16; 160]);
            // The first tick with members in the room fixes the recording's rate.
            rec.push_tick(&mix, &mut members.iter().map(|&m| (m, None)));
            factory.sync().unwrap();
            let n = allocations(|| {
                for t in 0..TICKS {
                    let mut inputs = members
                        .iter()
                        .zip(&frames)
                        .enumerate()
                        .map(|(i, (&m, f))| (m, (i % 5 != 0).then_some(f)));
                    rec.push_tick(&mix, &mut inputs);
                    if queue > 1 {
                        // Talk and mute changes ride the audio queue while it has room.
                        let now = t0 + Duration::from_millis(t * 20);
                        let m = members[t as usize % MEMBERS];
                        rec.member_talking(now, m, t % 2 == 0);
                        rec.member_muted(now, m, t % 3 == 0);
                    }
                }
            });
            assert_eq!(
                n, 0,
                "multitrack {multitrack}, queue {queue}: {n} allocations"
            );
            rec.finish(t0 + Duration::from_millis(TICKS * 20));
            factory.sync().unwrap();
        }
        drop(factory);
        thread.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
