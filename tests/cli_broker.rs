//! Many `wshub serve` nodes on one real `redis-server` (started by each
//! test on a free port, `--save ''`, killed by PID): publishes from any node
//! reach every subscriber on every node once and in order, clients that
//! fail over from a killed node recover everything, and Redis failures are
//! visible (503s, `unavailable`, counters) and survived.

mod proc_log;
mod serve;

use std::net::TcpListener;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve::{eventually, Serve, Ws, WAIT};
use wshub_blocking::client::{ClientBuilder, ClientConfig, ClientEvent, Endpoint};
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_redis::testing::RedisServer;

const ADMIN: &str = "broker-admin";

/// A node on `redis` with client keys `ka`=alice, `kb`=bob, client
/// publishes allowed, and `extra` flags.
fn node(redis: &str, runtime: &str, extra: &[&str]) -> Serve {
    let base = [
        "--broker",
        redis,
        "--runtime",
        runtime,
        "--admin-key",
        ADMIN,
        "--api-key",
        "ka=alice",
        "--api-key",
        "kb=bob",
        "--publish",
        "*",
    ];
    let node = Serve::start(&[&base[..], extra].concat());
    eventually("the node reached Redis", WAIT, || healthz(&node) == 200);
    node
}

/// A client of `node` with client key `key`.
fn ws(node: &Serve, key: &str) -> Ws {
    Ws::connect(&node.addr, key)
}

/// A node on `url` that does not wait for Redis to answer.
fn bare_node(url: &str) -> Serve {
    Serve::start(&[
        "--broker",
        url,
        "--api-key",
        "ka=alice",
        "--admin-key",
        ADMIN,
    ])
}

fn healthz(node: &Serve) -> u16 {
    node.http("GET", "/healthz", None, "").status
}

fn publish(node: &Serve, channel: &str, data: Value) -> serve::Reply {
    let body = json!({"channel": channel, "data": data}).to_string();
    node.http("POST", "/api/publish", Some(ADMIN), &body)
}

fn stats(node: &Serve) -> Value {
    node.http("GET", "/api/stats", None, "").json
}

/// How many Redis subscribers the pub/sub channel of `channel` has.
fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", &format!("wshub.pub.{channel}")]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_broker_flags_exit_2_naming_the_flag_without_the_password() {
    for (args, says) in [
        (vec!["--broker", "http://127.0.0.1:6379"], "--broker"),
        (vec!["--broker", "redis://:s3cr3t-pw@"], "--broker"),
        (vec!["--broker", ""], "--broker"),
        (vec!["--node-id", "n1"], "--node-id: needs --broker"),
        (
            vec!["--presence-ttl", "5s"],
            "--presence-ttl: needs --broker",
        ),
        (
            vec!["--broker", "redis://127.0.0.1:1", "--node-id", "a b"],
            "--node-id",
        ),
    ] {
        let (code, stderr) = proc_log::run_serve(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("s3cr3t"),
            "{args:?} leaked the password: {stderr}"
        );
    }
}

#[test]
fn cross_node_blocking() {
    cross_node("blocking");
}

#[test]
fn cross_node_smol() {
    cross_node("smol");
}

#[test]
fn cross_node_tokio() {
    cross_node("tokio");
}

