//! Hub behaviour under fake time: handshake checks, auth, routing, level 1,
//! limits, heartbeats, backpressure, shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wshub_core::auth::{
    ApiKeyAuth, AuthDecision, AuthFailure, BearerAuth, QueryTokenAuth, Rejection,
};
use wshub_core::config::PublishPatterns;
use wshub_core::frame::{Decoded, OpCode};
use wshub_core::{CloseReason, Event, HubConfig, Identity, Message, UsageError};

fn types(v: &[Value]) -> Vec<&str> {
    v.iter()
        .map(|m| m["type"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn upgrade_answers_101_with_accept_key_and_connected_event() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.connect();
    let head = sim.rx[&id].head();
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(matches!(&sim.events[0], Event::Connected { conn, .. } if *conn == id));
    assert_eq!(sim.hub.stats().connections, 1);
}

#[test]
fn pipelined_frames_after_the_request_are_processed() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.open();
    let mut bytes = request("/ws", &[]);
    bytes.extend(text(r#"{"type":"subscribe","channel":"a","id":1}"#));
    sim.feed(id, &bytes);
    assert_eq!(sim.rx[&id].status(), Some(101));
    assert_eq!(sim.hub.subscriber_count("a"), 1);
    let got = sim.take_json(id);
    assert_eq!(types(&got), ["ack"]);
    assert_eq!(got[0]["id"], 1);
}

fn refused(cfg: HubConfig, target: &str, extra: &[(&str, &str)]) -> (u16, String, Vec<Event>) {
    let mut sim = Sim::new(cfg);
    let id = sim.connect_with(target, extra);
    let status = sim.rx[&id].status().expect("a response");
    assert_eq!(sim.hub.stats().connections, 0, "registry untouched");
    assert!(!sim.hub.contains(id), "connection ended after the refusal");
    let closed = sim.closed(id);
    assert_eq!(closed.len(), 1);
    assert!(!sim
        .events
        .iter()
        .any(|e| matches!(e, Event::Connected { .. })));
    (status, sim.rx[&id].head(), sim.events)
}

#[test]
fn handshake_refusals_in_protocol_order() {
    let (s, _, _) = refused(HubConfig::default(), "/nope", &[]);
    assert_eq!(s, 404);
    let cfg = HubConfig {
        required_headers: vec!["X-Client-Id".into()],
        ..HubConfig::default()
    };
    assert_eq!(refused(cfg.clone(), "/ws", &[]).0, 400);
    assert_eq!(refused(cfg, "/ws", &[("X-Client-Id", "  ")]).0, 400);
    let cfg = HubConfig {
        allowed_origins: vec!["https://good.example".into()],
        ..HubConfig::default()
    };
    assert_eq!(
        refused(cfg, "/ws", &[("Origin", "https://evil.example")]).0,
        403
    );
    // Required header beats origin beats auth.
    let cfg = HubConfig {
        required_headers: vec!["X-Client-Id".into()],
        allowed_origins: vec!["https://good.example".into()],
        authenticator: Arc::new(ApiKeyAuth::new([("k".to_string(), "u".to_string())])),
        ..HubConfig::default()
    };
    assert_eq!(
        refused(cfg.clone(), "/ws", &[("Origin", "https://evil.example")]).0,
        400
    );
    assert_eq!(
        refused(
            cfg,
            "/ws",
            &[("Origin", "https://evil.example"), ("X-Client-Id", "1")]
        )
        .0,
        403
    );
}

#[test]
fn bad_token_gets_401_without_upgrade_and_event_without_token() {
    let cfg = HubConfig {
        authenticator: Arc::new(ApiKeyAuth::new([(
            "good-key".to_string(),
            "alice".to_string(),
        )])),
        ..HubConfig::default()
    };
    let (status, head, events) = refused(cfg, "/ws", &[("Authorization", "Bearer s3cr3t-wrong")]);
    assert_eq!(status, 401);
    assert!(!head.contains("Sec-WebSocket-Accept"));
    assert!(!head.contains("s3cr3t"));
    let failed = events
        .iter()
        .find(|e| matches!(e, Event::AuthFailed { .. }))
        .unwrap();
    assert!(matches!(
        failed,
        Event::AuthFailed {
            status: 401,
            failure: AuthFailure::InvalidCredentials,
            ..
        }
    ));
    assert!(!format!("{events:?}").contains("s3cr3t"));
}

#[test]
fn api_key_bearer_and_query_token_accept_with_identity() {
    let cfg = HubConfig {
        authenticator: Arc::new(ApiKeyAuth::new([(
            "good-key".to_string(),
            "alice".to_string(),
        )])),
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let id = sim.connect_with("/ws", &[("Authorization", "Bearer good-key")]);
    assert_eq!(sim.rx[&id].status(), Some(101));
    assert_eq!(sim.hub.identity(id).unwrap().user_id, "alice");

    let cfg = HubConfig {
        authenticator: Arc::new(QueryTokenAuth::new("token", |t: &wshub_core::Secret| {
            if t.expose() == "qt" {
                Ok(Identity::user("bob"))
            } else {
                Err(AuthFailure::InvalidCredentials)
            }
        })),
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let id = sim.connect_with("/ws?token=qt", &[]);
    assert_eq!(sim.rx[&id].status(), Some(101));
    assert!(
        matches!(&sim.events[0], Event::Connected { identity, .. } if identity.user_id == "bob")
    );
    let bad = sim.connect_with("/ws?token=nope", &[]);
    assert_eq!(sim.rx[&bad].status(), Some(401));

    let cfg = HubConfig {
        authenticator: Arc::new(BearerAuth::new(|_t: &wshub_core::Secret| {
            Err(AuthFailure::Forbidden)
        })),
        ..HubConfig::default()
    };
    let (status, _, _) = refused(cfg, "/ws", &[("Authorization", "Bearer x")]);
    assert_eq!(status, 403);
}

fn deferring() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(|_: &wshub_core::UpgradeRequest| AuthDecision::Defer),
        handshake_timeout: Duration::from_secs(2),
        ..HubConfig::default()
    }
}

#[test]
fn deferred_auth_accept_reject_and_expiry() {
    let mut sim = Sim::new(deferring());
    let a = sim.connect_with("/ws", &[("Authorization", "Bearer s3cr3t")]);
    assert!(sim.rx[&a].raw.is_empty(), "nothing sent while pending");
    let pending = sim
        .events
        .iter()
        .find(|e| matches!(e, Event::AuthPending { .. }))
        .unwrap();
    assert!(!format!("{pending:?}").contains("s3cr3t"));
    // Frames pipelined while pending are kept for after the 101.
    sim.send_text(a, r#"{"type":"subscribe","data":"x"}"#);
    sim.hub.accept(sim.now, a, Identity::user("carol")).unwrap();
    sim.pump();
    assert_eq!(sim.rx[&a].status(), Some(101));
    assert_eq!(sim.hub.subscriber_count("x"), 1);
    assert_eq!(
        sim.hub.accept(sim.now, a, Identity::user("x")),
        Err(UsageError::WrongState)
    );

    let b = sim.connect_with("/ws", &[]);
    sim.hub.reject(sim.now, b, Rejection::forbidden()).unwrap();
    sim.pump();
    assert_eq!(sim.rx[&b].status(), Some(403));
    assert!(matches!(
        sim.closed(b)[0],
        Event::Closed {
            reason: CloseReason::AuthRejected(403),
            ..
        }
    ));

    // An answer that never comes: the handshake timeout refuses with 503.
    let c = sim.connect_with("/ws", &[]);
    sim.advance(Duration::from_millis(1999));
    assert!(sim.hub.contains(c));
    sim.advance(Duration::from_millis(2));
    assert_eq!(sim.rx[&c].status(), Some(503));
    assert!(matches!(
        sim.closed(c)[0],
        Event::Closed {
            reason: CloseReason::AuthExpired,
            ..
        }
    ));
    // The accepted connection is unaffected.
    assert!(sim.hub.contains(a));
}

#[test]
fn silent_handshake_is_dropped_at_the_timeout() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.open();
    sim.feed(id, b"GET /ws HTTP/1.1\r\n");
    sim.advance(Duration::from_secs(9));
    assert!(sim.hub.contains(id));
    sim.advance(Duration::from_secs(2));
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout,
            ..
        }]
    ));
}

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
fn only_subscribers_receive_and_unsubscribe_stops_them() {
    let mut sim = Sim::new(HubConfig::default());
    let a = sim.connect();
    let b = sim.connect();
    sim.send_text(a, r#"{"type":"subscribe","data":"process:p1"}"#);
    assert_eq!(
        sim.hub.publish(
            sim.now,
            "process:p1",
            Message::process_output("p1", "line 1")
        ),
        1
    );
    sim.pump();
    let got = sim.take_json(a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "process_output");
    assert_eq!(got[0]["channel"], "process:p1");
    assert_eq!(got[0]["processId"], "p1");
    assert_eq!(got[0]["data"], "line 1");
    assert_eq!(got[0]["timestamp"], "2026-02-20T08:12:45Z");
    assert!(sim.take_json(b).is_empty());
    sim.send_text(a, r#"{"type":"unsubscribe","data":"process:p1"}"#);
    assert_eq!(
        sim.hub.publish(
            sim.now,
            "process:p1",
            Message::process_output("p1", "line 2")
        ),
        0
    );
    assert_eq!(sim.hub.stats().channels, 0, "empty channel removed");
}

#[test]
fn broadcast_send_to_user_and_queries() {
    let cfg = HubConfig {
        authenticator: Arc::new(ApiKeyAuth::new([
            ("k1".to_string(), "u1".to_string()),
            ("k2".to_string(), "u2".to_string()),
        ])),
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let a1 = sim.connect_with("/ws", &[("Authorization", "Bearer k1")]);
    let a2 = sim.connect_with("/ws", &[("Authorization", "Bearer k1")]);
    let b = sim.connect_with("/ws", &[("Authorization", "Bearer k2")]);
    for id in [a1, a2, b] {
        sim.send_text(id, r#"{"type":"subscribe","data":"room"}"#);
    }
    assert_eq!(
        sim.hub.channel_users("room"),
        vec!["u1".to_string(), "u2".to_string()]
    );
    assert_eq!(sim.hub.subscriptions(a1), vec!["room".to_string()]);
    assert_eq!(
        sim.hub
            .send_to_user(sim.now, "u1", &Message::new("hello", json!(1))),
        2
    );
    sim.pump();
    assert_eq!(types(&sim.take_json(a1)), ["hello"]);
    assert_eq!(types(&sim.take_json(a2)), ["hello"]);
    assert!(sim.take_json(b).is_empty());
    assert_eq!(
        sim.hub
            .broadcast(sim.now, &Message::event("build", json!({"ok": true}))),
        3
    );
    sim.pump();
    let got = sim.take_json(b);
    assert_eq!(got[0]["data"], json!({"event":"build","data":{"ok":true}}));
    sim.hub
        .send(sim.now, b, &Message::error("disk full"))
        .unwrap();
    sim.pump();
    assert_eq!(sim.take_json(b)[0]["data"], "disk full");
}

#[test]
fn level1_acks_and_error_codes() {
    let cfg = HubConfig {
        max_subscriptions: 2,
        policy: Arc::new(PublishPatterns::new(["chat:*"])),
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let a = sim.connect();
    let b = sim.connect();
    sim.send_text(b, r#"{"type":"subscribe","channel":"chat:1"}"#);
    let cases = [
        (
            r#"{"type":"subscribe","channel":"chat:1","id":1}"#,
            json!({"type":"ack","id":1}),
        ),
        (
            r#"{"type":"subscribe","channel":"c2","id":"two"}"#,
            json!({"type":"ack","id":"two"}),
        ),
        (
            r#"{"type":"subscribe","channel":"c3","id":3}"#,
            json!({"type":"error","id":3,"code":"limit"}),
        ),
        (
            r#"{"type":"unsubscribe","channel":"zz","id":4}"#,
            json!({"type":"error","id":4,"code":"not_subscribed"}),
        ),
        (
            r#"{"type":"frobnicate","id":5}"#,
            json!({"type":"error","id":5,"code":"unknown_type"}),
        ),
        (
            r#"{"type":"subscribe","channel":"","id":6}"#,
            json!({"type":"error","id":6,"code":"bad_request"}),
        ),
        (
            r#"{"type":"publish","channel":"news","data":1,"id":7}"#,
            json!({"type":"error","id":7,"code":"forbidden"}),
        ),
        (
            r#"{"type":"publish","channel":"chat:1","data":{"m":"hi"},"id":8}"#,
            json!({"type":"ack","id":8}),
        ),
        (r#"{"type":"ping","id":9}"#, json!({"type":"pong","id":9})),
    ];
    for (input, want) in cases {
        sim.send_text(a, input);
        let got = sim.take_json(a);
        let reply = got
            .iter()
            .find(|m| m.get("id").is_some())
            .unwrap_or_else(|| panic!("no reply to {input}: {got:?}"));
        assert_eq!(reply["type"], want["type"], "{input}");
        assert_eq!(reply["id"], want["id"], "{input}");
        if let Some(code) = want.get("code") {
            assert_eq!(&reply["data"]["code"], code, "{input}");
        }
    }
    // The client publish reached the other subscriber as an event.
    let got = sim.take_json(b);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "event");
    assert_eq!(got[0]["channel"], "chat:1");
    assert_eq!(got[0]["data"], json!({"m":"hi"}));
    // Level 0: no id, no reply, and a ping gets a plain pong.
    sim.send_text(a, r#"{"type":"frobnicate"}"#);
    sim.send_text(a, r#"{"type":"ping"}"#);
    let got = sim.take_json(a);
    assert_eq!(types(&got), ["pong"]);
    assert!(got[0].get("id").is_none());
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

#[test]
fn app_types_are_forwarded_as_events() {
    let cfg = HubConfig {
        app_types: vec!["chat".into()],
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let id = sim.connect();
    sim.send_text(id, r#"{"type":"chat","data":{"text":"hi"},"id":1}"#);
    assert!(sim.events.iter().any(
        |e| matches!(e, Event::Message { kind, data, .. } if kind == "chat" && data["text"] == "hi")
    ));
    assert_eq!(sim.take_json(id)[0]["type"], "ack");
}

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
fn resubscribing_at_the_limit_is_not_a_new_subscription() {
    let cfg = HubConfig {
        max_subscriptions: 1,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let a = sim.connect();
    sim.send_text(a, r#"{"type":"subscribe","channel":"c","id":1}"#);
    sim.send_text(a, r#"{"type":"subscribe","channel":"c","id":2}"#);
    sim.send_text(a, r#"{"type":"subscribe","channel":"d","id":3}"#);
    let got = sim.take_json(a);
    assert_eq!(types(&got), ["ack", "ack", "error"]);
    assert_eq!(got[2]["data"]["code"], "limit");
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

fn http_cfg() -> HubConfig {
    HubConfig {
        http_fallback: true,
        max_http_body: 16,
        ..HubConfig::default()
    }
}

#[test]
fn http_fallback_serves_plain_requests_beside_websocket() {
    let mut sim = Sim::new(http_cfg());
    let ws = sim.connect();
    let get = sim.open();
    sim.feed(get, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    let Some(Event::HttpRequest {
        conn,
        method,
        request,
        body,
    }) = sim
        .events
        .iter()
        .find(|e| matches!(e, Event::HttpRequest { .. }))
    else {
        panic!("no HttpRequest event: {:?}", sim.events);
    };
    assert_eq!(
        (*conn, method.as_str(), request.path(), body.len()),
        (get, "GET", "/healthz", 0)
    );
    sim.hub
        .http_respond(sim.now, get, 200, &[("Content-Type", "text/plain")], b"ok")
        .unwrap();
    sim.pump();
    let raw = String::from_utf8(sim.rx[&get].raw.clone()).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200 OK\r\n") && raw.ends_with("\r\n\r\nok"),
        "{raw}"
    );
    assert!(!sim.hub.contains(get));
    assert!(sim.hub.contains(ws));

    // A body split across reads arrives whole.
    let post = sim.open();
    sim.feed(
        post,
        b"POST /api/publish HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n{\"a\":",
    );
    assert!(!sim
        .events
        .iter()
        .any(|e| matches!(e, Event::HttpRequest { conn, .. } if *conn == post)));
    sim.feed(post, b"123}");
    assert!(sim.events.iter().any(|e| matches!(e, Event::HttpRequest { conn, body, .. } if *conn == post && body == b"{\"a\":123}")));
    // One answer only.
    sim.hub.http_respond(sim.now, post, 204, &[], b"").unwrap();
    assert_eq!(
        sim.hub.http_respond(sim.now, post, 204, &[], b""),
        Err(UsageError::WrongState)
    );
}

#[test]
fn http_fallback_limits() {
    let mut sim = Sim::new(http_cfg());
    let big = sim.open();
    sim.feed(
        big,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n",
    );
    assert_eq!(sim.rx[&big].status(), Some(413));
    let chunked = sim.open();
    sim.feed(
        chunked,
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(sim.rx[&chunked].status(), Some(501));
    let two = sim.open();
    sim.feed(
        two,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(sim.rx[&two].status(), Some(400));
    // The application never answers: 408 at the handshake timeout.
    let slow = sim.open();
    sim.feed(slow, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    sim.advance(Duration::from_secs(11));
    assert_eq!(sim.rx[&slow].status(), Some(408));
    // Without the fallback a plain request is refused as before.
    let mut plain = Sim::new(HubConfig::default());
    let id = plain.open();
    plain.feed(id, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(plain.rx[&id].status(), Some(400));
}

#[test]
fn a_close_pipelined_after_the_request_still_gets_the_101_first() {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.open();
    let mut bytes = request("/ws", &[]);
    bytes.extend(masked(OpCode::Close, &[0x03, 0xe8]));
    sim.feed(id, &bytes);
    assert_eq!(
        sim.rx[&id].status(),
        Some(101),
        "found by fuzzing: the 101 was dropped"
    );
    assert_eq!(sim.rx[&id].close_code(), Some(1000));
}
