//! The broker seam, driven by an in-memory broker shared by several hubs
//! (nodes): one broker output per publish, per-channel subscriptions on
//! demand, reads held until the channel is confirmed, delivery in the
//! broker's order on every node, failures reported to every publisher, and
//! the catch-up after the link comes back. The broker is testkit's
//! `MemoryBroker`, which the `broker` fuzz target drives too.

mod common;

use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use wshub_core::auth::ApiKeyAuth;
use wshub_core::broker::{BrokerError, BrokerInput, BrokerOutput};
use wshub_core::command::{Command, Reply};
use wshub_core::config::PublishPatterns;
use wshub_core::{ConnId, HubConfig, Message};
use wshub_testkit::broker::MemoryBroker;

/// Several hubs on one broker.
struct Cluster {
    nodes: Vec<Sim>,
    broker: MemoryBroker,
}

fn config() -> HubConfig {
    HubConfig {
        broker: true,
        authenticator: Arc::new(ApiKeyAuth::new([
            ("k1".to_string(), "u1".to_string()),
            ("k2".to_string(), "u2".to_string()),
        ])),
        policy: Arc::new(PublishPatterns::new(["*"])),
        ..HubConfig::default()
    }
}

impl Cluster {
    fn new(n: usize) -> Self {
        Self::with(n, config())
    }

    fn with(n: usize, cfg: HubConfig) -> Self {
        let mut c = Cluster {
            nodes: (0..n).map(|_| Sim::new(cfg.clone())).collect(),
            broker: MemoryBroker::new(n),
        };
        for node in 0..n {
            c.input(node, BrokerInput::Up);
        }
        c
    }

    fn input(&mut self, node: usize, input: BrokerInput) {
        let sim = &mut self.nodes[node];
        sim.hub.handle_broker(sim.now, input);
        sim.pump();
    }

    /// Runs every node and the broker until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for node in 0..self.nodes.len() {
                self.nodes[node].pump();
                while let Some(out) = self.nodes[node].hub.poll_broker() {
                    self.broker.take(node, out);
                    moved = true;
                }
            }
            for node in 0..self.nodes.len() {
                while let Some(input) = self.broker.inbox[node].pop_front() {
                    self.input(node, input);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn connect(&mut self, node: usize, key: &str) -> ConnId {
        let auth = format!("Bearer {key}");
        let id = self.nodes[node].connect_with("/ws", &[("Authorization", &auth)]);
        assert_eq!(self.nodes[node].rx[&id].status(), Some(101));
        id
    }

    fn send(&mut self, node: usize, id: ConnId, text: &str) {
        self.nodes[node].send_text(id, text);
        self.settle();
    }

    fn json(&mut self, node: usize, id: ConnId) -> Vec<Value> {
        self.nodes[node].take_json(id)
    }

    fn publishes(&self, node: usize) -> usize {
        let is_publish = |o: &&BrokerOutput| matches!(o, BrokerOutput::Publish { .. });
        self.broker.log[node].iter().filter(is_publish).count()
    }
}

fn offsets(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["offset"].as_u64().expect("positioned"))
        .collect()
}

fn data(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["data"].clone())
        .collect()
}

const SUB_POSITIONS: &str = r#"{"type":"subscribe","id":1,"channel":"c","positions":true}"#;

