//! What the driver's threads share: the hub's `deliver`, the counters, and
//! the up/down state of the two connections, turned into exactly one `Up` or
//! `Down` per change of the pair.

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Mutex;

use wshub_core::broker::BrokerInput;

use crate::keys::Keys;
use crate::RedisConfig;

/// The driver's counters, as [`crate::RedisBroker::status`] reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStatus {
    /// Both connections are up (and `Up` was delivered).
    pub up: bool,
    /// Publishes Redis stored and sent.
    pub publishes: u64,
    /// Publishes answered with an error.
    pub publish_failures: u64,
    /// Publications received from Redis and delivered to the hub.
    pub publications_in: u64,
    /// Pub/sub messages dropped as malformed or too big.
    pub bad_envelopes: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Pub/sub links rebuilt because a PING went unanswered.
    pub probe_failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub publishes: AtomicU64,
    pub publish_failures: AtomicU64,
    pub publications_in: AtomicU64,
    pub bad_envelopes: AtomicU64,
    pub reconnects: AtomicU64,
    pub probe_failures: AtomicU64,
}

/// Which connection changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conn {
    Command,
    PubSub,
}

#[derive(Default)]
struct LinkState {
    command: bool,
    pubsub: bool,
    /// What the hub was last told; `None` before the first `Up` or `Down`.
    reported: Option<bool>,
}

type Deliver = Box<dyn Fn(BrokerInput) -> bool + Send + Sync>;

pub(crate) struct Shared {
    pub config: RedisConfig,
    pub node_id: String,
    pub keys: Keys,
    /// The node (or a Cluster's seed nodes) to dial.
    pub infos: Vec<redis::ConnectionInfo>,
    pub cluster: bool,
    pub counters: Counters,
    pub connections: AtomicUsize,
    /// Set by stop (or a hub gone): every thread ends at its next wake.
    pub stop: AtomicBool,
    /// Set by the `testing` crash: threads end without removing the node's
    /// presence and node entries.
    pub crashed: AtomicBool,
    deliver: Deliver,
    /// Taken only by the driver's threads, never by a caller of
    /// [`crate::RedisBroker`]'s methods: `deliver` may block on the hub's
    /// queue while it is held, and a hub thread asking for the status must
    /// not wait on that.
    link: Mutex<LinkState>,
    /// What `link.reported` says, readable without the lock.
    up: AtomicBool,
    /// `Down`s delivered so far.
    downs: AtomicU64,
}

impl Shared {
    pub fn new(
        config: RedisConfig,
        node_id: String,
        (infos, cluster): (Vec<redis::ConnectionInfo>, bool),
        deliver: Deliver,
    ) -> Shared {
        Shared {
            keys: Keys::new(&config.prefix),
            config,
            node_id,
            infos,
            cluster,
            counters: Counters::default(),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            deliver,
            link: Mutex::new(LinkState::default()),
            up: AtomicBool::new(false),
            downs: AtomicU64::new(0),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Hands `input` to the hub; a hub that is gone stops the driver.
    pub fn deliver(&self, input: BrokerInput) {
        if !self.stopping() {
            self.deliver_final(input);
        }
    }

    /// As `deliver`, even while stopping: the answers to what was still
    /// queued, so every publish and read is answered to the end.
    pub fn deliver_final(&self, input: BrokerInput) {
        if !(self.deliver)(input) {
            self.stop.store(true, Relaxed);
        }
    }

    /// `Down`s delivered so far: a Subscribe stamped with an older count was
    /// overtaken by a `Down`, and the hub resubscribes everything on `Up`.
    pub fn downs(&self) -> u64 {
        self.downs.load(Acquire)
    }

    /// `conn` is up; `Up` goes out once both are.
    pub fn conn_up(&self, conn: Conn) {
        let mut link = self.lock();
        match conn {
            Conn::Command => link.command = true,
            Conn::PubSub => link.pubsub = true,
        }
        if link.command && link.pubsub && link.reported != Some(true) {
            link.reported = Some(true);
            self.up.store(true, Relaxed);
            // Under the lock, so an `Up` and a `Down` reach the hub in the
            // order they happened.
            self.deliver(BrokerInput::Up);
        }
    }

    /// `conn` failed (lost, or a connect attempt failed): one `Down` per
    /// change, not per failed attempt.
    pub fn conn_down(&self, conn: Conn) {
        let mut link = self.lock();
        match conn {
            Conn::Command => link.command = false,
            Conn::PubSub => link.pubsub = false,
        }
        if link.reported != Some(false) {
            link.reported = Some(false);
            self.up.store(false, Relaxed);
            self.downs.fetch_add(1, Release);
            self.deliver(BrokerInput::Down);
        }
    }

    pub fn status(&self) -> BrokerStatus {
        let c = &self.counters;
        BrokerStatus {
            up: self.up.load(Relaxed),
            publishes: c.publishes.load(Relaxed),
            publish_failures: c.publish_failures.load(Relaxed),
            publications_in: c.publications_in.load(Relaxed),
            bad_envelopes: c.bad_envelopes.load(Relaxed),
            reconnects: c.reconnects.load(Relaxed),
            probe_failures: c.probe_failures.load(Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // A thread that panicked mid-update leaves plain flags: still usable.
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Unix time in ms, the score presence and node entries expire at.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
