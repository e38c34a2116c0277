//! An in-memory stand-in for the Redis broker, shared by several hubs: per
//! channel streams (epoch, top offset, bounded items), which node holds which
//! channel, link state per node, and every output each node sent. It answers
//! the way the real driver does, including failures: while a node's link is
//! down its publishes and reads are answered with errors.

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::Bytes;
use wshub_core::broker::{BrokerError, BrokerInput, BrokerOutput};
use wshub_core::message::positioned_json;
use wshub_core::{HistoryError, HistoryPage, Publication, StreamPosition};

/// One channel as the broker keeps it.
#[derive(Debug, Default)]
pub struct Stream {
    /// Names the stream the offsets count in.
    pub epoch: String,
    /// The newest offset.
    pub top: u64,
    /// (offset, JSON without position), oldest first.
    pub items: VecDeque<(u64, Bytes)>,
}

/// The broker: see the module docs.
#[derive(Debug)]
pub struct MemoryBroker {
    /// Streams by channel.
    pub streams: BTreeMap<String, Stream>,
    /// The channels each node holds.
    pub subscribed: Vec<HashSet<String>>,
    /// Nodes whose link is up.
    pub up: Vec<bool>,
    /// Inputs waiting to be handed to each node.
    pub inbox: Vec<VecDeque<BrokerInput>>,
    /// Every output each node sent, in order.
    pub log: Vec<Vec<BrokerOutput>>,
    /// Hold `Subscribed` confirmations (to test what waits for them).
    pub hold_confirmations: bool,
    /// The confirmations held: (node, channel).
    pub held_confirmations: Vec<(usize, String)>,
    /// Present users: (channel, user, node).
    pub presence: BTreeMap<(String, String, usize), ()>,
    epochs: u32,
}

impl MemoryBroker {
    /// A broker for `nodes` nodes, every link up.
    pub fn new(nodes: usize) -> Self {
        MemoryBroker {
            streams: BTreeMap::new(),
            subscribed: vec![HashSet::new(); nodes],
            up: vec![true; nodes],
            inbox: vec![VecDeque::new(); nodes],
            log: vec![Vec::new(); nodes],
            hold_confirmations: false,
            held_confirmations: Vec::new(),
            presence: BTreeMap::new(),
            epochs: 0,
        }
    }

    /// The channel's stream, created (with a new epoch) if it has none.
    pub fn stream(&mut self, channel: &str) -> &mut Stream {
        if !self.streams.contains_key(channel) {
            self.epochs += 1;
            let stream = Stream {
                epoch: format!("E{}", self.epochs),
                ..Stream::default()
            };
            self.streams.insert(channel.to_owned(), stream);
        }
        self.streams.get_mut(channel).expect("just inserted")
    }

    /// The node's link drops: it holds nothing any more.
    pub fn cut(&mut self, node: usize) {
        self.up[node] = false;
        self.subscribed[node].clear();
        self.held_confirmations.retain(|(n, _)| *n != node);
    }

    /// Hands the held confirmations on.
    pub fn release_confirmations(&mut self) {
        for (node, channel) in std::mem::take(&mut self.held_confirmations) {
            self.inbox[node].push_back(BrokerInput::Subscribed { channel });
        }
    }

    /// Carries out one output of `node`.
    pub fn take(&mut self, node: usize, output: BrokerOutput) {
        self.log[node].push(output.clone());
        if !self.up[node] {
            return self.answer_failed(node, output);
        }
        match output {
            BrokerOutput::Subscribe { channel, .. } => {
                self.subscribed[node].insert(channel.clone());
                if self.hold_confirmations {
                    self.held_confirmations.push((node, channel));
                } else {
                    self.inbox[node].push_back(BrokerInput::Subscribed { channel });
                }
            }
            BrokerOutput::Unsubscribe { channel } => {
                self.subscribed[node].remove(&channel);
            }
            BrokerOutput::Publish {
                id,
                channel,
                json,
                history,
            } => {
                let position = history.map(|h| {
                    let s = self.stream(&channel);
                    s.top += 1;
                    s.items.push_back((s.top, json.clone()));
                    while s.items.len() > h.size {
                        s.items.pop_front();
                    }
                    StreamPosition {
                        offset: s.top,
                        epoch: s.epoch.clone(),
                    }
                });
                for n in 0..self.subscribed.len() {
                    if self.up[n] && self.subscribed[n].contains(&channel) {
                        self.inbox[n].push_back(BrokerInput::Publication {
                            channel: channel.clone(),
                            json: json.clone(),
                            position: position.clone(),
                        });
                    }
                }
                let result = Ok(position);
                self.inbox[node].push_back(BrokerInput::Published { id, result });
            }
            BrokerOutput::Read {
                read,
                channel,
                since,
                limit,
                ..
            } => {
                let page = self.read(&channel, since, limit);
                let result = Ok(page);
                self.inbox[node].push_back(BrokerInput::HistoryRead { read, result });
            }
            BrokerOutput::Send { id, to, json } => {
                // Every node hears the node-wide channel while its link is up.
                for n in 0..self.up.len() {
                    if self.up[n] {
                        let (to, json) = (to.clone(), json.clone());
                        self.inbox[n].push_back(BrokerInput::Delivery { to, json });
                    }
                }
                let result = Ok(None);
                self.inbox[node].push_back(BrokerInput::Published { id, result });
            }
            BrokerOutput::Presence {
                channel,
                user,
                present,
            } => {
                if present {
                    self.presence.insert((channel, user, node), ());
                } else {
                    self.presence.remove(&(channel, user, node));
                }
            }
            _ => {}
        }
    }

    fn read(&mut self, channel: &str, since: Option<u64>, limit: usize) -> HistoryPage {
        let s = self.stream(channel);
        let all: Vec<Publication> = s
            .items
            .iter()
            .filter(|(o, _)| since.is_none_or(|since| *o > since))
            .map(|(o, j)| Publication {
                offset: *o,
                json: Bytes::from(positioned_json(j, *o, None).unwrap_or_else(|| j.to_vec())),
            })
            .collect();
        let publications = match since {
            Some(_) => all.into_iter().take(limit).collect(),
            None => {
                let skip = all.len().saturating_sub(limit);
                all.into_iter().skip(skip).collect()
            }
        };
        HistoryPage {
            position: StreamPosition {
                offset: s.top,
                epoch: s.epoch.clone(),
            },
            publications,
        }
    }

    /// What the real driver does with outputs it cannot carry out.
    fn answer_failed(&mut self, node: usize, output: BrokerOutput) {
        let input = match output {
            BrokerOutput::Publish { id, .. } | BrokerOutput::Send { id, .. } => {
                BrokerInput::Published {
                    id,
                    result: Err(BrokerError::Unavailable),
                }
            }
            BrokerOutput::Read { read, .. } => BrokerInput::HistoryRead {
                read,
                result: Err(HistoryError::Unavailable),
            },
            _ => return,
        };
        self.inbox[node].push_back(input);
    }
}
