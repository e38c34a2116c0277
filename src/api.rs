//! The HTTP API served on the WebSocket port by `wshub serve`: the live page,
//! health, stats, Prometheus metrics, and publish/broadcast for admins.

use serde_json::{json, Value};
use wshub_core::auth::constant_time_eq;
use wshub_core::command::HubCommands;
use wshub_core::{Message, Stats, UpgradeRequest};

/// An HTTP response.
#[derive(Debug, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, v: Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(status, json!({ "error": message }))
    }

    /// Headers to send with the body.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("Content-Type".into(), self.content_type.into()),
            ("Cache-Control".into(), "no-store".into()),
            ("X-Content-Type-Options".into(), "nosniff".into()),
        ]
    }
}

/// The live page.
pub const PAGE: &str = include_str!("page.html");

/// Answers one request. `admin_key`: the key that may publish (None: the
/// publish API is off). `check_token`: whether a client token is good (for
/// `/api/whoami`, which the page uses to tell an auth failure apart from a
/// network one; browsers hide a refused upgrade's status).
pub fn route(
    method: &str,
    request: &UpgradeRequest,
    body: &[u8],
    admin_key: Option<&str>,
    check_token: &dyn Fn(&UpgradeRequest) -> bool,
    hub: &dyn HubCommands,
) -> Response {
    match (method, request.path()) {
        ("GET", "/") | ("GET", "/index.html") => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
        },
        ("GET", "/healthz") => Response {
            status: 200,
            content_type: "text/plain",
            body: b"ok\n".to_vec(),
        },
        ("GET", "/api/whoami") => {
            if check_token(request) {
                Response::json(200, json!({ "ok": true }))
            } else {
                Response::error(401, "authentication failed")
            }
        }
        ("GET", "/api/stats") => match (hub.stats(), hub.channels()) {
            (Ok(s), Ok(channels)) => Response::json(200, stats_json(&s, &channels)),
            _ => Response::error(503, "hub stopped"),
        },
        ("GET", "/metrics") => match (hub.stats(), hub.channels()) {
            (Ok(s), Ok(channels)) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: metrics(&s, &channels).into_bytes(),
            },
            _ => Response::error(503, "hub stopped"),
        },
        ("POST", "/api/publish") | ("POST", "/api/broadcast") => {
            if let Err(r) = authorize_admin(request, admin_key) {
                return r;
            }
            let broadcast = request.path() == "/api/broadcast";
            if body.trim_ascii_start().starts_with(b"[") {
                return publish_batch(body, broadcast, hub);
            }
            match parse_publish(body, broadcast) {
                Err(e) => Response::error(400, e),
                Ok((channel, message)) => {
                    let delivered = match channel {
                        Some(ch) => hub.publish(&ch, message),
                        None => hub.broadcast(message),
                    };
                    match delivered {
                        Ok(n) => Response::json(200, json!({ "delivered": n })),
                        Err(_) => Response::error(503, "hub stopped"),
                    }
                }
            }
        }
        (_, "/api/publish" | "/api/broadcast") => Response::error(405, "use POST"),
        _ => Response::error(404, "not found"),
    }
}

fn authorize_admin(request: &UpgradeRequest, admin_key: Option<&str>) -> Result<(), Response> {
    let Some(key) = admin_key else {
        return Err(Response::error(
            403,
            "the publish API is off: start with --admin-key",
        ));
    };
    let given = request
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
        .or_else(|| request.header("x-admin-key").map(str::to_owned));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(Response::error(401, "bad admin key")),
        None => Err(Response::error(
            401,
            "admin key required (Authorization: Bearer KEY)",
        )),
    }
}

/// `{"channel":..,"data":..}` or a go-ws typed message
/// (`{"type":..,"channel":..,"processId":..,"data":..}`). For a broadcast the
/// channel is ignored. The type defaults to `event`. (A body that is a JSON
/// array goes to [`publish_batch`].)
fn parse_publish(body: &[u8], broadcast: bool) -> Result<(Option<String>, Message), &'static str> {
    parse_message(serde_json::from_slice(body).ok(), broadcast)
}

/// A batch: a JSON array of what [`parse_publish`] takes, every message
/// checked before any is published, then published in order. Answers how
/// many were published and the deliveries they made.
fn publish_batch(body: &[u8], broadcast: bool, hub: &dyn HubCommands) -> Response {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return Response::error(400, "body must be a JSON object or an array of them");
    };
    if items.is_empty() {
        return Response::error(400, "the batch is empty");
    }
    let batch: Result<Vec<_>, _> = items
        .into_iter()
        .map(|item| parse_message(Some(item), broadcast))
        .collect();
    let batch = match batch {
        Ok(b) => b,
        Err(e) => return Response::error(400, e),
    };
    let published = batch.len();
    let mut delivered = 0;
    for (channel, message) in batch {
        let n = match channel {
            Some(ch) => hub.publish(&ch, message),
            None => hub.broadcast(message),
        };
        match n {
            Ok(n) => delivered += n,
            Err(_) => return Response::error(503, "hub stopped"),
        }
    }
    Response::json(
        200,
        json!({ "published": published, "delivered": delivered }),
    )
}

