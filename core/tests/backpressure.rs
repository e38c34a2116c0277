//! Backpressure: the slow-consumer cut, the write-stall timeout, and a
//! deadline that never sleeps on queued output.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wshub_core::{Event, HubConfig, Message};

#[test]
fn slow_consumer_is_cut_with_1013_and_others_get_everything_in_order() {
    let cfg = HubConfig {
        max_queued_messages: 8,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let fast = sim.connect();
    let slow = sim.connect();
    for id in [fast, slow] {
        sim.send_text(id, r#"{"type":"subscribe","data":"c"}"#);
    }
    sim.stalled.push(slow);
    for i in 0..20 {
        sim.hub.publish(sim.now, "c", Message::new("n", json!(i)));
        sim.pump();
    }
    let got: Vec<i64> = sim
        .take_json(fast)
        .iter()
        .map(|m| m["data"].as_i64().unwrap())
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(sim
        .events
        .iter()
        .any(|e| matches!(e, Event::SlowConsumer { conn, .. } if *conn == slow)));
    // The close frame 1013 is the last thing queued for the slow one.
    let held = &sim.held[&slow];
    let last = held.last().unwrap();
    assert_eq!(last[0], 0x88);
    assert_eq!(u16::from_be_bytes([last[2], last[3]]), 1013);
    let (msgs, _) = sim.hub.queued(slow).unwrap();
    assert!(msgs <= 8 + 1, "queue bounded: {msgs}");
    assert_eq!(sim.hub.subscriber_count("c"), 1);
    sim.hub.check_invariants().unwrap();
}

#[test]
fn stalled_writer_is_cut_after_the_write_timeout() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.connect();
    sim.stalled.push(id);
    sim.hub
        .send(sim.now, id, &Message::new("x", Value::Null))
        .unwrap();
    sim.pump();
    sim.advance(Duration::from_secs(9));
    assert!(sim.hub.contains(id));
    sim.advance(Duration::from_secs(2));
    assert!(sim
        .events
        .iter()
        .any(|e| matches!(e, Event::SlowConsumer { .. })));
    // Still nothing written: the close timeout ends it.
    sim.advance(Duration::from_secs(30));
    assert!(!sim.hub.contains(id));
    assert_eq!(sim.closed(id).len(), 1);
}

#[test]
fn poll_timeout_never_sleeps_on_queued_output() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.connect();
    sim.hub
        .send(sim.now, id, &Message::new("x", Value::Null))
        .unwrap();
    assert_eq!(sim.hub.poll_timeout(), Some(sim.now));
    sim.pump();
    assert!(sim.hub.poll_timeout().unwrap() > sim.now);
}
