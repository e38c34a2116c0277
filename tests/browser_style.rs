//! A browser-style client against every adapter, at the protocol level: the
//! exact upgrade requests Chromium and Firefox send from `new WebSocket(url)`
//! (hand-written bytes). A browser cannot set headers, so the token rides in
//! `?token=`; it always sends `Origin`, and offers permessage-deflate, which
//! the hub must not negotiate. (A real headless browser is a later issue.)

mod adapters;
mod suite;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use adapters::{Blocking, Smol, Tokio};
use serde_json::{json, Value};
use suite::{eventually, wait_event, Adapter};
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::frame::{close_frame, encode_frame, Decoded, FrameDecoder, OpCode, Role};
use wshub_core::{CloseReason, Event, HubConfig, Message};

const ORIGIN: &str = "https://app.example";
/// A key as a browser makes one (16 random bytes, base64) and its accept
/// value, computed independently of the code under test.
const KEY: &str = "x3JJHMbDL1EzLkh9GBhXDw==";
const ACCEPT: &str = "HSmrc0sMlYUkAGmm5OPpG2HaGWk=";

fn chromium_request(addr: SocketAddr, target: &str, origin: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/126.0.0.0 Safari/537.36\r\n\
         Upgrade: websocket\r\n\
         Origin: {origin}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Cookie: session=abc123; theme=dark\r\n\
         Sec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         \r\n"
    )
}

