//! The HTTP API served on the WebSocket port by `wshub serve`: the live page,
//! health, stats, Prometheus metrics, and publish/broadcast for admins.

use serde_json::{json, Value};
use wshub_core::auth::constant_time_eq;
use wshub_core::command::{Command, HubCommands, Reply};
use wshub_core::{HistoryError, Message, Stats, UpgradeRequest};

use crate::cluster::Cluster;

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

/// What the API needs to know besides the hub.
pub struct Settings<'a> {
    /// The key that may publish and read history (None: those are off).
    pub admin_key: Option<&'a str>,
    /// Whether a client token is good (for `/api/whoami`, which the page
    /// uses to tell an auth failure apart from a network one; browsers hide
    /// a refused upgrade's status).
    pub check_token: &'a dyn Fn(&UpgradeRequest) -> bool,
    /// The hub's `history.max_replay`: the default and largest `limit` of
    /// `GET /api/history`.
    pub history_max_replay: usize,
    /// With `--broker`: the link to the other nodes.
    pub cluster: Option<&'a Cluster>,
}

/// Answers one request.
pub fn route(
    method: &str,
    request: &UpgradeRequest,
    body: &[u8],
    settings: &Settings<'_>,
    hub: &dyn HubCommands,
) -> Response {
    let admin_key = settings.admin_key;
    let check_token = settings.check_token;
    match (method, request.path()) {
        ("GET", "/") | ("GET", "/index.html") => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
        },
        ("GET", "/healthz") => health(settings.cluster.is_some(), hub),
        ("GET", "/api/whoami") => {
            if check_token(request) {
                Response::json(200, json!({ "ok": true }))
            } else {
                Response::error(401, "authentication failed")
            }
        }
        ("GET", "/api/stats") => match (hub.stats(), hub.channels()) {
            (Ok(s), Ok(channels)) => {
                let mut v = stats_json(&s, &channels);
                if let Some(c) = settings.cluster {
                    v["broker"] = c.stats_json(&s);
                }
                Response::json(200, v)
            }
            _ => Response::error(503, "hub stopped"),
        },
        ("GET", "/metrics") => match (hub.stats(), hub.channels()) {
            (Ok(s), Ok(channels)) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: metrics(&s, &channels, settings.cluster).into_bytes(),
            },
            _ => Response::error(503, "hub stopped"),
        },
        ("GET", "/api/presence") => match authorize_admin(request, admin_key) {
            Err(r) => r,
            Ok(()) => presence(request, settings.cluster),
        },
        ("POST", "/api/publish") | ("POST", "/api/broadcast") => {
            if let Err(r) = authorize_admin(request, admin_key) {
                return r;
            }
            let broadcast = request.path() == "/api/broadcast";
            let through_broker = settings.cluster.is_some();
            if body.trim_ascii_start().starts_with(b"[") {
                return publish_batch(body, broadcast, through_broker, hub);
            }
            match parse_publish(body, broadcast) {
                Err(e) => Response::error(400, e),
                Ok((channel, message)) if through_broker => {
                    broker_publish(&[(channel, message)], hub)
                }
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
        ("GET", "/api/history") => match authorize_admin(request, admin_key) {
            Err(r) => r,
            Ok(()) => history(request, settings.history_max_replay, hub),
        },
        (_, "/api/publish" | "/api/broadcast") => Response::error(405, "use POST"),
        (_, "/api/history" | "/api/presence") => Response::error(405, "use GET"),
        _ => Response::error(404, "not found"),
    }
}

