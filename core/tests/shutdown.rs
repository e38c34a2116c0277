//! How connections end: application close codes, graceful shutdown, one
//! `Closed` per open, and handles that outlive their connection.

mod common;

use std::time::Duration;

use common::*;
use wshub_core::frame::{Decoded, OpCode};
use wshub_core::{CloseReason, Event, HubConfig, Message, UsageError};

#[test]
fn app_close_codes_are_checked() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.connect();
    assert_eq!(
        sim.hub.close(sim.now, id, 1002, "x"),
        Err(UsageError::InvalidCloseCode)
    );
    sim.hub
        .close(sim.now, id, 4404, "no server with that id")
        .unwrap();
    sim.pump();
    assert_eq!(sim.rx[&id].close_code(), Some(4404));
    let frames = sim.rx[&id].frames();
    assert!(
        matches!(frames.last(), Some(Decoded::Close(Some((4404, r)))) if r == "no server with that id")
    );
}

#[test]
fn graceful_shutdown_sends_1001_and_reports_done() {
    let mut sim = Sim::new(HubConfig::default());
    let a = sim.connect();
    let b = sim.connect();
    let half = sim.open();
    sim.feed(half, b"GET /ws HTTP/1.1\r\n");
    sim.hub.shutdown(sim.now);
    sim.pump();
    assert_eq!(sim.rx[&a].close_code(), Some(1001));
    assert_eq!(sim.rx[&b].close_code(), Some(1001));
    assert!(sim.hub.open(sim.now, Default::default()).is_err());
    assert!(!sim.events.contains(&Event::ShutdownComplete));
    // a answers the close; b never does and is cut at the close timeout.
    let mut close = Vec::new();
    wshub_core::frame::encode_frame(&mut close, OpCode::Close, &[0x03, 0xe9], Some([9, 9, 9, 9]));
    sim.feed(a, &close);
    assert!(!sim.hub.contains(a));
    assert!(!sim.events.contains(&Event::ShutdownComplete));
    sim.advance(Duration::from_secs(6));
    assert_eq!(sim.events.last(), Some(&Event::ShutdownComplete));
    for id in [a, b, half] {
        assert_eq!(sim.closed(id).len(), 1);
    }
}

#[test]
fn every_open_gets_exactly_one_closed() {
    let mut sim = Sim::new(HubConfig {
        max_connections: 3,
        ..HubConfig::default()
    });
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = sim.open();
        match i % 4 {
            0 => sim.feed(id, &request("/ws", &[])),
            1 => sim.feed(id, b"BREW /pot HTTP/1.1\r\n\r\n"),
            2 => sim.feed(id, b"GET /ws HT"),
            _ => {
                sim.feed(id, &request("/ws", &[]));
                // Refused with 503 past the limit: then the handle is stale.
                if sim.hub.contains(id) {
                    sim.feed(id, &masked(OpCode::Text, &[0xc3]));
                }
            }
        }
        ids.push(id);
    }
    sim.hub.handle_eof(sim.now, ids[0]).unwrap();
    sim.hub.shutdown(sim.now);
    sim.advance(Duration::from_secs(30));
    assert_eq!(sim.events.last(), Some(&Event::ShutdownComplete));
    for id in ids {
        assert_eq!(sim.closed(id).len(), 1, "{id}");
    }
}

#[test]
fn stale_handles_cannot_reach_a_reused_slot() {
    let mut sim = Sim::new(HubConfig::default());
    let a = sim.connect();
    sim.hub.handle_eof(sim.now, a).unwrap();
    sim.pump();
    let b = sim.connect();
    assert_eq!(a.slot(), b.slot());
    assert_ne!(a, b);
    assert_eq!(
        sim.hub.send(sim.now, a, &Message::error("x")),
        Err(UsageError::UnknownConn)
    );
    assert_eq!(
        sim.hub.handle_read(sim.now, a, b"x"),
        Err(UsageError::UnknownConn)
    );
    assert!(matches!(
        sim.closed(a)[..],
        [Event::Closed {
            reason: CloseReason::Eof,
            code: Some(1006),
            ..
        }]
    ));
}
