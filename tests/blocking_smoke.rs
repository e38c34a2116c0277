//! The blocking adapter end to end over loopback with a real client
//! (tungstenite): auth before upgrade, subscribe, publish, slow consumer,
//! shutdown.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message as WsMessage, WebSocket};
use wshub_blocking::Server;
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::{Event, HubConfig, Message};

fn server(config: HubConfig) -> Server {
    Server::builder(config).bind("127.0.0.1:0").unwrap()
}

fn authed() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new([("good".to_string(), "alice".to_string())])
                .source(TokenSource::BearerOrQuery("token".into())),
        ),
        ..HubConfig::default()
    }
}

fn connect(server: &Server, query: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let addr = server.local_addr().unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

fn next_json(ws: &mut WebSocket<TcpStream>) -> serde_json::Value {
    loop {
        match ws.read().expect("a message") {
            WsMessage::Text(t) => return serde_json::from_str(&t).unwrap(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn wait_for(server: &Server, what: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = server
            .events()
            .recv_timeout(Duration::from_secs(5))
            .expect("event in time");
        if what(&e) {
            return e;
        }
    }
}

#[test]
fn query_token_subscribe_publish_roundtrip() {
    let server = server(authed());
    let mut ws = connect(&server, "?token=good").unwrap();
    let connected = wait_for(&server, |e| matches!(e, Event::Connected { .. }));
    assert!(matches!(connected, Event::Connected { identity, .. } if identity.user_id == "alice"));
    ws.send(WsMessage::text(
        r#"{"type":"subscribe","channel":"news","id":1}"#,
    ))
    .unwrap();
    assert_eq!(next_json(&mut ws)["type"], "ack");
    let n = server
        .handle()
        .publish("news", Message::new("headline", serde_json::json!("hi")))
        .unwrap();
    assert_eq!(n, 1);
    let got = next_json(&mut ws);
    assert_eq!(got["type"], "headline");
    assert_eq!(got["channel"], "news");
    assert_eq!(server.handle().stats().unwrap().connections, 1);
}

#[test]
fn bad_token_is_refused_with_401_before_upgrade() {
    let server = server(authed());
    match connect(&server, "?token=s3cr3t-bad") {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let failed = wait_for(&server, |e| matches!(e, Event::AuthFailed { .. }));
    assert!(!format!("{failed:?}").contains("s3cr3t"));
}

#[test]
fn graceful_shutdown_sends_1001() {
    let server = server(HubConfig::default());
    let mut a = connect(&server, "").unwrap();
    let mut b = connect(&server, "").unwrap();
    wait_for(&server, |e| matches!(e, Event::Connected { .. }));
    wait_for(&server, |e| matches!(e, Event::Connected { .. }));
    let handle = server.handle();
    let closer = std::thread::spawn(move || handle.shutdown(Duration::from_secs(5)));
    for ws in [&mut a, &mut b] {
        loop {
            match ws.read() {
                Ok(WsMessage::Close(Some(frame))) => {
                    assert_eq!(u16::from(frame.code), 1001);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        }
        // tungstenite answers the close on the next read/flush.
        let _ = ws.flush();
    }
    assert!(
        closer.join().unwrap(),
        "shutdown completed before its deadline"
    );
}

#[test]
fn client_that_stops_reading_is_cut_while_others_get_everything() {
    let config = HubConfig {
        write_timeout: Duration::from_secs(2),
        ..HubConfig::default()
    };
    let server = server(config);
    let mut fast = connect(&server, "").unwrap();
    let slow = connect(&server, "").unwrap();
    let h = server.handle();
    for _ in 0..2 {
        wait_for(&server, |e| matches!(e, Event::Connected { .. }));
    }
    let stats = h.stats().unwrap();
    assert_eq!(stats.connections, 2);
    // Subscribe both through the handle: the slow one never reads anything.
    fast.send(WsMessage::text(
        r#"{"type":"subscribe","channel":"c","id":1}"#,
    ))
    .unwrap();
    assert_eq!(next_json(&mut fast)["type"], "ack");
    let mut slow = slow;
    slow.send(WsMessage::text(r#"{"type":"subscribe","channel":"c"}"#))
        .unwrap();
    while h.subscriber_count("c").unwrap() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Enough bytes to overflow the kernel's socket buffers for the slow one.
    let payload = "x".repeat(4000);
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen_count = progress.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < 4000 {
            let m = next_json(&mut fast);
            seen.push(m["data"]["n"].as_u64().unwrap());
            seen_count.store(seen.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        (seen, fast)
    });
    for n in 0..4000u64 {
        // Pace the publisher to the fast reader (a debug build reads slowly),
        // so only the client that stopped reading falls behind.
        while n >= progress.load(std::sync::atomic::Ordering::Relaxed) + 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        h.publish(
            "c",
            Message::new("m", serde_json::json!({"n": n, "pad": payload})),
        )
        .unwrap();
    }
    let (seen, _fast) = reader.join().unwrap();
    assert_eq!(
        seen,
        (0..4000).collect::<Vec<_>>(),
        "every message, in order"
    );
    let cut = wait_for(&server, |e| matches!(e, Event::SlowConsumer { .. }));
    assert!(matches!(cut, Event::SlowConsumer { .. }));
    // The fast one is still subscribed; the slow one is gone.
    assert_eq!(h.subscriber_count("c").unwrap(), 1);
    assert_eq!(h.stats().unwrap().slow_consumers, 1);
    drop(slow);
}
