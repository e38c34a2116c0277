//! A child `wshub serve` for multi-process tests: started on a free port
//! with the caller's flags, killed (SIGKILL) when dropped or on demand, and
//! plain HTTP requests to it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::proc_log;

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running `wshub serve`.
pub struct Serve {
    child: Child,
    /// Its `host:port`.
    pub addr: String,
}

impl Serve {
    /// `wshub serve --listen 127.0.0.1:0 ARGS`, once it listens.
    pub fn start(args: &[&str]) -> Serve {
        let mut child = proc_log::serve_command()
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .spawn()
            .unwrap();
        let stderr = proc_log::lines(child.stderr.take().unwrap());
        let addr = proc_log::wait_listening(&stderr, &mut Vec::new(), WAIT);
        std::thread::spawn(move || for _ in stderr {});
        Serve { child, addr }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `METHOD target` with `key` as bearer: the status, the head and the
    /// body as JSON (`null` when it is not JSON).
    pub fn http(&self, method: &str, target: &str, key: Option<&str>, body: &str) -> Reply {
        http(&self.addr, method, target, key, body)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body as JSON (`null` when it is not JSON).
    pub json: Value,
}

/// Writes `request` as is and reads until the server closes, or until the
/// end of the response head with `head_only`.
pub fn raw(addr: &str, request: &str, head_only: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    while !(head_only && reply.windows(4).any(|w| w == b"\r\n\r\n")) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// One plain HTTP request.
pub fn http(addr: &str, method: &str, target: &str, key: Option<&str>, body: &str) -> Reply {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let reply = raw(addr, &req, false);
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"));
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    Reply {
        status,
        head: head.to_owned(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// Waits until `f` holds, polling, for at most `within`.
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A level-1 client on a real socket (tungstenite): JSON in, JSON out, one
/// message at a time (a frame may carry several, one per line).
pub struct Ws {
    ws: WebSocket<TcpStream>,
    pending: VecDeque<Value>,
}

impl Ws {
    /// Connects to `addr` with `?token=TOKEN` and upgrades.
    pub fn connect(addr: &str, token: &str) -> Ws {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let url = format!("ws://{addr}/ws?token={token}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        Ws {
            ws,
            pending: VecDeque::new(),
        }
    }

    /// Sends one JSON message.
    pub fn send(&mut self, v: Value) {
        self.ws.send(WsMessage::text(v.to_string())).unwrap();
    }

    /// The next message; panics on a close or an error.
    pub fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return v;
            }
            match self.ws.read() {
                Ok(WsMessage::Text(t)) => {
                    for line in t.as_str().lines().filter(|l| !l.trim().is_empty()) {
                        self.pending.push_back(serde_json::from_str(line).unwrap());
                    }
                }
                Ok(WsMessage::Close(f)) => panic!("closed: {f:?}"),
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Subscribes with `extra` fields (`recover`, `positions`, `history`);
    /// the ack's data.
    pub fn subscribe(&mut self, channel: &str, extra: Value) -> Value {
        let mut req = json!({"type": "subscribe", "channel": channel, "id": 1});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        self.send(req);
        let ack = self.next();
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["id"], 1, "{ack}");
        ack["data"].clone()
    }

    /// The next `n` positioned messages, skipping the acks of this client's
    /// own requests: their (offset, data).
    pub fn messages(&mut self, n: usize) -> Vec<(u64, Value)> {
        let mut got = Vec::new();
        while got.len() < n {
            let m = self.next();
            if m["type"] == "ack" {
                continue;
            }
            let offset = m["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset: {m}"));
            got.push((offset, m["data"].clone()));
        }
        got
    }

    /// Closes cleanly and waits for the server's close.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
    }
}
