//! History and recovery: per-channel stream positions and a bounded store of
//! recent publications, so a client that reconnects (or fails over) resumes
//! after the last offset it saw and misses nothing, or learns that it did.
//!
//! The types here are the public face of the feature (PROTOCOL.md, level 1,
//! `recover` / `history` / `positions` on `subscribe`); the store behind them
//! is the hub's own in-memory one.
//!
//! Why it is built this way (see the field notes on Centrifugo, Socket.IO and
//! sockudo):
//!
//! - **Positions per channel, with an epoch.** Socket.IO's connection-state
//!   recovery keeps one offset per session and writes the session only on a
//!   clean disconnect, so a node that dies takes every client's recovery with
//!   it. Here the position belongs to the channel (an offset, +1 per
//!   publication, and an epoch that changes whenever the history behind the
//!   offsets may be gone: a new hub, a channel whose metadata expired). A
//!   client holds its own position, so nothing about it has to survive the
//!   server.
//! - **Failure is an answer, not a silence.** As in Centrifugo, a recovery
//!   that cannot be complete (another epoch, history trimmed or expired past
//!   the position, a replay over the limit) says `recovered: false` with the
//!   current position and replays nothing; the application reloads its state.
//!   Position metadata outlives the history ([`HistoryConfig::meta_ttl`]) so a
//!   client back after the TTL gets that answer rather than a fresh epoch.
//! - **Replay counts against the connection's queue.** A replay bigger than
//!   what fits is paced as the client reads (a cursor into the history), and
//!   the subscription joins the live fan-out only when the cursor reaches the
//!   head: no duplicate and no gap at the switch, no slow-consumer cut
//!   because of a replay, no memory past the caps.
//! - **One serialization per publication.** The stored entry is the framed
//!   positioned message, shared with every positioned subscriber; plain
//!   subscribers get today's bytes, framed once.
//! - **Honest gaps.** If the history is trimmed past a replay that is still
//!   waiting for the client to read, the replay continues from the oldest
//!   publication still stored: the client sees the jump in offsets at the
//!   next message, the one gap signal of the protocol, and resubscribes with
//!   `recover` (which then answers `recovered: false`). There is no second
//!   kind of error to handle, and nothing is claimed that was not sent.
//! - **A seam for a shared store.** Sockudo and the Socket.IO adapters
//!   recover only within one node. With [`crate::HubConfig::external_history`]
//!   positions come from a broker ([`crate::Hub::publish_positioned`]) and
//!   reads are answered later ([`crate::Event::HistoryRead`],
//!   [`crate::Hub::answer_history_read`]); the live stream is buffered for the
//!   subscription while its read is out and merged by offset, so a read that
//!   races publications neither loses nor repeats one (Centrifuge's
//!   `PubSubSync` lesson).
//!
//! Memory: every stored publication is its frame plus at most 64 bytes; a
//! channel that keeps no history and has no subscribers holds nothing, and
//! one whose history and `meta_ttl` both ran out is freed. Expiry is lazy and
//! costs O(expired), never a scan of every channel.

use core::fmt;
use core::time::Duration;

use bytes::Bytes;

pub(crate) mod store;

pub use store::valid_epoch;

/// Where a channel's stream is: the offset of its newest publication (0
/// before the first) and the epoch those offsets belong to. An empty epoch
/// means the channel keeps no positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Offset of the newest publication; +1 per publication.
    pub offset: u64,
    /// Opaque name of the stream the offsets count in.
    pub epoch: String,
}

/// History kept for channels matching a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRule {
    /// A `*` glob ([`crate::config::glob_match`]), as the publish policy uses.
    pub pattern: String,
    /// The newest this many publications are kept; 0 keeps none (and the
    /// channel has no positions).
    pub size: usize,
    /// None older than this is kept. Expired publications go when the
    /// channel is next touched (a publish, a subscribe, a read) or at the
    /// next [`crate::Hub::handle_timeout`] after they expired (the hub adds
    /// no deadline of its own to [`crate::Hub::poll_timeout`]; an idle hub
    /// keeps them, within [`HistoryConfig::max_bytes`], until then).
    pub ttl: Duration,
}

/// What history the hub keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The first rule whose pattern matches a channel decides; a channel no
    /// rule matches keeps no history.
    pub rules: Vec<HistoryRule>,
    /// One cap over every channel's stored bytes (their positioned frames;
    /// each also costs at most 64 bytes of bookkeeping, about 43 when no
    /// positioned subscriber shares its frame); past it the oldest
    /// publications go first, whatever their channel
    /// ([`crate::Stats::history_evictions`] counts them).
    pub max_bytes: usize,
    /// A channel's position outlives its last publication this long (and
    /// never ends while it has subscribers), so a client that comes back
    /// after the history expired learns `recovered: false` instead of meeting
    /// a fresh epoch.
    pub meta_ttl: Duration,
    /// The largest replay a recovery may need (more: `recovered: false`) and
    /// the largest `history: N`.
    pub max_replay: usize,
}

impl Default for HistoryConfig {
    /// Every channel keeps its newest 100 publications for 5 minutes, 64 MiB
    /// in all; positions live an hour; replays up to 300.
    fn default() -> Self {
        HistoryConfig {
            rules: vec![HistoryRule {
                pattern: "*".to_owned(),
                size: 100,
                ttl: Duration::from_secs(300),
            }],
            max_bytes: 64 * 1024 * 1024,
            meta_ttl: Duration::from_secs(3600),
            max_replay: 300,
        }
    }
}

impl HistoryConfig {
    /// History off for every channel.
    pub fn off() -> Self {
        HistoryConfig {
            rules: Vec::new(),
            ..HistoryConfig::default()
        }
    }

    /// The rule in force for `channel`: its size and TTL, or `None` when it
    /// keeps no history.
    pub fn rule_for(&self, channel: &str) -> Option<&HistoryRule> {
        self.rules
            .iter()
            .find(|r| crate::config::glob_match(&r.pattern, channel))
            .filter(|r| r.size > 0)
    }
}

/// One stored publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the channel's stream.
    pub offset: u64,
    /// The JSON text as positioned subscribers got it (with `"offset"`).
    pub json: Bytes,
}

/// A read of a channel's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The channel's position when read.
    pub position: StreamPosition,
    /// Publications, in offset order.
    pub publications: Vec<Publication>,
}

/// Why a history read gave nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryError {
    /// The channel keeps no history (no rule, or size 0).
    NoHistory,
    /// `since` is past the channel's newest offset.
    FromTheFuture,
    /// `limit` is outside 1..=max_replay.
    TooMany,
    /// The broker that keeps the history is unreachable.
    Unavailable,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HistoryError::NoHistory => "the channel keeps no history",
            HistoryError::FromTheFuture => "since is past the channel's newest offset",
            HistoryError::TooMany => "limit must be in 1..=max_replay",
            HistoryError::Unavailable => "the broker is unreachable",
        })
    }
}

impl std::error::Error for HistoryError {}
