//! Heartbeats under fake time: pings and pongs both ways, live clients
//! kept, silent ones dropped.

mod common;

use std::time::Duration;

use common::*;
use wshub_core::frame::{Decoded, OpCode};
use wshub_core::{CloseReason, Event, HubConfig};

#[test]
fn ping_pong_and_client_close() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.connect();
    sim.feed(id, &masked(OpCode::Ping, b"abc"));
    assert!(sim.rx[&id]
        .frames()
        .contains(&Decoded::Pong(b"abc".to_vec())));
    let mut close = Vec::new();
    wshub_core::frame::encode_frame(
        &mut close,
        OpCode::Close,
        &[0x03, 0xe8, b'b', b'y'],
        Some([1, 2, 3, 4]),
    );
    sim.feed(id, &close);
    assert_eq!(sim.rx[&id].close_code(), Some(1000));
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::PeerClosed(Some(1000)),
            code: Some(1000),
            was_connected: true,
            ..
        }]
    ));
}

#[test]
fn server_pings_keep_live_clients_and_drop_silent_ones() {
    let cfg = HubConfig {
        ping_interval: Duration::from_secs(30),
        pong_timeout: Duration::from_secs(60),
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let live = sim.connect();
    let silent = sim.connect();
    for _ in 0..4 {
        sim.advance(Duration::from_secs(30));
        // The live client answers each ping.
        sim.feed(live, &masked(OpCode::Pong, b""));
    }
    let pings = sim.rx[&live]
        .frames()
        .iter()
        .filter(|f| matches!(f, Decoded::Ping(_)))
        .count();
    assert!(pings >= 3, "pings sent: {pings}");
    assert!(sim.hub.contains(live));
    assert!(!sim.hub.contains(silent));
    assert!(matches!(
        sim.closed(silent)[..],
        [Event::Closed {
            reason: CloseReason::PongTimeout,
            ..
        }]
    ));
}
