//! A tiny in-memory driver for the hub: fake time, a byte sink per connection,
//! and a client-side frame codec to read what the hub wrote.
#![allow(dead_code)]

pub mod counting;
pub mod frames;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wshub_core::frame::{encode_frame, Decoded, OpCode, Role};
use wshub_core::{ConnId, Event, Hub, HubConfig, PeerInfo};
use wshub_testkit::VirtualTime;

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn request(target: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (n, v) in extra {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

pub fn masked(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    out
}

pub fn text(s: &str) -> Vec<u8> {
    masked(OpCode::Text, s.as_bytes())
}

/// What one connection has received so far.
#[derive(Default)]
pub struct Received {
    pub raw: Vec<u8>,
}

impl Received {
    /// The HTTP status line's code, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        let s = std::str::from_utf8(self.raw.get(..12)?).ok()?;
        s.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    pub fn head(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |e| e + 4);
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    /// Frames after the 101 response.
    pub fn frames(&self) -> Vec<Decoded> {
        let Some(end) = find(&self.raw, b"\r\n\r\n") else {
            return Vec::new();
        };
        frames::decode_all(&self.raw[end + 4..], Role::Client, 1 << 24, "hub")
    }

    /// Text messages parsed as JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        frames::json_texts(self.frames(), "hub")
    }

    pub fn close_code(&self) -> Option<u16> {
        self.frames().into_iter().find_map(|d| match d {
            Decoded::Close(c) => Some(c.map_or(1005, |(code, _)| code)),
            _ => None,
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A hub plus fake time and per-connection sinks.
pub struct Sim {
    pub hub: Hub,
    pub now: Instant,
    pub rx: HashMap<ConnId, Received>,
    pub events: Vec<Event>,
    /// Connections whose writes are blocked (the socket takes nothing).
    pub stalled: Vec<ConnId>,
    pub held: HashMap<ConnId, Vec<Bytes>>,
}

impl Sim {
    pub fn new(cfg: HubConfig) -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Sim {
            hub: Hub::new(cfg, now, Duration::from_secs(1_771_575_165)).unwrap(),
            now,
            rx: HashMap::new(),
            events: Vec::new(),
            stalled: Vec::new(),
            held: HashMap::new(),
        }
    }

    pub fn open(&mut self) -> ConnId {
        let id = self.hub.open(self.now, PeerInfo::default()).unwrap();
        self.rx.insert(id, Received::default());
        id
    }

    /// Opens and upgrades a connection at `target` with extra headers.
    pub fn connect_with(&mut self, target: &str, extra: &[(&str, &str)]) -> ConnId {
        let id = self.open();
        self.feed(id, &request(target, extra));
        id
    }

    pub fn connect(&mut self) -> ConnId {
        let id = self.connect_with("/ws", &[]);
        assert_eq!(self.rx[&id].status(), Some(101), "{}", self.rx[&id].head());
        id
    }

    pub fn feed(&mut self, id: ConnId, bytes: &[u8]) {
        self.hub.handle_read(self.now, id, bytes).unwrap();
        self.pump();
    }

    pub fn send_text(&mut self, id: ConnId, s: &str) {
        self.feed(id, &text(s));
    }

    /// Drains events and output; stalled connections keep their leases unwritten.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(e) = self.hub.poll_event() {
                self.events.push(e);
                progressed = true;
            }
            let mut frames = Vec::new();
            while let Some(id) = self.hub.poll_transmit(&mut frames) {
                progressed = true;
                if self.stalled.contains(&id) {
                    self.held.entry(id).or_default().append(&mut frames);
                    continue;
                }
                let mut n = 0;
                for f in frames.drain(..) {
                    n += f.len();
                    self.rx.entry(id).or_default().raw.extend_from_slice(&f);
                }
                self.hub.handle_written(self.now, id, n).unwrap();
            }
            if !progressed {
                break;
            }
        }
    }

    /// Advances fake time to `now + d`, firing every deadline on the way in
    /// order ([`VirtualTime::advance`]).
    pub fn advance(&mut self, d: Duration) {
        VirtualTime::advance(self, d);
    }

    pub fn closed(&self, id: ConnId) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Closed { conn, .. } if *conn == id))
            .collect()
    }

    pub fn take_json(&mut self, id: ConnId) -> Vec<serde_json::Value> {
        let j = self.rx[&id].json();
        // Keep the head so status() still works; drop frames already read.
        let r = self.rx.get_mut(&id).unwrap();
        if let Some(end) = find(&r.raw, b"\r\n\r\n") {
            r.raw.truncate(end + 4);
        }
        j
    }
}

/// The `type` of each message, in order ("?" when missing).
pub fn types(v: &[serde_json::Value]) -> Vec<&str> {
    v.iter()
        .map(|m| m["type"].as_str().unwrap_or("?"))
        .collect()
}

impl VirtualTime for Sim {
    fn hub(&mut self) -> &mut Hub {
        &mut self.hub
    }
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn pump(&mut self) {
        Sim::pump(self);
    }
}
