//! `wshub serve`'s logs and shutdown, end to end: human and JSON log lines,
//! no token ever in them, and SIGTERM closing clients with 1001 then exit 0.

mod proc_log;

use proc_log::{lines, serve_command};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{HandshakeError, Message as WsMessage, WebSocket};

const WAIT: Duration = Duration::from_secs(10);

/// Every line until the stream ends (the process exited).
fn drain(rx: &Receiver<String>, into: &mut Vec<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => into.push(line),
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => panic!("output did not end; saw {into:#?}"),
        }
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `wshub serve` with both output streams captured.
struct Serve {
    child: Child,
    addr: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = serve_command()
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let mut err = Vec::new();
        // The same words in both formats: JSON keeps them in "message".
        let addr = proc_log::wait_listening(&stderr, &mut err, WAIT);
        Serve {
            child,
            addr,
            stdout,
            stderr,
            out: Vec::new(),
            err,
        }
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// The exit status, and everything written.
    fn finish(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child);
        drain(&self.stdout, &mut self.out);
        drain(&self.stderr, &mut self.err);
        status
    }

    /// SIGTERM, then [`Serve::finish`].
    fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.finish()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upgrades at `target`, with a bearer if given: the socket or the status.
fn upgrade(addr: &str, target: &str, bearer: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let mut req = format!("ws://{addr}{target}")
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        let value = format!("Bearer {t}").parse().unwrap();
        req.headers_mut().insert("Authorization", value);
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade to {target}: {e}"),
    }
}

/// One plain HTTP request; the status.
fn http(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"))
}

/// The close code the server sends next.
fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(WsMessage::Close(f)) => {
                // Sends tungstenite's queued close reply: the handshake ends
                // now instead of at the server's close timeout.
                let _ = ws.flush();
                return f.map(|f| u16::from(f.code));
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

fn jwt(secret: &str, sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600});
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The stderr lines as JSON records; every line must be one.
fn records(err: &[String]) -> Vec<Value> {
    err.iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
            v
        })
        .collect()
}

#[test]
fn sigterm_closes_clients_with_1001_then_exits_0() {
    for runtime in ["tokio", "smol", "blocking"] {
        let mut serve = Serve::start(&["--runtime", runtime, "--api-key", "k=u"]);
        let mut a = upgrade(&serve.addr, "/ws?token=k", None).unwrap();
        let mut b = upgrade(&serve.addr, "/ws", Some("k")).unwrap();
        let sub = json!({"type": "subscribe", "channel": "c", "id": 1});
        b.send(WsMessage::text(sub.to_string())).unwrap();
        match b.read().unwrap() {
            WsMessage::Text(t) => assert!(t.as_str().contains("ack"), "{t}"),
            other => panic!("{other:?}"),
        }
        serve.sigterm();
        // Reading answers the close, which lets the server finish at once.
        assert_eq!(close_code(&mut a), Some(1001), "{runtime}");
        assert_eq!(close_code(&mut b), Some(1001), "{runtime}");
        let status = serve.finish();
        assert_eq!(status.code(), Some(0), "{runtime}: {:#?}", serve.err);
        let log = serve.err.join("\n");
        assert!(log.contains("shutting down signal=15"), "{runtime}: {log}");
        assert!(
            log.contains("reason=Shutdown code=Some(1001)"),
            "{runtime}: {log}"
        );
        assert!(log.contains("shutdown complete"), "{runtime}: {log}");
    }
}

