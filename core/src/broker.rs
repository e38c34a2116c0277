//! The broker seam: many hubs (nodes) share one broker (Redis, through the
//! `wshub-redis` crate) so a publish on any node reaches every subscriber on
//! every node, numbered and stored once.
//!
//! With [`crate::HubConfig::broker`] on, the hub never delivers a publication
//! it made itself: a publish becomes one [`BrokerOutput::Publish`] (never one
//! per subscriber), the broker numbers and stores it and hands it to every
//! node that holds the channel, this one included, as a
//! [`BrokerInput::Publication`]. Every node therefore delivers the
//! publications of a channel in the broker's one order, which is the offset
//! order: a node that delivered its own publications on the spot could show
//! its local subscribers offset 7 before a remote offset 6 still on the wire.
//! The origin node's copy of its own publication is thus not an echo to
//! ignore but its only delivery.
//!
//! A node holds a channel at the broker only while it has local subscribers
//! ([`BrokerOutput::Subscribe`] on the first, [`BrokerOutput::Unsubscribe`]
//! after the last). A subscribe that needs history waits until the broker
//! confirms the channel ([`BrokerInput::Subscribed`]) before its read goes
//! out, so no publication can fall between the read and the live stream.
//!
//! "Broker down" ([`BrokerInput::Down`]) refuses new upgrades (503 with
//! `Retry-After`), positioned subscribes and publishes (error `unavailable`)
//! until [`BrokerInput::Up`], which resubscribes every channel held and, for
//! each channel with positioned subscribers, reads what was published while
//! the link was down and delivers it in order. Subscribers learn any gap
//! that read cannot fill from the offsets (their client re-syncs and gets
//! `recovered: false` where history no longer covers it).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::broker::{BrokerInput, BrokerOutput};
//! use wshub_core::{Hub, HubConfig, Message};
//!
//! let now = Instant::now();
//! let config = HubConfig { broker: true, ..HubConfig::default() };
//! let mut hub = Hub::new(config, now, Duration::ZERO).unwrap();
//! hub.handle_broker(now, BrokerInput::Up);
//! hub.publish(now, "news", Message::new("event", "hello".into()));
//! let Some(BrokerOutput::Publish { id, channel, .. }) = hub.poll_broker() else {
//!     panic!("a publish goes to the broker");
//! };
//! assert_eq!(channel, "news");
//! // The broker stored it as offset 1 and will send it back to every node.
//! let position = wshub_core::history::StreamPosition { offset: 1, epoch: "e1".into() };
//! hub.handle_broker(now, BrokerInput::Published { id, result: Ok(Some(position)) });
//! ```

use core::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::event::HistoryReadId;
use crate::history::{HistoryError, HistoryPage, StreamPosition};

/// Names one [`BrokerOutput::Publish`] in its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishId(pub(crate) u64);

#[cfg(any(test, feature = "testing"))]
impl PublishId {
    /// An id as the hub would make it, for a test standing in for the hub.
    pub fn for_tests(n: u64) -> PublishId {
        PublishId(n)
    }
}

impl fmt::Display for PublishId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "publish#{}", self.0)
    }
}

/// How a channel keeps history, from the hub's rules
/// ([`crate::history::HistoryConfig`]): what the broker applies when it
/// stores a publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelHistory {
    /// Publications kept (exact).
    pub size: usize,
    /// How long they are kept after the last publication.
    pub ttl: Duration,
    /// How long the position (offset and epoch) outlives the last
    /// publication.
    pub meta_ttl: Duration,
}

