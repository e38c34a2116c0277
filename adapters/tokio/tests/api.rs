//! The async API on a multi-thread runtime: streams handed over with
//! `add_stream`, an async deferred authenticator, commands, shutdown.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wshub_core::{
    AuthDecision, CloseReason, Event, HubConfig, Identity, Message, Rejection, UpgradeRequest,
};
use wshub_tokio::{HubCommands, Server, Stopped};

const WAIT: Duration = Duration::from_secs(5);

/// Connects through `listener`, handing the accepted side to the hub, and
/// sends an upgrade request for `target`; returns the client and the status.
async fn connect(
    hub: &wshub_tokio::Handle,
    listener: &TcpListener,
    target: &str,
) -> (TcpStream, u16) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    hub.add_stream(accepted).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(WAIT, client.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (client, status)
}

/// Reads one unfragmented server frame: (opcode, payload).
async fn read_frame(c: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tokio::time::timeout(WAIT, c.read_exact(&mut h))
        .await
        .unwrap()
        .unwrap();
    let len = match h[1] & 0x7f {
        126 => c.read_u16().await.unwrap() as usize,
        127 => c.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    c.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

/// A masked client frame (payload under 126 bytes).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 2, 3];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn next_event(server: &mut Server, what: impl Fn(&Event) -> bool) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = tokio::time::timeout_at(deadline, server.events().recv())
            .await
            .expect("event in time")
            .expect("hub running");
        if what(&e) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_api_on_handed_over_streams() {
    let config = HubConfig {
        authenticator: Arc::new(|_: &UpgradeRequest| AuthDecision::Defer),
        ..HubConfig::default()
    };
    let mut server = Server::builder(config)
        .deferred_auth(|req: UpgradeRequest| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match req.query_param("user") {
                Some(u) => AuthDecision::Accept(Identity::user(u)),
                None => AuthDecision::Reject(Rejection::forbidden()),
            }
        })
        .start()
        .unwrap();
    assert_eq!(server.local_addr(), None);
    let hub = server.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

    let (mut ann, status) = connect(&hub, &listener, "/ws?user=ann").await;
    assert_eq!(status, 101);
    let e = next_event(&mut server, |e| {
        matches!(e, Event::Connected { .. } | Event::AuthPending { .. })
    })
    .await;
    let Event::Connected { conn, identity, .. } = e else {
        panic!("the deferred authenticator answers, not the application: {e:?}");
    };
    assert_eq!(identity.user_id, "ann");

    let (_anon, status) = connect(&hub, &listener, "/ws").await;
    assert_eq!(status, 403);
    next_event(&mut server, |e| {
        matches!(e, Event::AuthFailed { status: 403, .. })
    })
    .await;

    // Commands on the connection's behalf, and a publish that reaches it.
    hub.subscribe(conn, "news").await.unwrap();
    assert_eq!(hub.subscriber_count("news").await.unwrap(), 1);
    assert_eq!(hub.channels().await.unwrap(), vec![("news".to_string(), 1)]);
    let n = hub
        .publish("news", Message::new("headline", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (op, payload) = read_frame(&mut ann).await;
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((op, v["type"].as_str()), (1, Some("headline")));
    assert_eq!(
        hub.send_to_user("ann", Message::new("dm", json!(null)))
            .await,
        Ok(1)
    );
    let (_, payload) = read_frame(&mut ann).await;
    assert!(String::from_utf8(payload).unwrap().contains("\"dm\""));

    // A client ping answered, then a close from the application.
    ann.write_all(&client_frame(1, br#"{"type":"ping"}"#))
        .await
        .unwrap();
    let (_, payload) = read_frame(&mut ann).await;
    assert!(String::from_utf8(payload).unwrap().contains("pong"));
    hub.close(conn, 4000, "bye").await.unwrap();
    let (op, payload) = read_frame(&mut ann).await;
    assert_eq!(
        (op, u16::from_be_bytes([payload[0], payload[1]])),
        (8, 4000)
    );
    ann.write_all(&client_frame(8, &payload[..2]))
        .await
        .unwrap();
    let e = next_event(
        &mut server,
        |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn),
    )
    .await;
    assert!(matches!(
        e,
        Event::Closed {
            reason: CloseReason::Local(4000),
            code: Some(4000),
            ..
        }
    ));
    // The writer flushed, then shut the socket down: the client sees EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, ann.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    assert!(hub.shutdown(Duration::from_secs(2)).await);
    next_event(&mut server, |e| matches!(e, Event::ShutdownComplete)).await;
    assert_eq!(hub.stats().await, Err(Stopped));
    server.join().await;
}

#[test]
fn blocking_handle_from_a_plain_thread() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(Server::builder(HubConfig::default()).bind("127.0.0.1:0"))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let hub = server.handle().blocking();
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET /ws HTTP/1.1\r\n").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while hub.stats().unwrap().pending != 1 {
        assert!(std::time::Instant::now() < deadline, "pending connection");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        hub.publish("process:p", Message::process_output("p", "line")),
        Ok(0)
    );
    assert!(hub.shutdown(Duration::from_secs(2)));
    assert_eq!(hub.stats(), Err(Stopped));
    // The listener is closed once the hub has stopped.
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "listener closed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_deadline_cuts_a_client_that_never_replies() {
    let mut server = Server::builder(HubConfig::default()).start().unwrap();
    let hub = server.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut mute, status) = connect(&hub, &listener, "/ws").await;
    assert_eq!(status, 101);
    next_event(&mut server, |e| matches!(e, Event::Connected { .. })).await;
    let started = tokio::time::Instant::now();
    // The client never answers the 1001, and the close timeout is 5 s.
    assert!(!hub.shutdown(Duration::from_millis(200)).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    let (op, payload) = read_frame(&mut mute).await;
    assert_eq!(
        (op, u16::from_be_bytes([payload[0], payload[1]])),
        (8, 1001)
    );
    // Cut: EOF or a reset, promptly.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, mute.read_to_end(&mut rest))
        .await
        .expect("the socket was cut");
    assert_eq!(hub.stats().await, Err(Stopped));
}

#[tokio::test(flavor = "current_thread")]
async fn plain_http_answered_through_the_handle() {
    let config = HubConfig {
        http_fallback: true,
        ..HubConfig::default()
    };
    let mut server = Server::builder(config).bind("127.0.0.1:0").await.unwrap();
    let hub = server.handle();
    let mut c = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    // `Connection: close`: the answer ends the connection (without it the
    // hub keeps the connection for the next request; tests/cli_exec.rs
    // checks that on every runtime), so the whole answer is read to EOF.
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let e = next_event(&mut server, |e| matches!(e, Event::HttpRequest { .. })).await;
    let Event::HttpRequest { conn, method, .. } = e else {
        unreachable!()
    };
    assert_eq!(method, "GET");
    hub.http_respond(conn, 200, vec![], b"ok".to_vec())
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, c.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}
