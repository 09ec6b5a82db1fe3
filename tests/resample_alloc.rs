//! The streaming resampler must not touch the heap once made: counted with a global
//! allocator that tallies allocations made by this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchboard::media::prompt::{Prompt, PromptPlayer};
use switchboard::media::resample::StreamResampler;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCS.with(Cell::get)
}

#[test]
fn streaming_resampler_and_player_allocate_nothing_per_frame() {
    for (from, to) in [(8000, 16000), (16000, 8000), (48000, 8000), (8000, 48000)] {
        let mut r = StreamResampler::new(from, to, 20).unwrap();
        let input: Vec<i16> = (0..r.input_len())
            .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
            .collect();
        let mut output = vec![0i16; r.output_len()];
        let caps = r.buffer_capacity();
        let before = allocations();
        for _ in 0..500 {
            r.process(&input, &mut output).unwrap();
        }
        assert_eq!(
            allocations(),
            before,
            "{from}->{to}: allocated while streaming"
        );
        assert_eq!(r.buffer_capacity(), caps);
    }

    let prompt = std::sync::Arc::new(Prompt {
        samples: vec![7i16; 8000].into(),
        rate: 8000,
        name: "x".into(),
    });
    let mut player = PromptPlayer::new(prompt);
    let mut frame = [0i16; 160];
    let before = allocations();
    while player.fill(&mut frame) == frame.len() {}
    assert_eq!(allocations(), before, "player allocated");
}
