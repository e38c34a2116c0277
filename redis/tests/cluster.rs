//! The same driver on a three-node Redis Cluster.

mod common;

use common::{history, Node};
use wshub_core::history::StreamPosition;
use wshub_redis::testing::RedisCluster;
use wshub_redis::RedisConfig;

#[test]
fn publish_read_and_pubsub_across_two_nodes() {
    let cluster = RedisCluster::start(3);
    let quick = |id: &'static str| {
        move |c: &mut RedisConfig| {
            c.node_id = Some(id.into());
            c.presence_refresh = std::time::Duration::from_millis(100);
            c.presence_ttl = std::time::Duration::from_millis(800);
        }
    };
    let mut a = Node::up(&cluster.url(), quick("a"));
    let mut b = Node::up(&cluster.url(), quick("b"));
    // Channels spread over the slots, so over all three nodes.
    let channels: Vec<String> = (0..12).map(|i| format!("ch{i}")).collect();
    for ch in &channels {
        b.subscribe(ch);
    }
    for ch in &channels {
        for n in 1..=3u64 {
            let p = a
                .publish(ch, &format!(r#"{{"n":{n}}}"#), Some(history(10)))
                .unwrap()
                .unwrap();
            assert_eq!(p.offset, n);
        }
        assert_eq!(a.publish(ch, "{}", None), Ok(None));
    }
    for ch in &channels {
        let epoch = a.read(ch, None, 0).unwrap().position.epoch;
        for n in 1..=3u64 {
            let (json, position) = b.publication(ch);
            assert_eq!(json, format!(r#"{{"n":{n}}}"#));
            assert_eq!(
                position,
                Some(StreamPosition {
                    offset: n,
                    epoch: epoch.clone()
                })
            );
        }
        assert_eq!(b.publication(ch).1, None);
        let page = b.read(ch, Some(1), 10).unwrap();
        assert_eq!(
            page.publications
                .iter()
                .map(|p| p.offset)
                .collect::<Vec<_>>(),
            [2, 3]
        );
    }
    // Presence and the node list live in other slots again.
    a.send(wshub_core::broker::BrokerOutput::Presence {
        channel: "ch1".into(),
        user: "alice".into(),
        present: true,
    });
    common::eventually("alice present", || {
        b.broker.presence("ch1").unwrap() == ["alice"]
    });
    common::eventually("two nodes", || b.broker.nodes().unwrap().len() == 2);
    assert!(cluster.cli(&["EXISTS", "wshub.{ch1}.meta"]).ends_with('1'));
}
