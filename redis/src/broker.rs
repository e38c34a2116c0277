//! [`RedisBroker`]: starts the threads, answers queries, stops them.

use core::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use wshub_core::broker::{BrokerInput, BrokerLink, BrokerOutput};

use crate::backoff::random_u64;
use crate::command::{CommandThread, Msg};
use crate::config::{ConfigError, RedisConfig};
use crate::conn::RedisConn;
use crate::pubsub::{PubSubThread, SubMsg};
use crate::shared::{unix_ms, BrokerStatus, Shared};

/// The hub's end of the driver's queue: give it to the adapter as its
/// [`BrokerLink`]. Sending never blocks.
pub struct Link(Sender<Msg>);

impl BrokerLink for Link {
    fn send(&mut self, output: BrokerOutput) {
        // A stopped driver takes nothing more; the hub is going away too.
        let _ = self.0.send(Msg::Out(output));
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Link")
    }
}

/// The driver's end of the queue, for [`RedisBroker::start`].
pub struct Outputs {
    rx: mpsc::Receiver<Msg>,
    tx: Sender<Msg>,
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outputs")
    }
}

/// A new queue: the hub sends into the [`Link`], the driver drains
/// [`Outputs`].
pub fn link() -> (Link, Outputs) {
    let (tx, rx) = mpsc::channel();
    (Link(tx.clone()), Outputs { rx, tx })
}

/// A live node list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its connections, as of its last heartbeat.
    pub connections: usize,
}

/// Why a query ([`RedisBroker::nodes`], [`RedisBroker::presence`]) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerQueryError {
    /// Redis did not answer (in time).
    Unavailable,
}

impl fmt::Display for BrokerQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("broker unavailable")
    }
}

impl std::error::Error for BrokerQueryError {}

/// The Redis broker driver: threads for commands, pub/sub and dialing, plus
/// one reader per pub/sub connection. Dropping it stops them (as [`RedisBroker::stop`]).
pub struct RedisBroker {
    shared: Arc<Shared>,
    cmd_tx: Sender<Msg>,
    sub_tx: Sender<SubMsg>,
    threads: Vec<JoinHandle<()>>,
    /// The queries' own connection, made on first use.
    query: Mutex<Option<RedisConn>>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.shared.config)
            .field("node_id", &self.shared.node_id)
            .finish()
    }
}

