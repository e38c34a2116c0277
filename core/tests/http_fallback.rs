//! Plain HTTP requests beside WebSocket upgrades (`http_fallback`): the
//! request event, the response, the body limits, and persistent (kept-alive)
//! connections with pipelined requests.

mod common;

use std::time::Duration;

use common::*;
use wshub_core::{CloseReason, ConnId, Event, HubConfig, UsageError};

fn http_cfg() -> HubConfig {
    HubConfig {
        http_fallback: true,
        max_http_body: 16,
        ..HubConfig::default()
    }
}

#[test]
fn http_fallback_serves_plain_requests_beside_websocket() {
    let mut sim = Sim::new(http_cfg());
    let ws = sim.connect();
    let get = sim.open();
    sim.feed(get, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    let Some(Event::HttpRequest {
        conn,
        method,
        request,
        body,
    }) = sim
        .events
        .iter()
        .find(|e| matches!(e, Event::HttpRequest { .. }))
    else {
        panic!("no HttpRequest event: {:?}", sim.events);
    };
    assert_eq!(
        (*conn, method.as_str(), request.path(), body.len()),
        (get, "GET", "/healthz", 0)
    );
    sim.hub
        .http_respond(sim.now, get, 200, &[("Content-Type", "text/plain")], b"ok")
        .unwrap();
    sim.pump();
    let raw = String::from_utf8(sim.rx[&get].raw.clone()).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200 OK\r\n") && raw.ends_with("\r\n\r\nok"),
        "{raw}"
    );
    // HTTP/1.1 without `Connection: close`: the connection stays for the
    // next request.
    assert!(!raw.contains("Connection: close"), "{raw}");
    assert!(sim.hub.contains(get) && sim.closed(get).is_empty());
    assert!(sim.hub.contains(ws));
    // Asked to close, it ends once the response is out.
    sim.feed(
        get,
        b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    sim.hub.http_respond(sim.now, get, 200, &[], b"ok").unwrap();
    sim.pump();
    let raw = String::from_utf8(sim.rx[&get].raw.clone()).unwrap();
    assert!(
        raw.ends_with("Connection: close\r\nContent-Length: 2\r\n\r\nok"),
        "{raw}"
    );
    assert!(!sim.hub.contains(get));
    assert!(sim.hub.contains(ws));

    // A body split across reads arrives whole.
    let post = sim.open();
    sim.feed(
        post,
        b"POST /api/publish HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n{\"a\":",
    );
    assert!(!sim
        .events
        .iter()
        .any(|e| matches!(e, Event::HttpRequest { conn, .. } if *conn == post)));
    sim.feed(post, b"123}");
    assert!(sim.events.iter().any(|e| matches!(e, Event::HttpRequest { conn, body, .. } if *conn == post && body == b"{\"a\":123}")));
    // One answer only.
    sim.hub.http_respond(sim.now, post, 204, &[], b"").unwrap();
    assert_eq!(
        sim.hub.http_respond(sim.now, post, 204, &[], b""),
        Err(UsageError::WrongState)
    );
}

#[test]
fn http_fallback_limits() {
    let mut sim = Sim::new(http_cfg());
    let big = sim.open();
    sim.feed(
        big,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n",
    );
    assert_eq!(sim.rx[&big].status(), Some(413));
    let chunked = sim.open();
    sim.feed(
        chunked,
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(sim.rx[&chunked].status(), Some(501));
    let two = sim.open();
    sim.feed(
        two,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(sim.rx[&two].status(), Some(400));
    // The application never answers: 408 at the handshake timeout.
    let slow = sim.open();
    sim.feed(slow, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    sim.advance(Duration::from_secs(11));
    assert_eq!(sim.rx[&slow].status(), Some(408));
    // Without the fallback a plain request is refused as before.
    let mut plain = Sim::new(HubConfig::default());
    let id = plain.open();
    plain.feed(id, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(plain.rx[&id].status(), Some(400));
}

/// One response the hub wrote: status, whether it says `Connection: close`,
/// and its body.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

/// Every response in `raw`, in order; panics on trailing partial bytes.
fn responses(raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut slots);
        let head = match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not a response ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let len: usize = header("content-length").unwrap().parse().unwrap();
        out.push(Response {
            status: r.code.unwrap(),
            close: header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
            body: rest[head..head + len].to_vec(),
        });
        rest = &rest[head + len..];
    }
    out
}

fn ok(body: &str) -> Response {
    Response {
        status: 200,
        close: false,
        body: body.into(),
    }
}

fn closing(status: u16, body: &str) -> Response {
    Response {
        status,
        close: true,
        body: body.into(),
    }
}

/// Paths of the plain requests the hub handed over for `id`, in order.
fn requests(sim: &Sim, id: ConnId) -> Vec<String> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            Event::HttpRequest {
                conn,
                request,
                body,
                ..
            } if *conn == id => Some(format!(
                "{} {}",
                request.path(),
                String::from_utf8_lossy(body)
            )),
            _ => None,
        })
        .collect()
}

