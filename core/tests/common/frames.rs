//! Reading what one end of a WebSocket wrote, as the other end would: shared
//! by the hub driver (`common`) and the client script (`client_script`).

use serde_json::Value;
use wshub_core::frame::{Decoded, FrameDecoder, Role};

/// Every complete frame in `bytes`, decoded as `role` reads them (at most
/// `max` bytes each); panics naming `writer` on an invalid frame.
pub fn decode_all(bytes: &[u8], role: Role, max: usize, writer: &str) -> Vec<Decoded> {
    let mut dec = FrameDecoder::new(role, max);
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (n, r) = dec.decode(rest);
        rest = &rest[n..];
        match r {
            Ok(Some(d)) => out.push(d),
            Ok(None) => break,
            Err(e) => panic!("{writer} wrote an invalid frame: {e:?}"),
        }
    }
    out
}

/// The text frames among `frames`, parsed as JSON; panics naming `writer`
/// on a text that is not.
pub fn json_texts(frames: Vec<Decoded>, writer: &str) -> Vec<Value> {
    frames
        .into_iter()
        .filter_map(|d| match d {
            Decoded::Text(t) => Some(
                serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("{writer} sent invalid JSON: {e}")),
            ),
            _ => None,
        })
        .collect()
}
