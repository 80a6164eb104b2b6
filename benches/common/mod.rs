//! The counting allocator that benches and the allocation test share, so
//! they report allocations per operation next to time (as Seastar's perf
//! tests print allocs per iteration).
//!
//! Including this module installs the allocator for the whole binary: every
//! thread's allocations are counted, so a measurement must keep other
//! threads quiet or count their work as part of the operation.

// Each binary that includes this module uses its own subset of it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Forwards to the system allocator and counts every allocation and
/// reallocation (a `realloc` that grows a buffer is the cost we look for).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a relaxed atomic with no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with
        // this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations (and reallocations) so far, process-wide.
pub fn allocation_count() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Runs `operation` once to warm it, then `calls` times, and returns the
/// allocations per call of the measured runs.
pub fn allocations_per_call(calls: u64, mut operation: impl FnMut()) -> f64 {
    operation();
    let before = allocation_count();
    for _ in 0..calls {
        operation();
    }
    (allocation_count() - before) as f64 / calls as f64
}
