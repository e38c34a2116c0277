//! Mounting the hub on an application's own listener: the application
//! accepts, reads the request head to route it, answers its own paths
//! itself and hands `/ws` to the hub with the bytes it already read
//! (`add_stream_read`), on every adapter. The hub judges the upgrade as
//! usual (here: its API-key auth refuses a bad key with 401).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::Message as WsMessage;
use wshub_core::auth::ApiKeyAuth;
use wshub_core::{HubCommands, HubConfig, Message};

fn config() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(ApiKeyAuth::new([("k".to_string(), "u".to_string())])),
        ..HubConfig::default()
    }
}

/// The application's router: reads up to the end of the head, answers
/// `/hello` itself, hands anything else to `hand_over` with what it read.
fn serve_app(listener: TcpListener, hand_over: impl Fn(TcpStream, Vec<u8>) + Send + 'static) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if head.starts_with(b"GET /hello ") {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
            } else {
                hand_over(stream, head);
            }
        }
    });
}

/// The application's own route, the hub's auth, and a publish through the
/// mounted hub.
fn check(addr: std::net::SocketAddr, publish: &dyn Fn(Message) -> usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with("hello"), "{reply}");

    let request = |key: &str| {
        use tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{addr}/ws").into_client_request().unwrap();
        let bearer = format!("Bearer {key}").parse().unwrap();
        r.headers_mut().insert("authorization", bearer);
        r
    };
    let bad = TcpStream::connect(addr).unwrap();
    let refused = tungstenite::client(request("nope"), bad);
    match refused {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 401)
        }
        other => panic!("not refused with 401: {:?}", other.map(|_| ())),
    }

    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(request("k"), stream).expect("the mounted hub upgrades");
    ws.send(WsMessage::text(
        r#"{"type":"subscribe","id":1,"channel":"c"}"#,
    ))
    .unwrap();
    let ack: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(publish(Message::new("event", json!("mounted"))), 1);
    let m: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(m["data"], "mounted", "{m}");
}

fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn blocking_takes_a_stream_with_its_read_bytes() {
    let server = wshub_blocking::Server::builder(config()).start().unwrap();
    let handle = server.handle();
    let (l, addr) = listener();
    let h = handle.clone();
    serve_app(l, move |s, read| h.add_stream_read(s, read).unwrap());
    check(addr, &|m| handle.publish("c", m).unwrap());
}

#[test]
fn smol_takes_a_stream_with_its_read_bytes() {
    let server = smol::block_on(async { wshub_smol::Server::builder(config()).start() }).unwrap();
    let handle = server.handle();
    let (l, addr) = listener();
    let h = handle.clone();
    serve_app(l, move |s, read| {
        let s = smol::net::TcpStream::try_from(s).unwrap();
        smol::block_on(h.add_stream_read(s, read)).unwrap()
    });
    check(addr, &|m| smol::block_on(handle.publish("c", m)).unwrap());
}

#[test]
fn tokio_takes_a_stream_with_its_read_bytes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(async { wshub_tokio::Server::builder(config()).start() })
        .unwrap();
    let handle = server.handle().blocking();
    let (l, addr) = listener();
    let h = handle.clone();
    let rt_handle = rt.handle().clone();
    serve_app(l, move |s, read| {
        s.set_nonblocking(true).unwrap();
        let s = {
            let _guard = rt_handle.enter();
            tokio::net::TcpStream::from_std(s).unwrap()
        };
        h.add_stream_read(s, read).unwrap()
    });
    check(addr, &|m| handle.publish("c", m).unwrap());
}
