//! The streaming resampler must not touch the heap once made: counted with a global
//! allocator that tallies allocations made by this thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard::media::prompt::{Prompt, PromptPlayer};
use switchboard::media::resample::StreamResampler;
use switchboard::rtp::types::ClockRate;

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

/// `r` Hz as a clock rate.
fn hz(r: u32) -> ClockRate {
    ClockRate::new(r).expect("a non-zero rate")
}

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn streaming_resampler_and_player_allocate_nothing_per_frame() {
    for (from, to) in [(8000, 16000), (16000, 8000), (48000, 8000), (8000, 48000)] {
        let mut r = StreamResampler::new(hz(from), hz(to), 20).unwrap();
        let input: Vec<i16> = (0..r.input_len())
            .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
            .collect();
        let mut output = vec![0i16; r.output_len()];
        let caps = r.buffer_capacity();
        let n = allocations(|| {
            for _ in 0..500 {
                r.process(&input, &mut output).unwrap();
            }
        });
        assert_eq!(n, 0, "{from}->{to}: allocated while streaming");
        assert_eq!(r.buffer_capacity(), caps);
    }

    let prompt = std::sync::Arc::new(Prompt {
        samples: vec![7i16; 8000].into(),
        rate: 8000,
        name: "x".into(),
    });
    let mut player = PromptPlayer::new(prompt);
    let mut frame = [0i16; 160];
    let n = allocations(|| while player.fill(&mut frame) == frame.len() {});
    assert_eq!(n, 0, "player allocated");
}