/// Three nodes, a positioned subscriber on each: publishes through the HTTP
/// API of one node and client publishes on another reach all three once,
/// in order, with the same offsets; the last local subscriber's leaving
/// drops the node's Redis subscription.
fn cross_node(runtime: &str) {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes: Vec<Serve> = (0..3).map(|_| node(&url, runtime, &[])).collect();
    let mut subs: Vec<Ws> = nodes.iter().map(|n| ws(n, "ka")).collect();
    for s in &mut subs {
        let ack = s.subscribe("news", json!({"positions": true}));
        assert_eq!(ack["recovered"], true, "{ack}");
    }
    assert_eq!(numsub(&redis, "news"), 3, "one Redis subscription per node");
    let mut publisher = ws(&nodes[1], "kb");
    for i in 0..10 {
        if i % 2 == 0 {
            let r = publish(&nodes[0], "news", json!(i));
            assert_eq!(r.status, 200, "{:?}", r.json);
            assert_eq!(r.json["published"], 1);
        } else {
            let id = format!("p{i}");
            publisher.send(json!({"type": "publish", "id": id, "channel": "news", "data": i}));
            let ack = publisher.next();
            assert_eq!(
                (ack["type"].as_str(), ack["id"].as_str()),
                (Some("ack"), Some(&*id))
            );
        }
    }
    let want: Vec<(u64, Value)> = (0..10).map(|i| (i + 1, json!(i))).collect();
    for (n, s) in subs.iter_mut().enumerate() {
        assert_eq!(s.messages(10), want, "node {n}");
    }
    // The history in Redis, read through any node's HTTP API.
    let h = nodes[2].http("GET", "/api/history?channel=news&since=7", Some(ADMIN), "");
    assert_eq!(h.status, 200, "{:?}", h.json);
    let data: Vec<&Value> = h.json["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"])
        .collect();
    assert_eq!(data, [&json!(7), &json!(8), &json!(9)], "{:?}", h.json);
    assert_eq!(h.json["offset"], 10);
    let future = nodes[2].http("GET", "/api/history?channel=news&since=99", Some(ADMIN), "");
    assert_eq!(future.status, 400, "{:?}", future.json);
    // A broadcast through node 2's API reaches the clients of every node.
    let body = json!({"type": "notice", "data": "all"}).to_string();
    let r = nodes[2].http("POST", "/api/broadcast", Some(ADMIN), &body);
    assert_eq!(r.status, 200, "{:?}", r.json);
    for (n, s) in subs.iter_mut().enumerate() {
        let m = s.next();
        assert_eq!(
            (m["type"].as_str(), m["data"].as_str()),
            (Some("notice"), Some("all")),
            "node {n}"
        );
    }
    let m = publisher.next();
    assert_eq!(m["type"], "notice", "the publisher's own node too");
    // The publishing node holds no subscriber of its own: it never asked
    // Redis for the channel, and delivered nothing.
    let s1 = stats(&nodes[1]);
    assert_eq!(s1["broker"]["publishes"], 5, "{s1}");
    let s0 = stats(&nodes[0]);
    assert_eq!(s0["broker"]["publications_in"], 10, "{s0}");
    assert_eq!(
        s0["broker"]["nodes"].as_array().map(Vec::len),
        Some(3),
        "{s0}"
    );
    // Node 2's only subscriber leaves: node 2 drops the channel at Redis.
    drop(subs.pop());
    eventually("node 2 unsubscribed at Redis", WAIT, || {
        numsub(&redis, "news") == 2
    });
}

#[test]
fn failover_blocking() {
    failover("blocking");
}

#[test]
fn failover_smol() {
    failover("smol");
}

#[test]
fn failover_tokio() {
    failover("tokio");
}

