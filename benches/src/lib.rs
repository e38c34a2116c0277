//! Shared fixtures for the wshub-core micro-benchmarks (see `benches/README.md`).
//!
//! Nothing here is measured by itself: these are the request bytes, the hub
//! set-up and drain loops, the frame builders and the in-memory stream the
//! bench targets share, so that every target feeds the core and its baseline
//! exactly the same bytes.
#![warn(missing_docs)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use wshub_core::frame::{encode_frame, OpCode};
use wshub_core::{ConnId, Hub, HubConfig, PeerInfo, Timestamp};

/// A browser-like upgrade request (Chrome's header set, 15 headers, no
/// credentials) for the default served path `/ws`.
pub const REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://example.com:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: websocket\r\n\
Sec-Fetch-Site: same-origin\r\n\
\r\n";

/// The channel every fan-out subscriber joins.
pub const CHANNEL: &str = "bench";

/// Seconds since the Unix epoch the hubs' wall clocks start at.
pub const UNIX_START: Duration = Duration::from_secs(1_700_000_000);

/// True when the binary runs under `cargo bench` (which passes `--bench`);
/// false under `cargo test --benches`, where criterion runs every benchmark
/// once as a smoke test, so fixtures are kept small there.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The instant benches use as `now` (the core takes time as an argument; a
/// fixed instant keeps every deadline in the future, so no timer fires).
#[allow(clippy::disallowed_methods)]
pub fn start_instant() -> Instant {
    Instant::now()
}

/// A hub with the default configuration, except room for `max_connections`.
pub fn new_hub(now: Instant, max_connections: usize) -> Hub {
    let cfg = HubConfig {
        max_connections,
        ..HubConfig::default()
    };
    match Hub::new(cfg, now, UNIX_START) {
        Ok(hub) => hub,
        Err(e) => panic!("bench config rejected: {e:?}"),
    }
}

/// Writes everything the hub has queued, as a driver whose sockets always
/// accept every byte would: `poll_transmit` then `handle_written` with the
/// total. Returns the frames written.
pub fn drain_output(hub: &mut Hub, now: Instant, frames: &mut Vec<Bytes>) -> usize {
    let mut count = 0;
    while let Some(id) = hub.poll_transmit(frames) {
        let n: usize = frames.iter().map(Bytes::len).sum();
        count += frames.len();
        frames.clear();
        if let Err(e) = hub.handle_written(now, id, n) {
            panic!("handle_written: {e:?}");
        }
    }
    count
}

/// Drops every pending event; returns how many there were.
pub fn drain_events(hub: &mut Hub) -> usize {
    let mut n = 0;
    while let Some(ev) = hub.poll_event() {
        std::hint::black_box(ev);
        n += 1;
    }
    n
}

/// Opens a connection and upgrades it by feeding [`REQUEST`] through
/// `handle_read`, then writes its 101 and drops its events.
pub fn open_upgraded(hub: &mut Hub, now: Instant, frames: &mut Vec<Bytes>) -> ConnId {
    let id = match hub.open(now, PeerInfo::default()) {
        Ok(id) => id,
        Err(e) => panic!("open: {e:?}"),
    };
    if let Err(e) = hub.handle_read(now, id, REQUEST) {
        panic!("handle_read: {e:?}");
    }
    drain_events(hub);
    drain_output(hub, now, frames);
    assert!(hub.contains(id), "the upgrade was refused");
    id
}

/// A hub with `n` upgraded connections, each subscribed to [`CHANNEL`].
pub fn fanout_hub(now: Instant, n: usize) -> Hub {
    let mut hub = new_hub(now, n.max(1) * 2);
    let mut frames = Vec::new();
    for _ in 0..n {
        let id = open_upgraded(&mut hub, now, &mut frames);
        if let Err(e) = hub.subscribe(now, id, CHANNEL) {
            panic!("subscribe: {e:?}");
        }
    }
    assert_eq!(hub.subscriber_count(CHANNEL), n);
    hub
}

/// A payload of exactly `len` bytes of printable ASCII text.
pub fn text_payload(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..len)
        .map(|i| char::from(ALPHABET[(i * 7 + i / 64) % ALPHABET.len()]))
        .collect()
}

/// One masked client text frame carrying `payload`.
pub fn masked_text_frame(payload: &str, mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, OpCode::Text, payload.as_bytes(), Some(mask));
    out
}

/// `count` masked client text frames of `payload_len` bytes each, concatenated,
/// with the offset each frame starts at (plus the end).
pub fn masked_text_frames(payload_len: usize, count: usize) -> (Vec<u8>, Vec<usize>) {
    let payload = text_payload(payload_len);
    let mut buf = Vec::new();
    let mut bounds = vec![0];
    for i in 0..count {
        let mask = (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
        buf.extend_from_slice(&masked_text_frame(&payload, mask));
        bounds.push(buf.len());
    }
    (buf, bounds)
}

/// An in-memory stream lent to tungstenite's `WebSocketContext` for one call
/// (building-blocks.md section 1): reads come from `input` and end with
/// `WouldBlock`; writes append to `out`.
pub struct Lend<'a> {
    /// Bytes not yet read.
    pub input: &'a [u8],
    /// Everything written.
    pub out: &'a mut Vec<u8>,
}

