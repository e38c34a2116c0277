//! Stream positions: what the client remembers of each subscription's place
//! in its channel's stream, how it reads the subscribe outcome, and how it
//! keeps the live stream free of gaps and duplicates.
//!
//! The server numbers the publications of a channel that keeps history
//! (`offset`, +1 per publication) within an `epoch` (a string that changes
//! whenever the history behind the offsets may have been lost). The client
//! asks for positions on its first subscribe (`"positions":true`), records
//! the position from the ack and from the `offset` of every message, and
//! resumes with `"recover":{"offset":N,"epoch":"e"}` after every reconnect or
//! failover. The ack says whether it worked: `recovered: true` and the
//! missed messages follow ([`ClientEvent::Recovered`]), or `recovered: false`
//! and the current position ([`ClientEvent::RecoveryFailed`]: the
//! application reloads its state; the stream goes on from there).
//!
//! On a live connection a message whose offset skips ahead (a gap) is not
//! handed on: the client re-syncs (a subscribe with `recover` on the channel
//! it is already subscribed to, which the hub answers with an ack and the
//! publications after the given offset) and drops that channel's messages
//! until the ack, since the replay brings them again, in order. Nothing is
//! buffered, so memory stays bounded however the server behaves; re-syncs are
//! limited to [`RESYNC_LIMIT`] per channel and connection, past which a gap
//! is accepted and reported as `RecoveryFailed`. A message at or below the
//! last offset (a duplicate) is dropped.

use serde_json::Value;

use super::{Client, ClientEvent, Phase, Purpose};
pub use crate::history::StreamPosition;

/// Re-syncs after a live gap, per channel, on one connection. A server that
/// keeps skipping offsets costs at most this many subscribes (and replays)
/// per channel before the client stops asking and reports the gaps.
pub const RESYNC_LIMIT: u32 = 8;

/// What a subscribe asked for, and so how its ack is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Today's subscribe (`recovery` off): the ack is just an ack.
    Plain,
    /// `"positions":true`: no position known yet.
    Positions,
    /// `"recover"` from this position.
    Recover(StreamPosition),
}

impl Ask {
    /// The fields appended to the subscribe message (after the id).
    pub(super) fn fields(&self) -> String {
        match self {
            Ask::Plain => String::new(),
            Ask::Positions => r#","positions":true"#.to_owned(),
            Ask::Recover(p) => {
                // Serializing a &str cannot fail.
                let epoch = serde_json::to_string(&p.epoch).unwrap_or_default();
                format!(r#","recover":{{"offset":{},"epoch":{epoch}}}"#, p.offset)
            }
        }
    }
}

/// The position fields of one server message, read next to
/// [`ServerMessage`](super::ServerMessage) (which leaves them out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
}

impl Client {
    /// The position of a subscription, once the server has given one: the
    /// offset of the last publication handed to the application, and its
    /// epoch. `None` for a channel not subscribed, not acknowledged yet, or
    /// without positions (recovery off, a channel without history, a server
    /// that does not know positions).
    #[must_use]
    pub fn position(&self, channel: &str) -> Option<StreamPosition> {
        self.positions.get(channel).cloned()
    }

    /// How the next subscribe of `channel` asks.
    pub(super) fn ask_for(&self, channel: &str) -> Ask {
        if !self.cfg.recovery {
            Ask::Plain
        } else if let Some(p) = self.positions.get(channel) {
            Ask::Recover(p.clone())
        } else {
            Ask::Positions
        }
    }

