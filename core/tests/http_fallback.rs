//! Plain HTTP requests beside WebSocket upgrades (`http_fallback`): the
//! request event, the response, and the body limits.

mod common;

use std::time::Duration;

use common::*;
use wshub_core::{Event, HubConfig, UsageError};

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
