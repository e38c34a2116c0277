//! One behaviour suite for every adapter. Each adapter's test file implements
//! [`Adapter`] and instantiates the suite with `adapter_suite!`.
#![allow(dead_code)]

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wshub_core::auth::{ApiKeyAuth, AuthDecision, Rejection, TokenSource};
use wshub_core::{CloseReason, Event, HubConfig, Identity, Message, Stats, UpgradeRequest};

use client::{Client, Refused};

/// A blocking authenticator the adapter runs off the hub's thread (worker
/// thread or async task) for requests the core's authenticator deferred.
pub type Deferred = Arc<dyn Fn(&UpgradeRequest) -> AuthDecision + Send + Sync>;

/// A running server under test, driven synchronously.
pub trait Running: Send + Sync {
    fn addr(&self) -> SocketAddr;
    fn publish(&self, channel: &str, m: Message) -> usize;
    fn broadcast(&self, m: Message) -> usize;
    fn send_to_user(&self, user: &str, m: Message) -> usize;
    fn stats(&self) -> Stats;
    fn subscriber_count(&self, channel: &str) -> usize;
    /// Graceful shutdown; true when it completed before the deadline.
    fn shutdown(&self, deadline: Duration) -> bool;
    /// The next hub event, or None after `timeout`.
    fn next_event(&self, timeout: Duration) -> Option<Event>;
}

/// An adapter: starts a server on 127.0.0.1:0.
pub trait Adapter {
    const NAME: &'static str;
    fn start(config: HubConfig, deferred: Option<Deferred>) -> Box<dyn Running>;
}

const WAIT: Duration = Duration::from_secs(5);

pub fn wait_event(s: &dyn Running, what: impl Fn(&Event) -> bool) -> Event {
    let deadline = std::time::Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match s.next_event(left) {
            Some(e) if what(&e) => return e,
            Some(_) => {}
            None => break,
        }
    }
    panic!("expected event did not arrive within {WAIT:?}");
}

/// Polls `f` until it is true or the wait runs out.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("not reached in time: {what}");
}

fn keys() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new([
                ("key-alice".to_string(), "alice".to_string()),
                ("key-bob".to_string(), "bob".to_string()),
            ])
            .source(TokenSource::BearerOrQuery("token".into())),
        ),
        ..HubConfig::default()
    }
}

pub fn auth_before_upgrade<A: Adapter>() {
    let s = A::start(keys(), None);
    let c =
        Client::connect_with(s.addr(), "/ws", &[("Authorization", "Bearer key-alice")]).unwrap();
    let e = wait_event(&*s, |e| matches!(e, Event::Connected { .. }));
    assert!(matches!(e, Event::Connected { identity, .. } if identity.user_id == "alice"));
    let q = Client::connect_with(s.addr(), "/ws?token=key-bob", &[]).unwrap();
    let e = wait_event(&*s, |e| matches!(e, Event::Connected { .. }));
    assert!(matches!(e, Event::Connected { identity, .. } if identity.user_id == "bob"));
    let bad = Client::connect_with(s.addr(), "/ws?token=s3cr3t-nope", &[]).unwrap_err();
    assert_eq!(bad, Refused::Status(401));
    let e = wait_event(&*s, |e| matches!(e, Event::AuthFailed { .. }));
    assert!(!format!("{e:?}").contains("s3cr3t"));
    let bad = Client::connect_with(s.addr(), "/ws", &[("Authorization", "Bearer s3cr3t-nope")])
        .unwrap_err();
    assert_eq!(bad, Refused::Status(401));
    assert_eq!(s.stats().connections, 2);
    drop((c, q));
}

pub fn header_gate_and_origin<A: Adapter>() {
    let cfg = HubConfig {
        required_headers: vec!["X-Client-Id".into()],
        allowed_origins: vec!["https://app.example".into()],
        ..HubConfig::default()
    };
    let s = A::start(cfg, None);
    assert_eq!(
        Client::connect_with(s.addr(), "/ws", &[]).unwrap_err(),
        Refused::Status(400)
    );
    let bad_origin = [("X-Client-Id", "1"), ("Origin", "https://evil.example")];
    assert_eq!(
        Client::connect_with(s.addr(), "/ws", &bad_origin).unwrap_err(),
        Refused::Status(403)
    );
    let good = [("X-Client-Id", "1"), ("Origin", "https://app.example")];
    let _c = Client::connect_with(s.addr(), "/ws", &good).unwrap();
    assert_eq!(
        Client::connect_with(s.addr(), "/elsewhere", &good).unwrap_err(),
        Refused::Status(404)
    );
    eventually("one connection", || s.stats().connections == 1);
}

fn deferring(timeout: Duration) -> HubConfig {
    HubConfig {
        authenticator: Arc::new(|_: &UpgradeRequest| AuthDecision::Defer),
        handshake_timeout: timeout,
        ..HubConfig::default()
    }
}