    /// Reads a subscribe ack's outcome (`data`), for a subscription still
    /// wanted. A failed recovery, or an ack without a usable position,
    /// replaces what was known.
    pub(super) fn subscribe_outcome(&mut self, channel: String, ask: Ask, data: &Value) {
        if ask == Ask::Plain {
            return;
        }
        let epoch = data.get("epoch").and_then(Value::as_str).unwrap_or("");
        let offset = data.get("offset").and_then(Value::as_u64);
        let (Some(offset), false) = (offset, epoch.is_empty()) else {
            // No positions on that channel (or a server that does not know
            // them): nothing to track. Quietly, unless a resume was asked
            // for: then what was published meanwhile may be lost (a
            // failover to a server without history), and the application
            // must hear it. The empty epoch says "no positions from here".
            self.positions.remove(&channel);
            if matches!(ask, Ask::Recover(_)) {
                self.events.push_back(ClientEvent::RecoveryFailed {
                    channel,
                    position: StreamPosition {
                        offset: 0,
                        epoch: String::new(),
                    },
                });
            }
            return;
        };
        let current = StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        };
        match ask {
            Ask::Plain => {}
            Ask::Positions => {
                self.positions.insert(channel, current);
            }
            Ask::Recover(last) => {
                let recovered = data.get("recovered").and_then(Value::as_bool) == Some(true);
                if recovered && last.epoch == current.epoch && last.offset <= current.offset {
                    // The replayed messages follow and move it on.
                    self.positions.insert(channel.clone(), last);
                    let replayed = data.get("replayed").and_then(Value::as_u64).unwrap_or(0);
                    self.events
                        .push_back(ClientEvent::Recovered { channel, replayed });
                } else {
                    self.positions.insert(channel.clone(), current.clone());
                    self.events.push_back(ClientEvent::RecoveryFailed {
                        channel,
                        position: current,
                    });
                }
            }
        }
    }

    /// Whether a channel message goes to the application: in order, it does
    /// (and moves the position on); a duplicate does not; a gap starts a
    /// re-sync and does not.
    pub(super) fn admit(&mut self, channel: &str, stamp: Stamp) -> bool {
        let Some(offset) = stamp.offset else {
            return true;
        };
        if !self.cfg.recovery || !self.subs.contains(channel) {
            return true;
        }
        let Phase::Open(open) = &mut self.phase else {
            return true;
        };
        if open.syncing.contains(channel) {
            // The re-sync's replay brings it again, in order.
            return false;
        }
        let Some(last) = self.positions.get_mut(channel) else {
            // Not acknowledged yet or no positions: only a message that
            // carries its whole position can start the tracking.
            if let Some(epoch) = stamp.epoch.filter(|e| !e.is_empty()) {
                self.positions
                    .insert(channel.to_owned(), StreamPosition { offset, epoch });
            }
            return true;
        };
        if let Some(epoch) = stamp.epoch.filter(|e| *e != last.epoch) {
            // The stream was reset under the subscription (an external
            // store lost its history): nothing tells what was missed.
            *last = StreamPosition { offset, epoch };
            self.continue_at(channel, offset);
            return true;
        }
        if offset <= last.offset {
            return false;
        }
        if last.offset.checked_add(1) == Some(offset) {
            last.offset = offset;
            return true;
        }
        let count = open.resyncs.entry(channel.to_owned()).or_insert(0);
        if *count < RESYNC_LIMIT {
            *count += 1;
            open.syncing.insert(channel.to_owned());
            let ask = Ask::Recover(last.clone());
            self.send_subscription(channel, Purpose::Resync, ask);
            return false;
        }
        // Out of re-syncs on this connection: take the gap, say so.
        last.offset = offset;
        self.continue_at(channel, offset);
        true
    }

    /// Reports that the stream of `channel` goes on with the message at
    /// `offset` (about to be delivered, and already the tracked position):
    /// the event's position is the one just before it, as for a failed
    /// recovery, so "the next message has a higher offset" always holds.
    fn continue_at(&mut self, channel: &str, offset: u64) {
        let Some(last) = self.positions.get(channel) else {
            return;
        };
        let position = StreamPosition {
            offset: offset.saturating_sub(1),
            epoch: last.epoch.clone(),
        };
        self.events.push_back(ClientEvent::RecoveryFailed {
            channel: channel.to_owned(),
            position,
        });
    }

    /// The server refused a re-sync (the subscription itself stands): the
    /// gap cannot be filled, and the position is no longer known.
    pub(super) fn resync_refused(&mut self, channel: String) {
        if let Some(position) = self.positions.remove(&channel) {
            self.events
                .push_back(ClientEvent::RecoveryFailed { channel, position });
        }
    }
}
