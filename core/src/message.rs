//! The JSON messages of the wire protocol (PROTOCOL.md levels 0 and 1).

use core::fmt;
use core::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::history::{valid_epoch, StreamPosition};

/// `process_output`: one line of a process's output.
pub const TYPE_PROCESS_OUTPUT: &str = "process_output";
/// `process_status`: a process's state change.
pub const TYPE_PROCESS_STATUS: &str = "process_status";
/// `event`: a generic event.
pub const TYPE_EVENT: &str = "event";
/// `error`: an error message (and level-1 error replies).
pub const TYPE_ERROR: &str = "error";
/// `pong`: the answer to a client's `ping`.
pub const TYPE_PONG: &str = "pong";
/// `ack`: level-1 success reply to a message that carried an `id`.
pub const TYPE_ACK: &str = "ack";

/// A wall-clock instant (UTC), serialized as RFC 3339 with up to nanosecond
/// precision and trailing zeros trimmed, as Go's `time.RFC3339Nano` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// A timestamp from the time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        Timestamp(since_epoch)
    }

    /// Time since the Unix epoch.
    pub fn unix(&self) -> Duration {
        self.0
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date.
/// Howard Hinnant's algorithm, valid for every day a `u64` of seconds can name.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, mo, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )?;
        let nanos = self.0.subsec_nanos();
        if nanos != 0 {
            let mut digits = format!("{nanos:09}");
            while digits.ends_with('0') {
                digits.pop();
            }
            write!(f, ".{digits}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A server-to-client message in go-ws's shape.
///
/// `channel`, `process_id` and `data` are omitted when empty (`data` when
/// `Value::Null`); `timestamp` is always present. When `timestamp` is `None` the
/// hub stamps the message with its own wall clock at send time.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The `type` field: `process_output`, `event`, or an application type.
    pub kind: String,
    /// Target channel; set by the hub on channel publishes.
    pub channel: String,
    /// The `processId` field of process messages.
    pub process_id: String,
    /// Any JSON payload.
    pub data: Value,
    /// When it happened; `None` = stamp at send time.
    pub timestamp: Option<Timestamp>,
    /// Level 1: the request id this message replies to.
    pub id: Option<Value>,
}

impl Message {
    /// A message of a type with a payload.
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        Message {
            kind: kind.into(),
            channel: String::new(),
            process_id: String::new(),
            data,
            timestamp: None,
            id: None,
        }
    }

    /// go-ws `SendEvent` payload: `{"event": name, "data": data}`.
    pub fn event(name: &str, data: Value) -> Self {
        Message::new(
            TYPE_EVENT,
            serde_json::json!({ "event": name, "data": data }),
        )
    }

    /// go-ws `SendError` payload.
    pub fn error(text: &str) -> Self {
        Message::new(TYPE_ERROR, Value::String(text.to_owned()))
    }

    /// go-ws `SendProcessOutput`: a line on channel `process:<id>`.
    pub fn process_output(process_id: &str, line: &str) -> Self {
        let mut m = Message::new(TYPE_PROCESS_OUTPUT, Value::String(line.to_owned()));
        m.process_id = process_id.to_owned();
        m.channel = process_channel(process_id);
        m
    }

    /// go-ws `SendProcessStatus`: `{"status":..,"exitCode":..}` on `process:<id>`.
    pub fn process_status(process_id: &str, status: &str, exit_code: i32) -> Self {
        let mut m = Message::new(
            TYPE_PROCESS_STATUS,
            serde_json::json!({ "status": status, "exitCode": exit_code }),
        );
        m.process_id = process_id.to_owned();
        m.channel = process_channel(process_id);
        m
    }

    /// Serializes with `stamp` standing in for a missing timestamp.
    pub fn to_json(&self, stamp: Timestamp) -> Vec<u8> {
        let wire = WireMessage {
            msg: self,
            stamp: self.timestamp.unwrap_or(stamp),
        };
        // Serializing strings, a `Value` and a timestamp into a Vec cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// The channel go-ws uses for a process: `process:<id>`.
pub fn process_channel(process_id: &str) -> String {
    format!("process:{process_id}")
}

struct WireMessage<'a> {
    msg: &'a Message,
    stamp: Timestamp,
}

impl Serialize for WireMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.msg;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", &m.kind)?;
        if let Some(id) = &m.id {
            map.serialize_entry("id", id)?;
        }
        if !m.channel.is_empty() {
            map.serialize_entry("channel", &m.channel)?;
        }
        if !m.process_id.is_empty() {
            map.serialize_entry("processId", &m.process_id)?;
        }
        if !m.data.is_null() {
            map.serialize_entry("data", &m.data)?;
        }
        map.serialize_entry("timestamp", &self.stamp)?;
        map.end()
    }
}