/// Answers the request in progress with 200 and `body`.
fn answer(sim: &mut Sim, id: ConnId, body: &str) {
    sim.hub
        .http_respond(sim.now, id, 200, &[], body.as_bytes())
        .unwrap();
    sim.pump();
}

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
const POST_B: &[u8] = b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";

#[test]
fn two_requests_on_one_connection_get_two_responses_in_order() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    sim.feed(id, POST_B);
    assert_eq!(requests(&sim, id), ["/a ", "/b xyz"]);
    answer(&mut sim, id, "2");
    assert_eq!(responses(&sim.rx[&id].raw), [ok("1"), ok("2")]);
    assert!(sim.closed(id).is_empty() && sim.hub.contains(id));
    // Still one pending connection, never counted as upgraded.
    assert_eq!(
        (sim.hub.stats().pending, sim.hub.stats().connections),
        (1, 0)
    );
}

#[test]
fn a_pipelined_pair_in_one_read_is_answered_in_order() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, &[POST_B, GET_A].concat());
    // One request at a time: the next is handed over after this answer.
    assert_eq!(requests(&sim, id), ["/b xyz"]);
    answer(&mut sim, id, "1");
    assert_eq!(requests(&sim, id), ["/b xyz", "/a "]);
    answer(&mut sim, id, "2");
    assert_eq!(responses(&sim.rx[&id].raw), [ok("1"), ok("2")]);
    assert!(sim.closed(id).is_empty());
    // Empty lines between requests are skipped, as HTTP allows.
    sim.feed(id, &[b"\r\n", GET_A, b"\r\n", POST_B].concat());
    answer(&mut sim, id, "3");
    answer(&mut sim, id, "4");
    assert_eq!(requests(&sim, id), ["/b xyz", "/a ", "/a ", "/b xyz"]);
    assert_eq!(responses(&sim.rx[&id].raw).len(), 4);
}

#[test]
fn requests_split_byte_by_byte_arrive_whole_and_in_order() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    let stream = [POST_B, GET_A, POST_B].concat();
    for b in &stream {
        sim.feed(id, std::slice::from_ref(b));
    }
    assert_eq!(requests(&sim, id), ["/b xyz"]);
    answer(&mut sim, id, "1");
    answer(&mut sim, id, "2");
    answer(&mut sim, id, "3");
    assert_eq!(requests(&sim, id), ["/b xyz", "/a ", "/b xyz"]);
    assert_eq!(responses(&sim.rx[&id].raw), [ok("1"), ok("2"), ok("3")]);
    // And byte by byte after a response too.
    for b in GET_A {
        sim.feed(id, std::slice::from_ref(b));
    }
    answer(&mut sim, id, "4");
    assert_eq!(responses(&sim.rx[&id].raw).len(), 4);
    assert!(sim.closed(id).is_empty());
}

#[test]
fn connection_close_is_honoured_and_what_follows_ignored() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    // `close` among other tokens, pipelined bytes after it.
    let close = b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, Close\r\n\r\n";
    sim.feed(id, &[&close[..], GET_A].concat());
    answer(&mut sim, id, "2");
    assert_eq!(requests(&sim, id), ["/a ", "/c "]);
    assert_eq!(responses(&sim.rx[&id].raw), [ok("1"), closing(200, "2")]);
    assert!(!sim.hub.contains(id));
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::Local(1000),
            code: None,
            flushed: true,
            ..
        }]
    ));
}

