//! One real `Hub` and any number of `Client`s wired together in memory, on
//! one virtual clock. No sockets: a client's `Connect` opens a hub connection
//! (or fails while the server is down), bytes go both ways as each side
//! hands them out, and time jumps straight to the earliest deadline of
//! anyone (a heap with lazy deletion, so 1,000 idle clients cost nothing per
//! step).
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use wshub_core::client::{Client, ClientEvent};
use wshub_core::{ConnId, Event, Hub, HubConfig, PeerInfo};

/// The heap key of the hub's own deadlines.
const HUB: usize = usize::MAX;

/// One client and its side of the wire.
pub struct Peer {
    pub client: Client,
    pub conn: Option<ConnId>,
    /// Every event with the instant it came out.
    pub events: Vec<(Instant, ClientEvent)>,
}

impl Peer {
    /// Instants of every `Connect` event.
    pub fn connect_times(&self) -> Vec<Instant> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, ClientEvent::Connect { .. }))
            .map(|(t, _)| *t)
            .collect()
    }
}

pub struct Net {
    pub hub: Hub,
    pub now: Instant,
    pub peers: Vec<Peer>,
    /// While false, every connect attempt fails at once.
    pub server_up: bool,
    pub hub_events: Vec<Event>,
    by_conn: HashMap<ConnId, usize>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    hub_dirty: bool,
    frames: Vec<bytes::Bytes>,
}

impl Net {
    pub fn new(cfg: HubConfig, now: Instant) -> Net {
        Net {
            hub: Hub::new(cfg, now, Duration::from_secs(1_771_575_165)).expect("hub config"),
            now,
            peers: Vec::new(),
            server_up: true,
            hub_events: Vec::new(),
            by_conn: HashMap::new(),
            heap: BinaryHeap::new(),
            dirty: Vec::new(),
            hub_dirty: false,
            frames: Vec::new(),
        }
    }

    /// Adds a client (not started); returns its index.
    pub fn add(&mut self, client: Client) -> usize {
        self.peers.push(Peer {
            client,
            conn: None,
            events: Vec::new(),
        });
        self.peers.len() - 1
    }

    /// Tells peer `i` that something changed (a command was called on it).
    pub fn touch(&mut self, i: usize) {
        self.dirty.push(i);
        self.settle();
    }

    /// The server drops one client's connection without a close frame.
    pub fn drop_conn(&mut self, i: usize) {
        if let Some(conn) = self.peers[i].conn {
            let _ = self.hub.handle_eof(self.now, conn);
            self.hub_dirty = true;
        }
        self.settle();
    }

    /// The server process dies: every connection ends at once, and connect
    /// attempts fail until `server_up` is set again.
    pub fn server_down(&mut self) {
        self.server_up = false;
        let conns: Vec<ConnId> = self.by_conn.keys().copied().collect();
        for conn in conns {
            let _ = self.hub.handle_eof(self.now, conn);
        }
        self.hub_dirty = true;
        self.settle();
    }

    /// Runs every deadline up to `now + d` in order, then sets `now` there.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Instant) {
        self.settle();
        // Deadlines that keep firing without time moving (a zero-delay retry
        // loop) would hang the test; fail it instead.
        let limit = 10_000 + 20 * self.peers.len();
        let mut same_instant = 0;
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > end {
                break;
            }
            self.heap.pop();
            if t > self.now {
                same_instant = 0;
            }
            same_instant += 1;
            assert!(
                same_instant < limit,
                "time stopped: deadlines keep firing at one instant"
            );
            let current = if i == HUB {
                self.hub.poll_timeout()
            } else {
                self.peers[i].client.poll_timeout()
            };
            // Superseded entries are skipped; the live one is in the heap too.
            if current != Some(t) {
                continue;
            }
            self.now = self.now.max(t);
            if i == HUB {
                self.hub.handle_timeout(self.now);
                self.hub_dirty = true;
            } else {
                self.peers[i].client.handle_timeout(self.now);
                self.dirty.push(i);
            }
            self.settle();
        }
        self.now = self.now.max(end);
    }

    /// Moves bytes and events until nobody has anything to say. The hub is
    /// always pumped once, since tests call it directly (publish, close).
    pub fn settle(&mut self) {
        self.hub_dirty = true;
        loop {
            let mut any = false;
            while let Some(i) = self.dirty.pop() {
                any = true;
                self.pump_peer(i);
            }
            if self.hub_dirty {
                self.hub_dirty = false;
                any = true;
                self.pump_hub();
            }
            if !any {
                break;
            }
        }
    }

    fn pump_peer(&mut self, i: usize) {
        let now = self.now;
        loop {
            let mut progressed = false;
            while let Some(bytes) = self.peers[i].client.poll_transmit() {
                progressed = true;
                let conn = self.peers[i].conn.expect("client wrote without a socket");
                // The hub may have closed its side already; the bytes are lost.
                let _ = self.hub.handle_read(now, conn, &bytes);
                self.hub_dirty = true;
            }
            while let Some(event) = self.peers[i].client.poll_event() {
                progressed = true;
                match &event {
                    ClientEvent::Connect { .. } => {
                        assert!(self.peers[i].conn.is_none(), "two sockets at once");
                        if self.server_up {
                            let conn = self.hub.open(now, PeerInfo::default()).expect("open");
                            self.by_conn.insert(conn, i);
                            self.peers[i].conn = Some(conn);
                            self.hub_dirty = true;
                            self.peers[i].client.handle_connected(now);
                        } else {
                            self.peers[i].client.handle_connect_failed(now);
                        }
                    }
                    ClientEvent::CloseSocket => {
                        if let Some(conn) = self.peers[i].conn.take() {
                            self.by_conn.remove(&conn);
                            let _ = self.hub.handle_eof(now, conn);
                            self.hub_dirty = true;
                        }
                    }
                    _ => {}
                }
                self.peers[i].events.push((now, event));
            }
            if !progressed {
                break;
            }
        }
        if let Some(t) = self.peers[i].client.poll_timeout() {
            self.heap.push(Reverse((t, i)));
        }
    }

    fn pump_hub(&mut self) {
        let now = self.now;
        loop {
            let mut progressed = false;
            while let Some(event) = self.hub.poll_event() {
                progressed = true;
                if let Event::Closed { conn, .. } = &event {
                    // The hub ended the connection: the client reads EOF.
                    if let Some(i) = self.by_conn.remove(conn) {
                        self.peers[i].conn = None;
                        self.peers[i].client.handle_eof(now);
                        self.dirty.push(i);
                    }
                }
                self.hub_events.push(event);
            }
            while let Some(id) = self.hub.poll_transmit(&mut self.frames) {
                progressed = true;
                let n = self.frames.iter().map(|f| f.len()).sum();
                if let Some(&i) = self.by_conn.get(&id) {
                    for f in self.frames.drain(..) {
                        self.peers[i].client.handle_read(now, &f);
                    }
                    self.dirty.push(i);
                } else {
                    self.frames.clear();
                }
                self.hub.handle_written(now, id, n).expect("written");
            }
            if !progressed {
                break;
            }
        }
        if let Some(t) = self.hub.poll_timeout() {
            self.heap.push(Reverse((t, HUB)));
        }
    }
}
