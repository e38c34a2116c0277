//! The Redis broker driver for wshub: many hubs (nodes) share one Redis, so
//! a publish on any node is numbered and stored once and reaches every
//! subscriber on every node, and presence spans the nodes.
//!
//! ```no_run
//! use wshub_redis::{link, RedisBroker, RedisConfig};
//! use wshub_core::broker::BrokerInput;
//!
//! let (hub_link, outputs) = link();
//! // The adapter hands every `hub.poll_broker()` output to `hub_link`
//! // (a `wshub_core::broker::BrokerLink`); inputs come back through here:
//! let broker = RedisBroker::start(RedisConfig::new("redis://127.0.0.1:6379"), outputs, |input| {
//!     println!("from the broker: {input:?}");
//!     true // false: the hub is gone, the driver stops
//! })?;
//! println!("node {} up: {}", broker.node_id(), broker.status().up);
//! broker.stop();
//! # drop(hub_link);
//! # Ok::<(), wshub_redis::ConfigError>(())
//! ```
//!
//! # Threads
//!
//! Blocking, not async: a node holds two or three Redis connections
//! whatever its client count, so a thread each costs nothing measurable and
//! one implementation serves the blocking, smol and tokio adapters alike.
//!
//! - The **command** thread drains the hub's outputs. Publishes and reads
//!   queued together (up to 256) go out as one pipeline, one round trip; each
//!   is answered exactly once, with [`BrokerError::Unavailable`] (reads:
//!   [`HistoryError::Unavailable`]) when the link fails
//!   or is down. It also keeps the node's presence entries and heartbeat.
//!   A **dialer** thread makes its connections, so answers never wait for a
//!   connect's timeouts.
//! - The **pub/sub** thread writes SUBSCRIBE, UNSUBSCRIBE and a PING probe
//!   on its own connection; a reader thread parses what Redis pushes. A PING
//!   unanswered for one `probe_interval` rebuilds the link (a connection can
//!   look open while delivering nothing).
//! - [`BrokerInput::Down`] goes out when either connection fails,
//!   [`BrokerInput::Up`] once both are back; the hub then resubscribes every
//!   channel it holds.
//!
//! # Redis layout
//!
//! Every key of one channel carries the channel as its hash tag, so on Redis
//! Cluster they share a slot and one script can touch them all.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>.{<channel>}.meta` | HASH | `e` epoch, `s` newest offset; PEXPIRE meta_ttl |
//! | `<prefix>.{<channel>}.stream` | STREAM | id `<offset>-0`, field `d` the JSON (no position); exact MAXLEN size; PEXPIRE ttl |
//! | `<prefix>.{<channel>}.presence` | ZSET | member `<node_id>:<user>`, score its expiry (unix ms) |
//! | `{<prefix>}.nodes` | ZSET | member node id, score its expiry (unix ms) |
//! | `{<prefix>}.node_conns` | HASH | node id -> connections |
//! | `<prefix>.pub.<channel>` | pub/sub channel | envelopes |
//!
//! A publish with history is one Lua script: take the epoch (a missing meta
//! gets a fresh one and the stream is dropped, so a meta lost to eviction
//! never leaves a stream numbered in an older epoch), HINCRBY the offset,
//! XADD, PEXPIRE both, PUBLISH the envelope. Without history it is a bare
//! PUBLISH (offset 0). A read is another script: the position (created when
//! missing, offset 0) and XRANGE after `since`, or the newest `limit`.
//!
//! Presence and node entries are sorted-set members scored by their expiry,
//! not keys with TTLs (Redis 7.0 has no per-field TTL): a live node moves
//! its scores forward every `presence_refresh`, a crashed one's fall behind
//! and are skipped and removed by the next query, at most `presence_ttl`
//! later.
//!
//! # Redis Cluster
//!
//! `redis+cluster://[:password@]host:port,host:port,...` names a Cluster's
//! seed nodes. Commands go through redis-rs's blocking `ClusterConnection`,
//! one by one (a batch's commands live in different slots); the scripts run
//! as EVAL (no SCRIPT LOAD on every primary, including ones promoted later).
//! A publish without history is a one-line script keyed by the channel's
//! meta key, so it leaves from the channel's slot like one with history:
//! a bare PUBLISH may go to another node and overtake it on the cluster bus.
//! The pub/sub link goes to any one node (every node forwards every
//! PUBLISH), the next one in the list when it fails.
//!
//! The envelope format is in [`envelope`]'s docs: `w1 <node> <offset>
//! <epoch>\n<json>`. Anything malformed or past [`MAX_ENVELOPE`] is counted
//! ([`BrokerStatus::bad_envelopes`]) and dropped.
//!
//! [`BrokerError::Unavailable`]: wshub_core::broker::BrokerError::Unavailable
//! [`HistoryError::Unavailable`]: wshub_core::history::HistoryError::Unavailable
//! [`BrokerInput::Down`]: wshub_core::broker::BrokerInput::Down
//! [`BrokerInput::Up`]: wshub_core::broker::BrokerInput::Up

mod answer;
mod backoff;
mod broker;
mod command;
mod config;
mod conn;
pub mod envelope;
mod keys;
mod presence;
mod pubsub;
mod resp;
mod scripts;
mod shared;
#[cfg(feature = "testing")]
pub mod testing;

pub use broker::{link, BrokerQueryError, Link, NodeInfo, Outputs, RedisBroker};
pub use config::{redact_url, ConfigError, RedisConfig};
pub use envelope::MAX_ENVELOPE;
pub use shared::BrokerStatus;
