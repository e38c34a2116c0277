//! Redis killed, restarted, unreachable, unresponsive, silent: every publish
//! and read is answered, `Down` and `Up` arrive, nothing hangs.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{eventually, fast, history, Node};
use wshub_core::broker::{BrokerError, BrokerInput};
use wshub_redis::testing::RedisServer;

#[test]
fn redis_killed_then_restarted_empty() {
    let mut redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), fast);
    a.subscribe("news");
    let before = a.publish("news", "{}", Some(history(10))).unwrap().unwrap();
    a.publication("news");

    redis.kill();
    a.wait("Down", |i| *i == BrokerInput::Down);
    assert!(!a.broker.status().up);
    let t = Instant::now();
    assert_eq!(
        a.publish("news", "{}", Some(history(10))),
        Err(BrokerError::Unavailable)
    );
    assert!(a.read("news", Some(0), 10).is_err());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "answered at once, not queued: {:?}",
        t.elapsed()
    );

    redis.restart();
    a.wait("Up", |i| *i == BrokerInput::Up);
    // The hub resubscribes on Up; the driver kept nothing of its own.
    a.subscribe("news");
    let after = a.publish("news", "{}", Some(history(10))).unwrap().unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(
        after.epoch, before.epoch,
        "a Redis restarted empty is a new epoch"
    );
    assert_eq!(a.publication("news").1, Some(after));
    let s = a.broker.status();
    assert!(
        s.up && s.reconnects >= 1 && s.publish_failures >= 1,
        "{s:?}"
    );
}

#[test]
fn unreachable_at_start_is_down_and_answers_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut a = Node::with(&format!("redis://127.0.0.1:{port}"), fast);
    a.wait("Down", |i| *i == BrokerInput::Down);
    assert_eq!(a.publish("news", "{}", None), Err(BrokerError::Unavailable));
    assert!(a.read("news", None, 0).is_err());
    assert!(a.broker.nodes().is_err());
}

#[test]
fn a_listener_that_never_answers_gives_down_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts (so TCP connects succeed) and then neither reads nor writes.
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(64) {
            conns.push(c);
        }
    });
    let t = Instant::now();
    let mut a = Node::with(&format!("redis://127.0.0.1:{port}"), fast);
    a.wait("Down", |i| *i == BrokerInput::Down);
    // connect_timeout + response_timeout = 600 ms, with room for a busy
    // machine.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "Down after {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(a.publish("news", "{}", None), Err(BrokerError::Unavailable));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        t.elapsed()
    );
    drop(a);
    drop(held);
}

#[test]
fn the_probe_rebuilds_a_pubsub_link_that_stops_answering() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), fast);
    a.subscribe("news");
    // The whole server stops answering for 1.5 s (probe interval: 200 ms).
    let port = redis.port().to_string();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "1.5"])
            .output()
            .unwrap()
    });
    a.wait("Down", |i| *i == BrokerInput::Down);
    a.wait("Up", |i| *i == BrokerInput::Up);
    sleeper.join().unwrap();
    assert!(
        a.broker.status().probe_failures >= 1,
        "{:?}",
        a.broker.status()
    );
    a.subscribe("news");
    a.publish("news", r#"{"back":1}"#, None).unwrap();
    assert_eq!(a.publication("news").0, r#"{"back":1}"#);
}

#[test]
fn a_subscribe_while_down_is_answered_after_the_reconnect() {
    let mut redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), fast);
    redis.kill();
    a.wait("Down", |i| *i == BrokerInput::Down);
    // Arrives after the Down: kept, and sent once the link is back.
    a.send(wshub_core::broker::BrokerOutput::Subscribe {
        channel: "news".into(),
        history: None,
    });
    redis.restart();
    a.wait(
        "Subscribed",
        |i| matches!(i, BrokerInput::Subscribed { channel } if channel == "news"),
    );
    a.wait("Up", |i| *i == BrokerInput::Up);
    eventually("subscribed at Redis", || {
        redis.cli(&["PUBSUB", "NUMSUB", "wshub.pub.news"]) == "wshub.pub.news\n1"
    });
}

#[test]
fn up_after_a_restart_means_publishes_work() {
    // No command runs while Redis is away: the command link learns of the
    // loss from the pub/sub link, so the `Up` after the restart is not
    // followed by a failed publish and a second `Down`.
    let mut redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), fast);
    redis.kill();
    a.wait("Down", |i| *i == BrokerInput::Down);
    redis.restart();
    a.wait("Up", |i| *i == BrokerInput::Up);
    assert_eq!(a.publish("news", "{}", None), Ok(None));
    assert!(a
        .try_wait(Duration::ZERO, &|i| *i == BrokerInput::Down)
        .is_none());
}
