//! Frame helpers for tests, shared by this module's unit tests and
//! wshub-testkit's differential (behind the `testing` feature, so they are
//! written once and never part of the public API).

use super::{apply_mask, Decoded, FrameDecoder, Violation};

/// How a raw frame writes its payload length.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    /// The shortest form RFC 6455 allows.
    Minimal,
    /// The 16-bit extended form (even where 7 bits would do).
    Ext16,
    /// The 64-bit extended form (even where a shorter one would do).
    Ext64,
    /// Announce this length whatever the payload is.
    Announce(u64),
}

/// A frame with an arbitrary first byte (FIN, RSV, opcode) and length form,
/// masked with `mask` when given: what a peer may send, valid or not.
pub fn raw(b0: u8, len: Len, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    let mb = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len() as u64;
    let (len7, ext) = match len {
        Len::Minimal if n < 126 => (n as u8, vec![]),
        Len::Minimal | Len::Ext16 if n <= 0xFFFF => (126, (n as u16).to_be_bytes().to_vec()),
        Len::Minimal | Len::Ext16 | Len::Ext64 => (127, n.to_be_bytes().to_vec()),
        Len::Announce(a) => (127, a.to_be_bytes().to_vec()),
    };
    out.push(mb | len7);
    out.extend_from_slice(&ext);
    let start = out.len();
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start + 4..], m, 0);
    }
    out
}

/// Feeds `input` in pieces of the given sizes (cycled; 0 counts as 1),
/// asserting the [`FrameDecoder::decode`] contract at every call, and
/// collects everything decoded up to the first violation.
pub fn decode_in_pieces(
    dec: &mut FrameDecoder,
    input: &[u8],
    sizes: &[usize],
) -> (Vec<Decoded>, Option<Violation>) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while start < input.len() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        i += 1;
        let end = (start + size).min(input.len());
        let mut piece = &input[start..end];
        start = end;
        loop {
            let (n, r) = dec.decode(piece);
            assert!(n <= piece.len(), "consumed more than given");
            piece = &piece[n..];
            match r {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {
                    assert!(piece.is_empty(), "Ok(None) must consume everything");
                    break;
                }
                Err(v) => {
                    assert!(piece.is_empty(), "an error must consume everything");
                    return (out, Some(v));
                }
            }
        }
    }
    (out, None)
}

/// [`decode_in_pieces`] with the whole input in one piece.
pub fn decode_whole(dec: &mut FrameDecoder, input: &[u8]) -> (Vec<Decoded>, Option<Violation>) {
    decode_in_pieces(dec, input, &[input.len()])
}