fn authorize_admin(request: &UpgradeRequest, admin_key: Option<&str>) -> Result<(), Response> {
    let Some(key) = admin_key else {
        return Err(Response::error(
            403,
            "the admin API (publish, history) is off: start with --admin-key",
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
fn publish_batch(
    body: &[u8],
    broadcast: bool,
    through_broker: bool,
    hub: &dyn HubCommands,
) -> Response {
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
    if through_broker {
        return broker_publish(&batch, hub);
    }
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

/// Publishes (a channel) or broadcasts (`None`) through the broker, in
/// order, each one waiting for Redis: `{"published":N,"offset":..,"epoch":..}`
/// (the last publication's position), or 503 naming how many went out
/// before the broker failed.
fn broker_publish(batch: &[(Option<String>, Message)], hub: &dyn HubCommands) -> Response {
    let mut last = None;
    for (i, (channel, message)) in batch.iter().enumerate() {
        let outcome = match channel {
            Some(channel) => hub.publish_acked(channel, message.clone()),
            None => match hub.command(Command::Broadcast(message.clone())) {
                Ok(Reply::Published(r)) => Ok(r),
                Ok(_) => Ok(Ok(None)),
                Err(e) => Err(e),
            },
        };
        match outcome {
            Err(_) => return Response::error(503, "hub stopped"),
            Ok(Err(e)) => {
                let v = json!({ "error": e.to_string(), "published": i });
                return Response::json(503, v);
            }
            Ok(Ok(position)) => last = position.or(last),
        }
    }
    let mut v = json!({ "published": batch.len() });
    if let Some(p) = last {
        v["offset"] = json!(p.offset);
        v["epoch"] = json!(p.epoch);
    }
    Response::json(200, v)
}

/// `/healthz`: 200, or with a broker 503 while its link is down (a node
/// cut off from the others must not look healthy, centrifugo#1189).
fn health(with_broker: bool, hub: &dyn HubCommands) -> Response {
    let text = |status, body: &[u8]| Response {
        status,
        content_type: "text/plain",
        body: body.to_vec(),
    };
    match hub.stats() {
        Err(_) => text(503, b"hub stopped\n"),
        Ok(s) if with_broker && !s.broker_up => text(503, b"broker unreachable\n"),
        Ok(_) => text(200, b"ok\n"),
    }
}

/// `GET /api/presence?channel=C`: the users in `C` on every live node.
fn presence(request: &UpgradeRequest, cluster: Option<&Cluster>) -> Response {
    let Some(cluster) = cluster else {
        return Response::error(404, "presence across nodes needs --broker");
    };
    let channel = match request.query_param("channel") {
        Some(c) if !c.is_empty() => c,
        _ => return Response::error(400, "channel is required"),
    };
    match cluster.presence(&channel) {
        Ok(users) => Response::json(200, json!({ "channel": channel, "users": users })),
        Err(e) => Response::error(503, &e.to_string()),
    }
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

/// `GET /api/history?channel=C[&since=N][&limit=M]`: the channel's stored
/// publications after offset `since` (the newest `limit` without it), at
/// most `limit` (default and largest: `max_replay`), and its position. Each
/// publication is the JSON text a positioned subscriber got, byte for byte.
fn history(request: &UpgradeRequest, max_replay: usize, hub: &dyn HubCommands) -> Response {
    let channel = match request.query_param("channel") {
        Some(c) if !c.is_empty() => c,
        _ => return Response::error(400, "channel is required"),
    };
    let since = match request.query_param("since").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Response::error(400, "since must be an offset (a whole number)"),
    };
    let limit = match request.query_param("limit").map(|s| s.parse::<usize>()) {
        None => max_replay,
        Some(Ok(n)) if (1..=max_replay).contains(&n) => n,
        Some(_) => {
            let e = format!("limit must be in 1..={max_replay}");
            return Response::error(400, &e);
        }
    };
    let page = match hub.history(&channel, since, limit) {
        Err(_) => return Response::error(503, "hub stopped"),
        Ok(Err(HistoryError::NoHistory)) => {
            return Response::error(404, "the channel keeps no history")
        }
        Ok(Err(HistoryError::Unavailable)) => return Response::error(503, "broker unavailable"),
        Ok(Err(e)) => return Response::error(400, &e.to_string()),
        Ok(Ok(page)) => page,
    };
    // Written by hand so each publication's stored text goes out unchanged.
    let mut body = format!(
        "{{\"channel\":{},\"offset\":{},\"epoch\":{},\"publications\":[",
        Value::from(channel),
        page.position.offset,
        Value::from(page.position.epoch)
    )
    .into_bytes();
    for (i, p) in page.publications.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&p.json);
    }
    body.extend_from_slice(b"]}");
    Response {
        status: 200,
        content_type: "application/json",
        body,
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
        "history_messages": s.history_messages,
        "history_bytes": s.history_bytes,
        "history_evictions": s.history_evictions,
        "recoveries": s.recoveries,
        "recoveries_failed": s.recoveries_failed,
    })
}

fn metrics(s: &Stats, channels: &[(String, usize)], cluster: Option<&Cluster>) -> String {
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
    metric(
        "wshub_history_messages",
        "gauge",
        "Publications held in the history.",
        s.history_messages.to_string(),
    );
    metric(
        "wshub_history_bytes",
        "gauge",
        "Bytes of the publications held in the history.",
        s.history_bytes.to_string(),
    );
    metric(
        "wshub_history_evictions_total",
        "counter",
        "Publications dropped from the history to stay under --history-max-bytes.",
        s.history_evictions.to_string(),
    );
    metric(
        "wshub_recoveries_total",
        "counter",
        "Resumed subscriptions that got every missed publication.",
        s.recoveries.to_string(),
    );
    metric(
        "wshub_recoveries_failed_total",
        "counter",
        "Resumed subscriptions told recovered: false.",
        s.recoveries_failed.to_string(),
    );
    if let Some(c) = cluster {
        c.metrics(s, &mut metric);
    }
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
    use wshub_core::{HistoryPage, PeerInfo, Publication, StreamPosition};

    #[derive(Default)]
    struct Fake {
        published: RefCell<Vec<(Option<String>, Message)>>,
        reads: RefCell<Vec<(String, Option<u64>, usize)>>,
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
                Command::History {
                    channel,
                    since,
                    limit,
                } => {
                    self.reads
                        .borrow_mut()
                        .push((channel.clone(), since, limit));
                    Reply::History(match channel.as_str() {
                        "none" => Err(HistoryError::NoHistory),
                        _ if since > Some(9) => Err(HistoryError::FromTheFuture),
                        _ => Ok(HistoryPage {
                            position: StreamPosition {
                                offset: 9,
                                epoch: "e\"1".into(),
                            },
                            publications: [8, 9]
                                .map(|n| Publication {
                                    offset: n,
                                    json: format!(r#"{{"type":"event","channel":"c","data":{n},"offset":{n}}}"#).into(),
                                })
                                .to_vec(),
                        }),
                    })
                }
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
        let settings = Settings {
            admin_key: Some("adm1n"),
            check_token: &|r| r.query_param("token").as_deref() == Some("good"),
            history_max_replay: 50,
            cluster: None,
        };
        route(method, r, body.as_bytes(), &settings, hub)
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
        let settings = Settings {
            admin_key: None,
            check_token: &|_| true,
            history_max_replay: 50,
            cluster: None,
        };
        for (method, target) in [("POST", "/api/publish"), ("GET", "/api/history?channel=c")] {
            let r = req(target, &[("Authorization", "Bearer adm1n")]);
            let off = route(method, &r, body.as_bytes(), &settings, &hub);
            assert_eq!(off.status, 403, "{target}");
        }
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

    #[test]
    fn history_reads_with_the_admin_key() {
        let hub = Fake::default();
        let admin = [("Authorization", "Bearer adm1n")];
        let get = |target: &str, headers: &[(&str, &str)]| {
            let r = call("GET", &req(target, headers), "", &hub);
            (r.status, String::from_utf8(r.body).unwrap())
        };
        assert_eq!(
            get("/api/history?channel=c&since=7&limit=2", &admin),
            (
                200,
                r#"{"channel":"c","offset":9,"epoch":"e\"1","publications":[{"type":"event","channel":"c","data":8,"offset":8},{"type":"event","channel":"c","data":9,"offset":9}]}"#
                    .to_string()
            )
        );
        let (status, body) = get("/api/history?channel=a%20b", &admin);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["channel"], "a b");
        assert_eq!(v["publications"][1]["offset"], 9);
        assert_eq!(
            hub.reads.take(),
            [("c".into(), Some(7), 2), ("a b".into(), None, 50)],
            "limit defaults to max_replay"
        );
        for (target, status) in [
            ("/api/history", 400),
            ("/api/history?channel=", 400),
            ("/api/history?channel=c&since=-1", 400),
            ("/api/history?channel=c&since=x", 400),
            ("/api/history?channel=c&limit=0", 400),
            ("/api/history?channel=c&limit=51", 400),
            ("/api/history?channel=c&since=10", 400),
            ("/api/history?channel=none", 404),
        ] {
            assert_eq!(get(target, &admin).0, status, "{target}");
        }
        assert!(get("/api/history?channel=c&since=10", &admin)
            .1
            .contains("past the channel's newest offset"));
        assert!(get("/api/history?channel=c&limit=51", &admin)
            .1
            .contains("1..=50"));
        assert_eq!(get("/api/history?channel=c", &[]).0, 401);
        assert_eq!(
            get(
                "/api/history?channel=c",
                &[("Authorization", "Bearer nope")]
            )
            .0,
            401
        );
        assert_eq!(
            call("POST", &req("/api/history?channel=c", &admin), "", &hub).status,
            405
        );
    }

    #[test]
    fn stats_and_metrics_show_the_history() {
        let s = Stats {
            history_messages: 4,
            history_bytes: 400,
            history_evictions: 2,
            recoveries: 3,
            recoveries_failed: 1,
            ..Stats::default()
        };
        let v = stats_json(&s, &[]);
        assert_eq!(
            [
                &v["history_messages"],
                &v["history_bytes"],
                &v["history_evictions"],
                &v["recoveries"],
                &v["recoveries_failed"]
            ],
            [&json!(4), &json!(400), &json!(2), &json!(3), &json!(1)]
        );
        let m = metrics(&s, &[], None);
        for line in [
            "wshub_history_messages 4\n",
            "wshub_history_bytes 400\n",
            "wshub_history_evictions_total 2\n",
            "wshub_recoveries_total 3\n",
            "wshub_recoveries_failed_total 1\n",
        ] {
            assert!(m.contains(line), "{line}: {m}");
        }
    }
}