/// `json` (a serialized object) with `,"offset":N` appended as its last
/// field, and `,"epoch":"e"` after it when given: the positioned variant of
/// a publication. `None` when `json` is not an object.
pub fn positioned_json(json: &[u8], offset: u64, epoch: Option<&str>) -> Option<Vec<u8>> {
    let end = json.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if json.first() != Some(&b'{') || json[end] != b'}' {
        return None;
    }
    let mut out = Vec::with_capacity(end + 32 + epoch.map_or(0, str::len));
    out.extend_from_slice(&json[..end]);
    if end > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"offset\":");
    out.extend_from_slice(offset.to_string().as_bytes());
    if let Some(e) = epoch {
        out.extend_from_slice(b",\"epoch\":\"");
        out.extend_from_slice(e.as_bytes()); // epochs need no escaping
        out.push(b'"');
    }
    out.push(b'}');
    Some(out)
}

/// The outcome of a subscribe that asked for positions, as its ack carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeAck {
    /// Whether everything after the requested position follows (true for
    /// `history` and `positions`, which have nothing to recover).
    pub recovered: bool,
    /// The channel's position the subscription starts from.
    pub position: StreamPosition,
    /// Messages replayed before the live ones.
    pub replayed: u64,
}

impl SubscribeAck {
    /// The ack on a channel without history: a plain subscription, which the
    /// empty epoch announces.
    pub(crate) fn no_history() -> SubscribeAck {
        SubscribeAck {
            recovered: false,
            position: StreamPosition {
                offset: 0,
                epoch: String::new(),
            },
            replayed: 0,
        }
    }

    /// The ack: `{"type":"ack","id":..,"data":{"recovered":..,"offset":..,
    /// "epoch":..,"replayed":..},"timestamp":..}`, keys in that order, `id`
    /// only when given.
    pub fn ack_json(&self, id: Option<&Value>, stamp: Timestamp) -> Vec<u8> {
        serde_json::to_vec(&AckWire {
            id,
            outcome: self,
            stamp,
        })
        .unwrap_or_default()
    }
}

struct AckWire<'a> {
    id: Option<&'a Value>,
    outcome: &'a SubscribeAck,
    stamp: Timestamp,
}

struct AckData<'a>(&'a SubscribeAck);

impl Serialize for AckData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("recovered", &self.0.recovered)?;
        map.serialize_entry("offset", &self.0.position.offset)?;
        map.serialize_entry("epoch", &self.0.position.epoch)?;
        map.serialize_entry("replayed", &self.0.replayed)?;
        map.end()
    }
}

impl Serialize for AckWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", TYPE_ACK)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("data", &AckData(self.outcome))?;
        map.serialize_entry("timestamp", &self.stamp)?;
        map.end()
    }
}

/// Level-1 error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed message or field.
    BadRequest,
    /// A `type` the hub does not know.
    UnknownType,
    /// The channel policy refused.
    Forbidden,
    /// A per-connection limit was reached.
    Limit,
    /// Unsubscribe from a channel the connection is not in.
    NotSubscribed,
    /// The broker is unreachable or its backlog is full: nothing was done.
    Unavailable,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Limit => "limit",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A message from a client, as far as the hub understands it.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// `subscribe` with the channel from `channel` or (level 0) `data`.
    Subscribe(String),
    /// `subscribe` with `recover`, `history` or `positions`.
    SubscribeFrom {
        /// The channel.
        channel: String,
        /// Where the subscription starts.
        from: Resume,
    },
    /// `unsubscribe`.
    Unsubscribe(String),
    /// `ping`.
    Ping,
    /// Level 1 `publish`.
    Publish {
        /// Target channel.
        channel: String,
        /// Payload, any JSON.
        data: Value,
    },
    /// A type the hub does not handle itself.
    Other {
        /// Its `type`.
        kind: String,
        /// Its `data` (`Null` when absent).
        data: Value,
    },
}

/// Where a positioned subscription starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// `"recover":{"offset":N,"epoch":"e"}`: after that position.
    Recover(StreamPosition),
    /// `"history":N`: the newest N stored publications (N >= 1).
    History(u64),
    /// `"positions":true`: live only, with offsets.
    Positions,
}

/// Why a client message could not be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not an object.
    NotJson,
    /// No string `type`.
    NoType,
    /// A known type with a missing or non-string channel.
    BadChannel,
    /// A field of a known type is malformed; the text says which.
    BadField(&'static str),
}

/// A parsed client message plus its level-1 request id.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The `id` field (string or number), if any.
    pub id: Option<Value>,
    /// What was asked, or why it could not be read.
    pub body: Result<ClientMessage, ParseError>,
}

