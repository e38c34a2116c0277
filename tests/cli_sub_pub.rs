//! `wshub sub` and `wshub pub` end to end: the real binary, as child
//! processes, against a real `wshub serve` on loopback.

mod proc_log;
#[path = "client_suite/tls.rs"]
mod tls;

use proc_log::lines;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_wshub");

/// The first line `pick` accepts within [`WAIT`]; every line read is
/// appended to `seen`.
fn wait_line<T>(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let picked = pick(&line);
                seen.push(line);
                if let Some(t) = picked {
                    return t;
                }
            }
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
        }
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
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

/// `wshub serve` with a known client key (`k`, user `u`), a known admin key
/// (`adm`) and client publishes allowed on `c*`.
struct Serve {
    child: Child,
    addr: String,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    fn start(listen: &str) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--runtime", "blocking", "--listen", listen])
            .args(["--api-key", "k=u", "--admin-key", "adm", "--publish", "c*"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines(child.stderr.take().unwrap());
        let mut log = Vec::new();
        let addr = wait_line(&stderr, &mut log, "listening line", |l| {
            proc_log::listening_addr(l)
        });
        Serve {
            child,
            addr,
            stderr,
            log,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn stop(&mut self) -> Vec<String> {
        sigterm(&self.child);
        assert!(wait_exit(&mut self.child).success());
        self.log.extend(self.stderr.try_iter());
        self.log.clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `wshub sub` with its output.
struct Sub {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Sub {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Sub {
        let mut cmd = Command::new(BIN);
        cmd.arg("sub")
            .args(args)
            .env_remove("WSHUB_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        Sub {
            stdout: lines(child.stdout.take().unwrap()),
            stderr: lines(child.stderr.take().unwrap()),
            child,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    fn wait_log(&mut self, what: &str) {
        wait_line(&self.stderr, &mut self.err, what, |l| {
            l.contains(what).then_some(())
        });
    }

    fn next_message(&mut self) -> Value {
        wait_line(&self.stdout, &mut self.out, "a JSON line", |l| {
            Some(serde_json::from_str::<Value>(l).expect("stdout lines are JSON"))
        })
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wshub pub ARGS` to completion: (exit code, stdout, stderr).
fn publish(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("pub")
        .args(args)
        .env_remove("WSHUB_TOKEN")
        .env_remove("WSHUB_ADMIN_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sub_prints_what_pub_publishes_and_exits_0_on_sigterm() {
    let mut serve = Serve::start("127.0.0.1:0");
    let url = serve.url();
    // The token from the environment, as documented.
    let mut sub = Sub::start(&[&url, "c1", "c2"], &[("WSHUB_TOKEN", "k")]);
    sub.wait_log("subscribed to c1, c2");

    // Through the HTTP API with the admin key: DATA parsed as JSON.
    let (code, _, err) = publish(&["--admin-key", "adm", &url, "c1", r#"{"x":1}"#]);
    assert_eq!(code, 0, "{err}");
    let m = sub.next_message();
    assert_eq!(
        (&m["type"], &m["channel"], &m["data"]),
        (&json!("event"), &json!("c1"), &json!({"x": 1})),
        "{m}"
    );
    assert!(m["timestamp"].is_string(), "{m}");

    // As a client (the server allows c*): DATA that is not JSON is a string.
    let (code, _, err) = publish(&["--token", "k", &url, "c2", "hello world"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("published to c2"), "{err}");
    let m = sub.next_message();
    assert_eq!(
        (&m["channel"], &m["data"]),
        (&json!("c2"), &json!("hello world"))
    );

    // The same with the token as a bearer header.
    let (code, _, err) = publish(&["--bearer", "--token", "k", &url, "c1", "[1,2]"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.next_message()["data"], json!([1, 2]));

    // A channel the server does not let clients publish to: the error code.
    let (code, _, err) = publish(&["--token", "k", &url, "private", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forbidden"), "{err}");

    // SIGTERM: a clean close (the server sees 1000), exit 0.
    sigterm(&sub.child);
    let status = wait_exit(&mut sub.child);
    assert_eq!(status.code(), Some(0), "{:#?}", sub.err);
    assert!(sub.out.len() == 3, "{:#?}", sub.out);
    let log = serve.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("disconnected reason=PeerClosed(Some(1000))")),
        "{log:#?}"
    );
}

#[test]
fn wrong_credentials_exit_1_and_are_never_printed() {
    let mut serve = Serve::start("127.0.0.1:0");
    let url = serve.url();
    let secret = "s3cr3t-wrong-token";

    let mut sub = Sub::start(&["--token", secret, &url, "c1"], &[]);
    let status = wait_exit(&mut sub.child);
    assert_eq!(status.code(), Some(1));
    let err: Vec<String> = sub.stderr.try_iter().collect();
    let out: Vec<String> = sub.stdout.try_iter().collect();
    assert!(
        err.iter()
            .any(|l| l.contains("authentication failed (HTTP 401)")),
        "{err:#?}"
    );
    assert!(out.is_empty(), "{out:#?}");
    assert!(!err.iter().any(|l| l.contains(secret)), "{err:#?}");

    // The same secret in the URL's query is not printed either.
    let in_url = format!("{url}?token={secret}");
    let mut sub = Sub::start(&[&in_url, "c1"], &[]);
    assert_eq!(wait_exit(&mut sub.child).code(), Some(1));
    let err: Vec<String> = sub.stderr.try_iter().collect();
    assert!(!err.iter().any(|l| l.contains(secret)), "{err:#?}");

    for args in [
        vec!["--token", secret, url.as_str(), "c1", "1"],
        vec!["--bearer", "--token", secret, url.as_str(), "c1", "1"],
        vec!["--admin-key", secret, url.as_str(), "c1", "1"],
    ] {
        let (code, out, err) = publish(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("authentication failed") || err.contains("admin key was refused"),
            "{err}"
        );
        assert!(!out.contains(secret) && !err.contains(secret), "{err}");
    }
    let log = serve.stop();
    assert!(!log.iter().any(|l| l.contains(secret)), "{log:#?}");
}

#[test]
fn sub_reconnects_and_resubscribes_when_the_server_comes_back() {
    let mut serve = Serve::start("127.0.0.1:0");
    let addr = serve.addr.clone();
    let url = serve.url();
    let mut sub = Sub::start(&["--token", "k", &url, "c1"], &[]);
    sub.wait_log("subscribed to c1");
    serve.stop();
    sub.wait_log("disconnected");
    drop(serve);

    // A new server on the same port: the client comes back by itself.
    let _serve = Serve::start(&addr);
    sub.wait_log("reconnected");
    sub.wait_log("subscribed to c1");
    let (code, _, err) = publish(&["--admin-key", "adm", &url, "c1", "\"again\""]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.next_message()["data"], json!("again"));
    sigterm(&sub.child);
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["sub"],
        vec!["sub", "ws://127.0.0.1:1/ws"],
        vec![
            "sub",
            "--ca-file",
            "/nonexistent.pem",
            "wss://127.0.0.1:1/ws",
            "c1",
        ],
        vec!["sub", "http://127.0.0.1:1/", "c1"],
        vec!["sub", "--frobnicate", "ws://127.0.0.1:1/ws", "c1"],
        vec!["pub", "ws://127.0.0.1:1/ws", "c1"],
        vec!["pub", "--timeout", "soon", "ws://127.0.0.1:1/ws", "c1", "d"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("wshub: "), "{args:?}: {err}");
        if args.contains(&"--ca-file") {
            assert!(err.contains("--ca-file"), "{err}");
        }
    }
    let out = Command::new(BIN).args(["sub", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("WSHUB_TOKEN"));
}

#[test]
fn pub_to_nothing_listening_fails_with_1() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/ws");
    let started = Instant::now();
    let (code, _, err) = publish(&["--timeout", "3s", &url, "c1", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (code, _, err) = publish(&["--admin-key", "adm", &url, "c1", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP API"), "{err}");
}

#[test]
fn sub_pub_and_exec_over_wss_with_a_ca_file() {
    let serve = Serve::start("127.0.0.1:0");
    let ca = tls::Ca::new();
    let tls_addr = tls::terminator(ca.server(&["127.0.0.1"]), serve.addr.parse().unwrap());
    let url = format!("wss://{tls_addr}/ws");
    let ca_file = ca.file.to_str().unwrap();
    let mut sub = Sub::start(
        &[
            "--token",
            "k",
            "--ca-file",
            ca_file,
            &url,
            "c1",
            "process:t1",
        ],
        &[],
    );
    sub.wait_log("subscribed to c1, process:t1");

    // As a client over wss://.
    let (code, _, err) = publish(&["--token", "k", "--ca-file", ca_file, &url, "c1", "over tls"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.next_message()["data"], json!("over tls"));
    // Through the HTTP API over https:// (the same port).
    let (code, _, err) = publish(&["--admin-key", "adm", "--ca-file", ca_file, &url, "c1", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub.next_message()["data"], json!(2));
    // `exec --url https://...`.
    let out = Command::new(BIN)
        .args([
            "exec",
            "--url",
            &format!("https://{tls_addr}"),
            "--admin-key",
            "adm",
        ])
        .args(["--ca-file", ca_file, "--id", "t1", "--", "echo", "hi"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = sub.next_message();
    assert_eq!(
        (&m["type"], &m["data"]),
        (&json!("process_output"), &json!("hi")),
        "{m}"
    );

    // Without the CA file the web roots do not know the test CA: a
    // certificate error, never an authentication one.
    let (code, _, err) = publish(&["--timeout", "2s", "--token", "k", &url, "c1", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("refused the credentials"), "{err}");
    let (code, _, err) = publish(&["--admin-key", "adm", &url, "c1", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    sigterm(&sub.child);
    assert_eq!(wait_exit(&mut sub.child).code(), Some(0), "{:#?}", sub.err);
    assert_eq!(sub.out.len(), 3, "{:#?}", sub.out);
}