/// One message of a publish body, as [`parse_publish`] describes.
fn parse_message(
    value: Option<Value>,
    broadcast: bool,
) -> Result<(Option<String>, Message), &'static str> {
    let Some(Value::Object(mut obj)) = value else {
        return Err("body must be a JSON object");
    };
    let kind = match obj.remove("type") {
        None => "event".to_owned(),
        Some(Value::String(t)) if !t.is_empty() => t,
        Some(_) => return Err("type must be a non-empty string"),
    };
    let channel = match obj.remove("channel") {
        Some(Value::String(c)) if !c.is_empty() && c.len() <= 256 => Some(c),
        None => None,
        Some(_) => return Err("channel must be a string of 1..=256 bytes"),
    };
    let mut m = Message::new(kind, obj.remove("data").unwrap_or(Value::Null));
    if let Some(Value::String(p)) = obj.remove("processId") {
        m.process_id = p;
    }
    if broadcast {
        return Ok((None, m));
    }
    match channel {
        Some(c) => Ok((Some(c), m)),
        None => Err("channel is required"),
    }
}

fn stats_json(s: &Stats, channels: &[(String, usize)]) -> Value {
    let per_channel: serde_json::Map<String, Value> = channels
        .iter()
        .map(|(c, n)| (c.clone(), json!(n)))
        .collect();
    json!({
        "connections": s.connections,
        "pending": s.pending,
        "channels": s.channels,
        "subscribers": per_channel,
        "messages_in": s.messages_in,
        "messages_out": s.messages_out,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "auth_failures": s.auth_failures,
        "slow_consumers": s.slow_consumers,
    })
}

