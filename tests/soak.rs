//! Soak: churn over real sockets against all three adapters at once, for a
//! fixed time: connects, authentication failures, subscribes, client
//! publishes, graceful closes and abrupt disconnects (mid-handshake,
//! mid-frame, while subscribed) from several client threads per adapter,
//! while the application publishes to long-lived subscribers.
//!
//! At the end, per adapter: every connection's state is gone (`Stats`
//! connections, pending and channels 0), the hub reported exactly one
//! `Closed` per connection made and exactly one auth failure per bad key
//! tried, and every surviving subscriber received every message, in order.
//! For the process: descriptors and threads back to their level before the
//! churn, and RSS at most [`RSS_BOUND_KIB`] above its level after warm-up.
//!
//! Runs for `WSHUB_SOAK_SECS` seconds (default 10). For an hour, optimised:
//!
//! ```text
//! WSHUB_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture
//! ```

mod adapters;
#[path = "hostile/raw.rs"]
#[allow(dead_code)]
mod raw;
mod suite;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::{Blocking, Smol, Tokio};
use serde_json::json;
use suite::client::{Client, Refused};
use suite::{Adapter, Running};
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::config::PublishPatterns;
use wshub_core::{Event, HubConfig, Message};

use raw::Raw;

const SECS_ENV: &str = "WSHUB_SOAK_SECS";
/// RSS may grow at most this much from after warm-up to the end.
const RSS_BOUND_KIB: u64 = 16 * 1024;
/// Churning client threads per adapter.
const CHURNERS: usize = 3;
/// Long-lived subscribers per adapter.
const SURVIVORS: usize = 2;
/// Channels the churners subscribe to (and the application publishes to).
const CHURN_CHANNELS: u64 = 8;
/// How far the publisher may run ahead of the slowest survivor.
const AHEAD: u64 = 100;

#[derive(Default)]
struct Counts {
    /// TCP connections the clients opened (each is one hub connection).
    connections: AtomicU64,
    /// Of them, upgrades refused for a bad key.
    auth_failures: AtomicU64,
    /// Of them, dropped without a close frame (mid-handshake, mid-frame, subscribed).
    abrupt: AtomicU64,
    /// Client publishes that came back to their publisher.
    echoes: AtomicU64,
    /// Application publishes a churner received.
    churn_received: AtomicU64,
}

struct Report {
    name: &'static str,
    counts: Arc<Counts>,
    published: u64,
    closed_events: u64,
    stats: wshub_core::Stats,
}

fn config() -> HubConfig {
    let keys = (0..4).map(|i| (format!("key-{i}"), format!("user-{i}")));
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new(keys).source(TokenSource::BearerOrQuery("token".into())),
        ),
        policy: Arc::new(PublishPatterns::new(["echo:*"])),
        close_timeout: Duration::from_secs(1),
        ..HubConfig::default()
    }
}

fn secs() -> u64 {
    std::env::var(SECS_ENV)
        .ok()
        .map(|s| s.parse().expect("WSHUB_SOAK_SECS is a number of seconds"))
        .unwrap_or(10)
}

#[test]
fn soak_all_adapters() {
    raw::raise_fd_limit(20_000);
    let duration = Duration::from_secs(secs());
    let warm_up = (duration / 5).max(Duration::from_secs(1));
    let servers: Vec<(&'static str, Arc<dyn Running>)> = vec![
        ("blocking", Blocking::start(config(), None).into()),
        ("smol", Smol::start(config(), None).into()),
        ("tokio", Tokio::start(config(), None).into()),
    ];
    let fds0 = raw::open_fds();
    let threads0 = raw::threads();
    let rss_start = raw::rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let runs: Vec<_> = servers
        .iter()
        .map(|(name, s)| {
            let (name, s, stop) = (*name, s.clone(), stop.clone());
            std::thread::spawn(move || soak_one(name, s, stop))
        })
        .collect();

    std::thread::sleep(warm_up);
    let rss_warm = raw::rss_kib();
    let mut rss_max = rss_warm;
    while started.elapsed() < duration {
        std::thread::sleep(
            Duration::from_millis(200).min(duration - started.elapsed().min(duration)),
        );
        rss_max = rss_max.max(raw::rss_kib());
    }
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<Report> = runs.into_iter().map(|r| r.join().unwrap()).collect();

    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "not reached: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("descriptors back to before the churn", &|| {
        raw::open_fds() <= fds0
    });
    wait("threads back to before the churn", &|| {
        raw::threads() <= threads0 + 1
    });
    let rss_end = raw::rss_kib();
    eprintln!(
        "soak: {:?} (warm-up {warm_up:?}); RSS start {} MiB, after warm-up {} MiB, peak {} MiB, end {} MiB (bound: end <= after warm-up + {} MiB)",
        started.elapsed(),
        rss_start / 1024,
        rss_warm / 1024,
        rss_max / 1024,
        rss_end / 1024,
        RSS_BOUND_KIB / 1024
    );
    for r in &reports {
        let c = &r.counts;
        eprintln!(
            "soak {:>8}: {} connections ({} auth failures, {} abrupt), {} published x{SURVIVORS} survivors, {} churn deliveries, {} client publish echoes; hub: {} messages in, {} out, {} MiB in, {} MiB out, {} Closed events",
            r.name,
            c.connections.load(Ordering::Relaxed),
            c.auth_failures.load(Ordering::Relaxed),
            c.abrupt.load(Ordering::Relaxed),
            r.published,
            c.churn_received.load(Ordering::Relaxed),
            c.echoes.load(Ordering::Relaxed),
            r.stats.messages_in,
            r.stats.messages_out,
            r.stats.bytes_in >> 20,
            r.stats.bytes_out >> 20,
            r.closed_events,
        );
    }
    assert!(
        rss_end <= rss_warm + RSS_BOUND_KIB,
        "RSS grew {} KiB after warm-up (bound {RSS_BOUND_KIB} KiB)",
        rss_end.saturating_sub(rss_warm)
    );
    for (_, s) in &servers {
        assert!(s.shutdown(Duration::from_secs(5)));
    }
}

