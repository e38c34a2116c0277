//! A child `wshub serve` for multi-process tests: started on a free port
//! with the caller's flags, killed (SIGKILL) when dropped or on demand, and
//! plain HTTP requests to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// One plain HTTP request.
pub fn http(addr: &str, method: &str, target: &str, key: Option<&str>, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
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