/// Parses one client text message.
pub fn parse_client(text: &str) -> Request {
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return Request {
            id: None,
            body: Err(ParseError::NotJson),
        };
    };
    // Only strings and numbers are ids; anything else is treated as absent so a
    // reply never echoes an arbitrary object back.
    let id = obj.remove("id").filter(|v| v.is_string() || v.is_number());
    let kind = match obj.remove("type") {
        Some(Value::String(k)) => k,
        _ => {
            return Request {
                id,
                body: Err(ParseError::NoType),
            }
        }
    };
    let data = obj.remove("data").unwrap_or(Value::Null);
    let channel = match obj.remove("channel") {
        Some(Value::String(c)) => Some(c),
        _ => None,
    };
    let channel_or_data = || match (&channel, &data) {
        (Some(c), _) => Ok(c.clone()),
        (None, Value::String(d)) => Ok(d.clone()),
        _ => Err(ParseError::BadChannel),
    };
    let body = match kind.as_str() {
        "subscribe" => match parse_resume(&mut obj) {
            Ok(None) => channel_or_data().map(ClientMessage::Subscribe),
            Ok(Some(from)) => {
                channel_or_data().map(|channel| ClientMessage::SubscribeFrom { channel, from })
            }
            Err(e) => Err(e),
        },
        "unsubscribe" => channel_or_data().map(ClientMessage::Unsubscribe),
        "ping" => Ok(ClientMessage::Ping),
        "publish" => match channel {
            Some(channel) => Ok(ClientMessage::Publish { channel, data }),
            None => Err(ParseError::BadChannel),
        },
        _ => Ok(ClientMessage::Other { kind, data }),
    };
    Request { id, body }
}

