//! The broker seam under random programs: two hubs on one in-memory broker
//! ([`MemoryBroker`]), clients subscribing, publishing and leaving on either
//! node, the broker taking outputs and delivering inputs in any
//! interleaving, links dropping and coming back, restarts that lose
//! everything, confirmations that come late.
//!
//! Checked after every step: each hub's internal invariants; every reply
//! answers something asked (a publish or subscribe id), once; a positioned
//! subscriber never sees an offset at or below the last one of the same
//! epoch (no duplicate, no reordering); a plain subscriber never gets an
//! offset. At the end, with every link up and everything delivered: every
//! publish and subscribe was answered, and after one more publication per
//! channel every positioned subscriber stands at its channel's head (epoch
//! and offset) and every plain one got that publication.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wshub_core::broker::BrokerInput;
use wshub_core::config::PublishPatterns;
use wshub_core::{ConnId, HistoryConfig, HistoryRule, HubConfig, Message};

mod memory;
mod ops;

pub use memory::{MemoryBroker, Stream};
pub use ops::BrokerOp;

use crate::input::ByteCursor;
use crate::recovery::sim::Sim;

/// Operations one fuzz input runs at most.
const MAX_OPS: usize = 300;

/// A client's view of one subscription.
#[derive(Debug)]
struct Sub {
    /// The epoch its ack named (`None`: a plain subscription).
    acked: Option<String>,
    /// The newest (epoch, offset) it got.
    at: Option<(String, u64)>,
    /// The data of the last message it got.
    last_data: Value,
}

#[derive(Debug)]
struct Client {
    node: usize,
    conn: ConnId,
    subs: HashMap<String, Sub>,
    /// Subscribe ids out: channel -> positioned.
    subscribing: HashMap<String, bool>,
    publishing: HashSet<String>,
}

struct World {
    nodes: Vec<Sim>,
    broker: MemoryBroker,
    clients: Vec<Option<Client>>,
    next_id: u64,
}

fn config() -> HubConfig {
    HubConfig {
        broker: true,
        max_broker_publishes: 6,
        policy: Arc::new(PublishPatterns::new(["*"])),
        history: HistoryConfig {
            rules: vec![HistoryRule {
                pattern: "*".into(),
                size: 8,
                ttl: Duration::from_secs(300),
            }],
            ..HistoryConfig::default()
        },
        ..HubConfig::default()
    }
}

fn channel(ch: u8) -> String {
    format!("c{ch}")
}

impl World {
    fn new(now: Instant) -> World {
        let nodes = usize::from(ops::NODES);
        let mut w = World {
            nodes: (0..nodes).map(|_| Sim::new(config(), now)).collect(),
            broker: MemoryBroker::new(nodes),
            clients: (0..ops::CLIENTS).map(|_| None).collect(),
            next_id: 0,
        };
        for n in 0..nodes {
            w.input(n, BrokerInput::Up);
        }
        w
    }

    fn input(&mut self, node: usize, input: BrokerInput) {
        let sim = &mut self.nodes[node];
        sim.hub.handle_broker(sim.now, input);
        sim.pump();
    }

