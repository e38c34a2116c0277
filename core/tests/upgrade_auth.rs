//! The upgrade and authentication: the 101, refusals in protocol order, the
//! authenticators, deferred decisions and their expiry, requests that
//! arrive with frames behind them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wshub_core::auth::{
    ApiKeyAuth, AuthDecision, AuthFailure, BearerAuth, QueryTokenAuth, Rejection,
};
use wshub_core::frame::OpCode;
use wshub_core::{CloseReason, Event, HubConfig, Identity, UsageError};

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
