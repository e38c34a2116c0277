//! Allocation and memory accounting with a counting global allocator: fan-out
//! cost must not grow with the subscriber count, and an idle connection must
//! stay small.

mod common;

use std::sync::atomic::Ordering;

use common::counting::{Counting, ALLOCS, LIVE, SERIAL};
use common::*;
use serde_json::json;
use wshub_core::{HubConfig, Message};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one publish to `n` subscribers, after a warm-up publish
/// (so queue slots already have capacity) whose output was written.
fn allocs_per_publish(n: usize) -> usize {
    let mut sim = Sim::new(HubConfig::default());
    for _ in 0..n {
        let id = sim.connect();
        sim.hub.subscribe(sim.now, id, "fan").unwrap();
    }
    sim.pump();
    sim.hub
        .publish(sim.now, "fan", Message::new("warm", json!(0)));
    sim.pump();
    let before = ALLOCS.load(Ordering::Relaxed);
    let got = sim.hub.publish(
        sim.now,
        "fan",
        Message::new(
            "m",
            json!("64 bytes of payload, more or less, for the fan-out"),
        ),
    );
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(got, n);
    after - before
}

#[test]
fn fan_out_allocations_do_not_grow_with_subscribers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = allocs_per_publish(10);
    let large = allocs_per_publish(10_000);
    assert!(small > 0, "the frame itself is allocated");
    assert!(
        large <= small + 2,
        "10 subscribers: {small} allocations, 10,000: {large}"
    );
}

#[test]
fn idle_connection_costs_under_a_kibibyte() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let mut hub =
        wshub_core::Hub::new(HubConfig::default(), now, std::time::Duration::ZERO).unwrap();
    let req = request("/ws", &[]);
    let mut frames = Vec::new();
    let mut connect = |hub: &mut wshub_core::Hub| {
        let id = hub.open(now, Default::default()).unwrap();
        hub.handle_read(now, id, &req).unwrap();
        while let Some(id) = hub.poll_transmit(&mut frames) {
            let n = frames.drain(..).map(|f| f.len()).sum();
            hub.handle_written(now, id, n).unwrap();
        }
        while hub.poll_event().is_some() {}
        id
    };
    // Size shared tables first so their growth is not billed per connection.
    let n = 4096;
    let warm: Vec<_> = (0..n).map(|_| connect(&mut hub)).collect();
    for id in warm {
        hub.handle_eof(now, id).unwrap();
    }
    while hub.poll_event().is_some() {}
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..n {
        connect(&mut hub);
    }
    let after = LIVE.load(Ordering::Relaxed);
    let heap = (after - before) as f64 / n as f64;
    let slot = wshub_core::Hub::connection_slot_bytes() as f64;
    assert_eq!(hub.stats().connections, n);
    assert!(
        heap + slot <= 1024.0,
        "{heap:.0} heap + {slot} slot bytes per idle connection"
    );
    println!("idle connection: {heap:.0} heap bytes + {slot} bytes of slab slot");
}