    fn take(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].hub.poll_broker() {
            self.broker.take(node, out);
        }
    }

    /// Everything waiting for the node, as one batch when there are
    /// several (a driver hands on what one read brought).
    fn deliver(&mut self, node: usize) {
        let mut inputs: Vec<BrokerInput> = self.broker.inbox[node].drain(..).collect();
        match inputs.len() {
            0 => {}
            1 => self.input(node, inputs.pop().expect("one")),
            _ => self.input(node, BrokerInput::Batch(inputs)),
        }
    }

    fn send(&mut self, c: usize, text: &str) {
        if let Some(client) = &self.clients[c] {
            let (node, conn) = (client.node, client.conn);
            if self.nodes[node].hub.contains(conn) {
                self.nodes[node].send_text(conn, text);
            }
        }
    }

    fn apply(&mut self, op: &BrokerOp) -> Result<(), String> {
        match *op {
            BrokerOp::Connect(c, n) => {
                self.close(c as usize);
                let node = usize::from(n);
                let sim = &mut self.nodes[node];
                // While the node is cut off its upgrades are refused (503).
                let id = sim
                    .hub
                    .open(sim.now, wshub_core::PeerInfo::default())
                    .unwrap();
                sim.rx.insert(id, Vec::new());
                let request = crate::wire::upgrade_request("/ws");
                sim.hub.handle_read(sim.now, id, &request).unwrap();
                sim.pump();
                let raw = sim.rx.get_mut(&id).expect("a sink");
                if raw.starts_with(b"HTTP/1.1 101") {
                    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    raw.drain(..end + 4);
                    self.clients[c as usize] = Some(Client {
                        node,
                        conn: id,
                        subs: HashMap::new(),
                        subscribing: HashMap::new(),
                        publishing: HashSet::new(),
                    });
                } else if !raw.starts_with(b"HTTP/1.1 503") {
                    return Err("an upgrade was neither accepted nor refused with 503".into());
                }
            }
            BrokerOp::Subscribe(c, ch) | BrokerOp::SubscribePlain(c, ch) => {
                let positioned = matches!(op, BrokerOp::Subscribe(..));
                let name = channel(ch);
                let Some(client) = self.clients[c as usize].as_mut() else {
                    return Ok(());
                };
                if client.subscribing.contains_key(&name) {
                    return Ok(()); // one at a time per channel, as a client would
                }
                client.subscribing.insert(name.clone(), positioned);
                let extra = if positioned {
                    r#","positions":true"#
                } else {
                    ""
                };
                let text =
                    format!(r#"{{"type":"subscribe","id":"s-{name}","channel":"{name}"{extra}}}"#);
                self.send(c as usize, &text);
            }
            BrokerOp::Unsubscribe(c, ch) => {
                let name = channel(ch);
                let text = format!(r#"{{"type":"unsubscribe","channel":"{name}"}}"#);
                self.send(c as usize, &text);
                if let Some(client) = self.clients[c as usize].as_mut() {
                    if !client.subscribing.contains_key(&name) {
                        client.subs.remove(&name);
                    }
                }
            }
            BrokerOp::ClientPublish(c, ch) => {
                let Some(client) = self.clients[c as usize].as_mut() else {
                    return Ok(());
                };
                self.next_id += 1;
                let id = format!("p-{}", self.next_id);
                client.publishing.insert(id.clone());
                let text = json!({"type": "publish", "id": id, "channel": channel(ch), "data": id});
                self.send(c as usize, &text.to_string());
            }
            BrokerOp::AppPublish(n, ch) => {
                self.next_id += 1;
                let sim = &mut self.nodes[usize::from(n)];
                let data = json!(format!("a-{}", self.next_id));
                sim.hub
                    .publish(sim.now, &channel(ch), Message::new("event", data));
                sim.pump();
            }
            BrokerOp::Broadcast(n) => {
                let sim = &mut self.nodes[usize::from(n)];
                sim.hub
                    .broadcast(sim.now, &Message::new("notice", json!(null)));
                sim.pump();
            }
            BrokerOp::Close(c) => self.close(c as usize),
            BrokerOp::Take(n) => self.take(usize::from(n)),
            BrokerOp::Deliver(n) => self.deliver(usize::from(n)),
            BrokerOp::LinkDown(n) => self.link_down(usize::from(n)),
            BrokerOp::LinkUp(n) => self.link_up(usize::from(n)),
            BrokerOp::Restart => {
                for n in 0..self.nodes.len() {
                    self.link_down(n);
                }
                self.broker.streams.clear();
                for n in 0..self.nodes.len() {
                    self.link_up(n);
                }
            }
            BrokerOp::HoldConfirmations(hold) => self.broker.hold_confirmations = hold,
            BrokerOp::ReleaseConfirmations => self.broker.release_confirmations(),
        }
        self.read_all()?;
        for (n, sim) in self.nodes.iter().enumerate() {
            sim.hub
                .check_invariants()
                .map_err(|e| format!("node {n}: {e}"))?;
        }
        Ok(())
    }

    /// The driver reports in order: a `Down` comes after what it already
    /// queued for the hub.
    fn link_down(&mut self, n: usize) {
        if self.broker.up[n] {
            self.broker.cut(n);
            self.broker.inbox[n].push_back(BrokerInput::Down);
        }
    }

    fn link_up(&mut self, n: usize) {
        if !self.broker.up[n] {
            self.broker.up[n] = true;
            self.broker.inbox[n].push_back(BrokerInput::Up);
        }
    }

    fn close(&mut self, c: usize) {
        if let Some(client) = self.clients[c].take() {
            let sim = &mut self.nodes[client.node];
            if sim.hub.contains(client.conn) {
                let _ = sim.hub.handle_eof(sim.now, client.conn);
                sim.pump();
            }
        }
    }

    /// Reads what every client got, checking each message.
    fn read_all(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let Some(client) = self.clients[c].as_mut() else {
                continue;
            };
            let sim = &mut self.nodes[client.node];
            if !sim.hub.contains(client.conn) {
                self.clients[c] = None; // closed by the hub (it says why in an event)
                continue;
            }
            let subscribed = sim.hub.subscriptions(client.conn);
            for m in sim.take_json(client.conn) {
                read_one(client, &m, &subscribed).map_err(|e| format!("client {c}: {e}: {m}"))?;
            }
        }
        Ok(())
    }

    /// Every link up, everything delivered.
    fn settle(&mut self) -> Result<(), String> {
        self.broker.hold_confirmations = false;
        self.broker.release_confirmations();
        for n in 0..self.nodes.len() {
            self.link_up(n);
        }
        for _ in 0..1000 {
            let mut moved = false;
            for n in 0..self.nodes.len() {
                moved |= self.broker.inbox[n].iter().next().is_some();
                self.deliver(n);
                let before: usize = self.broker.log[n].len();
                self.take(n);
                moved |= self.broker.log[n].len() != before;
            }
            self.broker.release_confirmations();
            self.read_all()?;
            if !moved {
                return Ok(());
            }
        }
        Err("the nodes and the broker never settled".into())
    }

    fn finish(&mut self) -> Result<(), String> {
        self.settle()?;
        for (c, client) in self.clients.iter().enumerate() {
            let Some(client) = client else { continue };
            if !client.publishing.is_empty() || !client.subscribing.is_empty() {
                return Err(format!(
                    "client {c}: unanswered publishes {:?} or subscribes {:?}",
                    client.publishing, client.subscribing
                ));
            }
        }
        for ch in 0..ops::CHANNELS {
            let sim = &mut self.nodes[0];
            let data = json!(format!("final-{ch}"));
            sim.hub
                .publish(sim.now, &channel(ch), Message::new("event", data));
            sim.pump();
        }
        self.settle()?;
        for (c, client) in self.clients.iter().enumerate() {
            let Some(client) = client else { continue };
            for (name, sub) in &client.subs {
                let want = json!(format!("final-{}", &name[1..]));
                if sub.last_data != want {
                    return Err(format!("client {c} on {name}: last got {}", sub.last_data));
                }
                if sub.acked.is_some() {
                    let s = &self.broker.streams[name];
                    let head = Some((s.epoch.clone(), s.top));
                    if sub.at != head {
                        return Err(format!(
                            "client {c} on {name}: at {:?}, head {head:?}",
                            sub.at
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks one message a client got against what it asked and saw.
fn read_one(client: &mut Client, m: &Value, subscribed: &[String]) -> Result<(), String> {
    let kind = m["type"].as_str().unwrap_or("");
    let id = m["id"].as_str().unwrap_or("");
    if let Some(name) = id.strip_prefix("s-") {
        let Some(positioned) = client.subscribing.remove(name) else {
            return Err("a reply to no subscribe".into());
        };
        match kind {
            // A plain subscribe of a channel already held changes nothing.
            "ack" if !positioned && client.subs.contains_key(name) => {}
            "ack" => {
                let epoch = m["data"]["epoch"].as_str().filter(|e| !e.is_empty());
                let acked = epoch.filter(|_| positioned).map(str::to_owned);
                let at = acked.clone().zip(m["data"]["offset"].as_u64());
                let last_data = Value::Null;
                client.subs.insert(
                    name.to_owned(),
                    Sub {
                        acked,
                        at,
                        last_data,
                    },
                );
            }
            "error" if subscribed.iter().any(|s| s == name) => {} // the old one stands
            "error" => {
                client.subs.remove(name);
            }
            _ => return Err("a subscribe answered with neither ack nor error".into()),
        }
        return Ok(());
    }
    if id.starts_with("p-") {
        if !client.publishing.remove(id) {
            return Err("a reply to no publish, or a second one".into());
        }
        return match kind {
            "ack" => Ok(()),
            "error" if m["data"]["code"] == "unavailable" => Ok(()),
            _ => Err("a publish answered with neither ack nor unavailable".into()),
        };
    }
    if kind != "event" {
        return match kind {
            "ack" => Ok(()),    // unsubscribe has no id here; nothing else acks
            "notice" => Ok(()), // a broadcast: no channel, no order to check
            _ => Err("an unexpected message".into()),
        };
    }
    let Some(name) = m["channel"].as_str() else {
        return Err("an event without a channel".into());
    };
    let Some(sub) = client.subs.get_mut(name) else {
        return Ok(()); // in flight before an unsubscribe or a refusal
    };
    sub.last_data = m["data"].clone();
    let offset = m["offset"].as_u64();
    let Some(acked) = &sub.acked else {
        return match offset {
            None => Ok(()),
            Some(_) => Err("a plain subscription got an offset".into()),
        };
    };
    let Some(offset) = offset else {
        return Err("a positioned subscription got no offset".into());
    };
    let epoch = m["epoch"].as_str().unwrap_or(acked).to_owned();
    if let Some((at_epoch, at)) = &sub.at {
        if *at_epoch == epoch && offset <= *at {
            return Err(format!("offset {offset} after {at} in one epoch"));
        }
    }
    sub.at = Some((epoch, offset));
    Ok(())
}

/// What a broker program reached (summed over the nodes' `Stats`), so
/// callers can check that their cases exercise the failure paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerTally {
    /// Publishes the broker took.
    pub publishes: u64,
    /// Publishes refused or failed (each answered to its publisher).
    pub publish_failures: u64,
    /// Links that came back after being down.
    pub reconnects: u64,
    /// Channels whose gap was read and delivered after a reconnect.
    pub catch_ups: u64,
}

/// Runs `ops` on two fresh hubs and a broker, then settles and checks the
/// end state (see the module docs). `Err` describes the first violation.
pub fn run_broker(now: Instant, ops: &[BrokerOp]) -> Result<BrokerTally, String> {
    let mut w = World::new(now);
    for (i, op) in ops.iter().enumerate() {
        w.apply(op)
            .map_err(|e| format!("after op {i} {op:?}: {e}\n{ops:?}"))?;
    }
    w.finish()
        .map_err(|e| format!("at the end: {e}\n{ops:?}"))?;
    let mut t = BrokerTally::default();
    for sim in &w.nodes {
        let s = sim.hub.stats();
        t.publishes += s.broker_publishes;
        t.publish_failures += s.broker_publish_failures;
        t.reconnects += s.broker_reconnects;
        t.catch_ups += s.broker_catch_ups;
    }
    Ok(t)
}

/// The fuzz entry: a program of [`BrokerOp`]s (at most 300); panics when
/// the broker contract (see [`run_broker`]) is violated.
pub fn check_broker_bytes(now: Instant, data: &[u8]) {
    let mut input = ByteCursor::new(data);
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        ops.push(BrokerOp::decode(|| input.byte()));
    }
    if let Err(e) = run_broker(now, &ops) {
        panic!("broker contract: {e}");
    }
}