/// Reconnecting clients (endpoints A then B) subscribed on A, a publisher
/// publishing steadily on B, A killed with SIGKILL mid-stream: every client
/// fails over to B and ends with every message exactly once, in order.
fn failover(runtime: &str) {
    const CLIENTS: usize = 20;
    const MESSAGES: u64 = 200;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut a = node(&url, runtime, &[]);
    let b = node(&url, runtime, &[]);
    let endpoints = |n: &Serve| Endpoint::parse(&format!("ws://{}/ws?token=ka", n.addr)).unwrap();
    let clients: Vec<Receiver<ClientEvent>> = (0..CLIENTS)
        .map(|_| {
            let mut cfg = ClientConfig::new(vec![endpoints(&a), endpoints(&b)]);
            cfg.backoff = BackoffPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                jitter: Jitter::None,
                ..BackoffPolicy::default()
            };
            let (handle, events) = ClientBuilder::new(cfg).subscribe("feed").spawn().unwrap();
            std::mem::forget(handle); // lives as long as the test
            events
        })
        .collect();
    eventually("every client subscribed on A", WAIT, || {
        stats(&a)["subscribers"]["feed"] == CLIENTS
    });
    let publisher = std::thread::spawn({
        let b_addr = b.addr.clone();
        move || {
            for i in 1..=MESSAGES {
                let body = json!({"channel": "feed", "data": i}).to_string();
                let r = serve::http(&b_addr, "POST", "/api/publish", Some(ADMIN), &body);
                assert_eq!(r.status, 200, "{:?}", r.json);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    a.kill();
    publisher.join().unwrap();
    for (n, events) in clients.iter().enumerate() {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        let mut failed_over = false;
        while got.len() < MESSAGES as usize {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("client {n}: only {} messages", got.len()));
            match e {
                ClientEvent::Message(m) if m.kind == "event" => got.push(m.data.as_u64().unwrap()),
                ClientEvent::Reconnected { .. } => failed_over = true,
                ClientEvent::RecoveryFailed { channel, position } => {
                    panic!("client {n}: recovery failed on {channel} at {position:?}")
                }
                _ => {}
            }
        }
        assert!(failed_over, "client {n} never reconnected");
        assert_eq!(got, (1..=MESSAGES).collect::<Vec<_>>(), "client {n}");
    }
    assert_eq!(stats(&b)["subscribers"]["feed"], CLIENTS);
}

#[test]
fn redis_killed_mid_stream_then_restarted_empty() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let a = node(&url, "tokio", &[]);
    let b = node(&url, "smol", &[]);
    let mut sub = ws(&a, "ka");
    let ack = sub.subscribe("news", json!({"positions": true}));
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    assert_eq!(publish(&b, "news", json!(1)).status, 200);
    assert_eq!(sub.messages(1), [(1, json!(1))]);

    redis.kill();
    for n in [&a, &b] {
        eventually("/healthz says the broker is gone", WAIT, || {
            healthz(n) == 503
        });
    }
    // Publishes fail visibly, new upgrades wait, open connections stay.
    let r = publish(&b, "news", json!(2));
    assert_eq!(r.status, 503, "{:?}", r.json);
    let body = json!({"type": "notice"}).to_string();
    let r = b.http("POST", "/api/broadcast", Some(ADMIN), &body);
    assert_eq!(r.status, 503, "a broadcast fails visibly too: {:?}", r.json);
    assert!(
        r.json["error"].as_str().unwrap().contains("unavailable"),
        "{:?}",
        r.json
    );
    let upgrade = ws_upgrade_status(&a);
    assert_eq!(upgrade.0, 503, "{}", upgrade.1);
    assert!(upgrade.1.contains("Retry-After: 1"), "{}", upgrade.1);
    sub.send(json!({"type": "publish", "id": "x", "channel": "news", "data": 3}));
    let err = sub.next();
    assert_eq!(err["data"]["code"], "unavailable", "{err}");

    redis.restart(); // empty: --save ''
    for n in [&a, &b] {
        eventually("/healthz is back", WAIT, || healthz(n) == 200);
    }
    let r = publish(&b, "news", json!(4));
    assert_eq!(r.status, 200, "{:?}", r.json);
    // The same subscription goes on, and learns the history is a new one.
    let m = sub.next();
    assert_eq!(m["data"], 4, "{m}");
    assert_eq!(m["offset"], 1, "{m}");
    let new = m["epoch"].as_str().expect("the new epoch is named");
    assert_ne!(new, epoch);
    let sa = stats(&a);
    assert!(
        sa["broker"]["link_reconnects"].as_u64().unwrap() >= 1,
        "{sa}"
    );
    let sb = stats(&b);
    assert!(
        sb["broker"]["publish_failures"].as_u64().unwrap() >= 1,
        "{sb}"
    );
    let metrics = metrics_text(&b);
    for line in ["wshub_broker_up 1\n", "wshub_broker_nodes 2\n"] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    assert!(
        !metrics.contains("wshub_broker_publish_failures_total 0\n"),
        "{metrics}"
    );
}

/// `GET /metrics` as text.
fn metrics_text(node: &Serve) -> String {
    serve::raw(
        &node.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )
}

/// The status and head of a real upgrade request to `node`.
fn ws_upgrade_status(node: &Serve) -> (u16, String) {
    let req = "GET /ws?token=ka HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
               Sec-WebSocket-Version: 13\r\n\r\n";
    let text = serve::raw(&node.addr, req, true);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn redis_down_at_start_refuses_until_it_answers() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let a = bare_node(&url);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(healthz(&a), 503, "never a silent single node");
    let (status, head) = ws_upgrade_status(&a);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("Retry-After"), "{head}");
    assert_eq!(publish(&a, "news", json!(1)).status, 503);
    redis.restart();
    eventually("the node reached Redis", WAIT, || healthz(&a) == 200);
    assert_eq!(ws_upgrade_status(&a).0, 101);
    assert_eq!(publish(&a, "news", json!(1)).status, 200);
}

#[test]
fn a_redis_that_never_answers_gives_timeouts_not_hangs() {
    // Accepts connections, reads nothing, says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in silent.incoming().take(64) {
            kept.push(s);
        }
    });
    let a = bare_node(&url);
    let started = Instant::now();
    assert_eq!(healthz(&a), 503);
    let r = publish(&a, "news", json!(1));
    assert_eq!(r.status, 503, "{:?}", r.json);
    assert_eq!(ws_upgrade_status(&a).0, 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answers came late"
    );
    drop(a);
    drop(held);
}

#[test]
fn presence_across_nodes_expires_after_a_node_is_killed() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = node(&url, "tokio", &["--presence-ttl", "2s"]);
    let mut b = node(&url, "blocking", &["--presence-ttl", "2s"]);
    let mut alice = ws(&a, "ka");
    let mut bob = ws(&b, "kb");
    alice.subscribe("room", json!({"positions": true}));
    bob.subscribe("room", json!({"positions": true}));
    let users = |n: &Serve| {
        n.http("GET", "/api/presence?channel=room", Some(ADMIN), "")
            .json
    };
    eventually("both users are present", WAIT, || {
        users(&a)["users"] == json!(["alice", "bob"])
    });
    assert_eq!(users(&b)["users"], json!(["alice", "bob"]));
    let nodes = |n: &Serve| stats(n)["broker"]["nodes"].as_array().map_or(0, Vec::len);
    assert_eq!(nodes(&a), 2);
    b.kill(); // no goodbye: its entries must expire on their own
    let killed = Instant::now();
    eventually("bob's ghost expired", Duration::from_secs(6), || {
        users(&a)["users"] == json!(["alice"])
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "removed, not expired?"
    );
    eventually(
        "the dead node left the list",
        Duration::from_secs(6),
        || nodes(&a) == 1,
    );
    // Leaving cleanly removes at once.
    drop(alice);
    eventually("alice left", WAIT, || users(&a)["users"] == json!([]));
    let refused = a.http("GET", "/api/presence?channel=room", None, "");
    assert_eq!(refused.status, 401, "presence needs the admin key");
}