/// The `recover` / `history` / `positions` fields of a subscribe.
fn parse_resume(obj: &mut serde_json::Map<String, Value>) -> Result<Option<Resume>, ParseError> {
    let present = |v: Option<Value>| v.filter(|v| !v.is_null());
    let recover = present(obj.remove("recover"));
    let history = present(obj.remove("history"));
    let positions = present(obj.remove("positions"));
    let positions = match positions {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ParseError::BadField("positions must be a boolean")),
    };
    match (recover, history) {
        (Some(_), Some(_)) => Err(ParseError::BadField(
            "recover and history cannot be combined",
        )),
        (Some(r), None) => {
            let Value::Object(r) = r else {
                return Err(ParseError::BadField("recover must be an object"));
            };
            let Some(offset) = r.get("offset").and_then(Value::as_u64) else {
                return Err(ParseError::BadField(
                    "recover.offset must be an unsigned integer",
                ));
            };
            let epoch = match r.get("epoch") {
                Some(Value::String(e)) if valid_epoch(e) => e.clone(),
                _ => {
                    return Err(ParseError::BadField(
                        "recover.epoch must be 1..=64 of [A-Za-z0-9_-]",
                    ))
                }
            };
            Ok(Some(Resume::Recover(StreamPosition { offset, epoch })))
        }
        (None, Some(h)) => match h.as_u64() {
            Some(n) if n > 0 => Ok(Some(Resume::History(n))),
            _ => Err(ParseError::BadField("history must be a positive integer")),
        },
        (None, None) if positions => Ok(Some(Resume::Positions)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positioned_json_appends_the_offset_last() {
        let j = br#"{"type":"event","timestamp":"t"}"#;
        assert_eq!(
            positioned_json(j, 7, None).unwrap(),
            br#"{"type":"event","timestamp":"t","offset":7}"#
        );
        assert_eq!(
            positioned_json(j, 7, Some("e2")).unwrap(),
            br#"{"type":"event","timestamp":"t","offset":7,"epoch":"e2"}"#
        );
        assert_eq!(positioned_json(b"{}", 1, None).unwrap(), br#"{"offset":1}"#);
        assert_eq!(positioned_json(b"[1]", 1, None), None);
    }

    #[test]
    fn the_subscribe_ack_has_its_keys_in_order() {
        let o = SubscribeAck {
            recovered: true,
            position: StreamPosition {
                offset: 57,
                epoch: "e1".into(),
            },
            replayed: 16,
        };
        let stamp = Timestamp::from_unix(Duration::ZERO);
        assert_eq!(
            String::from_utf8(o.ack_json(Some(&json!(1)), stamp)).unwrap(),
            r#"{"type":"ack","id":1,"data":{"recovered":true,"offset":57,"epoch":"e1","replayed":16},"timestamp":"1970-01-01T00:00:00Z"}"#
        );
        assert!(!String::from_utf8(o.ack_json(None, stamp))
            .unwrap()
            .contains("\"id\""));
    }

    #[test]
    fn parses_recover_history_and_positions() {
        let from = |s: &str| match parse_client(s).body {
            Ok(ClientMessage::SubscribeFrom { from, .. }) => Ok(from),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            from(r#"{"type":"subscribe","channel":"c","recover":{"offset":41,"epoch":"e1"}}"#),
            Ok(Resume::Recover(StreamPosition {
                offset: 41,
                epoch: "e1".into()
            }))
        );
        assert_eq!(
            from(r#"{"type":"subscribe","channel":"c","history":20}"#),
            Ok(Resume::History(20))
        );
        assert_eq!(
            from(r#"{"type":"subscribe","channel":"c","positions":true}"#),
            Ok(Resume::Positions)
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","channel":"c","positions":false}"#).body,
            Ok(ClientMessage::Subscribe("c".into()))
        );
        for bad in [
            r#"{"type":"subscribe","channel":"c","recover":5}"#,
            r#"{"type":"subscribe","channel":"c","recover":{"offset":-1,"epoch":"e"}}"#,
            r#"{"type":"subscribe","channel":"c","recover":{"offset":1.5,"epoch":"e"}}"#,
            r#"{"type":"subscribe","channel":"c","recover":{"offset":1}}"#,
            r#"{"type":"subscribe","channel":"c","recover":{"offset":1,"epoch":""}}"#,
            r#"{"type":"subscribe","channel":"c","recover":{"offset":1,"epoch":"a b"}}"#,
            r#"{"type":"subscribe","channel":"c","history":0}"#,
            r#"{"type":"subscribe","channel":"c","history":"5"}"#,
            r#"{"type":"subscribe","channel":"c","positions":1}"#,
            r#"{"type":"subscribe","channel":"c","history":1,"recover":{"offset":1,"epoch":"e"}}"#,
        ] {
            assert!(matches!(from(bad), Err(ParseError::BadField(_))), "{bad}");
        }
        let long = "e".repeat(65);
        let s = format!(
            r#"{{"type":"subscribe","channel":"c","recover":{{"offset":1,"epoch":"{long}"}}}}"#
        );
        assert!(matches!(from(&s), Err(ParseError::BadField(_))));
    }

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        let t = Timestamp::from_unix(Duration::new(1_771_575_165, 123_456_789));
        assert_eq!(t.to_string(), "2026-02-20T08:12:45.123456789Z");
        let t = Timestamp::from_unix(Duration::new(1_771_575_165, 120_000_000));
        assert_eq!(t.to_string(), "2026-02-20T08:12:45.12Z");
        assert_eq!(
            Timestamp::from_unix(Duration::ZERO).to_string(),
            "1970-01-01T00:00:00Z"
        );
        // Leap day and end of a century.
        let t = Timestamp::from_unix(Duration::from_secs(951_782_400));
        assert_eq!(t.to_string(), "2000-02-29T00:00:00Z");
        let t = Timestamp::from_unix(Duration::from_secs(4_107_542_399));
        assert_eq!(t.to_string(), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn go_ws_field_order_and_omission() {
        let stamp = Timestamp::from_unix(Duration::from_secs(0));
        let m = Message::process_output("p1", "hello");
        assert_eq!(
            String::from_utf8(m.to_json(stamp)).unwrap(),
            r#"{"type":"process_output","channel":"process:p1","processId":"p1","data":"hello","timestamp":"1970-01-01T00:00:00Z"}"#
        );
        let m = Message::new("pong", Value::Null);
        assert_eq!(
            String::from_utf8(m.to_json(stamp)).unwrap(),
            r#"{"type":"pong","timestamp":"1970-01-01T00:00:00Z"}"#
        );
        let m = Message::process_status("p1", "exited", 3);
        let v: Value = serde_json::from_slice(&m.to_json(stamp)).unwrap();
        assert_eq!(v["data"], json!({"status":"exited","exitCode":3}));
    }

    #[test]
    fn parses_level0_and_level1_forms() {
        let p = parse_client(r#"{"type":"subscribe","data":"process:1"}"#);
        assert_eq!(p.body, Ok(ClientMessage::Subscribe("process:1".into())));
        assert_eq!(p.id, None);
        let p = parse_client(r#"{"type":"subscribe","channel":"c","id":7}"#);
        assert_eq!(p.body, Ok(ClientMessage::Subscribe("c".into())));
        assert_eq!(p.id, Some(json!(7)));
        let p = parse_client(r#"{"type":"subscribe","data":5}"#);
        assert_eq!(p.body, Err(ParseError::BadChannel));
        assert_eq!(parse_client("nope").body, Err(ParseError::NotJson));
        assert_eq!(parse_client("[1]").body, Err(ParseError::NotJson));
        assert_eq!(parse_client(r#"{"data":1}"#).body, Err(ParseError::NoType));
        let p = parse_client(r#"{"type":"publish","channel":"c","data":{"x":1},"id":"a"}"#);
        assert_eq!(
            p.body,
            Ok(ClientMessage::Publish {
                channel: "c".into(),
                data: json!({"x":1})
            })
        );
        // An object id is not echoed back.
        assert_eq!(parse_client(r#"{"type":"ping","id":{"a":1}}"#).id, None);
    }
}