#[test]
fn the_last_request_of_the_cap_closes_the_connection() {
    let mut sim = Sim::new(HubConfig {
        max_http_requests_per_connection: 3,
        ..http_cfg()
    });
    let id = sim.open();
    for i in 1..=3 {
        sim.feed(id, GET_A);
        answer(&mut sim, id, &i.to_string());
    }
    assert_eq!(
        responses(&sim.rx[&id].raw),
        [ok("1"), ok("2"), closing(200, "3")]
    );
    assert!(!sim.hub.contains(id));
    // A cap of 1 is the one-request-per-connection behaviour.
    let mut one = Sim::new(HubConfig {
        max_http_requests_per_connection: 1,
        ..http_cfg()
    });
    let id = one.open();
    one.feed(id, GET_A);
    answer(&mut one, id, "x");
    assert_eq!(responses(&one.rx[&id].raw), [closing(200, "x")]);
    assert!(!one.hub.contains(id));
    let zero = HubConfig {
        max_http_requests_per_connection: 0,
        ..http_cfg()
    };
    assert_eq!(
        zero.validate().unwrap_err().field,
        "max_http_requests_per_connection"
    );
}

#[test]
fn an_idle_kept_alive_connection_times_out_from_its_last_response() {
    let mut sim = Sim::new(http_cfg());
    let timeout = sim.hub.config().handshake_timeout;
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    // Most of the timeout, then a request: the clock restarts at its answer.
    sim.advance(timeout - Duration::from_millis(1));
    sim.feed(id, GET_A);
    answer(&mut sim, id, "2");
    sim.advance(timeout - Duration::from_millis(1));
    assert!(sim.hub.contains(id), "timed out early");
    sim.advance(Duration::from_millis(1));
    assert!(!sim.hub.contains(id));
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout,
            code: None,
            ..
        }]
    ));
    // Closed silently: nothing written after the two answers.
    assert_eq!(responses(&sim.rx[&id].raw), [ok("1"), ok("2")]);
}

#[test]
fn a_refusal_of_a_later_request_closes_after_the_earlier_answer() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    let big = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n";
    // Pipelined behind a request not yet answered: the answer goes first.
    sim.feed(id, &[GET_A, &big[..]].concat());
    answer(&mut sim, id, "1");
    let got = responses(&sim.rx[&id].raw);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], ok("1"));
    assert!(got[1].status == 413 && got[1].close, "{got:?}");
    assert!(!sim.hub.contains(id));
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::HandshakeRefused(413),
            ..
        }]
    ));
    // Garbage after an answer: 400, closed.
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    sim.feed(id, b"NOT HTTP\r\n\r\n");
    let got = responses(&sim.rx[&id].raw);
    assert!(got[1].status == 400 && got[1].close, "{got:?}");
    assert!(!sim.hub.contains(id));
}

#[test]
fn too_much_pipelined_data_makes_the_answer_close() {
    let mut sim = Sim::new(http_cfg());
    let limit = sim.hub.config().max_request_bytes;
    let id = sim.open();
    sim.feed(id, GET_A);
    // Within the head limit: kept; one byte more: the answer closes and the
    // rest is not read (the client retries it elsewhere).
    sim.feed(id, &vec![b'\n'; limit]);
    sim.feed(id, b"\n");
    answer(&mut sim, id, "1");
    assert_eq!(responses(&sim.rx[&id].raw), [closing(200, "1")]);
    assert_eq!(requests(&sim, id), ["/a "]);
    assert!(!sim.hub.contains(id));
}

#[test]
fn a_kept_alive_connection_may_upgrade_to_websocket() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    sim.feed(id, &request("/ws", &[]));
    assert!(sim
        .events
        .iter()
        .any(|e| matches!(e, Event::Connected { conn, .. } if *conn == id)));
    let raw = &sim.rx[&id].raw;
    assert_eq!(responses(&raw[..find_101(raw)]), [ok("1")]);
    assert!(raw[find_101(raw)..].starts_with(b"HTTP/1.1 101 "));
    assert_eq!(sim.hub.stats().connections, 1);
    // Frames work as on any upgraded connection.
    sim.send_text(id, r#"{"type":"ping","id":7}"#);
    let r = &sim.rx[&id].raw;
    let after = &r[find_101(r)..];
    let received = Received {
        raw: after.to_vec(),
    };
    assert_eq!(types(&received.json()), ["pong"]);
}

fn find_101(raw: &[u8]) -> usize {
    raw.windows(13)
        .position(|w| w == b"HTTP/1.1 101 ")
        .expect("a 101")
}