/// Churns one server until `stop`; checks it is clean afterwards.
fn soak_one(name: &'static str, s: Arc<dyn Running>, stop: Arc<AtomicBool>) -> Report {
    let counts = Arc::new(Counts::default());
    // Drain events (an unread event channel grows), counting `Closed`.
    let events_done = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let drain = {
        let (s, done, closed) = (s.clone(), events_done.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut auth_failed = 0u64;
            while !done.load(Ordering::Relaxed) {
                while let Some(e) = s.next_event(Duration::from_millis(50)) {
                    match e {
                        Event::Closed { .. } => {
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::AuthFailed { .. } => auth_failed += 1,
                        _ => {}
                    }
                }
            }
            auth_failed
        })
    };

    // Survivors: subscribed from start to end, checking order on the fly.
    let progress: Vec<Arc<AtomicU64>> = (0..SURVIVORS)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let survivors: Vec<_> = progress
        .iter()
        .enumerate()
        .map(|(i, seen)| {
            let mut c = Client::connect_with(s.addr(), &format!("/ws?token=key-{i}"), &[]).unwrap();
            counts.connections.fetch_add(1, Ordering::Relaxed);
            c.send_json(&json!({"type":"subscribe","channel":"stable","id":"s"}));
            assert_eq!(c.next_json()["type"], "ack");
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut next = 0u64;
                loop {
                    let m = c.next_json();
                    if m["type"] == "end" {
                        assert_eq!(
                            m["data"], next,
                            "{name}: the end marker follows the last message"
                        );
                        break;
                    }
                    assert_eq!(
                        m["data"]["n"], next,
                        "{name}: survivor {i} lost or reordered a message"
                    );
                    next += 1;
                    seen.store(next, Ordering::Relaxed);
                }
                close_normally(&mut c);
                next
            })
        })
        .collect();

    let churners: Vec<_> = (0..CHURNERS)
        .map(|t| {
            let (addr, stop, counts) = (s.addr(), stop.clone(), counts.clone());
            std::thread::spawn(move || churn(name, t, addr, &stop, &counts))
        })
        .collect();

    // The application publishes until the churners have stopped (one may be
    // waiting for a publish), paced to the slowest survivor.
    let mut n = 0u64;
    while churners.iter().any(|c| !c.is_finished()) {
        let slowest = progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap();
        if n >= slowest + AHEAD {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        assert_eq!(
            s.publish("stable", Message::new("m", json!({"n": n}))),
            SURVIVORS,
            "{name}: every survivor still subscribed"
        );
        s.publish(
            &format!("churn:{}", n % CHURN_CHANNELS),
            Message::new("churn", json!(n)),
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    for c in churners {
        c.join().unwrap();
    }
    s.broadcast(Message::new("end", json!(n)));
    for (i, sv) in survivors.into_iter().enumerate() {
        assert_eq!(
            sv.join().unwrap(),
            n,
            "{name}: survivor {i} got every message"
        );
    }

    // Every connection's state is gone, with exactly one `Closed` each.
    let deadline = Instant::now() + Duration::from_secs(10);
    let made = counts.connections.load(Ordering::Relaxed);
    loop {
        let st = s.stats();
        let done = (st.connections, st.pending, st.channels) == (0, 0, 0)
            && closed.load(Ordering::Relaxed) == made;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: state left after the churn: {st:?}, {} Closed events for {made} connections",
            closed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    events_done.store(true, Ordering::Relaxed);
    let auth_failed_events = drain.join().unwrap();
    let stats = s.stats();
    let bad = counts.auth_failures.load(Ordering::Relaxed);
    assert_eq!(
        stats.auth_failures, bad,
        "{name}: one auth failure counted per bad key"
    );
    assert_eq!(
        auth_failed_events, bad,
        "{name}: one AuthFailed event per bad key"
    );
    assert_eq!(stats.slow_consumers, 0, "{name}: nobody was cut as slow");
    Report {
        name,
        counts,
        published: n,
        closed_events: closed.load(Ordering::Relaxed),
        stats,
    }
}

/// One churning client thread: cycles through the ways a client comes and
/// goes until `stop`.
fn churn(name: &str, t: usize, addr: std::net::SocketAddr, stop: &AtomicBool, counts: &Counts) {
    let key = |i: u64| format!("/ws?token=key-{}", i % 4);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        counts.connections.fetch_add(1, Ordering::Relaxed);
        match i % 6 {
            // Subscribe, publish to its own echo channel, close gracefully.
            0 => {
                let mut c = Client::connect_with(addr, &key(i), &[]).unwrap();
                c.send_json(&json!({"type":"subscribe","channel":format!("churn:{}", i % CHURN_CHANNELS),"id":1}));
                c.send_json(&json!({"type":"subscribe","channel":format!("echo:{t}:{i}"),"id":2}));
                c.send_json(
                    &json!({"type":"publish","channel":format!("echo:{t}:{i}"),"data":i,"id":3}),
                );
                let mut want = vec![1, 2, 3];
                let mut echoed = false;
                while !(want.is_empty() && echoed) {
                    let m = c.next_json();
                    match m["type"].as_str() {
                        Some("ack") => want.retain(|id| m["id"] != *id),
                        Some("event") => {
                            assert_eq!(m["data"], i, "{name}: the echo of its own publish");
                            echoed = true;
                        }
                        Some("churn") => {}
                        _ => panic!("{name}: unexpected {m}"),
                    }
                }
                counts.echoes.fetch_add(1, Ordering::Relaxed);
                close_normally(&mut c);
            }
            // Subscribed, receives an application publish, then vanishes.
            1 => {
                let mut c = Client::connect_with(addr, &key(i), &[]).unwrap();
                c.send_json(&json!({"type":"subscribe","channel":format!("churn:{}", i % CHURN_CHANNELS),"id":1}));
                assert_eq!(c.next_json()["type"], "ack");
                let m = c.next_json();
                assert_eq!(m["type"], "churn", "{name}: {m}");
                counts.churn_received.fetch_add(1, Ordering::Relaxed);
                counts.abrupt.fetch_add(1, Ordering::Relaxed);
                drop(c);
            }
            // A bad key.
            2 => {
                let r = Client::connect_with(addr, &format!("/ws?token=nope-{i}"), &[]);
                assert_eq!(r.unwrap_err(), Refused::Status(401), "{name}");
                counts.auth_failures.fetch_add(1, Ordering::Relaxed);
            }
            // Half a request, then gone.
            3 => {
                let mut c = Raw::connect(addr);
                c.send(b"GET /ws?token=key-1 HTTP/1.1\r\nHost: soak\r\nSec-WebSocket-");
                counts.abrupt.fetch_add(1, Ordering::Relaxed);
            }
            // Subscribed, then gone in the middle of a frame.
            4 => {
                let mut c = Client::connect_with(addr, &key(i), &[]).unwrap();
                c.send_json(&json!({"type":"subscribe","channel":format!("churn:{}", i % CHURN_CHANNELS),"id":1}));
                assert_eq!(c.next_json()["type"], "ack");
                c.send_raw(&[0x81, 0xfe, 0x01]);
                counts.abrupt.fetch_add(1, Ordering::Relaxed);
            }
            // Connected, idle, closed gracefully by the client.
            _ => {
                let mut c = Client::connect_with(addr, &key(i), &[]).unwrap();
                c.send_json(&json!({"type":"ping","id":"p"}));
                assert_eq!(c.next_json()["type"], "pong");
                close_normally(&mut c);
            }
        }
    }
}

/// Closes with 1000 and waits for the server's close reply (skipping what
/// was still on its way).
fn close_normally(c: &mut Client) {
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    c.ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .unwrap();
    assert_eq!(c.wait_close(), Some(1000));
}
