//! Timing and allocation counts for the media benchmarks, which run numbered 20 ms ticks.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use switchboard::media::frame::FRAME;

/// A tick's cost as a share of one core: a tick is due every 20 ms.
pub fn core_percent(d: Duration) -> f64 {
    100.0 * d.as_secs_f64() / FRAME.as_secs_f64()
}

/// Runs `f` `count` times, giving it run numbers counting on from `n`.
pub fn runs(count: usize, n: &mut u64, mut f: impl FnMut(u64)) {
    for _ in 0..count {
        f(*n);
        *n += 1;
    }
}

/// The allocations made in `count` runs of `f` (numbered as [`runs`] does); the benchmark
/// must install `crate::alloc::Counting` as its global allocator.
pub fn allocations_in(count: usize, n: &mut u64, f: impl FnMut(u64)) -> usize {
    let before = crate::alloc::allocations();
    runs(count, n, f);
    crate::alloc::allocations() - before
}

/// The median of `count` single runs of `f`, which is given a run number counting on from `n`.
pub fn median_of(count: usize, n: &mut u64, mut f: impl FnMut(u64)) -> Duration {
    median_of_timed(count, n, |n| {
        let start = Instant::now();
        f(n);
        start.elapsed()
    })
}

/// The median of `count` runs of `f`, each returning the time of the part it measured (its
/// set-up left out); run numbers count on from `n`.
pub fn median_of_timed(count: usize, n: &mut u64, mut f: impl FnMut(u64) -> Duration) -> Duration {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        times.push(f(*n));
        *n += 1;
    }
    times.sort();
    times[count / 2]
}