#[test]
fn shutdown_and_close_let_a_kept_alive_answer_out_first() {
    for shutdown in [false, true] {
        let mut sim = Sim::new(http_cfg());
        let id = sim.open();
        sim.feed(id, GET_A);
        sim.stalled.push(id);
        answer(&mut sim, id, "1");
        if shutdown {
            sim.hub.shutdown(sim.now);
        } else {
            sim.hub.close(sim.now, id, 1000, "").unwrap();
        }
        sim.pump();
        assert!(sim.hub.contains(id), "cut before its answer was written");
        // The socket takes the answer: then the connection ends.
        sim.stalled.clear();
        let held: Vec<_> = sim.held.remove(&id).unwrap();
        let n = held.iter().map(|b| b.len()).sum();
        for b in held {
            sim.rx.get_mut(&id).unwrap().raw.extend_from_slice(&b);
        }
        sim.hub.handle_written(sim.now, id, n).unwrap();
        sim.pump();
        assert!(!sim.hub.contains(id));
        assert_eq!(responses(&sim.rx[&id].raw), [ok("1")]);
        let want = if shutdown {
            CloseReason::Shutdown
        } else {
            CloseReason::Local(1000)
        };
        assert!(
            matches!(&sim.closed(id)[..], [Event::Closed { reason, flushed: true, .. }] if *reason == want),
            "{:?}",
            sim.closed(id)
        );
    }
    // An idle kept-alive connection with nothing to write ends at once.
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    sim.hub.shutdown(sim.now);
    sim.pump();
    assert!(!sim.hub.contains(id));
    assert!(sim
        .events
        .iter()
        .any(|e| matches!(e, Event::ShutdownComplete)));
}

#[test]
fn eof_between_requests_ends_the_connection() {
    let mut sim = Sim::new(http_cfg());
    let id = sim.open();
    sim.feed(id, GET_A);
    answer(&mut sim, id, "1");
    sim.hub.handle_eof(sim.now, id).unwrap();
    sim.pump();
    assert!(matches!(
        sim.closed(id)[..],
        [Event::Closed {
            reason: CloseReason::HandshakeAborted,
            code: None,
            flushed: true,
            ..
        }]
    ));
}

#[test]
fn a_kept_alive_connection_does_not_grow_over_many_requests() {
    let mut sim = Sim::new(HubConfig {
        max_http_requests_per_connection: 10_000,
        ..http_cfg()
    });
    let id = sim.open();
    sim.feed(id, POST_B);
    answer(&mut sim, id, "first");
    let idle = sim.hub.connection_heap_bytes(id).unwrap();
    let mut most = 0;
    for i in 0..1_000 {
        sim.feed(id, if i % 2 == 0 { GET_A } else { POST_B });
        answer(&mut sim, id, "answer");
        most = most.max(sim.hub.connection_heap_bytes(id).unwrap());
        sim.rx.get_mut(&id).unwrap().raw.clear();
    }
    assert!(sim.closed(id).is_empty());
    assert_eq!(sim.hub.connection_heap_bytes(id), Some(idle));
    assert!(
        most <= idle,
        "idle {idle} bytes, up to {most} between requests"
    );
    assert_eq!(requests(&sim, id).len(), 1_001);
}

#[test]
fn the_next_request_waits_until_the_answer_is_written() {
    let mut sim = Sim::new(http_cfg());
    let limit = sim.hub.config().max_request_bytes;
    let id = sim.open();
    sim.stalled.push(id);
    sim.feed(id, &[GET_A, GET_A, GET_A].concat());
    answer(&mut sim, id, "1");
    // The client does not read: its next request is not handed over, so
    // answers cannot pile up in the hub.
    assert_eq!(requests(&sim, id), ["/a "]);
    assert_eq!(sim.hub.queued(id).map(|q| q.0), Some(1));
    let held: Vec<_> = sim.held.remove(&id).unwrap();
    let n = held.iter().map(|b| b.len()).sum();
    sim.hub.handle_written(sim.now, id, n).unwrap();
    sim.pump();
    assert_eq!(requests(&sim, id), ["/a ", "/a "]);
    // More than one request head's worth while an answer is unread: the
    // answer goes out, then a 400, and the connection ends.
    answer(&mut sim, id, "2");
    sim.feed(id, &vec![b'\n'; limit]);
    assert!(sim.hub.contains(id));
    sim.stalled.clear();
    let held: Vec<_> = sim.held.remove(&id).unwrap();
    for b in &held {
        sim.rx.get_mut(&id).unwrap().raw.extend_from_slice(b);
    }
    let n = held.iter().map(|b| b.len()).sum();
    sim.hub.handle_written(sim.now, id, n).unwrap();
    sim.pump();
    let got = responses(&sim.rx[&id].raw);
    assert_eq!(got[0], ok("2"));
    assert!(got[1].status == 400 && got[1].close, "{got:?}");
    assert!(!sim.hub.contains(id));
}
