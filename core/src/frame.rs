//! RFC 6455 framing: an incremental, split-invariant frame decoder and the
//! matching encoder.
//!
//! The decoder is hand-rolled rather than built on tungstenite's
//! `WebSocketContext` because the hub needs things tungstenite does not give:
//! no read buffer reserved from a hostile header (a header announcing 2^62
//! bytes costs nothing here), memory that drops back to ~0 once a message is
//! delivered, UTF-8 failures detected while the bad bytes arrive, strict
//! minimal-length checks, and a typed [`Violation`] that maps straight to the
//! close code to send (tungstenite never sends 1002/1007 itself).
//!
//! Every check runs on the bytes in wire order as soon as the bytes it needs
//! are in, and a check only ever looks at bytes before it, so the first
//! violation found and the sequence of [`Decoded`] values do not depend on how
//! the input is split across [`FrameDecoder::decode`] calls.

use core::fmt;
use core::mem;

/// Which side we are: a server requires masked frames from the client; a
/// client requires unmasked frames from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection; the peer is a browser or other client.
    Server,
    /// We opened the connection; the peer is a server.
    Client,
}

/// A complete message or control frame decoded from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A text message, reassembled from its fragments and valid UTF-8.
    Text(String),
    /// A binary message, reassembled from its fragments.
    Binary(Vec<u8>),
    /// A ping (at most 125 bytes of application data).
    Ping(Vec<u8>),
    /// A pong (at most 125 bytes of application data).
    Pong(Vec<u8>),
    /// A close frame: `None` when the payload was empty, otherwise a code that
    /// is valid on the wire and a UTF-8 reason.
    Close(Option<(u16, String)>),
}

/// Why the peer's bytes are refused; [`Violation::close_code`] gives the code
/// to close with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A framing rule was broken (close with 1002); the text says which.
    Protocol(&'static str),
    /// A text message or close reason is not valid UTF-8 (close with 1007).
    InvalidUtf8,
    /// A message would exceed the configured maximum size (close with 1009).
    TooBig,
}

impl Violation {
    /// The close code RFC 6455 prescribes for this violation.
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::InvalidUtf8 => 1007,
            Violation::TooBig => 1009,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Protocol(why) => write!(f, "protocol error: {why}"),
            Violation::InvalidUtf8 => {
                f.write_str("invalid UTF-8 in a text message or close reason")
            }
            Violation::TooBig => f.write_str("message exceeds the maximum message size"),
        }
    }
}

impl std::error::Error for Violation {}

// The texts carried by `Violation::Protocol`. Named so that tests can tell the
// violations apart (the differential test exempts some of them).
const RESERVED_BITS: &str = "reserved bits set without a negotiated extension";
const RESERVED_OPCODE: &str = "reserved opcode";
const FRAGMENTED_CONTROL: &str = "fragmented control frame";
const UNEXPECTED_CONTINUATION: &str = "continuation frame without a message in progress";
const EXPECTED_CONTINUATION: &str = "new data frame while a fragmented message is in progress";
const UNMASKED_FROM_CLIENT: &str = "unmasked frame from a client";
const MASKED_FROM_SERVER: &str = "masked frame from a server";
// A control payload must be <= 125 bytes, which always fits the 7-bit form,
// so an extended length on a control frame is either too long or non-minimal.
const CONTROL_TOO_LONG: &str = "control frame with a payload over 125 bytes";
const NON_MINIMAL_LENGTH: &str = "payload length not minimally encoded";
const LENGTH_TOP_BIT: &str = "64-bit payload length with the most significant bit set";
const CLOSE_ONE_BYTE: &str = "close frame with a 1-byte payload";
const CLOSE_CODE: &str = "close code not allowed on the wire";

/// The longest frame header: 2 bytes, a 64-bit extended length, a mask key.
const MAX_HEADER: usize = 14;

