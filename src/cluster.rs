//! `wshub serve --broker`: this node's link to the others through Redis,
//! what it adds to the HTTP API (`/api/stats`, `/metrics`, `/api/presence`)
//! and the watcher that logs the link's state and reports the node's
//! connection count.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};
use wshub_core::broker::BrokerLink;
use wshub_core::command::HubCommands;
use wshub_redis::{redact_url, RedisBroker, RedisConfig};

use crate::running::Running;

/// The broker driver of a running node.
pub struct Cluster {
    broker: RedisBroker,
}

/// The link the hub is built with, and what starts the driver once the hub
/// runs (the driver reports to the hub's handle).
pub fn link() -> (Box<dyn BrokerLink>, wshub_redis::Outputs) {
    let (link, outputs) = wshub_redis::link();
    (Box::new(link), outputs)
}

impl Cluster {
    /// Starts the driver for `running` (never waits for Redis: an
    /// unreachable one is logged and retried while the hub refuses
    /// upgrades with 503).
    pub fn start(
        config: RedisConfig,
        outputs: wshub_redis::Outputs,
        running: &Arc<Running>,
    ) -> std::io::Result<Arc<Cluster>> {
        let shown = redact_url(&config.url);
        let sink = running.broker_sink();
        let broker = RedisBroker::start(config, outputs, sink)
            .map_err(|e| std::io::Error::other(format!("--broker: {e}")))?;
        info!(node = %broker.node_id(), broker = %shown, "one node of many through the broker");
        let cluster = Arc::new(Cluster { broker });
        let watched = cluster.clone();
        let hub = running.clone();
        std::thread::Builder::new()
            .name("wshub-broker-watch".into())
            .spawn(move || watched.watch(&*hub, &shown))?;
        Ok(cluster)
    }

    /// Logs every change of the link's state, and keeps the node's
    /// connection count (written with its heartbeat) current.
    fn watch(&self, hub: &dyn HubCommands, shown: &str) {
        let mut was_up = None;
        // The first connection takes a moment: "down" at start is only
        // news once it lasts a second.
        let mut polls = 0u32;
        loop {
            let Ok(stats) = hub.stats() else {
                return; // the hub stopped
            };
            self.broker.set_connections(stats.connections);
            let up = self.broker.status().up;
            polls = polls.saturating_add(1);
            let settled = up || was_up.is_some() || polls > 4;
            if settled && was_up != Some(up) {
                if up {
                    info!(broker = %shown, "broker reachable");
                } else {
                    warn!(
                        broker = %shown,
                        "broker unreachable: upgrades get 503 and publishes fail until it answers"
                    );
                }
                was_up = Some(up);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `/api/stats`'s `broker` object: the hub's counts of what it sent and
    /// got (every publish it refused or the broker failed is one
    /// `publish_failures`), the driver's of its links.
    pub fn stats_json(&self, hub: &wshub_core::Stats) -> Value {
        let s = self.broker.status();
        // `null` when Redis cannot say: a node list is never guessed.
        let nodes = self.broker.nodes().ok().map(|nodes| {
            let list: Vec<Value> = nodes
                .iter()
                .map(|n| json!({ "id": n.id, "connections": n.connections }))
                .collect();
            list
        });
        json!({
            "node_id": self.broker.node_id(),
            "up": s.up && hub.broker_up,
            "nodes": nodes,
            "publishes": hub.broker_publishes,
            "publish_failures": hub.broker_publish_failures,
            "publications_in": hub.broker_publications,
            "link_reconnects": hub.broker_reconnects,
            "catch_ups": hub.broker_catch_ups,
            "bad_envelopes": s.bad_envelopes,
            "connection_reconnects": s.reconnects,
            "probe_failures": s.probe_failures,
        })
    }

    /// The broker's lines for `/metrics`.
    pub fn metrics(
        &self,
        hub: &wshub_core::Stats,
        metric: &mut dyn FnMut(&str, &str, &str, String),
    ) {
        let s = self.broker.status();
        metric(
            "wshub_broker_up",
            "gauge",
            "1 while the broker link is up.",
            u8::from(s.up && hub.broker_up).to_string(),
        );
        if let Ok(nodes) = self.broker.nodes() {
            metric(
                "wshub_broker_nodes",
                "gauge",
                "Live nodes on the broker.",
                nodes.len().to_string(),
            );
        }
        let counters = [
            (
                "wshub_broker_publishes_total",
                "Publishes the broker stored and sent.",
                hub.broker_publishes,
            ),
            (
                "wshub_broker_publish_failures_total",
                "Publishes refused or lost (each reported to its publisher).",
                hub.broker_publish_failures,
            ),
            (
                "wshub_broker_publications_total",
                "Publications received from the broker.",
                hub.broker_publications,
            ),
            (
                "wshub_broker_link_reconnects_total",
                "Times the broker link came back after being down.",
                hub.broker_reconnects,
            ),
            (
                "wshub_broker_catch_ups_total",
                "Channels whose missed publications were read after a reconnect.",
                hub.broker_catch_ups,
            ),
            (
                "wshub_broker_bad_envelopes_total",
                "Malformed or oversized broker messages dropped.",
                s.bad_envelopes,
            ),
            (
                "wshub_broker_probe_failures_total",
                "Pub/sub links rebuilt after an unanswered probe.",
                s.probe_failures,
            ),
        ];
        for (name, help, value) in counters {
            metric(name, "counter", help, value.to_string());
        }
    }

    /// The users present in `channel` on every live node, sorted.
    pub fn presence(&self, channel: &str) -> Result<Vec<String>, wshub_redis::BrokerQueryError> {
        self.broker.presence(channel)
    }
}
