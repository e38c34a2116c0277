//! The tungstenite differential of the frame decoder.
//!
//! tungstenite is only a test dependency of wshub-core, so this check lives
//! here: the `frames` fuzz target and `tests/fuzz_corpus.rs` call
//! [`check_frames_differential`], and the decoder's quickcheck differential
//! (`tests/frame_differential.rs`) uses [`tungstenite_decode`].
//!
//! [`check_frames_differential`] reads its input as a [`FramesCase`] (the
//! layout [`check_frames`](crate::check_frames) uses), decodes the client's
//! bytes with our [`FrameDecoder`] (server role, the case's message size
//! limit, the case's read splits) and with tungstenite's `WebSocketContext`
//! (server role, the same limit as its message and frame size), both stopping
//! at the first close, and compares.

use std::io::{self, Read, Write};

use tungstenite::protocol::{Message, WebSocketConfig, WebSocketContext};
use wshub_core::frame::{Decoded, FrameDecoder, Role, Violation};

use crate::FramesCase;

/// Lends the wire to tungstenite: reads return `WouldBlock` once it is used
/// up; writes (pongs, close replies) are collected and ignored.
struct Lend<'a> {
    input: &'a [u8],
    out: Vec<u8>,
}

impl Read for Lend<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
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

/// tungstenite's error classes, as far as the comparison needs them.
#[derive(Debug, PartialEq, Eq)]
pub enum TgError {
    /// A protocol violation.
    Protocol,
    /// Invalid UTF-8 in a text message or close reason.
    Utf8,
    /// A message or frame over the size limit.
    Capacity,
    /// Anything else, by its text.
    Other(String),
}

/// Server-side tungstenite over `wire`, up to the first close (after which it,
/// like the hub, stops reading).
pub fn tungstenite_decode(wire: &[u8], limit: usize) -> (Vec<Decoded>, Option<TgError>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let mut ctx = WebSocketContext::new(tungstenite::protocol::Role::Server, Some(config));
    let mut io = Lend {
        input: wire,
        out: Vec::new(),
    };
    let mut out = Vec::new();
    loop {
        let msg = match ctx.read(&mut io) {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return (out, None)
            }
            Err(tungstenite::Error::Protocol(_)) => return (out, Some(TgError::Protocol)),
            Err(tungstenite::Error::Utf8(_)) => return (out, Some(TgError::Utf8)),
            Err(tungstenite::Error::Capacity(_)) => return (out, Some(TgError::Capacity)),
            Err(e) => return (out, Some(TgError::Other(e.to_string()))),
        };
        out.push(match msg {
            Message::Text(t) => Decoded::Text(t.as_str().to_owned()),
            Message::Binary(b) => Decoded::Binary(b.to_vec()),
            Message::Ping(b) => Decoded::Ping(b.to_vec()),
            Message::Pong(b) => Decoded::Pong(b.to_vec()),
            Message::Close(c) => {
                out.push(Decoded::Close(
                    c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned())),
                ));
                return (out, None);
            }
            Message::Frame(_) => return (out, Some(TgError::Other("raw frame".into()))),
        });
    }
}

/// Our decoder over the same bytes in the given reads, also cut after the
/// first close.
fn ours_decode(chunks: &[&[u8]], limit: usize) -> (Vec<Decoded>, Option<Violation>) {
    let mut dec = FrameDecoder::new(Role::Server, limit);
    let mut got = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let (n, r) = dec.decode(rest);
            rest = &rest[n..];
            match r {
                Ok(Some(d)) => {
                    let close = matches!(d, Decoded::Close(_));
                    got.push(d);
                    if close {
                        return (got, None);
                    }
                }
                Ok(None) => {}
                Err(v) => return (got, Some(v)),
            }
        }
    }
    (got, None)
}

// The texts of the violations tungstenite is known to accept (see
// `tests/frame_differential.rs`, `compare_with_tungstenite`, which exempts
// the same three). Compared by text because the constants are private to the
// core.
/// The violation text of a length not in its shortest form.
pub const NON_MINIMAL_LENGTH: &str = "payload length not minimally encoded";
/// The violation text of a control frame over 125 bytes.
pub const CONTROL_TOO_LONG: &str = "control frame with a payload over 125 bytes";
/// The violation text of a close code not allowed on the wire.
pub const CLOSE_CODE: &str = "close code not allowed on the wire";

/// Differential check of our frame decoder against tungstenite's.
///
/// When we accept everything, tungstenite must decode the same messages and
/// no error. When we refuse, the messages before the refusal must be the
/// same, and tungstenite's verdict must be compatible: it may still be
/// waiting (it checks a frame when its payload is complete, we as soon as the
/// header or the bad UTF-8 byte is in), or fail with the matching class (or
/// `Capacity` for a protocol error: it tests the announced size first).
///
/// Known, justified divergences, where tungstenite goes on past a frame we
/// refuse, so only a common prefix is asked for (the same exemptions as the
/// decoder's own differential test, `tests/frame_differential.rs`):
/// - it accepts non-minimal length encodings (RFC 6455 §5.2: "the minimal
///   number of bytes MUST be used"), including a control frame of <= 125
///   bytes announced with a 16/64-bit length;
/// - it turns a close code that is not allowed on the wire into a
///   `Close(1002)` message instead of an error.
///
/// And one where we accept what tungstenite refuses: close code 1014 ("Bad
/// Gateway", registered with IANA like 1012 and 1013; `frame::is_valid_close_code`
/// accepts 1012-1014 on purpose). tungstenite 0.30 has no entry for 1014 and
/// reports `Close(1002)` in its place, so that pair counts as agreement. Found
/// by this target; the decoder's own differential test never sends 1012-1014.
///
/// # Panics
///
/// When the decoders disagree beyond those divergences.
pub fn check_frames_differential(data: &[u8]) {
    let Some(case) = FramesCase::parse(data) else {
        return;
    };
    let limit = case.max_message_size;
    let (ours, our_err) = ours_decode(&case.chunks(), limit);
    let (mut theirs, their_err) = tungstenite_decode(case.wire, limit);
    // The 1014 divergence documented above: take tungstenite's 1002 for it.
    if let (Some(Decoded::Close(Some((1014, reason)))), Some(Decoded::Close(Some((1002, _))))) =
        (ours.last(), theirs.last())
    {
        if ours.len() == theirs.len() {
            let last = theirs.len() - 1;
            theirs[last] = Decoded::Close(Some((1014, reason.clone())));
        }
    }
    let report =
        || format!("limit {limit}\nours   {ours:?} {our_err:?}\ntheirs {theirs:?} {their_err:?}");
    let Some(v) = our_err else {
        assert!(
            ours == theirs && their_err.is_none(),
            "decoders disagree on valid input\n{}",
            report()
        );
        return;
    };
    if matches!(v, Violation::Protocol(why) if [NON_MINIMAL_LENGTH, CONTROL_TOO_LONG, CLOSE_CODE].contains(&why))
    {
        assert!(theirs.starts_with(&ours), "decoders disagree\n{}", report());
        return;
    }
    assert!(
        ours == theirs,
        "decoders disagree before our refusal\n{}",
        report()
    );
    let compatible = matches!(
        (&v, &their_err),
        (_, None)
            | (Violation::InvalidUtf8, Some(TgError::Utf8))
            | (Violation::TooBig, Some(TgError::Capacity))
            // Check order differs: tungstenite tests the announced size first.
            | (
                Violation::Protocol(_),
                Some(TgError::Protocol | TgError::Capacity)
            )
    );
    assert!(compatible, "incompatible refusals\n{}", report());
}