fn firefox_request(addr: SocketAddr, target: &str, origin: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0\r\n\
         Accept: */*\r\n\
         Accept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\
         Sec-WebSocket-Key: {KEY}\r\n\
         Connection: keep-alive, Upgrade\r\n\
         Sec-Fetch-Dest: empty\r\n\
         Sec-Fetch-Mode: websocket\r\n\
         Sec-Fetch-Site: same-origin\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         Upgrade: websocket\r\n\
         \r\n"
    )
}

fn config() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new([("key-alice".to_string(), "alice".to_string())])
                .source(TokenSource::Query("token".into())),
        ),
        allowed_origins: vec![ORIGIN.into(), "https://admin.example".into()],
        ..HubConfig::default()
    }
}

/// A hand-driven client connection after its response head.
struct Browser {
    stream: TcpStream,
    decoder: FrameDecoder,
    pending: Vec<u8>,
    next_mask: u32,
}

/// Sends `request`; returns the response head and the connection.
fn send_upgrade(addr: SocketAddr, request: &str) -> (String, Browser) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a full response head: {head:?}");
        head.extend_from_slice(&buf[..n]);
    };
    let pending = head.split_off(end);
    let head = String::from_utf8(head).expect("an ASCII response head");
    (
        head,
        Browser {
            stream,
            decoder: FrameDecoder::new(Role::Client, 1 << 20),
            pending,
            next_mask: 0x1234_5678,
        },
    )
}

fn status(head: &str) -> u16 {
    let line = head.lines().next().unwrap_or("");
    assert!(line.starts_with("HTTP/1.1 "), "status line {line:?}");
    line[9..12].parse().unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Browser {
    fn mask(&mut self) -> [u8; 4] {
        self.next_mask = self
            .next_mask
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12345);
        self.next_mask.to_be_bytes()
    }

    fn send_json(&mut self, v: Value) {
        let mut out = Vec::new();
        let mask = self.mask();
        encode_frame(&mut out, OpCode::Text, v.to_string().as_bytes(), Some(mask));
        self.stream.write_all(&out).unwrap();
    }

    fn send_close(&mut self, code: Option<u16>, reason: &str) {
        let mask = self.mask();
        let out = match code {
            Some(code) => close_frame(code, reason, Some(mask)),
            None => {
                // `ws.close()` with no code: a close frame with an empty body.
                let mut out = Vec::new();
                encode_frame(&mut out, OpCode::Close, &[], Some(mask));
                out
            }
        };
        self.stream.write_all(&out).unwrap();
    }

    /// The next frame from the server; None at EOF.
    fn next(&mut self) -> Option<Decoded> {
        let mut buf = [0u8; 4096];
        loop {
            while !self.pending.is_empty() {
                let (used, out) = self.decoder.decode(&self.pending);
                self.pending.drain(..used);
                match out {
                    Ok(Some(d)) => return Some(d),
                    Ok(None) => {}
                    Err(v) => panic!("the server broke framing: {v}"),
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .expect("a frame before the timeout");
            if n == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The next text message as JSON (a browser answers pings itself; none
    /// are expected here).
    fn next_json(&mut self) -> Value {
        match self.next() {
            Some(Decoded::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The 101 a browser accepts: the right accept value, and no extension or
/// subprotocol it did not ask for.
fn check_switching(head: &str) {
    assert_eq!(status(head), 101, "{head}");
    assert_eq!(
        header(head, "upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket"),
        "{head}"
    );
    let connection = header(head, "connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(connection.contains("upgrade"), "{head}");
    assert_eq!(header(head, "sec-websocket-accept"), Some(ACCEPT), "{head}");
    assert_eq!(
        header(head, "sec-websocket-extensions"),
        None,
        "permessage-deflate must not be negotiated:\n{head}"
    );
    assert_eq!(header(head, "sec-websocket-protocol"), None, "{head}");
}

fn browser_session<A: Adapter>(firefox: bool) {
    let s = A::start(config(), None);
    let target = "/ws?token=key-alice&v=2";
    let request = if firefox {
        firefox_request(s.addr(), target, ORIGIN)
    } else {
        chromium_request(s.addr(), target, ORIGIN)
    };
    let (head, mut b) = send_upgrade(s.addr(), &request);
    check_switching(&head);
    let e = wait_event(&*s, |e| matches!(e, Event::Connected { .. }));
    assert!(
        matches!(&e, Event::Connected { identity, subprotocol: None, .. } if identity.user_id == "alice"),
        "{e:?}"
    );

    b.send_json(json!({"type": "subscribe", "channel": "room:1", "id": 1}));
    let ack = b.next_json();
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!(1)));
    b.send_json(json!({"type": "subscribe", "data": "process:p7"}));
    eventually("level-0 subscribe", || {
        s.subscriber_count("process:p7") == 1
    });
    assert_eq!(
        s.publish("room:1", Message::event("joined", json!({"who": "bob"}))),
        1
    );
    assert_eq!(
        s.publish("process:p7", Message::process_output("p7", "línea ✓")),
        1
    );
    let m = b.next_json();
    assert_eq!(m["type"], "event");
    assert_eq!(
        m["data"],
        json!({"event": "joined", "data": {"who": "bob"}})
    );
    let m = b.next_json();
    assert_eq!(
        (&m["type"], &m["channel"], &m["processId"], &m["data"]),
        (
            &json!("process_output"),
            &json!("process:p7"),
            &json!("p7"),
            &json!("línea ✓")
        )
    );
    b.send_json(json!({"type": "ping"}));
    assert_eq!(b.next_json()["type"], "pong");
    assert_eq!(s.broadcast(Message::error("maintenance at noon")), 1);
    assert_eq!(b.next_json()["data"], "maintenance at noon");

    // Chromium's `ws.close(1000, "done")`; Firefox's `ws.close()` (no code).
    let (code, reason) = if firefox {
        (None, "")
    } else {
        (Some(1000), "done")
    };
    b.send_close(code, reason);
    match b.next() {
        Some(Decoded::Close(echo)) => {
            assert_eq!(
                echo.map(|(c, _)| c),
                code,
                "the close reply echoes the code"
            )
        }
        other => panic!("expected the close reply, got {other:?}"),
    }
    assert_eq!(b.next(), None, "the server closes the TCP connection");
    let e = wait_event(&*s, |e| matches!(e, Event::Closed { .. }));
    assert!(
        matches!(
            &e,
            Event::Closed { reason: CloseReason::PeerClosed(c), was_connected: true, .. } if *c == code
        ),
        "{e:?}"
    );
    eventually("state freed", || {
        let st = s.stats();
        st.connections == 0 && st.channels == 0
    });
}

/// A refused browser: the response has no upgrade headers and the server
/// closes the connection after it.
fn refused<A: Adapter>(request: impl Fn(SocketAddr) -> String, want: u16) {
    let s = A::start(config(), None);
    let (head, mut b) = send_upgrade(s.addr(), &request(s.addr()));
    assert_eq!(status(&head), want, "{head}");
    for h in [
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "upgrade",
    ] {
        assert_eq!(header(&head, h), None, "{h} in a refusal:\n{head}");
    }
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut rest = std::mem::take(&mut b.pending);
    b.stream
        .read_to_end(&mut rest)
        .expect("EOF after the refusal");
    assert_eq!(rest.len(), len, "only the body follows the head");
    assert!(!String::from_utf8_lossy(&rest).contains("key-alice"));
    eventually("state freed", || {
        let st = s.stats();
        st.connections == 0 && st.pending == 0
    });
}

fn bad_origin<A: Adapter>() {
    refused::<A>(
        |a| chromium_request(a, "/ws?token=key-alice", "https://evil.example"),
        403,
    );
    refused::<A>(
        |a| firefox_request(a, "/ws?token=key-alice", "http://app.example"),
        403,
    );
}

fn bad_token<A: Adapter>() {
    refused::<A>(|a| chromium_request(a, "/ws", ORIGIN), 401);
    refused::<A>(
        |a| chromium_request(a, "/ws?token=key-mallory", ORIGIN),
        401,
    );
}

macro_rules! browser_tests {
    ($adapter:ty, $chromium:ident, $firefox:ident, $origin:ident, $token:ident) => {
        #[test]
        fn $chromium() {
            browser_session::<$adapter>(false);
        }
        #[test]
        fn $firefox() {
            browser_session::<$adapter>(true);
        }
        #[test]
        fn $origin() {
            bad_origin::<$adapter>();
        }
        #[test]
        fn $token() {
            bad_token::<$adapter>();
        }
    };
}

browser_tests!(
    Blocking,
    blocking_chromium_session,
    blocking_firefox_session,
    blocking_disallowed_origin_403,
    blocking_missing_or_bad_token_401
);
browser_tests!(
    Smol,
    smol_chromium_session,
    smol_firefox_session,
    smol_disallowed_origin_403,
    smol_missing_or_bad_token_401
);
browser_tests!(
    Tokio,
    tokio_chromium_session,
    tokio_firefox_session,
    tokio_disallowed_origin_403,
    tokio_missing_or_bad_token_401
);
