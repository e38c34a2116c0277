//! A counting global allocator for the memory tests: a test binary installs
//! it with `#[global_allocator] static GLOBAL: Counting = Counting;` and reads
//! the process-wide counters around the code it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Forwards to [`System`], counting calls in [`ALLOCS`] and bytes in [`LIVE`].
pub struct Counting;

/// Allocations and reallocations made so far.
pub static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Bytes live on the heap, relative to the start of the process.
pub static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The counters are process-wide: tests that read them must not overlap.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