/// What the hub asks of the broker ([`crate::Hub::poll_broker`]). Each
/// `Publish` and `Read` must be answered exactly once, whatever happens to
/// the broker link.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BrokerOutput {
    /// Start receiving the channel's publications; confirm with
    /// [`BrokerInput::Subscribed`]. While a node holds a channel that keeps
    /// history, the broker keeps its position alive (past `meta_ttl`), as
    /// the in-memory store does for a channel with subscribers.
    Subscribe {
        /// The channel.
        channel: String,
        /// How the channel keeps history; `None`: it keeps none.
        history: Option<ChannelHistory>,
    },
    /// Stop receiving the channel's publications (its last local subscriber
    /// left).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish: number and store it when `history` is set (one atomic step),
    /// then deliver it to every node holding the channel. Answer with
    /// [`BrokerInput::Published`].
    Publish {
        /// Names it in the answer.
        id: PublishId,
        /// The channel.
        channel: String,
        /// The publication's JSON, without a position.
        json: Bytes,
        /// How the channel keeps history; `None`: it keeps none.
        history: Option<ChannelHistory>,
    },
    /// Read the channel's position and its publications with offset >
    /// `since` (the newest `limit` when `since` is `None`), at most `limit`
    /// (0: the position only). Answer with [`BrokerInput::HistoryRead`].
    Read {
        /// Names it in the answer.
        read: HistoryReadId,
        /// The channel.
        channel: String,
        /// Publications after this offset; `None`: the newest `limit`.
        since: Option<u64>,
        /// At most this many.
        limit: usize,
        /// How the channel keeps history (a read creates its position when
        /// it has none, with this meta TTL).
        history: ChannelHistory,
    },
    /// A broadcast or send-to-user for every node ([`crate::Hub::broadcast`],
    /// [`crate::Hub::send_to_user`]): hand it to every node, this one
    /// included, as a [`BrokerInput::Delivery`]; answer with
    /// [`BrokerInput::Published`] (position `None`). No offsets: it keeps no
    /// history and has no order with channel publications.
    Send {
        /// Names it in the answer.
        id: PublishId,
        /// Who gets it.
        to: Audience,
        /// The message's JSON.
        json: Bytes,
    },
    /// A user's presence in a channel on this node changed: `present` when
    /// its first connection subscribed here, not when its last one left (or
    /// closed). The broker driver keeps the node's entries, refreshed while
    /// the node lives and expiring when it dies.
    Presence {
        /// The channel.
        channel: String,
        /// The user id.
        user: String,
        /// Whether the user is now present here.
        present: bool,
    },
}

/// Who a [`BrokerOutput::Send`] is for, on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every upgraded connection.
    Everyone,
    /// Every connection of this user.
    User(String),
}

/// Why the broker could not carry out a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerError {
    /// The broker is unreachable (or the link failed before it answered).
    Unavailable,
    /// Too many publishes are waiting for the broker's answer
    /// ([`crate::HubConfig::max_broker_publishes`]).
    Backlog,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerError::Unavailable => "broker unavailable: nothing was published",
            BrokerError::Backlog => "broker backlog full: nothing was published",
        })
    }
}

impl std::error::Error for BrokerError {}

/// What happened at the broker ([`crate::Hub::handle_broker`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BrokerInput {
    /// The broker is reachable (at start, or again after `Down`).
    Up,
    /// The broker link is lost: every channel must be subscribed again once
    /// it is back.
    Down,
    /// A [`BrokerOutput::Subscribe`] took effect: publications of the channel
    /// now arrive.
    Subscribed {
        /// The channel.
        channel: String,
    },
    /// The answer to a [`BrokerOutput::Publish`]: its position (`None` for a
    /// channel without history), or why nothing was published.
    Published {
        /// The publish answered.
        id: PublishId,
        /// Its outcome.
        result: Result<Option<StreamPosition>, BrokerError>,
    },
    /// A publication from the broker, from any node (this one included).
    Publication {
        /// The channel.
        channel: String,
        /// Its JSON, as the publishing node serialized it (no position).
        json: Bytes,
        /// Its position; `None` for a channel without history.
        position: Option<StreamPosition>,
    },
    /// A [`BrokerOutput::Send`] from any node (this one included).
    Delivery {
        /// Who gets it.
        to: Audience,
        /// The message's JSON.
        json: Bytes,
    },
    /// Several inputs in their order, as a driver that read them in one go
    /// hands them on: the hub applies them in one round, so the frames they
    /// make for a connection leave in one write. At most
    /// [`crate::HubConfig::commands_per_round`] of them; a driver's round
    /// counts each ([`crate::command::Command::weight`]).
    Batch(Vec<BrokerInput>),
    /// The answer to a [`BrokerOutput::Read`].
    HistoryRead {
        /// The read answered.
        read: HistoryReadId,
        /// What the broker returned.
        result: Result<HistoryPage, HistoryError>,
    },
}

/// Where the hub's [`BrokerOutput`]s go: the broker driver's queue. An
/// adapter built with a broker hands every output to it as it drains the
/// hub; `send` must not block (queue it; the driver answers later).
pub trait BrokerLink: Send + 'static {
    /// Takes one output.
    fn send(&mut self, output: BrokerOutput);
}

impl BrokerLink for Box<dyn BrokerLink> {
    fn send(&mut self, output: BrokerOutput) {
        (**self).send(output)
    }
}

impl<F: FnMut(BrokerOutput) + Send + 'static> BrokerLink for F {
    fn send(&mut self, output: BrokerOutput) {
        self(output)
    }
}
