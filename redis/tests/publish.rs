//! Publish, pub/sub and reads against a real redis-server.

mod common;

use common::{eventually, history, Node};
use wshub_core::broker::BrokerOutput;
use wshub_core::history::StreamPosition;
use wshub_redis::testing::RedisServer;

#[test]
fn publishes_are_numbered_1_2_3_in_one_epoch() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    let p: Vec<StreamPosition> = (1..=3)
        .map(|n| {
            a.publish("news", &format!(r#"{{"n":{n}}}"#), Some(history(10)))
                .unwrap()
                .unwrap()
        })
        .collect();
    assert_eq!(p.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(p.iter().all(|x| x.epoch == p[0].epoch));
    assert!(
        (8..=16).contains(&p[0].epoch.len())
            && p[0].epoch.bytes().all(|b| b.is_ascii_alphanumeric())
    );
    assert_eq!(a.broker.status().publishes, 3);
}

#[test]
fn another_node_gets_publications_in_order_with_positions() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    let mut b = Node::up(&redis.url(), |_| {});
    b.subscribe("news");
    a.subscribe("news");
    let mut epoch = String::new();
    for n in 1..=20 {
        epoch = a
            .publish("news", &format!(r#"{{"n":{n}}}"#), Some(history(100)))
            .unwrap()
            .unwrap()
            .epoch;
    }
    for node in [&b, &a] {
        for n in 1..=20u64 {
            let (json, position) = node.publication("news");
            assert_eq!(
                json,
                format!(r#"{{"n":{n}}}"#),
                "as the origin serialized it"
            );
            assert_eq!(
                position,
                Some(StreamPosition {
                    offset: n,
                    epoch: epoch.clone()
                })
            );
        }
    }
    assert_eq!(b.broker.status().publications_in, 20);
}

#[test]
fn a_channel_without_history_has_no_position() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    let mut b = Node::up(&redis.url(), |_| {});
    b.subscribe("chat");
    assert_eq!(a.publish("chat", r#"{"hi":1}"#, None), Ok(None));
    assert_eq!(b.publication("chat"), (r#"{"hi":1}"#.to_string(), None));
    assert_eq!(
        redis.cli(&["EXISTS", "wshub.{chat}.meta", "wshub.{chat}.stream"]),
        "0"
    );
}

#[test]
fn reads_since_newest_and_position_only() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    // An unknown channel: reading creates its epoch at offset 0, and the
    // next publish continues it.
    let fresh = a.read("news", None, 0).unwrap();
    assert_eq!(fresh.position.offset, 0);
    assert!(fresh.publications.is_empty());
    for n in 1..=5 {
        let p = a
            .publish("news", &format!(r#"{{"n":{n}}}"#), Some(history(10)))
            .unwrap()
            .unwrap();
        assert_eq!(p.epoch, fresh.position.epoch);
    }
    let since = a.read("news", Some(2), 2).unwrap();
    assert_eq!(
        since.position,
        StreamPosition {
            offset: 5,
            epoch: fresh.position.epoch.clone()
        }
    );
    let got: Vec<_> = since
        .publications
        .iter()
        .map(|p| (p.offset, String::from_utf8(p.json.to_vec()).unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (3, r#"{"n":3,"offset":3}"#.to_string()),
            (4, r#"{"n":4,"offset":4}"#.to_string())
        ]
    );
    let newest = a.read("news", None, 2).unwrap();
    assert_eq!(
        newest
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    let all = a.read("news", Some(0), 100).unwrap();
    assert_eq!(all.publications.len(), 5);
    let only = a.read("news", Some(1), 0).unwrap();
    assert_eq!((only.position.offset, only.publications.len()), (5, 0));
    assert!(a.read("news", Some(5), 10).unwrap().publications.is_empty());
}

#[test]
fn maxlen_is_exact() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    for n in 1..=5 {
        a.publish("news", &format!(r#"{{"n":{n}}}"#), Some(history(3)))
            .unwrap();
    }
    assert_eq!(redis.cli(&["XLEN", "wshub.{news}.stream"]), "3");
    let page = a.read("news", Some(0), 10).unwrap();
    assert_eq!(
        page.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    a.subscribe("news");
    let numsub = || redis.cli(&["PUBSUB", "NUMSUB", "wshub.pub.news"]);
    assert_eq!(numsub(), "wshub.pub.news\n1");
    a.send(BrokerOutput::Unsubscribe {
        channel: "news".into(),
    });
    eventually("NUMSUB 0", || numsub() == "wshub.pub.news\n0");
    a.publish("news", "{}", None).unwrap();
    // A publication sent after the unsubscribe cannot arrive: the one on
    // another channel, published later, arrives first and alone.
    a.subscribe("other");
    a.publish("other", "{}", None).unwrap();
    a.publication("other");
    assert_eq!(a.broker.status().publications_in, 1);
}

#[test]
fn a_bad_envelope_is_counted_and_dropped() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    a.subscribe("news");
    for bad in [
        "garbage",
        "w1 n 1 e\nnot json",
        "w9 n 1 e\n{}",
        "w1 n 1 bad!epoch\n{}",
    ] {
        assert_eq!(redis.cli(&["PUBLISH", "wshub.pub.news", bad]), "1");
    }
    eventually("4 bad envelopes", || a.broker.status().bad_envelopes == 4);
    a.publish("news", r#"{"ok":1}"#, None).unwrap();
    assert_eq!(a.publication("news").0, r#"{"ok":1}"#);
    assert_eq!(a.broker.status().publications_in, 1);
}

#[test]
fn scripts_flushed_from_redis_are_loaded_again() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    assert_eq!(
        a.publish("news", "{}", Some(history(10)))
            .unwrap()
            .unwrap()
            .offset,
        1
    );
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(
        a.publish("news", "{}", Some(history(10)))
            .unwrap()
            .unwrap()
            .offset,
        2
    );
    assert_eq!(a.read("news", Some(0), 10).unwrap().publications.len(), 2);
    assert_eq!(a.broker.status().publish_failures, 0);
}

#[test]
fn an_envelope_past_the_limit_is_skipped_unread() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    a.subscribe("news");
    let mut huge = b"w1 n 0 -\n{\"x\":\"".to_vec();
    huge.resize(wshub_redis::MAX_ENVELOPE + 1, b'x');
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("wshub.pub.news")
        .arg(huge)
        .query(&mut conn)
        .unwrap();
    assert_eq!(receivers, 1);
    eventually("the big one counted", || {
        a.broker.status().bad_envelopes == 1
    });
    a.publish("news", r#"{"after":1}"#, None).unwrap();
    assert_eq!(a.publication("news").0, r#"{"after":1}"#);
}

/// A quiet channel a node holds keeps its position past `meta_ttl` (the
/// heartbeat renews it), so its subscribers keep their epoch; once no node
/// holds it, it expires as configured.
#[test]
fn a_held_channel_keeps_its_position_past_meta_ttl() {
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |c| {
        c.presence_refresh = std::time::Duration::from_millis(100);
        c.presence_ttl = std::time::Duration::from_secs(1);
    });
    let short = wshub_core::broker::ChannelHistory {
        ttl: std::time::Duration::from_millis(300),
        meta_ttl: std::time::Duration::from_millis(400),
        ..history(10)
    };
    a.send(BrokerOutput::Subscribe {
        channel: "quiet".into(),
        history: Some(short),
    });
    let first = a
        .publish("quiet", r#"{"n":1}"#, Some(short))
        .unwrap()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let meta = "wshub.{quiet}.meta";
    assert_eq!(
        redis.cli(&["EXISTS", meta]).trim(),
        "1",
        "renewed while held"
    );
    let second = a
        .publish("quiet", r#"{"n":2}"#, Some(short))
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.epoch.as_str(), second.offset),
        (first.epoch.as_str(), 2)
    );
    a.send(BrokerOutput::Unsubscribe {
        channel: "quiet".into(),
    });
    eventually("the position expires once nobody holds it", || {
        redis.cli(&["EXISTS", meta]).trim() == "0"
    });
}

/// A broadcast or send-to-user reaches every node (the sender too) on the
/// node-wide channel, however the user id is spelled.
#[test]
fn sends_reach_every_node() {
    use wshub_core::broker::{Audience, BrokerInput};
    let redis = RedisServer::start();
    let mut a = Node::up(&redis.url(), |_| {});
    let b = Node::up(&redis.url(), |_| {});
    for to in [Audience::Everyone, Audience::User("ann e\n1".into())] {
        a.send(BrokerOutput::Send {
            id: common::publish_id(77),
            to: to.clone(),
            json: bytes::Bytes::from_static(br#"{"type":"notice"}"#),
        });
        a.wait("Published", |i| {
            matches!(
                i,
                BrokerInput::Published {
                    result: Ok(None),
                    ..
                }
            )
        });
        for node in [&a, &b] {
            node.wait("Delivery", |i| {
                matches!(i, BrokerInput::Delivery { to: t, json } if *t == to && &json[..] == br#"{"type":"notice"}"#)
            });
        }
    }
}

/// Publications that arrived together reach the hub together (one
/// `Batch`), in order: the hub then writes them to each client in one go.
/// The hub is held busy on the first delivery while 100 more arrive.
#[test]
fn publications_read_together_are_delivered_as_one_batch() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use wshub_core::broker::BrokerInput;
    let redis = RedisServer::start();
    let (tx, rx) = mpsc::channel::<BrokerInput>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let mut cfg = wshub_redis::RedisConfig::new(redis.url());
    cfg.probe_interval = std::time::Duration::from_secs(30);
    let (link, outputs) = wshub_redis::link();
    let _b = wshub_redis::RedisBroker::start(cfg, outputs, move |input| {
        let first = matches!(&input, BrokerInput::Publication { .. });
        let _ = tx.send(input);
        if first {
            // The hub is slow: hold the reader until released (once).
            let _ = release_rx.lock().unwrap().recv();
        }
        true
    })
    .unwrap();
    let mut link = link;
    let wait_for = |pred: &dyn Fn(&BrokerInput) -> bool| loop {
        let i = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("an input");
        if pred(&i) {
            return i;
        }
    };
    wait_for(&|i| *i == BrokerInput::Up);
    wshub_core::broker::BrokerLink::send(
        &mut link,
        BrokerOutput::Subscribe {
            channel: "bulk".into(),
            history: Some(history(200)),
        },
    );
    wait_for(&|i| matches!(i, BrokerInput::Subscribed { .. }));
    let mut a = Node::up(&redis.url(), |_| {});
    for n in 1..=101 {
        a.publish("bulk", &format!(r#"{{"n":{n}}}"#), Some(history(200)))
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    release_tx.send(()).unwrap();
    drop(release_tx);
    let mut offsets = Vec::new();
    let mut batches = 0;
    while offsets.len() < 101 {
        match wait_for(&|i| matches!(i, BrokerInput::Publication { .. } | BrokerInput::Batch(_))) {
            BrokerInput::Batch(inputs) => {
                batches += 1;
                for i in inputs {
                    if let BrokerInput::Publication { position, .. } = i {
                        offsets.push(position.unwrap().offset);
                    }
                }
            }
            BrokerInput::Publication { position, .. } => offsets.push(position.unwrap().offset),
            _ => unreachable!(),
        }
    }
    assert_eq!(offsets, (1..=101).collect::<Vec<u64>>(), "all, in order");
    assert!(
        (1..=4).contains(&batches),
        "100 waiting publications came in {batches} batches of at most 64"
    );
}