#[test]
fn an_in_process_node_publishes_through_its_handle() {
    use wshub_core::command::{Command, HubCommands};
    let redis = RedisServer::start();
    let url = redis.url();
    let remote = node(&url, "tokio", &[]);
    let (link, outputs) = wshub_redis::link();
    let server = wshub_blocking::Server::builder(wshub_core::HubConfig::default())
        .broker(link)
        .bind("127.0.0.1:0")
        .unwrap();
    let handle = server.handle();
    let teller = handle.clone();
    let config = wshub_redis::RedisConfig::new(url.clone());
    let broker = wshub_redis::RedisBroker::start(config, outputs, move |input| {
        teller.tell(Command::Broker(input)).is_ok()
    })
    .unwrap();
    eventually("the in-process node is up", WAIT, || {
        handle.stats().unwrap().broker_up
    });
    let mut sub = ws(&remote, "ka");
    sub.subscribe("jobs", json!({"positions": true}));
    let message = wshub_core::Message::new("event", json!("acked"));
    let position = handle.publish_acked("jobs", message).unwrap().unwrap();
    assert_eq!(position.map(|p| p.offset), Some(1));
    // Fire and forget: handed to the broker, delivered everywhere anyway.
    let message = wshub_core::Message::new("event", json!("told"));
    assert_eq!(handle.publish("jobs", message).unwrap(), 0);
    assert_eq!(sub.messages(2), [(1, json!("acked")), (2, json!("told"))]);
    eventually("both publishes answered", WAIT, || {
        handle.stats().unwrap().broker_publishes == 2
    });
    drop(broker);
}

/// Redis Cluster (three `--cluster-enabled` servers made into a cluster by
/// the fixture): publishes cross nodes in order, and a client that leaves
/// node A recovers on node B what was published meanwhile.
#[test]
fn cross_node_and_recovery_on_a_redis_cluster() {
    let cluster = wshub_redis::testing::RedisCluster::start(3);
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://"), "{url}");
    let a = node(&url, "tokio", &[]);
    let b = node(&url, "smol", &[]);
    let mut on_a = ws(&a, "ka");
    let mut on_b = ws(&b, "kb");
    let ack = on_a.subscribe("orders", json!({"positions": true}));
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    on_b.subscribe("orders", json!({"positions": true}));
    for i in 1..=3 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(publish(node, "orders", json!(i)).status, 200);
    }
    let want: Vec<(u64, Value)> = (1..=3).map(|i| (i, json!(i))).collect();
    assert_eq!(on_a.messages(3), want);
    assert_eq!(on_b.messages(3), want);
    drop(on_a);
    for i in 4..=6 {
        assert_eq!(publish(&a, "orders", json!(i)).status, 200);
    }
    let mut back = ws(&b, "ka");
    back.send(json!({"type": "subscribe", "id": "r", "channel": "orders",
                     "recover": {"offset": 3, "epoch": epoch}}));
    let ack = back.next();
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    assert_eq!(
        back.messages(3),
        (4..=6).map(|i| (i, json!(i))).collect::<Vec<_>>()
    );
}

/// `--max-broker-publishes` bounds what waits for Redis: with Redis busy
/// (DEBUG SLEEP), the second publish is refused at once, the first goes
/// through once Redis is back.
#[test]
fn the_broker_backlog_is_bounded_by_its_flag() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let url = redis.url();
    let a = node(&url, "smol", &["--max-broker-publishes", "1"]);
    let mut c = ws(&a, "kb");
    let port = redis.port().to_string();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "0.6"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    for id in ["p1", "p2"] {
        c.send(json!({"type": "publish", "id": id, "channel": "c", "data": id}));
    }
    let mut replies = vec![c.next(), c.next()];
    replies.sort_by_key(|r| r["id"].as_str().unwrap_or("").to_owned());
    assert_eq!(replies[0]["type"], "ack", "{replies:?}");
    assert_eq!(replies[1]["data"]["code"], "unavailable", "{replies:?}");
    let text = replies[1]["data"]["message"].as_str().unwrap();
    assert!(text.contains("backlog"), "{text}");
    sleeper.join().unwrap();
}
