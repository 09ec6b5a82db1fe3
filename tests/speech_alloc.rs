//! The caller's ear on the media tick: once put on a leg and given its mode, hearing
//! frames (speech, silence, a tone) allocates nothing, in every mode, at 8 and 48 kHz legs;
//! only the frame on which an answering-machine verdict is reached allocates, once, for the
//! text of its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchboard::media::frame::{ClockRate, Frame};
use switchboard::media::leg::AudioTap;
use switchboard::speech::amd::AmdConfig;
use switchboard::speech::ear::{ear_rate, EarSetup};
use switchboard::speech::tap::{ear_queue, EarTap};
use switchboard::speech::{EarEvent, EarMode, ListenOptions};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

/// `pcm` at 8 kHz as frames at `rate` (repeated samples: only the load matters here).
fn frames(pcm: &[i16], rate: ClockRate) -> Vec<Frame> {
    let up = (rate.hz() / 8000) as usize;
    pcm.chunks(160)
        .map(|c| {
            let wide: Vec<i16> = (0..160 * up)
                .map(|i| *c.get(i / up).unwrap_or(&0))
                .collect();
            Frame::from_samples(rate, &wide)
        })
        .collect()
}

#[test]
fn hearing_allocates_nothing_per_frame() {
    let mut pcm = vec![0i16; 4000];
    pcm.extend(
        flite_rs::Engine::new()
            .synthesize("support please, and quickly")
            .samples,
    );
    pcm.extend(vec![0i16; 16000]);
    pcm.extend((0..3200).map(|i| {
        (8000.0 * (i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 8000.0).sin()) as i16
    }));
    pcm.extend(vec![0i16; 8000]);
    for rate in [ClockRate::HZ_8000, ClockRate::HZ_48000] {
        let heard = frames(&pcm, rate);
        for mode in [
            EarMode::Watch,
            EarMode::Listen(ListenOptions::default()),
            EarMode::Amd(AmdConfig::default()),
            EarMode::Beep(Duration::from_secs(30)),
        ] {
            let (tx, mut heard_rx) = ear_queue();
            let (mut tap, link) = EarTap::new(1, rate, 0, tx);
            assert!(link.set(EarSetup::new(mode.clone(), ear_rate(rate))));
            let mut out = Frame::silence(rate);
            // The first tick takes the mode (and drops the previous one's buffers).
            tap.tick(&heard[0], &mut out);
            let mut events = 0;
            for (i, f) in heard[1..].iter().enumerate() {
                let n = allocations(|| tap.tick(f, &mut out));
                let said = heard_rx.try_recv().ok();
                let allowed = match &said {
                    Some((_, EarEvent::Amd(_))) => 1,
                    _ => 0,
                };
                assert!(
                    n <= allowed,
                    "{mode:?} at {} Hz: {n} allocations on frame {i} ({said:?})",
                    rate.hz()
                );
                events += usize::from(said.is_some());
            }
            // It did hear something.
            assert!(events > 0, "{mode:?} at {} Hz heard nothing", rate.hz());
        }
    }
}
