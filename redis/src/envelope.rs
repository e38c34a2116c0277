//! The envelope one publication travels in on Redis pub/sub:
//!
//! ```text
//! w1 <node_id> <offset> <epoch>\n<json>
//! ```
//!
//! `w1` names the format (a later `w2` can be told apart and skipped);
//! `<offset>` is decimal, 0 with epoch `-` for a channel without history. The
//! publish script builds the same text in Lua. Text, not a binary frame, so
//! `redis-cli MONITOR` stays readable; the JSON goes last, unescaped, so
//! parsing never copies more than the JSON itself.

use bytes::Bytes;
use wshub_core::broker::Audience;
use wshub_core::history::{valid_epoch, StreamPosition};

use crate::config::valid_node_id;

/// Envelopes larger than this are dropped (and counted) unread.
pub const MAX_ENVELOPE: usize = 16 << 20;

/// The epoch field of a publication without history.
pub(crate) const NO_EPOCH: &str = "-";

/// One decoded envelope.
#[derive(Debug, PartialEq)]
pub(crate) struct Envelope {
    pub node: String,
    pub json: Bytes,
    pub position: Option<StreamPosition>,
}

/// The envelope of a publication without history (the with-history one is
/// built by the publish script).
pub(crate) fn encode_plain(node: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + node.len() + 8);
    out.extend_from_slice(b"w1 ");
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(b" 0 -\n");
    out.extend_from_slice(json);
    out
}

/// The envelope of a broadcast or send-to-user on the node-wide channel:
/// `w1 <node> all\n<json>`, or `w1 <node> user <len>\n<user><json>` with the
/// user id's length in bytes (any bytes may be in a user id).
pub(crate) fn encode_send(node: &str, to: &Audience, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + node.len() + 32);
    out.extend_from_slice(b"w1 ");
    out.extend_from_slice(node.as_bytes());
    match to {
        Audience::Everyone => out.extend_from_slice(b" all\n"),
        Audience::User(user) => {
            out.extend_from_slice(format!(" user {}\n", user.len()).as_bytes());
            out.extend_from_slice(user.as_bytes());
        }
    }
    out.extend_from_slice(json);
    out
}

/// Decodes a node-wide envelope; `None` for anything malformed.
pub(crate) fn decode_send(payload: &[u8]) -> Option<(Audience, Bytes)> {
    if payload.len() > MAX_ENVELOPE {
        return None;
    }
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let head = core::str::from_utf8(&payload[..nl]).ok()?;
    let rest = &payload[nl + 1..];
    let mut fields = head.split(' ');
    if fields.next()? != "w1" || !valid_node_id(fields.next()?) {
        return None;
    }
    let (to, json) = match (fields.next()?, fields.next(), fields.next()) {
        ("all", None, None) => (Audience::Everyone, rest),
        ("user", Some(len), None) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            let len: usize = len.parse().ok()?;
            let user = core::str::from_utf8(rest.get(..len)?).ok()?;
            (Audience::User(user.to_owned()), &rest[len..])
        }
        _ => return None,
    };
    if json.first() != Some(&b'{') {
        return None;
    }
    Some((to, Bytes::copy_from_slice(json)))
}

/// Decodes an envelope; `None` for anything malformed (the caller counts it).
pub(crate) fn decode(payload: &[u8]) -> Option<Envelope> {
    if payload.len() > MAX_ENVELOPE {
        return None;
    }
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let head = core::str::from_utf8(&payload[..nl]).ok()?;
    let mut fields = head.split(' ');
    let (version, node, offset, epoch) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if version != "w1" || fields.next().is_some() || !valid_node_id(node) {
        return None;
    }
    // Digits only: `parse` would also take a leading `+`.
    if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset: u64 = offset.parse().ok()?;
    let position = match (offset, epoch) {
        (0, NO_EPOCH) => None,
        (0, _) | (_, NO_EPOCH) => return None,
        (offset, epoch) if valid_epoch(epoch) => Some(StreamPosition {
            offset,
            epoch: epoch.to_string(),
        }),
        _ => return None,
    };
    let json = &payload[nl + 1..];
    if json.first() != Some(&b'{') {
        return None;
    }
    Some(Envelope {
        node: node.to_string(),
        json: Bytes::copy_from_slice(json),
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_round_trip_and_refuse_garbage() {
        let all = encode_send("n1", &Audience::Everyone, br#"{"a":1}"#);
        assert_eq!(
            decode_send(&all),
            Some((Audience::Everyone, Bytes::from_static(br#"{"a":1}"#)))
        );
        let odd = Audience::User("a b\nc".into());
        let user = encode_send("n1", &odd, b"{}");
        assert_eq!(decode_send(&user), Some((odd, Bytes::from_static(b"{}"))));
        for bad in [
            &b"w1 n1 user 99\nab{}"[..],
            b"w1 n1 user +1\na{}",
            b"w1 n1 all x\n{}",
            b"w2 n1 all\n{}",
            b"w1 n1 all\nnot json",
            b"w1 n1 all",
        ] {
            assert_eq!(decode_send(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn plain_round_trips() {
        let e = decode(&encode_plain("n1", br#"{"a":1}"#)).unwrap();
        assert_eq!(e.node, "n1");
        assert_eq!(&e.json[..], br#"{"a":1}"#);
        assert_eq!(e.position, None);
    }

    #[test]
    fn positioned_decodes() {
        let e = decode(b"w1 n1 7 AbC123\n{}").unwrap();
        assert_eq!(
            e.position,
            Some(StreamPosition {
                offset: 7,
                epoch: "AbC123".into()
            })
        );
    }

    #[test]
    fn malformed_is_none() {
        for bad in [
            &b""[..],
            b"w1 n1 7 e",
            b"w2 n1 7 e\n{}",
            b"w1 n1 +7 e\n{}",
            b"w1 n1 7 -\n{}",
            b"w1 n1 0 e\n{}",
            b"w1 n:1 7 e\n{}",
            b"w1 n1 7 e x\n{}",
            b"w1 n1 7 e\nnot json",
            b"w1 n1 99999999999999999999999 e\n{}",
            b"w1 n1 7 e!\n{}",
            b"\xff\xfe\n{}",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
