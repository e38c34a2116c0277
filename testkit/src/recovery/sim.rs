//! A tiny in-memory driver for the model: fake time, the bytes each
//! connection received, and sockets that can stall (take nothing).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use wshub_core::frame::{encode_frame, Decoded, OpCode};
use wshub_core::{ConnId, Event, Hub, HubConfig, PeerInfo};

use crate::virtual_time::VirtualTime;
use crate::wire::{decode_server_frames, upgrade_request, UNIX_AT_START};

/// A hub plus fake time and per-connection sinks.
pub(crate) struct Sim {
    pub(crate) hub: Hub,
    pub(crate) now: Instant,
    /// Frame bytes received after the 101, not yet read.
    pub(crate) rx: HashMap<ConnId, Vec<u8>>,
    pub(crate) events: Vec<Event>,
    /// Connections whose writes are blocked (the socket takes nothing).
    pub(crate) stalled: Vec<ConnId>,
    /// What stalled connections were leased and did not write yet.
    pub(crate) held: HashMap<ConnId, Vec<Bytes>>,
}

impl Sim {
    pub(crate) fn new(cfg: HubConfig, now: Instant) -> Self {
        Sim {
            hub: Hub::new(cfg, now, UNIX_AT_START).expect("a valid config"),
            now,
            rx: HashMap::new(),
            events: Vec::new(),
            stalled: Vec::new(),
            held: HashMap::new(),
        }
    }

    /// Opens and upgrades a connection.
    pub(crate) fn connect(&mut self) -> ConnId {
        let id = self.hub.open(self.now, PeerInfo::default()).unwrap();
        self.rx.insert(id, Vec::new());
        self.feed(id, &upgrade_request("/ws"));
        let raw = self.rx.get_mut(&id).unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 101"), "no 101");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole response head");
        raw.drain(..end + 4);
        id
    }

    fn feed(&mut self, id: ConnId, bytes: &[u8]) {
        self.hub.handle_read(self.now, id, bytes).unwrap();
        self.pump();
    }

    /// Sends one masked text frame from the client.
    pub(crate) fn send_text(&mut self, id: ConnId, s: &str) {
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            OpCode::Text,
            s.as_bytes(),
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        self.feed(id, &frame);
    }

    /// Drains events and output; stalled connections keep their leases unwritten.
    pub(crate) fn pump(&mut self) {
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
                    self.rx.entry(id).or_default().extend_from_slice(&f);
                }
                self.hub.handle_written(self.now, id, n).unwrap();
            }
            if !progressed {
                break;
            }
        }
    }

    /// The text messages `id` received since the last call, parsed.
    pub(crate) fn take_json(&mut self, id: ConnId) -> Vec<Value> {
        let raw = std::mem::take(self.rx.get_mut(&id).unwrap());
        decode_server_frames(&raw)
            .into_iter()
            .filter_map(|d| match d {
                Decoded::Text(t) => Some(serde_json::from_str(&t).expect("hub sent invalid JSON")),
                _ => None,
            })
            .collect()
    }
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
