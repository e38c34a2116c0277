//! Memory of the history store, from a counting global allocator: a stored
//! publication costs its positioned frame plus at most 64 bytes, and a
//! channel nobody subscribes to and whose history and metadata expired
//! holds nothing.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::counting::{Counting, LIVE, SERIAL};
use common::*;
use serde_json::json;
use wshub_core::{HistoryConfig, HistoryRule, HubConfig, Message};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn config() -> HubConfig {
    HubConfig {
        history: HistoryConfig {
            rules: vec![HistoryRule {
                pattern: "*".into(),
                size: 100,
                ttl: Duration::from_secs(60),
            }],
            meta_ttl: Duration::from_secs(120),
            ..HistoryConfig::default()
        },
        ..HubConfig::default()
    }
}

#[test]
fn a_stored_publication_costs_its_frame_plus_at_most_64_bytes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut sim = Sim::new(config());
    let channels = 200;
    let before = LIVE.load(Ordering::Relaxed);
    // Three rounds per ring: full rings, then two more turns of each.
    for round in 0..300 {
        for c in 0..channels {
            let m = Message::new("event", json!(format!("payload {round} of a line")));
            let now = sim.now;
            sim.hub.publish(now, &format!("chan:{c}"), m);
        }
    }
    let grown = (LIVE.load(Ordering::Relaxed) - before) as usize;
    let s = sim.hub.stats();
    assert_eq!(s.history_messages, 100 * channels);
    let overhead = (grown - s.history_bytes) / s.history_messages;
    println!(
        "{} messages, {} B of frames, {overhead} B each beyond the frame",
        s.history_messages, s.history_bytes
    );
    assert!(
        overhead <= 64,
        "{grown} B for {} messages of {} B: {overhead} B each beyond the frame",
        s.history_messages,
        s.history_bytes
    );
}

#[test]
fn an_expired_unsubscribed_channel_holds_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut sim = Sim::new(config());
    let now = sim.now;
    // Warm the hub's own tables once, so only the channels are counted.
    sim.hub
        .publish(now, "warm", Message::new("event", json!(0)));
    sim.hub.handle_timeout(now + Duration::from_secs(1000));
    let before = LIVE.load(Ordering::Relaxed);
    for c in 0..100 {
        let m = Message::new("event", json!(c));
        sim.hub.publish(now, &format!("gone:{c}"), m);
    }
    assert_eq!(sim.hub.history_streams(), 100);
    sim.hub.handle_timeout(now + Duration::from_secs(2000));
    assert_eq!(sim.hub.history_streams(), 0);
    assert_eq!(sim.hub.stats().history_messages, 0);
    let left = LIVE.load(Ordering::Relaxed) - before;
    println!("{left} B left after 100 channels expired");
    assert!(left <= 4096, "{left} B left after every channel expired");
}
