//! `idle_memory`: bytes of core state per idle open connection (not a timing).
//!
//! A counting global allocator tracks live heap bytes. After the hub is built
//! (and the bench's own id list and frame buffer are allocated), N = 10,000
//! connections are opened and upgraded through `Hub::handle_read` of a real
//! request, their 101s written (`poll_transmit` + `handle_written`) and their
//! events drained. The heap growth divided by N is everything the core holds
//! per idle connection: the slab slot (inline `Conn`), its boxes and queues,
//! the timer-heap entries, the generation table, and the slack of every
//! growable table at this N (tables grow by doubling). The same is then
//! measured after every connection subscribes to one shared channel.
//!
//! Also printed: `Hub::connection_slot_bytes()` (the inline slot size) and the
//! core's own per-connection estimate `Hub::connection_heap_bytes`.
//!
//! Run with `cargo bench -p wshub-benches --bench idle_memory`; set
//! `WSHUB_IDLE_CONNS` to measure at another N (the slack of tables that grow
//! by doubling makes the per-connection figure depend on N).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use wshub_benches::{bench_mode, new_hub, open_upgraded, start_instant, CHANNEL};
use wshub_core::Hub;

/// `System`, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    // Table growth slack depends on N: `WSHUB_IDLE_CONNS` picks another N.
    let n: usize = std::env::var("WSHUB_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode() { 10_000 } else { 1_000 });
    let now = start_instant();
    let mut hub = new_hub(now, n * 2);
    let mut ids = Vec::with_capacity(n);
    let mut frames = Vec::with_capacity(64);

    let before = live();
    for _ in 0..n {
        ids.push(open_upgraded(&mut hub, now, &mut frames));
    }
    assert_eq!(hub.stats().connections, n);
    let idle = live() - before;

    for &id in &ids {
        if let Err(e) = hub.subscribe(now, id, CHANNEL) {
            panic!("subscribe: {e:?}");
        }
    }
    let subscribed = live() - before;

    let slot = Hub::connection_slot_bytes();
    let estimate = ids
        .first()
        .and_then(|&id| hub.connection_heap_bytes(id))
        .unwrap_or(0);
    println!("idle_memory: {n} upgraded idle connections");
    println!(
        "  heap growth per connection, idle:              {:>6.1} B  ({idle} B total)",
        idle as f64 / n as f64
    );
    println!(
        "  heap growth per connection, 1 shared channel:  {:>6.1} B  ({subscribed} B total)",
        subscribed as f64 / n as f64
    );
    println!("  Hub::connection_slot_bytes() (inline slot):     {slot:>6} B");
    println!("  Hub::connection_heap_bytes(one conn, core est.): {estimate:>5} B");
    println!(
        "  target <= 1024 B per idle connection: {}",
        if idle <= 1024 * n { "met" } else { "MISSED" }
    );
    drop(hub);
}
