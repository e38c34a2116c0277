//! Who gets what: subscriptions, publish, broadcast, send to a user, the
//! level-1 protocol (acks and error codes), application message types and
//! the queries.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use wshub_core::auth::ApiKeyAuth;
use wshub_core::config::PublishPatterns;
use wshub_core::{Event, HubConfig, Message};

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