/// The smallest allocation for a message buffer, so that a message fed in
/// many tiny pieces does not reallocate at 1, 2, 4, ... bytes.
const MIN_ALLOC: usize = 64;

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4):
/// the defined codes 1000-1003 and 1007-1011, the IANA-registered 1012-1014
/// (service restart, try again later, bad gateway: our own server sends 1013 to
/// slow consumers, so a wshub client must accept it), and the registered and
/// private ranges 3000-4999. 1004-1006 and 1015 are reserved for local use, and
/// everything else below 3000 is unassigned.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The kind of the data message being reassembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    None,
    Text,
    Binary,
}

/// A frame header that passed every check.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    /// All zero for an unmasked frame (XOR with zero is the identity).
    mask: [u8; 4],
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Collecting a frame header; the first `have` bytes of `hdr` are in.
    /// Kept inline so a header split across calls costs no allocation.
    Header { hdr: [u8; MAX_HEADER], have: u8 },
    /// Receiving the payload of a frame whose header passed every check.
    /// `len - remaining` bytes are in, which also gives the mask phase.
    Payload {
        len: u64,
        remaining: u64,
        mask: [u8; 4],
        opcode: u8,
        fin: bool,
    },
    /// A violation was found; the connection is dead.
    Failed(Violation),
}

const FRESH_HEADER: Stage = Stage::Header {
    hdr: [0; MAX_HEADER],
    have: 0,
};

/// An incremental RFC 6455 frame decoder for one connection.
///
/// Feed it whatever bytes arrive with [`decode`](Self::decode); it reassembles
/// fragmented messages, returns control frames as they come (also between
/// fragments), and reports the first [`Violation`]. It never allocates more
/// than the bytes actually received (rounded up by amortised growth), and
/// holds no heap once a message is delivered.
pub struct FrameDecoder {
    /// The message being reassembled; while a control frame is being received
    /// its payload is appended after the message bytes and split off at the
    /// end, which saves a second buffer in every connection.
    buf: Vec<u8>,
    max: usize,
    /// How many leading bytes of a text message are known to be valid UTF-8;
    /// at most 3 bytes (an incomplete sequence) lag behind `buf.len()`.
    utf8_valid: usize,
    stage: Stage,
    role: Role,
    msg: Msg,
}