impl RedisBroker {
    /// Checks `config` and starts the threads. Never waits for Redis: one
    /// that cannot be reached is delivered as [`BrokerInput::Down`] and
    /// retried with backoff. `deliver` hands an input to the hub (it may
    /// block briefly); `false` means the hub is gone and the driver stops.
    pub fn start(
        config: RedisConfig,
        outputs: Outputs,
        deliver: impl Fn(BrokerInput) -> bool + Send + Sync + 'static,
    ) -> Result<RedisBroker, ConfigError> {
        config.validate()?;
        let infos = config.connection_infos()?;
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{:016x}", random_u64()));
        let shared = Arc::new(Shared::new(config, node_id, infos, Box::new(deliver)));
        let (sub_tx, sub_rx) = mpsc::channel();
        let (dial_tx, dial_rx) = mpsc::channel();
        let command = CommandThread::new(shared.clone(), outputs.rx, sub_tx.clone(), dial_tx);
        let dialer = {
            let (shared, cmd_tx) = (shared.clone(), outputs.tx.clone());
            move || crate::command::dialer(shared, dial_rx, cmd_tx)
        };
        let pubsub = PubSubThread::new(shared.clone(), sub_rx, sub_tx.clone(), outputs.tx.clone());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .expect("spawning a thread (out of threads or memory)")
        };
        let threads = vec![
            spawn("wshub-redis-cmd", Box::new(move || command.run())),
            spawn("wshub-redis-sub", Box::new(move || pubsub.run())),
        ];
        // Not joined on stop: it may sit in a connect for up to the connect
        // and response timeouts, and ends on its own once the command
        // thread is gone.
        drop(spawn("wshub-redis-dial", Box::new(dialer)));
        Ok(RedisBroker {
            shared,
            cmd_tx: outputs.tx,
            sub_tx,
            threads,
            query: Mutex::new(None),
        })
    }

    /// This node's id (given, or random per start).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Whether the broker is up, and the driver's counters.
    pub fn status(&self) -> BrokerStatus {
        self.shared.status()
    }

    /// This node's connection count, written with the next heartbeat.
    pub fn set_connections(&self, n: usize) {
        self.shared.connections.store(n, Relaxed);
    }

    /// The live nodes (heartbeat within `presence_ttl`), by id. Blocks the
    /// caller for one round trip on the queries' own connection (dialled on
    /// first use: at most `connect_timeout` + `response_timeout` more).
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerQueryError> {
        let keys = &self.shared.keys;
        let now = unix_ms();
        let mut clean = redis::cmd("ZREMRANGEBYSCORE");
        clean.arg(keys.nodes()).arg("-inf").arg(now);
        let mut live = redis::cmd("ZRANGEBYSCORE");
        live.arg(keys.nodes()).arg(now).arg("+inf");
        let mut all = redis::cmd("HGETALL");
        all.arg(keys.node_conns());
        let replies = self.query(&[clean, live, all])?;
        let ids: Vec<String> = parse(&replies[1])?;
        let counts: Vec<(String, usize)> = parse(&replies[2])?;
        let mut nodes: Vec<NodeInfo> = ids
            .into_iter()
            .map(|id| {
                let connections = counts.iter().find(|(n, _)| *n == id).map_or(0, |(_, c)| *c);
                NodeInfo { id, connections }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let dead: Vec<&String> = counts
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !nodes.iter().any(|x| &x.id == *n))
            .collect();
        if !dead.is_empty() {
            // Counts of dead nodes would pile up in the hash otherwise.
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(keys.node_conns()).arg(&dead);
            let _ = self.query(&[hdel]);
        }
        Ok(nodes)
    }

    /// The distinct users present in `channel` on any live node, sorted.
    /// Blocks as [`RedisBroker::nodes`] does.
    pub fn presence(&self, channel: &str) -> Result<Vec<String>, BrokerQueryError> {
        let key = self.shared.keys.presence(channel);
        let now = unix_ms();
        let mut clean = redis::cmd("ZREMRANGEBYSCORE");
        clean.arg(&key).arg("-inf").arg(now);
        let mut live = redis::cmd("ZRANGEBYSCORE");
        live.arg(&key).arg(now).arg("+inf");
        let replies = self.query(&[clean, live])?;
        let members: Vec<String> = parse(&replies[1])?;
        let mut users: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.split_once(':').map(|(_, u)| u.to_string()))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Runs `cmds` on the queries' connection: one reply per command, or
    /// an error if any failed.
    fn query(&self, cmds: &[redis::Cmd]) -> Result<Vec<redis::Value>, BrokerQueryError> {
        let mut slot = self.query.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(RedisConn::open(&self.shared).map_err(|_| BrokerQueryError::Unavailable)?);
        }
        let conn = slot.as_mut().ok_or(BrokerQueryError::Unavailable)?;
        match conn.run(cmds) {
            Ok(replies) if replies.len() == cmds.len() => replies
                .into_iter()
                .map(|r| match r {
                    Ok(redis::Value::ServerError(_)) | Err(_) => Err(BrokerQueryError::Unavailable),
                    Ok(v) => Ok(v),
                })
                .collect(),
            _ => {
                // Its state after an error is unknown: the next query redials.
                *slot = None;
                Err(BrokerQueryError::Unavailable)
            }
        }
    }

    /// Stops the threads, removing this node's presence and node entries.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Relaxed);
        let _ = self.cmd_tx.send(Msg::Stop);
        let _ = self.sub_tx.send(SubMsg::Stop);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the threads as a SIGKILL would leave things: this node's
    /// presence and node entries stay in Redis until they expire.
    #[cfg(feature = "testing")]
    pub fn crash(mut self) {
        self.shared.crashed.store(true, Relaxed);
        self.halt();
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A reply of the shape Redis documents for the command, or unavailable.
fn parse<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T, BrokerQueryError> {
    T::from_redis_value_ref(v).map_err(|_| BrokerQueryError::Unavailable)
}