impl Read for Lend<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        let (now, rest) = self.input.split_at(n);
        buf[..n].copy_from_slice(now);
        self.input = rest;
        Ok(n)
    }
}

impl Write for Lend<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fan-out a typical application writes by hand: a channel map of
/// subscriber ids, a client table keyed by id, and an outbound queue of
/// owned `Vec<u8>` per client. Each publish serializes once with serde_json
/// and pushes a clone of the bytes to every subscriber.
#[derive(Default)]
pub struct NaiveHub {
    channels: HashMap<String, HashSet<usize>>,
    clients: HashMap<usize, VecDeque<Vec<u8>>>,
}

/// The JSON the naive hub sends: the same fields, in the same shape, as the
/// core's channel publish.
#[derive(Serialize)]
struct NaiveMessage<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    channel: &'a str,
    data: &'a serde_json::Value,
    timestamp: String,
}

impl NaiveHub {
    /// `n` clients, each subscribed to [`CHANNEL`].
    pub fn with_subscribers(n: usize) -> Self {
        let mut hub = NaiveHub::default();
        for id in 0..n {
            hub.clients.insert(id, VecDeque::new());
            hub.channels
                .entry(CHANNEL.to_owned())
                .or_default()
                .insert(id);
        }
        hub
    }

    /// Serializes once (with a wall-clock timestamp, as the core does) and
    /// queues a copy for every subscriber; returns how many got it.
    pub fn publish(
        &mut self,
        since_epoch: Duration,
        channel: &str,
        data: &serde_json::Value,
    ) -> usize {
        let bytes = Self::encode(since_epoch, channel, data);
        let Some(subscribers) = self.channels.get(channel) else {
            return 0;
        };
        let mut delivered = 0;
        for id in subscribers {
            if let Some(queue) = self.clients.get_mut(id) {
                queue.push_back(bytes.clone());
                delivered += 1;
            }
        }
        delivered
    }

    /// The JSON bytes `publish` queues.
    pub fn encode(since_epoch: Duration, channel: &str, data: &serde_json::Value) -> Vec<u8> {
        let msg = NaiveMessage {
            kind: "event",
            channel,
            data,
            timestamp: Timestamp::from_unix(since_epoch).to_string(),
        };
        serde_json::to_vec(&msg).unwrap_or_default()
    }

    /// "Writes" every queued message (pops and drops it); returns how many.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        for queue in self.clients.values_mut() {
            while let Some(m) = queue.pop_front() {
                std::hint::black_box(m);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_upgrade_and_fan_out() {
        let now = start_instant();
        let mut hub = fanout_hub(now, 3);
        let msg = wshub_core::Message::new("event", serde_json::Value::String(text_payload(64)));
        assert_eq!(hub.publish(now, CHANNEL, msg), 3);
        let mut frames = Vec::new();
        let first = hub.poll_transmit(&mut frames).unwrap();
        // The baseline serializes the same JSON (same fields, same timestamp).
        let naive_json = NaiveHub::encode(UNIX_START, CHANNEL, &text_payload(64).into());
        // 143 B of JSON: a 2-byte header plus a 16-bit extended length.
        let wire = &frames[0][4..];
        assert_eq!(wire.len(), naive_json.len());
        let a: serde_json::Value = serde_json::from_slice(wire).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&naive_json).unwrap();
        assert_eq!(a, b);
        hub.handle_written(now, first, frames[0].len()).unwrap();
        frames.clear();
        assert_eq!(drain_output(&mut hub, now, &mut frames), 2);
        assert!(!hub.has_output(first));

        let mut naive = NaiveHub::with_subscribers(3);
        let data = serde_json::Value::String(text_payload(64));
        assert_eq!(naive.publish(UNIX_START, CHANNEL, &data), 3);
        assert_eq!(naive.drain(), 3);
    }

    #[test]
    fn frames_decode_in_both_decoders() {
        use wshub_core::frame::{Decoded, FrameDecoder, Role};
        let (buf, bounds) = masked_text_frames(64, 4);
        assert_eq!(bounds.len(), 5);
        let mut dec = FrameDecoder::new(Role::Server, 1 << 20);
        let mut off = 0;
        let mut got = 0;
        while off < buf.len() {
            let (n, r) = dec.decode(&buf[off..]);
            off += n;
            if let Ok(Some(Decoded::Text(t))) = r {
                assert_eq!(t, text_payload(64));
                got += 1;
            }
        }
        assert_eq!(got, 4);

        let mut out = Vec::new();
        let mut ctx =
            tungstenite::protocol::WebSocketContext::new(tungstenite::protocol::Role::Server, None);
        let mut lend = Lend {
            input: &buf,
            out: &mut out,
        };
        let mut n = 0;
        while let Ok(m) = ctx.read(&mut lend) {
            assert!(m.is_text());
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