// By hand so that logging a connection never dumps message contents.
impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("role", &self.role)
            .field("max", &self.max)
            .field("message", &self.msg)
            .field("buffered", &self.buf.len())
            .field("stage", &self.stage)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder for `role` that refuses messages (and control frames) longer
    /// than `max_message_size` bytes with [`Violation::TooBig`].
    pub fn new(role: Role, max_message_size: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max: max_message_size,
            utf8_valid: 0,
            stage: FRESH_HEADER,
            role,
            msg: Msg::None,
        }
    }

    /// Consumes a prefix of `input`; returns (bytes consumed, outcome).
    /// `Ok(None)` with all input consumed = need more bytes.
    ///
    /// Call again with the rest of the input while consumed < `input.len()`
    /// and the outcome was `Ok(Some(_))`. After an `Err` the decoder is
    /// poisoned: that call and every later one consume all their input and
    /// return the same `Err`.
    pub fn decode(&mut self, input: &[u8]) -> (usize, Result<Option<Decoded>, Violation>) {
        if let Stage::Failed(v) = self.stage {
            return (input.len(), Err(v));
        }
        let mut pos = 0;
        match self.step(input, &mut pos) {
            Ok(out) => (pos, Ok(out)),
            Err(v) => {
                self.stage = Stage::Failed(v);
                // Nothing more will be delivered, so give the memory back now.
                self.buf = Vec::new();
                self.msg = Msg::None;
                (input.len(), Err(v))
            }
        }
    }

    /// Heap bytes currently held (for memory accounting and tests).
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Runs frames until one completes a message or control frame, or the
    /// input runs out.
    fn step(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<Decoded>, Violation> {
        loop {
            let rest = input.get(*pos..).unwrap_or_default();
            match self.stage {
                Stage::Failed(v) => return Err(v),
                Stage::Header { mut hdr, have } => {
                    let have = usize::from(have);
                    // The first two bytes say how long the rest of the header is.
                    let need = match hdr.get(1) {
                        Some(&b1) if have >= 2 => header_len(b1),
                        _ => 2,
                    };
                    let take = need.saturating_sub(have).min(rest.len());
                    let now = have + take;
                    if let (Some(dst), Some(src)) = (hdr.get_mut(have..now), rest.get(..take)) {
                        dst.copy_from_slice(src);
                    }
                    *pos += take;
                    let parsed = self.check_header(hdr.get(..now).unwrap_or_default())?;
                    match parsed {
                        Some(h) => self.begin_frame(h),
                        None => {
                            // `now <= MAX_HEADER`, so the cast cannot truncate.
                            self.stage = Stage::Header {
                                hdr,
                                have: now as u8,
                            };
                            if take == 0 {
                                return Ok(None);
                            }
                        }
                    }
                }
                Stage::Payload {
                    len,
                    remaining,
                    mask,
                    opcode,
                    fin,
                } => {
                    if remaining > 0 {
                        if rest.is_empty() {
                            return Ok(None);
                        }
                        let n =
                            usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                        let chunk = rest.get(..n).unwrap_or_default();
                        let left = remaining - n as u64;
                        let is_control = opcode >= OP_CLOSE;
                        self.append(chunk, left, fin || is_control, mask, len - remaining);
                        *pos += n;
                        self.stage = Stage::Payload {
                            len,
                            remaining: left,
                            mask,
                            opcode,
                            fin,
                        };
                        // Fail fast on text that can never become valid; but
                        // a final frame completed here is validated once, in
                        // `finish_frame`, rather than twice (a 64 KiB message
                        // in one read was 1.1-1.3x slower than tungstenite).
                        let completes = left == 0 && fin;
                        if !is_control && self.msg == Msg::Text && !completes {
                            self.check_utf8_so_far()?;
                        }
                        if left > 0 {
                            // Only possible when `chunk` was the whole rest.
                            return Ok(None);
                        }
                    }
                    self.stage = FRESH_HEADER;
                    if let Some(done) = self.finish_frame(opcode, fin, len)? {
                        return Ok(Some(done));
                    }
                }
            }
        }
    }

    /// Checks the header bytes received so far, in wire order, and returns the
    /// header once it is complete. Pure: it may run several times on growing
    /// prefixes of the same header.
    fn check_header(&self, h: &[u8]) -> Result<Option<Header>, Violation> {
        let Some(&b0) = h.first() else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(Violation::Protocol(RESERVED_BITS));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let is_control = match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
            OP_CLOSE | OP_PING | OP_PONG => true,
            _ => return Err(Violation::Protocol(RESERVED_OPCODE)),
        };
        if is_control && !fin {
            return Err(Violation::Protocol(FRAGMENTED_CONTROL));
        }
        match (opcode, self.msg) {
            (OP_CONTINUATION, Msg::None) => {
                return Err(Violation::Protocol(UNEXPECTED_CONTINUATION))
            }
            (OP_TEXT | OP_BINARY, Msg::Text | Msg::Binary) => {
                return Err(Violation::Protocol(EXPECTED_CONTINUATION))
            }
            _ => {}
        }

        let Some(&b1) = h.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(Violation::Protocol(UNMASKED_FROM_CLIENT)),
            (Role::Client, true) => return Err(Violation::Protocol(MASKED_FROM_SERVER)),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        if is_control && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(Violation::Protocol(CONTROL_TOO_LONG));
        }

        let (len, mask_at) = match len7 {
            126 => {
                let Some(&[a, b]) = h.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([a, b]);
                if len < 126 {
                    return Err(Violation::Protocol(NON_MINIMAL_LENGTH));
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(ext) = h.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(Violation::Protocol(LENGTH_TOP_BIT));
                }
                if len <= 0xFFFF {
                    return Err(Violation::Protocol(NON_MINIMAL_LENGTH));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };

        // Decided from the header alone, before any payload is buffered. In
        // the header stage `buf` holds only the message in progress.
        let so_far = if is_control { 0 } else { self.buf.len() as u64 };
        if so_far.saturating_add(len) > self.max as u64 {
            return Err(Violation::TooBig);
        }

        let mut mask = [0u8; 4];
        if masked {
            let Some(key) = h.get(mask_at..mask_at + 4) else {
                return Ok(None);
            };
            mask.copy_from_slice(key);
        }
        Ok(Some(Header {
            fin,
            opcode,
            len,
            mask,
        }))
    }

    fn begin_frame(&mut self, h: Header) {
        match h.opcode {
            OP_TEXT => {
                self.msg = Msg::Text;
                self.utf8_valid = 0;
            }
            OP_BINARY => self.msg = Msg::Binary,
            _ => {}
        }
        self.stage = Stage::Payload {
            len: h.len,
            remaining: h.len,
            mask: h.mask,
            opcode: h.opcode,
            fin: h.fin,
        };
    }

    /// Appends payload bytes, unmasked. `offset` is how much of the frame's
    /// payload came before `chunk` (the mask phase); `left` is how much of it
    /// is still to come, and `ends` says whether the buffer's content is
    /// complete at the frame's end, which makes `left` an exact bound.
    fn append(&mut self, chunk: &[u8], left: u64, ends: bool, mask: [u8; 4], offset: u64) {
        let len = self.buf.len();
        let needed = len.saturating_add(chunk.len());
        if self.buf.capacity() < needed {
            // Grow only for bytes that arrived: amortised doubling, capped by
            // what the buffer can still legitimately receive, never by what a
            // header announced beyond that.
            let bound = if ends {
                needed.saturating_add(usize::try_from(left).unwrap_or(usize::MAX))
            } else {
                self.max.max(needed)
            };
            let target = self
                .buf
                .capacity()
                .saturating_mul(2)
                .max(MIN_ALLOC)
                .min(bound)
                .max(needed);
            self.buf.reserve_exact(target - len);
        }
        self.buf.extend_from_slice(chunk);
        if mask != [0; 4] {
            if let Some(fresh) = self.buf.get_mut(len..) {
                apply_mask(fresh, mask, (offset % 4) as usize);
            }
        }
    }

    /// Validates the text received since the last call, so that an invalid
    /// sequence fails as soon as its bytes are in, while a sequence cut at the
    /// end of the input waits for more.
    fn check_utf8_so_far(&mut self) -> Result<(), Violation> {
        let unchecked = self.buf.get(self.utf8_valid..).unwrap_or_default();
        match core::str::from_utf8(unchecked) {
            Ok(_) => self.utf8_valid = self.buf.len(),
            Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
            Err(e) => self.utf8_valid += e.valid_up_to(),
        }
        Ok(())
    }

    /// Called when a frame's payload is complete.
    fn finish_frame(
        &mut self,
        opcode: u8,
        fin: bool,
        len: u64,
    ) -> Result<Option<Decoded>, Violation> {
        if opcode >= OP_CLOSE {
            // A control frame's payload sits after the message in progress.
            let start = self.buf.len().saturating_sub(len as usize);
            let payload = if start == 0 {
                mem::take(&mut self.buf)
            } else {
                self.buf.split_off(start)
            };
            return match opcode {
                OP_PING => Ok(Some(Decoded::Ping(payload))),
                OP_PONG => Ok(Some(Decoded::Pong(payload))),
                _ => parse_close(&payload).map(Some),
            };
        }
        if !fin {
            return Ok(None);
        }
        let kind = mem::replace(&mut self.msg, Msg::None);
        let mut data = mem::take(&mut self.buf);
        self.utf8_valid = 0;
        // Fragmented messages grow by doubling; do not hand the slack to the
        // application, which may queue the message for a while.
        if data.capacity() - data.len() > data.len() / 4 {
            data.shrink_to_fit();
        }
        match kind {
            // Also catches a sequence left incomplete by the final fragment.
            Msg::Text => String::from_utf8(data)
                .map(|s| Some(Decoded::Text(s)))
                .map_err(|_| Violation::InvalidUtf8),
            Msg::Binary => Ok(Some(Decoded::Binary(data))),
            // `check_header` refuses continuations without a message.
            Msg::None => Err(Violation::Protocol(UNEXPECTED_CONTINUATION)),
        }
    }
}