pub fn deferred_auth<A: Adapter>() {
    // The "I/O-bound" check: a slow ban list lookup that must not block others.
    let check: Deferred = Arc::new(|req: &UpgradeRequest| {
        std::thread::sleep(Duration::from_millis(50));
        match req.query_param("user").as_deref() {
            Some("banned") => AuthDecision::Reject(Rejection::forbidden()),
            Some("hang") => {
                std::thread::sleep(Duration::from_secs(3));
                AuthDecision::Accept(Identity::user("late"))
            }
            Some(u) => AuthDecision::Accept(Identity::user(u)),
            None => AuthDecision::Reject(Rejection::unauthorized(
                wshub_core::AuthFailure::MissingCredentials,
            )),
        }
    });
    let s = A::start(deferring(Duration::from_secs(1)), Some(check));
    let addr = s.addr();
    let hang = std::thread::spawn(move || Client::connect_with(addr, "/ws?user=hang", &[]));
    let ok = Client::connect_with(s.addr(), "/ws?user=dora", &[]).unwrap();
    let e = wait_event(&*s, |e| matches!(e, Event::Connected { .. }));
    assert!(matches!(e, Event::Connected { identity, .. } if identity.user_id == "dora"));
    assert_eq!(
        Client::connect_with(s.addr(), "/ws?user=banned", &[]).unwrap_err(),
        Refused::Status(403)
    );
    // An answer that never comes in time: the handshake timeout ends it.
    let r = hang.join().unwrap();
    assert!(
        matches!(r, Err(Refused::Status(503)) | Err(Refused::Closed)),
        "{:?}",
        r.err()
    );
    drop(ok);
}

pub fn routing<A: Adapter>() {
    let s = A::start(keys(), None);
    let mut a1 = Client::connect_with(s.addr(), "/ws?token=key-alice", &[]).unwrap();
    let mut a2 = Client::connect_with(s.addr(), "/ws?token=key-alice", &[]).unwrap();
    let mut b = Client::connect_with(s.addr(), "/ws?token=key-bob", &[]).unwrap();
    a1.send_json(&json!({"type":"subscribe","data":"process:p1"}));
    b.send_json(&json!({"type":"subscribe","channel":"other","id":1}));
    assert_eq!(b.next_json()["type"], "ack");
    eventually("subscribed", || s.subscriber_count("process:p1") == 1);
    assert_eq!(
        s.publish("process:p1", Message::process_output("p1", "line")),
        1
    );
    let m = a1.next_json();
    assert_eq!(
        (m["type"].as_str(), m["data"].as_str()),
        (Some("process_output"), Some("line"))
    );
    // Only subscribers receive: b gets the broadcast next, not the channel message.
    assert_eq!(s.broadcast(Message::event("hello", json!(1))), 3);
    for c in [&mut a1, &mut a2, &mut b] {
        assert_eq!(c.next_json()["type"], "event");
    }
    assert_eq!(s.send_to_user("alice", Message::new("dm", json!("x"))), 2);
    assert_eq!(a1.next_json()["type"], "dm");
    assert_eq!(a2.next_json()["type"], "dm");
    a1.send_json(&json!({"type":"unsubscribe","data":"process:p1"}));
    eventually("unsubscribed", || s.subscriber_count("process:p1") == 0);
    assert_eq!(
        s.publish("process:p1", Message::process_output("p1", "gone")),
        0
    );
    // b's next message is the marker, proving it got nothing in between.
    s.broadcast(Message::new("marker", json!(null)));
    assert_eq!(b.next_json()["type"], "marker");
    assert_eq!(a1.next_json()["type"], "marker");
}

pub fn heartbeats<A: Adapter>() {
    let cfg = HubConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(400),
        ..HubConfig::default()
    };
    let s = A::start(cfg, None);
    let mut live = Client::connect(s.addr()).unwrap();
    let silent = Client::connect(s.addr()).unwrap();
    live.send_json(&json!({"type":"ping"}));
    assert_eq!(live.next_json()["type"], "pong");
    // The live client reads (answering server pings) for a while.
    let pings = live.pump_for(Duration::from_millis(900));
    assert!(pings >= 3, "server pings seen: {pings}");
    let e = wait_event(&*s, |e| {
        matches!(
            e,
            Event::Closed {
                reason: CloseReason::PongTimeout,
                ..
            }
        )
    });
    assert!(matches!(
        e,
        Event::Closed {
            was_connected: true,
            ..
        }
    ));
    assert_eq!(s.stats().connections, 1, "the live one stays");
    drop(silent);
}

