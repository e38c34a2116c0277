//! A real client nobody here wrote: Python's `websockets` library
//! (tests/python/client_check.py) against every adapter.
//!
//! The first test to run creates the venv at target/pyvenv with
//! tests/python/setup.sh (idempotent, locked; needs python3 >= 3.11 and, the
//! first time, network access to PyPI).

mod adapters;
mod suite;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use adapters::{Blocking, Smol, Tokio};
use serde_json::json;
use suite::{eventually, Adapter, Running};
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::{CloseReason, Event, HubConfig, Message};

/// Time for the script (interpreter start included) to reach each mark.
const STEP: Duration = Duration::from_secs(20);

#[test]
fn python_websockets_blocking() {
    python_client::<Blocking>();
}

#[test]
fn python_websockets_smol() {
    python_client::<Smol>();
}

#[test]
fn python_websockets_tokio() {
    python_client::<Tokio>();
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, after running setup.sh once per test process.
fn venv_python() -> PathBuf {
    static SETUP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let venv = repo().join("target").join("pyvenv");
            let out = Command::new("sh")
                .arg(repo().join("tests/python/setup.sh"))
                .arg(&venv)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running tests/python/setup.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "tests/python/setup.sh failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(venv.join("bin").join("python3"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn config() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new([
                ("key-alice".to_string(), "alice".to_string()),
                ("key-bob".to_string(), "bob".to_string()),
            ])
            .source(TokenSource::BearerOrQuery("token".into())),
        ),
        ..HubConfig::default()
    }
}

/// The script's stdout, line by line, and its stderr at the end.
struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// A failed test leaves no script running.
impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Script {
    fn start(url: &str) -> Script {
        let mut child = Command::new(venv_python())
            .arg(repo().join("tests/python/client_check.py"))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tests/python/client_check.py");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Script {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Reads lines until `mark`; panics with the whole output on a `FAIL`,
    /// the end of output, or the time running out.
    fn expect_line(&mut self, mark: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == mark;
                    let failed = line.starts_with("FAIL");
                    self.seen.push(line);
                    if done {
                        return;
                    }
                    if failed {
                        self.fail(&format!("the script failed before {mark:?}"));
                    }
                }
                Err(_) => self.fail(&format!("no {mark:?} from the script")),
            }
        }
    }

    fn wait_success(&mut self) {
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                self.fail("the script did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            self.fail(&format!("the script exited with {status}"));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        panic!(
            "{what}\nscript stdout:\n{}\nscript stderr:\n{stderr}",
            self.seen.join("\n")
        );
    }
}

fn python_client<A: Adapter>() {
    let s = A::start(config(), None);
    let mut script = Script::start(&format!("ws://{}/ws", s.addr()));
    script.expect_line("OK wrong token refused with 401 (query and bearer)");
    script.expect_line("READY");
    // alice's level-0 subscribe has no reply: wait until the hub has it.
    eventually("alice subscribed", || s.subscriber_count("process:p1") == 1);
    assert_eq!(
        s.publish(
            "process:p1",
            Message::process_output("p1", "hello from rust")
        ),
        1
    );
    assert_eq!(
        s.publish("news", Message::event("headline", json!({"n": 1}))),
        1
    );
    assert_eq!(
        s.publish("alerts", Message::new("alert", json!("disk full"))),
        1
    );
    script.expect_line("OK published messages received");
    script.expect_line("OK ping answered with pong");
    script.expect_line("OK closed with 1000");
    script.expect_line("DONE");
    script.wait_success();
    check_events(&*s, A::NAME);
}

/// Two auth failures (401), alice and bob connected, and both closed by the
/// peer with 1000 (as the server saw it).
fn check_events(s: &dyn Running, adapter: &str) {
    let mut auth_failed = 0;
    let mut connected = Vec::new();
    let mut closed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(e) = s.next_event(left) else {
            panic!(
                "{adapter}: events missing: {auth_failed} auth failures, connected \
                 {connected:?}, closed {closed:?}"
            );
        };
        match e {
            Event::AuthFailed { status, .. } => {
                assert_eq!(status, 401, "{adapter}");
                auth_failed += 1;
            }
            Event::Connected { identity, .. } => connected.push(identity.user_id),
            Event::Closed {
                was_connected: true,
                reason,
                code,
                user_id,
                ..
            } => closed.push((user_id.unwrap_or_default(), reason, code)),
            _ => {}
        }
    }
    assert_eq!(auth_failed, 2, "{adapter}: auth failures");
    connected.sort();
    assert_eq!(connected, ["alice", "bob"], "{adapter}: connected");
    closed.sort_by(|a, b| a.0.cmp(&b.0));
    for (user, (who, reason, code)) in ["alice", "bob"].iter().zip(&closed) {
        assert_eq!(who, user, "{adapter}: closed {closed:?}");
        assert_eq!(
            (reason, code),
            (&CloseReason::PeerClosed(Some(1000)), &Some(1000)),
            "{adapter}: {user} closed"
        );
    }
    eventually("no connections left", || s.stats().connections == 0);
}
