//! Arbitrary client frames after a valid handshake, against a model of the
//! hub built on a standalone decoder.

use std::time::Instant;

use serde_json::Value;
use wshub_core::config::{HubConfig, Mode};
use wshub_core::event::CloseReason;
use wshub_core::frame::{self, Decoded, FrameDecoder, Role};
use wshub_core::handshake;
use wshub_core::message::{self, ClientMessage};
use wshub_core::request::PeerInfo;
use wshub_core::Hub;

use crate::input::Splits;
use crate::wire::{
    check_hub, decode_server_frames, upgrade_request, OneConn, KEY, MAX_CLOSE_FRAME, UNIX_AT_START,
};

/// How [`check_frames`] reads its input. Public so that a differential check
/// ([`check_frames_differential`](crate::check_frames_differential), or one of
/// a test's own) decodes the very same bytes with the same limit.
///
/// Layout: byte 0 holds flags (bits 0-2 pick the message size limit from
/// [`FramesCase::LIMITS`], bit 3 selects hub mode instead of echo, bit 4 small
/// queue caps), byte 1 seeds the read splits, the rest is what the client
/// sends after its upgrade request.
#[derive(Clone, Copy, Debug)]
pub struct FramesCase<'a> {
    /// The hub's `max_message_size` (and the limit to give any other decoder).
    pub max_message_size: usize,
    /// Echo mode: every message comes back, so the output is fully predicted.
    pub echo: bool,
    /// Queue caps of 4 messages and 512 bytes instead of the defaults (echo
    /// mode only).
    pub small_queue: bool,
    /// Seeds the read splits.
    pub split_seed: u8,
    /// The client's bytes after the handshake.
    pub wire: &'a [u8],
}

impl<'a> FramesCase<'a> {
    /// Message size limits a case can pick: the edges of the length classes.
    pub const LIMITS: [usize; 8] = [1, 2, 125, 126, 127, 1024, 65_535, 65_536];

    /// Reads a case; `None` for inputs shorter than two bytes.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let [flags, split_seed, wire @ ..] = data else {
            return None;
        };
        let echo = flags & 0x08 == 0;
        Some(FramesCase {
            max_message_size: Self::LIMITS[usize::from(flags & 7)],
            echo,
            small_queue: echo && flags & 0x10 != 0,
            split_seed: *split_seed,
            wire,
        })
    }

    /// The reads the wire is fed in.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        Splits::new(self.split_seed).chunks(self.wire)
    }

    fn config(&self) -> HubConfig {
        let mut cfg = HubConfig {
            mode: if self.echo { Mode::Echo } else { Mode::Hub },
            max_message_size: self.max_message_size,
            // Every frame arrives at one instant here: the rate limit would
            // end most inputs early. It has its own tests (core/tests/limits.rs).
            max_messages_per_second: 0,
            ..HubConfig::default()
        };
        if self.small_queue {
            cfg.max_queued_messages = 4;
            cfg.max_queued_bytes = 512;
        }
        cfg
    }
}

/// A frame the model expects from the hub.
#[derive(Debug)]
enum Expect {
    Frame(Decoded),
    /// A hub-mode reply (ack, error or pong message): any JSON text.
    Reply,
}

/// Predicts the hub's output for one connection from a standalone decoder
/// fed the same reads.
struct FramesModel {
    dec: FrameDecoder,
    echo: bool,
    max_msgs: usize,
    max_bytes: usize,
    max_invalid: u32,
    invalid: u32,
    expected: Vec<Expect>,
    ending: Option<(CloseReason, Option<u16>)>,
}

/// What one read queues; the queue is empty when a read starts because the
/// harness writes everything after each read.
struct ReadBatch {
    frames: Vec<Expect>,
    msgs: usize,
    bytes: usize,
}

impl FramesModel {
    fn close(code: u16, text: &str) -> Expect {
        let mut end = text.len().min(123);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Expect::Frame(Decoded::Close(Some((code, text[..end].to_owned()))))
    }

    /// `enqueue` with the hub's caps; false (and the connection cut) on
    /// overflow.
    fn enqueue(&mut self, batch: &mut ReadBatch, e: Expect, wire_len: usize) -> bool {
        if batch.msgs >= self.max_msgs || batch.bytes + wire_len > self.max_bytes {
            batch.frames.clear();
            batch.frames.push(Self::close(1013, "slow consumer"));
            self.ending = Some((CloseReason::SlowConsumer, Some(1013)));
            return false;
        }
        batch.msgs += 1;
        batch.bytes += wire_len;
        batch.frames.push(e);
        true
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.ending.is_some() {
            return;
        }
        let mut batch = ReadBatch {
            frames: Vec::new(),
            msgs: 0,
            bytes: 0,
        };
        let mut rest = chunk;
        while !rest.is_empty() && self.ending.is_none() {
            let (n, r) = self.dec.decode(rest);
            rest = &rest[n..];
            match r {
                Ok(None) => assert!(n > 0, "the decoder stalled on input"),
                Ok(Some(d)) => self.on_decoded(&mut batch, d),
                Err(v) => {
                    batch
                        .frames
                        .push(Self::close(v.close_code(), &v.to_string()));
                    self.ending =
                        Some((CloseReason::Protocol(v.close_code()), Some(v.close_code())));
                }
            }
        }
        self.expected.append(&mut batch.frames);
    }