pub fn slow_consumer<A: Adapter>() {
    let s = A::start(HubConfig::default(), None);
    let mut fast = Client::connect(s.addr()).unwrap();
    let mut slow = Client::connect(s.addr()).unwrap();
    fast.send_json(&json!({"type":"subscribe","channel":"c","id":1}));
    assert_eq!(fast.next_json()["type"], "ack");
    slow.send_json(&json!({"type":"subscribe","channel":"c"}));
    eventually("both subscribed", || s.subscriber_count("c") == 2);
    let pad = "x".repeat(4000);
    let total = 4000u64;
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while (got.len() as u64) < total {
            got.push(fast.next_json()["data"]["n"].as_u64().unwrap());
            seen2.store(got.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        (got, fast)
    });
    for n in 0..total {
        // Paced to the fast reader, so only the client that stopped reading lags.
        while n >= seen.load(std::sync::atomic::Ordering::Relaxed) + 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.publish("c", Message::new("m", json!({"n": n, "pad": pad})));
    }
    let (got, _fast) = reader.join().unwrap();
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "every message in order"
    );
    wait_event(&*s, |e| matches!(e, Event::SlowConsumer { .. }));
    let e = wait_event(&*s, |e| {
        matches!(
            e,
            Event::Closed {
                reason: CloseReason::SlowConsumer,
                ..
            }
        )
    });
    assert!(matches!(
        e,
        Event::Closed {
            code: Some(1013),
            ..
        }
    ));
    assert_eq!(s.subscriber_count("c"), 1);
    drop(slow);
}

/// A client that stops reading until its socket is full, then reads again,
/// gets every message in order and is not cut: the adapter waits for the
/// socket to drain (a waiter task, or the blocking adapter's writer thread)
/// while the core holds the rest, then writes again; and after a pause
/// longer than a writer thread's idle time, writing goes on as before.
pub fn paused_reader_catches_up<A: Adapter>() {
    let cfg = HubConfig {
        max_queued_messages: 100_000,
        max_queued_bytes: 256 << 20,
        ..HubConfig::default()
    };
    let s = A::start(cfg, None);
    let mut c = Client::connect(s.addr()).unwrap();
    c.send_json(&json!({"type":"subscribe","channel":"c","id":1}));
    assert_eq!(c.next_json()["type"], "ack");
    let pad = "x".repeat(16 * 1024);
    let total = 1000u64; // 16 MiB, far more than loopback socket buffers hold
    for n in 0..total {
        assert_eq!(
            s.publish("c", Message::new("m", json!({"n": n, "pad": pad}))),
            1
        );
    }
    // Nobody reads: the sockets fill and the rest waits in the core.
    std::thread::sleep(Duration::from_millis(300));
    let out = s.stats().bytes_out;
    assert!(
        out < total * 16 * 1024,
        "{out} bytes out: the socket never filled, the case tests nothing"
    );
    let got: Vec<u64> = (0..total)
        .map(|_| c.next_json()["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "every message, in order"
    );
    std::thread::sleep(Duration::from_millis(1500));
    for n in total..total + 10 {
        s.publish("c", Message::new("m", json!({"n": n})));
        assert_eq!(c.next_json()["data"]["n"].as_u64(), Some(n));
    }
    assert_eq!(s.stats().slow_consumers, 0);
    assert_eq!(s.stats().connections, 1);
}

pub fn graceful_shutdown<A: Adapter>() {
    let s = A::start(HubConfig::default(), None);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(s.addr()).unwrap()).collect();
    eventually("three connected", || s.stats().connections == 3);
    let s = Arc::new(s);
    let s2 = s.clone();
    let done = std::thread::spawn(move || s2.shutdown(Duration::from_secs(5)));
    for c in &mut clients {
        assert_eq!(c.wait_close(), Some(1001));
    }
    assert!(
        done.join().unwrap(),
        "shutdown finished before its deadline"
    );
}

pub fn abrupt_disconnects_free_state<A: Adapter>() {
    use std::io::Write;
    let s = A::start(HubConfig::default(), None);
    // Mid-handshake.
    let mut raw = std::net::TcpStream::connect(s.addr()).unwrap();
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr")
        .unwrap();
    eventually("pending handshake seen", || s.stats().pending == 1);
    drop(raw);
    // Mid-frame, while subscribed.
    let mut c = Client::connect(s.addr()).unwrap();
    c.send_json(&json!({"type":"subscribe","channel":"c","id":1}));
    assert_eq!(c.next_json()["type"], "ack");
    c.send_raw(&[0x81, 0xfe, 0x01]); // a frame header cut short
    drop(c);
    eventually("all state freed", || {
        let st = s.stats();
        st.connections == 0 && st.pending == 0 && st.channels == 0
    });
}

/// Instantiates the whole suite for an adapter type.
#[macro_export]
macro_rules! adapter_suite {
    ($adapter:ty) => {
        #[test]
        fn auth_before_upgrade() {
            suite::auth_before_upgrade::<$adapter>();
        }
        #[test]
        fn header_gate_and_origin() {
            suite::header_gate_and_origin::<$adapter>();
        }
        #[test]
        fn deferred_auth() {
            suite::deferred_auth::<$adapter>();
        }
        #[test]
        fn routing() {
            suite::routing::<$adapter>();
        }
        #[test]
        fn heartbeats() {
            suite::heartbeats::<$adapter>();
        }
        #[test]
        fn paused_reader_catches_up() {
            suite::paused_reader_catches_up::<$adapter>();
        }
        #[test]
        fn slow_consumer() {
            suite::slow_consumer::<$adapter>();
        }
        #[test]
        fn graceful_shutdown() {
            suite::graceful_shutdown::<$adapter>();
        }
        #[test]
        fn abrupt_disconnects_free_state() {
            suite::abrupt_disconnects_free_state::<$adapter>();
        }
    };
}