#[test]
fn tokens_never_reach_the_logs_in_either_format() {
    let api_key = "apiK3y-NEVER-LOGGED-1";
    let admin_key = "adminK3y-NEVER-LOGGED-2";
    let secret = "jwtS3cr3t-NEVER-LOGGED-3-at-least-32-bytes";
    let wrong = "wrongK3y-NEVER-LOGGED-4";
    let good_jwt = jwt(secret, "jwt-user");
    let bad_jwt = jwt("some-other-secret-NEVER-LOGGED-5-32b", "jwt-user");
    let jwt_signature = good_jwt.rsplit('.').next().unwrap().to_owned();
    let never = [
        api_key,
        admin_key,
        secret,
        wrong,
        &good_jwt,
        &bad_jwt,
        &jwt_signature,
        "NEVER-LOGGED",
        "token=",
    ];
    for format in ["human", "json"] {
        let api_key_flag = format!("{api_key}=alice");
        let mut serve = Serve::start(&[
            "--api-key",
            &api_key_flag,
            "--admin-key",
            admin_key,
            "--jwt-secret",
            secret,
            "--log-format",
            format,
            // Debug adds the HTTP request lines: their paths must lose the query.
            "--log-level",
            "debug",
        ]);
        let addr = serve.addr.clone();
        let q = |t: &str| format!("/ws?token={t}");
        let mut open = vec![
            upgrade(&addr, "/ws", Some(api_key)).expect("bearer key"),
            upgrade(&addr, &q(api_key), None).expect("query key"),
            upgrade(&addr, "/ws", Some(&good_jwt)).expect("bearer JWT"),
            upgrade(&addr, &q(&good_jwt), None).expect("query JWT"),
        ];
        for (target, bearer) in [
            ("/ws".to_owned(), Some(wrong)),
            (q(wrong), None),
            ("/ws".to_owned(), Some(bad_jwt.as_str())),
            (q(&bad_jwt), None),
        ] {
            assert_eq!(upgrade(&addr, &target, bearer).err(), Some(401), "{format}");
        }
        assert_eq!(
            http(
                &addr,
                "GET",
                &format!("/api/whoami?token={api_key}"),
                &[],
                ""
            ),
            200
        );
        assert_eq!(
            http(&addr, "GET", &format!("/api/whoami?token={wrong}"), &[], ""),
            401
        );
        let publish = r#"{"channel":"c","data":1}"#;
        let admin = format!("Bearer {admin_key}");
        let wrong_admin = format!("Bearer {wrong}");
        let auth = |v: &str| [("Authorization", v.to_owned())];
        let h = auth(&admin);
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(http(&addr, "POST", "/api/publish", &h, publish), 200);
        let h = auth(&wrong_admin);
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_ne!(http(&addr, "POST", "/api/publish", &h, publish), 200);
        // A clean close too, so "disconnected" lines are in the log.
        open[0].close(None).unwrap();
        let _ = open[0].read();
        drop(open);

        assert_eq!(serve.terminate().code(), Some(0), "{format}");
        for line in serve.err.iter().chain(&serve.out) {
            for s in never {
                assert!(!line.contains(s), "{format}: {s:?} logged in {line}");
            }
        }
        // No auth option was left out, so no token URL on stdout either.
        assert!(serve.out.is_empty(), "{format}: {:#?}", serve.out);

        // The log did record all that, by user and by path.
        let log = serve.err.join("\n");
        match format {
            "human" => {
                assert!(log.contains("connected user=alice"), "{log}");
                assert!(log.contains("connected user=jwt-user"), "{log}");
                assert_eq!(log.matches("auth failed status=401").count(), 4, "{log}");
                assert!(log.contains("reason=jwt: bad signature"), "{log}");
                assert!(log.contains("path=/api/whoami status=200"), "{log}");
                assert!(log.contains("disconnected reason=PeerClosed"), "{log}");
            }
            _ => {
                let recs = records(&serve.err);
                let users: Vec<&str> = recs
                    .iter()
                    .filter(|r| r["message"] == "connected")
                    .filter_map(|r| r["user"].as_str())
                    .collect();
                assert_eq!(users.iter().filter(|u| **u == "alice").count(), 2, "{log}");
                assert_eq!(
                    users.iter().filter(|u| **u == "jwt-user").count(),
                    2,
                    "{log}"
                );
                let failed = recs.iter().filter(|r| r["message"] == "auth failed");
                assert_eq!(failed.filter(|r| r["status"] == 401).count(), 4, "{log}");
                let whoami = recs
                    .iter()
                    .filter(|r| r["message"] == "http" && r["path"] == "/api/whoami")
                    .count();
                assert_eq!(whoami, 2, "{log}");
                assert!(
                    recs.iter().any(|r| r["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("listening on ws://"))
                        && r["runtime"] == "tokio"),
                    "{log}"
                );
            }
        }
    }
}

#[test]
fn the_generated_token_is_printed_once_on_stdout_and_never_logged() {
    for format in ["human", "json"] {
        let mut serve = Serve::start(&["--log-format", format, "--log-level", "debug"]);
        let url = serve
            .stdout
            .recv_timeout(WAIT)
            .expect("the page URL on stdout");
        let prefix = format!("http://{}/?token=", serve.addr);
        let token = url
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{url}"))
            .to_owned();
        assert_eq!(token.len(), 32, "{url}");
        // The token is the way in, so it is worth keeping out of logs.
        upgrade(&serve.addr, &format!("/ws?token={token}"), None).expect("generated token");
        let whoami = format!("/api/whoami?token={token}");
        assert_eq!(http(&serve.addr, "GET", &whoami, &[], ""), 200);
        // It is the admin key too.
        let bearer = format!("Bearer {token}");
        let h = [("Authorization", bearer.as_str())];
        let body = r#"{"channel":"c","data":1}"#;
        assert_eq!(http(&serve.addr, "POST", "/api/publish", &h, body), 200);
        assert_eq!(serve.terminate().code(), Some(0), "{format}");

        serve.out.insert(0, url);
        let stdout = serve.out.join("\n");
        assert_eq!(stdout.matches(&token).count(), 1, "{format}: {stdout}");
        assert_eq!(serve.out.len(), 1, "{format}: {stdout}");
        let log = serve.err.join("\n");
        assert!(!log.contains(&token), "{format}: {log}");
        assert!(log.contains("generated a token"), "{format}: {log}");
        assert!(log.contains("/api/whoami"), "{format}: {log}");
        if format == "json" {
            records(&serve.err);
        }
    }
}