fn metrics(s: &Stats, channels: &[(String, usize)]) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "wshub_connections",
        "gauge",
        "Upgraded connections.",
        s.connections.to_string(),
    );
    metric(
        "wshub_pending_connections",
        "gauge",
        "Connections in the handshake.",
        s.pending.to_string(),
    );
    metric(
        "wshub_channels",
        "gauge",
        "Channels with subscribers.",
        s.channels.to_string(),
    );
    metric(
        "wshub_messages_in_total",
        "counter",
        "Client messages received.",
        s.messages_in.to_string(),
    );
    metric(
        "wshub_messages_out_total",
        "counter",
        "Frames queued to clients.",
        s.messages_out.to_string(),
    );
    metric(
        "wshub_bytes_in_total",
        "counter",
        "Bytes received.",
        s.bytes_in.to_string(),
    );
    metric(
        "wshub_bytes_out_total",
        "counter",
        "Bytes written.",
        s.bytes_out.to_string(),
    );
    metric(
        "wshub_auth_failures_total",
        "counter",
        "Refused authentications.",
        s.auth_failures.to_string(),
    );
    metric(
        "wshub_slow_consumers_total",
        "counter",
        "Connections cut as slow consumers.",
        s.slow_consumers.to_string(),
    );
    out.push_str("# HELP wshub_channel_subscribers Subscribers per channel.\n# TYPE wshub_channel_subscribers gauge\n");
    for (c, n) in channels {
        let label = c
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        out.push_str(&format!(
            "wshub_channel_subscribers{{channel=\"{label}\"}} {n}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use wshub_core::command::{Command, Reply, Stopped};
    use wshub_core::PeerInfo;

    #[derive(Default)]
    struct Fake {
        published: RefCell<Vec<(Option<String>, Message)>>,
    }

    impl HubCommands for Fake {
        fn command(&self, command: Command) -> Result<Reply, Stopped> {
            Ok(match command {
                Command::Publish { channel, message } => {
                    self.published.borrow_mut().push((Some(channel), message));
                    Reply::Count(2)
                }
                Command::Broadcast(message) => {
                    self.published.borrow_mut().push((None, message));
                    Reply::Count(5)
                }
                Command::Stats => Reply::Stats(Stats {
                    connections: 3,
                    ..Stats::default()
                }),
                Command::Channels => Reply::Channels(vec![("a\"b".into(), 1)]),
                other => panic!("the API does not send {other:?}"),
            })
        }
    }

    fn req(target: &str, headers: &[(&str, &str)]) -> UpgradeRequest {
        UpgradeRequest::new(
            target,
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            PeerInfo::default(),
        )
    }

    fn call(method: &str, r: &UpgradeRequest, body: &str, hub: &Fake) -> Response {
        route(
            method,
            r,
            body.as_bytes(),
            Some("adm1n"),
            &|r| r.query_param("token").as_deref() == Some("good"),
            hub,
        )
    }

    #[test]
    fn publish_needs_the_admin_key() {
        let hub = Fake::default();
        let body = r#"{"channel":"c","data":{"x":1}}"#;
        assert_eq!(
            call("POST", &req("/api/publish", &[]), body, &hub).status,
            401
        );
        assert_eq!(
            call(
                "POST",
                &req("/api/publish", &[("Authorization", "Bearer nope")]),
                body,
                &hub
            )
            .status,
            401
        );
        let ok = call(
            "POST",
            &req("/api/publish", &[("Authorization", "Bearer adm1n")]),
            body,
            &hub,
        );
        assert_eq!(
            (ok.status, String::from_utf8(ok.body).unwrap()),
            (200, r#"{"delivered":2}"#.to_string())
        );
        let (ch, m) = hub.published.borrow()[0].clone();
        assert_eq!(
            (ch.as_deref(), m.kind.as_str(), &m.data),
            (Some("c"), "event", &json!({"x":1}))
        );
        let off = route(
            "POST",
            &req("/api/publish", &[("Authorization", "Bearer adm1n")]),
            body.as_bytes(),
            None,
            &|_| true,
            &hub,
        );
        assert_eq!(off.status, 403);
    }

    #[test]
    fn typed_messages_and_broadcast() {
        let hub = Fake::default();
        let auth = [("X-Admin-Key", "adm1n")];
        let typed =
            r#"{"type":"process_output","channel":"process:7","processId":"7","data":"line"}"#;
        assert_eq!(
            call("POST", &req("/api/publish", &auth), typed, &hub).status,
            200
        );
        let r = call(
            "POST",
            &req("/api/broadcast", &auth),
            r#"{"data":"hi"}"#,
            &hub,
        );
        assert_eq!(String::from_utf8(r.body).unwrap(), r#"{"delivered":5}"#);
        let p = hub.published.borrow();
        assert_eq!(p[0].1.process_id, "7");
        assert_eq!(p[0].1.kind, "process_output");
        assert_eq!(p[1].0, None);
        for bad in [
            "nope",
            "[]",
            r#"{"data":1}"#,
            r#"{"channel":5}"#,
            r#"{"type":"","channel":"c"}"#,
        ] {
            assert_eq!(
                call("POST", &req("/api/publish", &auth), bad, &hub).status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_stats_metrics_and_errors() {
        let hub = Fake::default();
        assert_eq!(
            call("GET", &req("/", &[]), "", &hub).content_type,
            "text/html; charset=utf-8"
        );
        assert_eq!(call("GET", &req("/healthz", &[]), "", &hub).status, 200);
        let stats: Value =
            serde_json::from_slice(&call("GET", &req("/api/stats", &[]), "", &hub).body).unwrap();
        assert_eq!(stats["connections"], 3);
        assert_eq!(stats["subscribers"]["a\"b"], 1);
        let m = String::from_utf8(call("GET", &req("/metrics", &[]), "", &hub).body).unwrap();
        assert!(m.contains("wshub_connections 3\n"), "{m}");
        assert!(
            m.contains(r#"wshub_channel_subscribers{channel="a\"b"} 1"#),
            "{m}"
        );
        assert_eq!(
            call("GET", &req("/api/whoami?token=good", &[]), "", &hub).status,
            200
        );
        assert_eq!(
            call("GET", &req("/api/whoami?token=bad", &[]), "", &hub).status,
            401
        );
        assert_eq!(call("GET", &req("/api/publish", &[]), "", &hub).status, 405);
        assert_eq!(call("GET", &req("/nowhere", &[]), "", &hub).status, 404);
    }

    #[test]
    fn a_json_array_is_a_batch_published_in_order() {
        let hub = Fake::default();
        let admin = [("Authorization", "Bearer adm1n")];
        let body = r#" [{"channel":"c","data":1},
            {"type":"process_output","channel":"process:7","processId":"7","data":"x"},
            {"channel":"c","data":3}]"#;
        let r = call("POST", &req("/api/publish", &admin), body, &hub);
        assert_eq!(
            (r.status, String::from_utf8(r.body).unwrap()),
            (200, r#"{"delivered":6,"published":3}"#.to_string())
        );
        let got: Vec<(Option<String>, String, Value)> = hub
            .published
            .take()
            .into_iter()
            .map(|(c, m)| (c, m.kind.to_string(), m.data))
            .collect();
        assert_eq!(
            got,
            [
                (Some("c".into()), "event".into(), json!(1)),
                (
                    Some("process:7".into()),
                    "process_output".into(),
                    json!("x")
                ),
                (Some("c".into()), "event".into(), json!(3)),
            ]
        );
        // One bad message refuses the whole batch before anything is published.
        for bad in [r#"[{"channel":"c"}, {"data":2}]"#, "[1]", "[]", "[{"] {
            let r = call("POST", &req("/api/publish", &admin), bad, &hub);
            assert_eq!(r.status, 400, "{bad}");
        }
        assert!(hub.published.borrow().is_empty());
        // The key is still needed.
        let r = call("POST", &req("/api/publish", &[]), body, &hub);
        assert_eq!(r.status, 401);
    }
}
