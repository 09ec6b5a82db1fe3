//! A counting global allocator for benchmarks: bytes held now and allocations made.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

pub struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

/// Heap bytes currently allocated.
#[allow(dead_code)]
pub fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// Allocations made so far.
#[allow(dead_code)]
pub fn allocations() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}
