//! A scripted network and server for one `Client` under fake time: what
//! the client writes is collected and decoded as a server would, the test
//! feeds the server's bytes, and `advance` steps through every deadline.
#![allow(dead_code)]

#[path = "../common/frames.rs"]
mod frames;

use std::time::{Duration, Instant};

use serde_json::Value;
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::client::{Client, ClientConfig, ClientEvent, Endpoint};
use wshub_core::frame::{encode_frame, Decoded, OpCode, Role};
use wshub_core::handshake::accept_key;

/// The only clock read in these tests; every other instant derives from it.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `n` endpoints `ws://eN.test/ws`, go-ws's schedule without jitter.
pub fn cfg(n: usize) -> ClientConfig {
    let endpoints = (0..n)
        .map(|i| Endpoint::parse(&format!("ws://e{i}.test/ws")).unwrap())
        .collect();
    let mut c = ClientConfig::new(endpoints);
    c.backoff = BackoffPolicy {
        jitter: Jitter::None,
        ..BackoffPolicy::default()
    };
    c
}

/// What the scripted network does with a `Connect`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dial {
    /// The connection is refused at once.
    Fail,
    /// Nothing happens: the test decides.
    Hold,
    /// The connection opens and the server answers with a valid 101.
    Accept,
}

/// A client with a scripted network and server under fake time.
pub struct Drv {
    pub c: Client,
    pub start: Instant,
    pub now: Instant,
    pub log: Vec<(Instant, ClientEvent)>,
    /// What the client wrote on the current socket.
    pub sent: Vec<u8>,
    pub socket: bool,
    pub dial: Box<dyn FnMut(usize) -> Dial>,
}

impl Drv {
    pub fn new(cfg: ClientConfig) -> Drv {
        Drv::with_seed(cfg, 7, t0())
    }

    pub fn with_seed(cfg: ClientConfig, seed: u64, now: Instant) -> Drv {
        Drv {
            c: Client::new(cfg, now, seed).expect("valid config"),
            start: now,
            now,
            log: Vec::new(),
            sent: Vec::new(),
            socket: false,
            dial: Box::new(|_| Dial::Hold),
        }
    }

    pub fn dialing(mut self, f: impl FnMut(usize) -> Dial + 'static) -> Drv {
        self.dial = Box::new(f);
        self
    }

    pub fn start(&mut self) {
        self.c.start(self.now);
        self.pump();
    }

    /// Drains output and events as a driver would, applying `dial` to
    /// `Connect`s and checking the one-socket contract.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(bytes) = self.c.poll_transmit() {
                progressed = true;
                assert!(self.socket, "bytes without a socket");
                self.sent.extend_from_slice(&bytes);
            }
            while let Some(event) = self.c.poll_event() {
                progressed = true;
                let dial = match &event {
                    ClientEvent::Connect { endpoint_index, .. } => {
                        assert!(!self.socket, "a second socket while one is open");
                        self.socket = true;
                        self.sent.clear();
                        Some((self.dial)(*endpoint_index))
                    }
                    ClientEvent::CloseSocket => {
                        assert!(self.socket, "CloseSocket without a socket");
                        self.socket = false;
                        None
                    }
                    _ => None,
                };
                self.log.push((self.now, event));
                match dial {
                    Some(Dial::Fail) => {
                        self.socket = false;
                        self.c.handle_connect_failed(self.now);
                    }
                    Some(Dial::Accept) => self.accept(),
                    Some(Dial::Hold) | None => {}
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// The TCP connection is up and the server answers with a valid 101.
    pub fn accept(&mut self) {
        self.connect_tcp();
        let response = switching(&self.key(), "");
        self.c.handle_read(self.now, &response);
    }

    /// The TCP connection is up; the request is in `sent`.
    pub fn connect_tcp(&mut self) {
        self.c.handle_connected(self.now);
        while let Some(bytes) = self.c.poll_transmit() {
            self.sent.extend_from_slice(&bytes);
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.c.handle_read(self.now, bytes);
        self.pump();
    }

    pub fn server_text(&mut self, text: &str) {
        let mut f = Vec::new();
        encode_frame(&mut f, OpCode::Text, text.as_bytes(), None);
        self.feed(&f);
    }

    /// Steps through every deadline up to `now + d`.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        for _ in 0..100_000 {
            match self.c.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.c.handle_timeout(self.now);
                    self.pump();
                }
                _ => {
                    self.now = end;
                    self.c.handle_timeout(end);
                    self.pump();
                    return;
                }
            }
        }
        panic!("a deadline that never clears");
    }

    pub fn request_head(&self) -> &str {
        let end = find(&self.sent, b"\r\n\r\n").expect("a complete request") + 4;
        std::str::from_utf8(&self.sent[..end]).expect("ASCII request")
    }

    pub fn key(&self) -> String {
        self.request_head()
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key")
            .to_owned()
    }

    /// The frames the client wrote on this socket, decoded as a server would
    /// (which also checks they are masked and valid).
    pub fn client_frames(&self) -> Vec<Decoded> {
        let start = find(&self.sent, b"\r\n\r\n").expect("a request") + 4;
        frames::decode_all(&self.sent[start..], Role::Server, 1 << 20, "client")
    }

    pub fn client_json(&self) -> Vec<Value> {
        frames::json_texts(self.client_frames(), "client")
    }

    pub fn events(&self) -> Vec<&ClientEvent> {
        self.log.iter().map(|(_, e)| e).collect()
    }

    /// (offset from the start, endpoint) of every `Connect`.
    pub fn connects(&self) -> Vec<(Duration, usize)> {
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                ClientEvent::Connect { endpoint_index, .. } => {
                    Some((*t - self.start, *endpoint_index))
                }
                _ => None,
            })
            .collect()
    }

    /// Gaps between consecutive `Connect`s.
    pub fn delays(&self) -> Vec<Duration> {
        let c = self.connects();
        c.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A 101 for `key`, with extra header lines (each ending in `\r\n`).
pub fn switching(key: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_key(key)
    )
    .into_bytes()
}
