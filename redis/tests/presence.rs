//! Presence and the node list across drivers, and their expiry when a node
//! dies without cleaning up.

mod common;

use std::time::Duration;

use common::{eventually, Node};
use wshub_core::broker::BrokerOutput;
use wshub_redis::testing::RedisServer;
use wshub_redis::{NodeInfo, RedisConfig};

fn quick(id: &'static str) -> impl FnOnce(&mut RedisConfig) {
    move |c| {
        c.node_id = Some(id.into());
        c.presence_refresh = Duration::from_millis(100);
        c.presence_ttl = Duration::from_millis(800);
    }
}

fn present(node: &mut Node, channel: &str, user: &str, present: bool) {
    node.send(BrokerOutput::Presence {
        channel: channel.into(),
        user: user.into(),
        present,
    });
}

#[test]
fn presence_spans_nodes() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), quick("a"));
    let mut b = Node::up(&redis.url(), quick("b"));
    present(&mut a, "room", "alice", true);
    present(&mut b, "room", "bob", true);
    present(&mut b, "room", "alice", true);
    let users = |n: &Node| n.broker.presence("room").unwrap();
    eventually("alice and bob", || users(&a) == ["alice", "bob"]);
    assert_eq!(users(&b), ["alice", "bob"]);
    // Alice is still on a.
    present(&mut b, "room", "alice", false);
    eventually("b's alice gone", || {
        redis
            .cli(&["ZSCORE", "wshub.{room}.presence", "b:alice"])
            .is_empty()
    });
    assert_eq!(users(&a), ["alice", "bob"]);
    present(&mut a, "room", "alice", false);
    eventually("only bob", || users(&a) == ["bob"]);
    // While its node lives an entry's expiry keeps moving past where it
    // first was (a refresh), so it outlives the ttl.
    let score = || {
        redis
            .cli(&["ZSCORE", "wshub.{room}.presence", "b:bob"])
            .parse::<u64>()
            .unwrap()
    };
    let first = score();
    eventually("bob refreshed past his first expiry", || {
        score() > first + 800
    });
    assert_eq!(users(&a), ["bob"]);
}

#[test]
fn nodes_are_listed_with_their_connections() {
    let redis = RedisServer::start();
    let a = Node::up(&redis.url(), quick("a"));
    let b = Node::up(&redis.url(), quick("b"));
    a.broker.set_connections(3);
    b.broker.set_connections(5);
    let want = vec![
        NodeInfo {
            id: "a".into(),
            connections: 3,
        },
        NodeInfo {
            id: "b".into(),
            connections: 5,
        },
    ];
    eventually("both nodes", || a.broker.nodes().unwrap() == want);
    // A clean stop removes the node at once.
    b.broker.stop();
    assert_eq!(a.broker.nodes().unwrap(), want[..1]);
}

#[test]
fn a_crashed_node_leaves_no_ghost_past_the_ttl() {
    let redis = RedisServer::start();
    let a = Node::up(&redis.url(), quick("a"));
    let mut b = Node::up(&redis.url(), quick("b"));
    present(&mut b, "room", "bob", true);
    eventually("bob present", || {
        a.broker.presence("room").unwrap() == ["bob"]
    });
    eventually("b listed", || a.broker.nodes().unwrap().len() == 2);
    let Node { broker, .. } = b;
    broker.crash();
    // Still there right after the crash: nothing was cleaned up...
    assert_eq!(a.broker.presence("room").unwrap(), ["bob"]);
    // ...and gone once the ttl (800 ms) passed.
    eventually("bob expired", || {
        a.broker.presence("room").unwrap().is_empty()
    });
    eventually("b expired", || a.broker.nodes().unwrap().len() == 1);
    assert_eq!(redis.cli(&["ZCARD", "wshub.{room}.presence"]), "0");
    assert_eq!(redis.cli(&["HEXISTS", "{wshub}.node_conns", "b"]), "0");
}

#[test]
fn a_leave_while_the_link_is_down_is_sent_after_it() {
    let redis = RedisServer::start();
    // A ttl far past the test: only the removal itself can clear the entry.
    let long = |c: &mut RedisConfig| {
        common::fast(c);
        c.node_id = Some("a".into());
        c.presence_refresh = Duration::from_millis(100);
        c.presence_ttl = Duration::from_secs(60);
    };
    let mut a = Node::up(&redis.url(), long);
    present(&mut a, "room", "alice", true);
    eventually("alice present", || {
        a.broker.presence("room").unwrap() == ["alice"]
    });
    // Cuts every normal connection (a's command link among them); the data
    // stays.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    present(&mut a, "room", "alice", false);
    eventually("alice gone", || {
        a.broker.presence("room").is_ok_and(|u| u.is_empty())
    });
}