/// Header length given its second byte.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn parse_close(payload: &[u8]) -> Result<Decoded, Violation> {
    match payload.split_first_chunk::<2>() {
        None if payload.is_empty() => Ok(Decoded::Close(None)),
        None => Err(Violation::Protocol(CLOSE_ONE_BYTE)),
        Some((code, reason)) => {
            let code = u16::from_be_bytes(*code);
            if !is_valid_close_code(code) {
                return Err(Violation::Protocol(CLOSE_CODE));
            }
            let reason = core::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Decoded::Close(Some((code, reason.to_owned()))))
        }
    }
}

/// XORs `data` with `mask`, starting `offset` bytes into the mask cycle.
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut words = data.chunks_exact_mut(8);
    for w in &mut words {
        let mut v = [0u8; 8];
        v.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(v) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask phase is 0 again.
    for (b, k) in words.into_remainder().iter_mut().zip(m.iter().cycle()) {
        *b ^= k;
    }
}

/// Opcodes for encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// A later fragment of a message.
    Continuation,
    /// The first (or only) frame of a text message.
    Text,
    /// The first (or only) frame of a binary message.
    Binary,
    /// A close frame.
    Close,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => OP_CONTINUATION,
            OpCode::Text => OP_TEXT,
            OpCode::Binary => OP_BINARY,
            OpCode::Close => OP_CLOSE,
            OpCode::Ping => OP_PING,
            OpCode::Pong => OP_PONG,
        }
    }

    /// Whether frames with this opcode are control frames (payload <= 125
    /// bytes, never fragmented).
    pub fn is_control(self) -> bool {
        self.bits() >= OP_CLOSE
    }
}