    fn on_decoded(&mut self, batch: &mut ReadBatch, d: Decoded) {
        match d {
            Decoded::Text(t) if self.echo => {
                let len = frame::frame_len(t.len(), false);
                self.enqueue(batch, Expect::Frame(Decoded::Text(t)), len);
            }
            Decoded::Binary(b) if self.echo => {
                let len = frame::frame_len(b.len(), false);
                self.enqueue(batch, Expect::Frame(Decoded::Binary(b)), len);
            }
            Decoded::Text(t) => {
                let request = message::parse_client(&t);
                let has_id = request.id.is_some();
                match request.body {
                    Err(_) | Ok(ClientMessage::Other { .. }) => self.invalid(batch, has_id),
                    // A pong message goes out with or without an id.
                    Ok(ClientMessage::Ping) => {
                        self.enqueue(batch, Expect::Reply, 0);
                    }
                    Ok(_) => {
                        if has_id {
                            self.enqueue(batch, Expect::Reply, 0);
                        }
                    }
                }
            }
            Decoded::Binary(_) => self.invalid(batch, false),
            Decoded::Ping(p) => {
                let len = frame::frame_len(p.len(), false);
                self.enqueue(batch, Expect::Frame(Decoded::Pong(p)), len);
            }
            Decoded::Pong(_) => {}
            Decoded::Close(close) => {
                // The hub drops whatever it had not handed out yet and answers.
                batch.frames.clear();
                let code = close.as_ref().map(|(c, _)| *c);
                let reply = close.map(|(c, _)| (c, String::new()));
                batch.frames.push(Expect::Frame(Decoded::Close(reply)));
                self.ending = Some((CloseReason::PeerClosed(code), code));
            }
        }
    }

    fn invalid(&mut self, batch: &mut ReadBatch, has_id: bool) {
        self.invalid += 1;
        if self.invalid > self.max_invalid {
            batch
                .frames
                .push(Self::close(1008, "too many invalid messages"));
            self.ending = Some((CloseReason::Policy, Some(1008)));
        } else if has_id {
            self.enqueue(batch, Expect::Reply, 0);
        }
    }
}

/// Arbitrary bytes from a client after a valid handshake, in arbitrary
/// splits (see [`FramesCase`] for the layout).
///
/// After every read: no panic, the hub's invariants hold and its queue is
/// within the caps. The hub's output must be exactly what a model built on a
/// standalone [`FrameDecoder`] (server role, same limit, same reads)
/// predicts: in echo mode every message echoed, every ping answered with its
/// payload, the peer's close code echoed, a violation answered with its close
/// code and text, an overflowing read cut with 1013 (frames not yet handed
/// out dropped); in hub mode the same shape with any JSON reply where a reply
/// is due and 1008 past `max_invalid_messages`. A connection whose close frame
/// was written is gone, with the predicted reason, and it is closed exactly
/// once.
///
/// # Panics
///
/// On any violation of those properties; that is its purpose.
pub fn check_frames(base: Instant, data: &[u8]) {
    let Some(case) = FramesCase::parse(data) else {
        return;
    };
    let cfg = case.config();
    let now = base;
    let mut model = FramesModel {
        dec: FrameDecoder::new(Role::Server, cfg.max_message_size),
        echo: case.echo,
        max_msgs: cfg.max_queued_messages,
        max_bytes: cfg.max_queued_bytes,
        max_invalid: cfg.max_invalid_messages,
        invalid: 0,
        expected: Vec::new(),
        ending: None,
    };
    let (max_msgs, max_bytes) = (cfg.max_queued_messages, cfg.max_queued_bytes);
    let mut hub = Hub::new(cfg, now, UNIX_AT_START).expect("valid config");
    let id = hub.open(now, PeerInfo::default()).expect("open");
    hub.handle_read(now, id, &upgrade_request("/ws"))
        .expect("live");
    let mut conn = OneConn::default();
    conn.drain(&mut hub, now, id);
    let head = handshake::switching_protocols(KEY, None);
    assert_eq!(conn.written, head, "the upgrade failed");
    conn.written.clear();

    for chunk in case.chunks() {
        if !hub.contains(id) {
            break;
        }
        hub.handle_read(now, id, chunk).expect("live");
        model.feed(chunk);
        // Nothing has been handed out yet: the queue holds exactly this
        // read's output, within the caps (plus one close frame).
        if let Some((msgs, bytes)) = hub.queued(id) {
            assert!(
                msgs <= max_msgs + 1 && bytes <= max_bytes + MAX_CLOSE_FRAME,
                "queue over its caps: {msgs} msgs, {bytes} bytes"
            );
        }
        check_hub(&hub);
        conn.drain(&mut hub, now, id);
        if model.ending.is_some() {
            assert!(
                !hub.contains(id),
                "the close frame was written but the connection lives on"
            );
        }
    }
    let ending = model
        .ending
        .clone()
        .unwrap_or((CloseReason::Eof, Some(1006)));
    if hub.contains(id) {
        hub.handle_eof(now, id).expect("live");
        conn.drain(&mut hub, now, id);
    }
    let (reason, code, was_connected) = conn.closed();
    assert!(was_connected);
    assert_eq!((reason, code), (&ending.0, ending.1), "close reason");

    let got = decode_server_frames(&conn.written);
    assert_eq!(
        got.len(),
        model.expected.len(),
        "frame count\n got {got:?}\nwant {:?}",
        model.expected
    );
    for (i, (g, e)) in got.iter().zip(&model.expected).enumerate() {
        match e {
            Expect::Frame(want) => assert_eq!(g, want, "frame {i}"),
            Expect::Reply => {
                let Decoded::Text(t) = g else {
                    panic!("frame {i}: want a JSON reply, got {g:?}");
                };
                let v: Value = serde_json::from_str(t).expect("a reply is JSON");
                let kind = v.get("type").and_then(Value::as_str);
                assert!(
                    matches!(kind, Some("ack" | "error" | "pong")),
                    "frame {i}: not a reply: {t}"
                );
            }
        }
    }
}