#[test]
fn a_publish_on_any_node_reaches_every_node_once_in_order() {
    let mut c = Cluster::new(3);
    let subs: Vec<(usize, ConnId)> = (0..3).map(|n| (n, c.connect(n, "k1"))).collect();
    for &(n, id) in &subs {
        c.send(n, id, SUB_POSITIONS);
        let ack = c.json(n, id);
        assert_eq!(ack[0]["type"], "ack", "{ack:?}");
        assert_eq!(ack[0]["data"]["recovered"], true);
    }
    let publisher = c.connect(1, "k2");
    for i in 0..5 {
        let text = format!(r#"{{"type":"publish","id":{i},"channel":"c","data":{i}}}"#);
        c.send(1, publisher, &text);
    }
    // The publisher got one ack per publish, after the broker's answer.
    let acks = c.json(1, publisher);
    assert_eq!(types(&acks), vec!["ack"; 5], "{acks:?}");
    for &(n, id) in &subs {
        let got = c.json(n, id);
        assert_eq!(data(&got), (0..5).map(|i| json!(i)).collect::<Vec<_>>());
        assert_eq!(offsets(&got), vec![1, 2, 3, 4, 5], "node {n}");
    }
    // One broker output per publish, none from the nodes that only deliver.
    assert_eq!(c.publishes(1), 5);
    assert_eq!(c.publishes(0) + c.publishes(2), 0);
    assert_eq!(c.nodes[1].hub.stats().broker_publishes, 5);
}

#[test]
fn a_publish_is_one_broker_output_however_many_subscribe() {
    let mut c = Cluster::new(1);
    let ids: Vec<ConnId> = (0..200).map(|_| c.connect(0, "k1")).collect();
    for &id in &ids {
        c.send(0, id, r#"{"type":"subscribe","channel":"c"}"#);
    }
    let now = c.nodes[0].now;
    assert_eq!(
        c.nodes[0]
            .hub
            .publish(now, "c", Message::new("event", json!(1))),
        0
    );
    c.settle();
    assert_eq!(c.publishes(0), 1);
    let subscribes = c.broker.log[0]
        .iter()
        .filter(|o| matches!(o, BrokerOutput::Subscribe { .. }))
        .count();
    assert_eq!(
        subscribes, 1,
        "one broker subscription for 200 local subscribers"
    );
    for &id in &ids {
        assert_eq!(data(&c.json(0, id)), vec![json!(1)]);
    }
}

#[test]
fn channels_are_held_at_the_broker_only_while_they_have_local_subscribers() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, "k1");
    let b = c.connect(0, "k1");
    c.send(0, a, r#"{"type":"subscribe","channel":"c"}"#);
    assert!(c.broker.subscribed[0].contains("c"));
    assert!(
        !c.broker.subscribed[1].contains("c"),
        "node 1 has nobody in c"
    );
    c.send(0, b, r#"{"type":"subscribe","channel":"c"}"#);
    c.send(0, a, r#"{"type":"unsubscribe","channel":"c"}"#);
    assert!(c.broker.subscribed[0].contains("c"), "b is still in c");
    // The last one leaves by closing.
    let now = c.nodes[0].now;
    c.nodes[0].hub.handle_eof(now, b).unwrap();
    c.settle();
    assert!(!c.broker.subscribed[0].contains("c"));
    let unsubscribe = BrokerOutput::Unsubscribe {
        channel: "c".into(),
    };
    assert_eq!(
        c.broker.log[0]
            .iter()
            .filter(|o| **o == unsubscribe)
            .count(),
        1
    );
    // A publication that was already on its way is ignored, not delivered.
    c.input(
        0,
        BrokerInput::Publication {
            channel: "c".into(),
            json: Bytes::from_static(br#"{"type":"event"}"#),
            position: None,
        },
    );
    assert_eq!(c.nodes[0].hub.stats().broker_publications, 0);
}

#[test]
fn a_history_read_waits_until_the_broker_confirms_the_channel() {
    let mut c = Cluster::new(1);
    c.broker.hold_confirmations = true;
    let a = c.connect(0, "k1");
    c.send(0, a, SUB_POSITIONS);
    let reads = |c: &Cluster| {
        c.broker.log[0]
            .iter()
            .filter(|o| matches!(o, BrokerOutput::Read { .. }))
            .count()
    };
    assert_eq!(reads(&c), 0, "no read before the subscription is live");
    assert!(c.json(0, a).is_empty(), "no ack yet");
    let (node, channel) = c.broker.held_confirmations.pop().unwrap();
    c.broker.inbox[node].push_back(BrokerInput::Subscribed { channel });
    c.settle();
    assert_eq!(reads(&c), 1);
    let ack = c.json(0, a);
    assert_eq!(ack[0]["data"]["recovered"], true, "{ack:?}");
}

#[test]
fn publications_racing_a_recovery_read_are_merged_without_loss_or_duplicates() {
    let mut c = Cluster::new(2);
    let p = c.connect(1, "k2");
    for i in 1..=3 {
        let text = format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#);
        c.send(1, p, &text);
    }
    let epoch = c.broker.streams["c"].epoch.clone();
    // A client comes back on node 0 from offset 1; hold the confirmation
    // so two more publications land while its read waits.
    c.broker.hold_confirmations = true;
    let a = c.connect(0, "k1");
    let resume = format!(
        r#"{{"type":"subscribe","id":1,"channel":"c","recover":{{"offset":1,"epoch":"{epoch}"}}}}"#
    );
    c.send(0, a, &resume);
    let (node, channel) = c.broker.held_confirmations.pop().unwrap();
    for i in 4..=5 {
        let text = format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#);
        c.send(1, p, &text);
    }
    c.broker.inbox[node].push_back(BrokerInput::Subscribed { channel });
    c.settle();
    let text = r#"{"type":"publish","channel":"c","data":6}"#;
    c.send(1, p, text);
    let got = c.json(0, a);
    assert_eq!(got[0]["data"]["recovered"], true, "{got:?}");
    assert_eq!(offsets(&got), vec![2, 3, 4, 5, 6]);
}

#[test]
fn a_client_recovers_on_another_node_what_was_published_meanwhile() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, "k1");
    c.send(0, a, SUB_POSITIONS);
    let ack = c.json(0, a);
    let epoch = ack[0]["data"]["epoch"].as_str().unwrap().to_owned();
    let p = c.connect(1, "k2");
    for i in 1..=3 {
        c.send(
            1,
            p,
            &format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#),
        );
    }
    assert_eq!(offsets(&c.json(0, a)), vec![1, 2, 3]);
    // Node 0 dies with its client; more is published meanwhile.
    let now = c.nodes[0].now;
    c.nodes[0].hub.handle_eof(now, a).unwrap();
    for i in 4..=6 {
        c.send(
            1,
            p,
            &format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#),
        );
    }
    let b = c.connect(1, "k1");
    let resume = format!(
        r#"{{"type":"subscribe","id":2,"channel":"c","recover":{{"offset":3,"epoch":"{epoch}"}}}}"#
    );
    c.send(1, b, &resume);
    let got = c.json(1, b);
    assert_eq!(got[0]["data"]["recovered"], true, "{got:?}");
    assert_eq!(got[0]["data"]["replayed"], 3);
    assert_eq!(offsets(&got), vec![4, 5, 6]);
    assert_eq!(data(&got), vec![json!(4), json!(5), json!(6)]);
}

#[test]
fn with_the_broker_down_upgrades_publishes_and_positioned_subscribes_are_refused() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, "k1");
    c.send(0, a, r#"{"type":"subscribe","channel":"c"}"#);
    c.input(0, BrokerInput::Down);
    c.settle();
    // A new upgrade: 503 with Retry-After, never a silent single node.
    let refused = c.nodes[0].connect_with("/ws", &[("Authorization", "Bearer k1")]);
    assert_eq!(c.nodes[0].rx[&refused].status(), Some(503));
    assert!(c.nodes[0].rx[&refused].head().contains("Retry-After: 1"));
    // A client publish is refused visibly, with an id or without.
    c.send(0, a, r#"{"type":"publish","id":7,"channel":"c","data":1}"#);
    c.send(0, a, r#"{"type":"publish","channel":"c","data":2}"#);
    let got = c.json(0, a);
    assert_eq!(types(&got), vec!["error", "error"], "{got:?}");
    assert_eq!(got[0]["id"], 7);
    assert_eq!(got[0]["data"]["code"], "unavailable");
    assert!(got[1].get("id").is_none());
    // An application publish learns it too.
    let (tx, rx) = mpsc::channel();
    let now = c.nodes[0].now;
    let command = Command::PublishAcked {
        channel: "c".into(),
        message: Box::new(Message::new("event", json!(3))),
    };
    c.nodes[0]
        .hub
        .apply_then(now, command, Box::new(move |r| tx.send(r).unwrap()));
    assert_eq!(
        rx.try_recv().unwrap(),
        Reply::Published(Err(BrokerError::Unavailable))
    );
    // A positioned subscribe cannot read history: refused, nothing changes.
    c.send(
        0,
        a,
        r#"{"type":"subscribe","id":8,"channel":"d","positions":true}"#,
    );
    let got = c.json(0, a);
    assert_eq!(got[0]["data"]["code"], "unavailable", "{got:?}");
    assert_eq!(c.nodes[0].hub.subscriptions(a), vec!["c".to_string()]);
    // The connection stayed; nothing reached the broker.
    assert!(c.nodes[0].closed(a).is_empty());
    assert_eq!(c.publishes(0), 0);
    assert_eq!(c.nodes[0].hub.stats().broker_publish_failures, 3);
    assert!(!c.nodes[0].hub.stats().broker_up);
}

#[test]
fn publishes_the_broker_never_answered_fail_when_the_link_drops() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, "k1");
    c.send(0, a, r#"{"type":"subscribe","channel":"c"}"#);
    // Published but not yet taken by the driver when the link drops.
    c.nodes[0].send_text(a, r#"{"type":"publish","id":1,"channel":"c","data":1}"#);
    c.input(0, BrokerInput::Down);
    c.settle();
    let got = c.json(0, a);
    assert_eq!(got[0]["data"]["code"], "unavailable", "{got:?}");
    assert_eq!(got[0]["id"], 1);
}

#[test]
fn the_backlog_of_unanswered_publishes_is_bounded() {
    let mut c = Cluster::with(
        1,
        HubConfig {
            max_broker_publishes: 2,
            ..config()
        },
    );
    let a = c.connect(0, "k1");
    for i in 0..3 {
        let text = format!(r#"{{"type":"publish","id":{i},"channel":"c","data":{i}}}"#);
        c.nodes[0].send_text(a, &text);
    }
    let got = c.json(0, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], 2);
    assert_eq!(got[0]["data"]["code"], "unavailable");
    assert!(got[0]["data"]["message"]
        .as_str()
        .unwrap()
        .contains("backlog"));
    c.settle();
    assert_eq!(types(&c.json(0, a)), vec!["ack", "ack"]);
}

#[test]
fn after_the_link_comes_back_every_channel_is_resubscribed_and_the_gap_filled() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, "k1");
    let plain = c.connect(0, "k1");
    c.send(0, a, SUB_POSITIONS);
    c.send(0, plain, r#"{"type":"subscribe","channel":"other"}"#);
    let _ = c.json(0, a);
    let p = c.connect(1, "k2");
    c.send(1, p, r#"{"type":"publish","channel":"c","data":1}"#);
    assert_eq!(offsets(&c.json(0, a)), vec![1]);
    // Node 0's link drops; node 1 goes on publishing.
    c.broker.up[0] = false;
    c.broker.subscribed[0].clear();
    c.input(0, BrokerInput::Down);
    for i in 2..=4 {
        c.send(
            1,
            p,
            &format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#),
        );
    }
    assert!(c.json(0, a).is_empty(), "nothing reached node 0");
    c.broker.up[0] = true;
    let before = c.broker.log[0].len();
    c.input(0, BrokerInput::Up);
    c.settle();
    let mut resubscribed: Vec<String> = c.broker.log[0][before..]
        .iter()
        .filter_map(|o| match o {
            BrokerOutput::Subscribe { channel, .. } => Some(channel.clone()),
            _ => None,
        })
        .collect();
    resubscribed.sort();
    assert_eq!(resubscribed, vec!["c".to_string(), "other".to_string()]);
    // The gap is read once and delivered in order, then live goes on.
    c.send(1, p, r#"{"type":"publish","channel":"c","data":5}"#);
    let got = c.json(0, a);
    assert_eq!(offsets(&got), vec![2, 3, 4, 5], "{got:?}");
    let stats = c.nodes[0].hub.stats();
    assert_eq!((stats.broker_reconnects, stats.broker_catch_ups), (1, 1));
}

#[test]
fn a_broker_restarted_empty_shows_as_a_new_epoch_on_live_messages() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, "k1");
    c.send(0, a, SUB_POSITIONS);
    let ack = c.json(0, a);
    let old = ack[0]["data"]["epoch"].as_str().unwrap().to_owned();
    c.input(0, BrokerInput::Down);
    c.broker.streams.clear(); // restarted without persistence
    c.broker.subscribed[0].clear();
    c.input(0, BrokerInput::Up);
    c.settle();
    c.send(0, a, r#"{"type":"publish","channel":"c","data":1}"#);
    let got = c.json(0, a);
    let live = got.iter().find(|m| m["type"] == "event").expect("{got:?}");
    assert_eq!(live["offset"], 1);
    let new = live["epoch"].as_str().expect("the epoch is named");
    assert_ne!(new, old);
}

#[test]
fn presence_is_reported_once_per_user_and_channel_on_a_node() {
    let mut c = Cluster::new(2);
    let a1 = c.connect(0, "k1");
    let a2 = c.connect(0, "k1");
    let b = c.connect(1, "k2");
    for (n, id) in [(0, a1), (0, a2), (1, b)] {
        c.send(n, id, r#"{"type":"subscribe","channel":"room"}"#);
    }
    let present: Vec<_> = c.broker.presence.keys().cloned().collect();
    let want = vec![
        ("room".to_string(), "u1".to_string(), 0),
        ("room".to_string(), "u2".to_string(), 1),
    ];
    assert_eq!(present, want);
    let presence_outputs = c.broker.log[0]
        .iter()
        .filter(|o| matches!(o, BrokerOutput::Presence { .. }))
        .count();
    assert_eq!(presence_outputs, 1, "u1's second connection adds nothing");
    c.send(0, a1, r#"{"type":"unsubscribe","channel":"room"}"#);
    assert!(
        c.broker.presence.contains_key(&want[0]),
        "a2 is still there"
    );
    let now = c.nodes[0].now;
    c.nodes[0].hub.handle_eof(now, a2).unwrap();
    c.settle();
    let present: Vec<_> = c.broker.presence.keys().cloned().collect();
    assert_eq!(present, vec![want[1].clone()]);
}

#[test]
fn a_read_the_broker_cannot_answer_refuses_the_subscribe() {
    let mut c = Cluster::new(1);
    let a = c.connect(0, "k1");
    c.broker.hold_confirmations = true;
    c.send(0, a, SUB_POSITIONS);
    // The link drops before the confirmation: the waiting read fails.
    c.input(0, BrokerInput::Down);
    c.settle();
    let got = c.json(0, a);
    assert_eq!(got[0]["type"], "error", "{got:?}");
    assert_eq!(got[0]["data"]["code"], "unavailable");
    assert!(c.nodes[0].hub.subscriptions(a).is_empty());
}

#[test]
fn channels_without_history_get_plain_publications_through_the_broker() {
    let mut cfg = config();
    cfg.history = wshub_core::HistoryConfig::off();
    let mut c = Cluster::with(2, cfg);
    let a = c.connect(0, "k1");
    c.send(0, a, SUB_POSITIONS);
    let ack = c.json(0, a);
    assert_eq!(
        ack[0]["data"]["epoch"], "",
        "no history: a plain subscription"
    );
    let p = c.connect(1, "k2");
    c.send(1, p, r#"{"type":"publish","id":1,"channel":"c","data":1}"#);
    let got = c.json(0, a);
    assert_eq!(data(&got), vec![json!(1)]);
    assert!(got[0].get("offset").is_none());
    let reads = c.broker.log[0]
        .iter()
        .any(|o| matches!(o, BrokerOutput::Read { .. }));
    assert!(!reads, "nothing to read");
}

#[test]
fn the_application_reads_history_from_the_broker() {
    let mut c = Cluster::new(2);
    let p = c.connect(1, "k2");
    for i in 1..=4 {
        c.send(
            1,
            p,
            &format!(r#"{{"type":"publish","channel":"c","data":{i}}}"#),
        );
    }
    let ask = |c: &mut Cluster, since, limit| {
        let (tx, rx) = mpsc::channel();
        let now = c.nodes[0].now;
        let command = Command::History {
            channel: "c".into(),
            since,
            limit,
        };
        c.nodes[0]
            .hub
            .apply_then(now, command, Box::new(move |r| tx.send(r).unwrap()));
        c.settle();
        rx.try_recv().expect("answered")
    };
    let Reply::History(Ok(page)) = ask(&mut c, Some(1), 2) else {
        panic!("a page");
    };
    assert_eq!(page.position.offset, 4);
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![2, 3], "after 1, at most 2");
    assert_eq!(
        ask(&mut c, Some(9), 2),
        Reply::History(Err(wshub_core::HistoryError::FromTheFuture))
    );
    assert_eq!(
        ask(&mut c, None, 0),
        Reply::History(Err(wshub_core::HistoryError::TooMany))
    );
    c.input(0, BrokerInput::Down);
    assert_eq!(
        ask(&mut c, None, 2),
        Reply::History(Err(wshub_core::HistoryError::Unavailable))
    );
}

#[test]
fn broadcasts_and_sends_to_a_user_reach_every_node() {
    let mut c = Cluster::new(2);
    let a = c.connect(0, "k1");
    let b = c.connect(1, "k1");
    let other = c.connect(1, "k2");
    let now = c.nodes[1].now;
    let hello = Message::new("hello", json!(1));
    assert_eq!(
        c.nodes[1].hub.broadcast(now, &hello),
        0,
        "handed to the broker"
    );
    c.settle();
    for (n, id) in [(0, a), (1, b), (1, other)] {
        assert_eq!(types(&c.json(n, id)), vec!["hello"], "node {n}");
    }
    let (tx, rx) = mpsc::channel();
    let command = Command::SendToUser {
        user: "u1".into(),
        message: Message::new("dm", json!(2)),
    };
    c.nodes[0]
        .hub
        .apply_then(now, command, Box::new(move |r| tx.send(r).unwrap()));
    c.settle();
    assert_eq!(rx.try_recv().unwrap(), Reply::Published(Ok(None)));
    assert_eq!(types(&c.json(0, a)), vec!["dm"]);
    assert_eq!(types(&c.json(1, b)), vec!["dm"], "u1 on the other node too");
    assert!(c.json(1, other).is_empty(), "not u2");
    // Down: refused, reported, nobody gets it.
    c.input(0, BrokerInput::Down);
    let (tx, rx) = mpsc::channel();
    let command = Command::Broadcast(Message::new("lost", json!(3)));
    c.nodes[0]
        .hub
        .apply_then(now, command, Box::new(move |r| tx.send(r).unwrap()));
    c.settle();
    assert_eq!(
        rx.try_recv().unwrap(),
        Reply::Published(Err(BrokerError::Unavailable))
    );
    assert!(c.json(1, b).is_empty());
}