/// The encoded size of a frame with a `payload_len`-byte payload.
pub fn frame_len(payload_len: usize, masked: bool) -> usize {
    let ext = match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 } + payload_len
}

/// Appends one frame (FIN set) to `out`; masked with `mask` when `Some`
/// (client side), with the minimal length encoding.
///
/// Control frames must carry at most 125 bytes; that is the caller's duty
/// (checked only in debug builds).
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_fragment(out, opcode, true, payload, mask);
}

/// Like [`encode_frame`], with the FIN bit given: a fragmented message is a
/// `Text`/`Binary` frame with `fin == false`, then `Continuation` frames, the
/// last with `fin == true`.
pub fn encode_fragment(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    debug_assert!(
        !opcode.is_control() || (fin && payload.len() <= MAX_CONTROL_PAYLOAD),
        "control frames are unfragmented and carry at most 125 bytes"
    );
    out.reserve(frame_len(payload.len(), mask.is_some()));
    out.push(opcode.bits() | if fin { 0x80 } else { 0 });
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            if let Some(fresh) = out.get_mut(start..) {
                apply_mask(fresh, key, 0);
            }
        }
        None => out.extend_from_slice(payload),
    }
}

/// One unmasked server frame as shared bytes (header and payload contiguous,
/// one allocation of exact size), ready to be cloned into many connections'
/// output queues.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(frame_len(payload.len(), false));
    encode_frame(&mut out, opcode, payload, None);
    // `Bytes::from` takes over a Vec whose length equals its capacity
    // without copying.
    bytes::Bytes::from(out)
}

/// A close frame: code + reason, the reason truncated at a char boundary so
/// that the payload is <= 125 bytes.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default().as_bytes();
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason);
    let payload = &payload[..2 + reason.len()];
    let mut out = Vec::with_capacity(frame_len(payload.len(), mask.is_some()));
    encode_frame(&mut out, OpCode::Close, payload, mask);
    out
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
