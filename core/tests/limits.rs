//! Limits and what crossing them costs: connections, request size, channel
//! names, frame sizes, invalid messages and the message rate.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use wshub_core::frame::{Decoded, OpCode};
use wshub_core::{Event, HubConfig, Message};

#[test]
fn connection_limit_gives_503() {
    let cfg = HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    sim.connect();
    sim.connect();
    let third = sim.connect_with("/ws", &[]);
    assert_eq!(sim.rx[&third].status(), Some(503));
    assert_eq!(sim.hub.stats().connections, 2);
}

#[test]
fn oversized_requests_get_431_overfull_ones_400_and_others_carry_on() {
    let cfg = HubConfig {
        max_request_bytes: 1024,
        max_headers: 8,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let other = sim.connect();
    sim.send_text(other, r#"{"type":"subscribe","data":"c"}"#);
    let big = sim.open();
    let filler = "x".repeat(2000);
    sim.feed(
        big,
        format!("GET /ws HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n").as_bytes(),
    );
    assert_eq!(sim.rx[&big].status(), Some(431));
    let many = sim.open();
    let headers: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    sim.feed(
        many,
        format!("GET /ws HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
    );
    assert_eq!(sim.rx[&many].status(), Some(400));
    assert!(!sim.hub.contains(big) && !sim.hub.contains(many));
    assert_eq!(
        sim.hub
            .publish(sim.now, "c", Message::new("x", Value::Null)),
        1
    );
    assert_eq!(sim.hub.stats().connections, 1);
}

#[test]
fn channel_name_limits() {
    let mut sim = Sim::new(HubConfig::default());
    let a = sim.connect();
    let long = "x".repeat(257);
    sim.send_text(
        a,
        &format!(r#"{{"type":"subscribe","channel":"{long}","id":1}}"#),
    );
    assert_eq!(sim.take_json(a)[0]["data"]["code"], "bad_request");
    assert_eq!(sim.hub.stats().channels, 0);
    let ok = "x".repeat(256);
    sim.send_text(
        a,
        &format!(r#"{{"type":"subscribe","channel":"{ok}","id":2}}"#),
    );
    assert_eq!(sim.take_json(a)[0]["type"], "ack");
}

fn closes_with(bytes: &[u8], code: u16, cfg: HubConfig) {
    let mut sim = Sim::new(cfg);
    let other = sim.connect();
    sim.send_text(other, r#"{"type":"subscribe","data":"c"}"#);
    let id = sim.connect();
    sim.feed(id, bytes);
    assert_eq!(sim.rx[&id].close_code(), Some(code));
    assert!(matches!(sim.closed(id)[..], [Event::Closed { code: Some(c), .. }] if *c == code));
    // Others are unaffected.
    assert_eq!(
        sim.hub
            .publish(sim.now, "c", Message::new("x", Value::Null)),
        1
    );
}

#[test]
fn frame_limits_close_with_their_codes() {
    let small = HubConfig {
        max_message_size: 1024,
        ..HubConfig::default()
    };
    closes_with(&masked(OpCode::Text, &[b'a'; 1025]), 1009, small);
    closes_with(
        &masked(OpCode::Text, &[0xff, 0xfe]),
        1007,
        HubConfig::default(),
    );
    let mut unmasked = Vec::new();
    wshub_core::frame::encode_frame(&mut unmasked, OpCode::Text, b"hi", None);
    closes_with(&unmasked, 1002, HubConfig::default());
    // A header announcing 2^62 bytes is refused from the header alone.
    closes_with(
        &[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        1009,
        HubConfig::default(),
    );
}

#[test]
fn too_many_invalid_messages_close_with_1008() {
    let cfg = HubConfig {
        max_invalid_messages: 3,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let id = sim.connect();
    for _ in 0..3 {
        sim.send_text(id, "not json");
    }
    assert!(sim.hub.contains(id));
    sim.send_text(id, "not json");
    assert_eq!(sim.rx[&id].close_code(), Some(1008));
}

#[test]
fn a_client_past_the_message_rate_is_closed_with_1008_and_others_carry_on() {
    let cfg = HubConfig {
        max_messages_per_second: 50,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let calm = sim.connect();
    sim.send_text(calm, r#"{"type":"subscribe","data":"c"}"#);
    let steady = sim.connect();
    let flood = sim.connect();
    let pongs = |sim: &Sim, id| {
        sim.rx[&id]
            .frames()
            .iter()
            .filter(|f| matches!(f, Decoded::Pong(_)))
            .count()
    };
    // Exactly the limit within one second is fine, and the window resets:
    // 50 now and 50 a second later never trip it.
    for _ in 0..50 {
        sim.feed(steady, &masked(OpCode::Ping, b"s"));
    }
    sim.advance(Duration::from_secs(1));
    for _ in 0..50 {
        sim.feed(steady, &masked(OpCode::Ping, b"s"));
    }
    assert!(sim.hub.contains(steady));
    assert_eq!(pongs(&sim, steady), 100);
    // One past it within a window: 1008, and the excess is not answered.
    for _ in 0..51 {
        sim.feed(flood, &masked(OpCode::Ping, b"f"));
    }
    assert_eq!(pongs(&sim, flood), 50);
    assert_eq!(sim.rx[&flood].close_code(), Some(1008));
    // The others are untouched.
    assert_eq!(
        sim.hub
            .publish(sim.now, "c", Message::new("x", Value::Null)),
        1
    );
    assert!(sim.hub.contains(calm) && sim.hub.contains(steady));
}

#[test]
fn the_message_rate_limit_can_be_turned_off() {
    let cfg = HubConfig {
        max_messages_per_second: 0,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let id = sim.connect();
    for _ in 0..5000 {
        sim.feed(id, &masked(OpCode::Ping, b""));
        sim.pump();
    }
    assert!(sim.hub.contains(id));
    assert_eq!(sim.rx[&id].close_code(), None);
}
