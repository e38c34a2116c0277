//! Starting a child `wshub serve` in tests and reading its output: its
//! lines on a channel, and the address from its "listening on ws://ADDR/ws"
//! log line (the same words in the human and JSON log formats).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wshub");

/// `wshub serve`, for the caller's flags: stdin and stdout closed, stderr
/// piped for [`lines`], and `RUST_LOG` unset so only the flags set the log
/// level.
pub fn serve_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `wshub serve ARGS` to its exit (it is expected to refuse them): the
/// exit code and what it printed on stderr.
pub fn run_serve(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file holding `text`, in a fresh directory of its own for
/// `suite`'s test `test`.
pub fn config_file(suite: &str, test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-{suite}-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wshub.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The lines of `stream`, read on a thread of their own so the child never
/// blocks on a full pipe while the test waits.
pub fn lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `ADDR` from a "listening on ws://ADDR/ws" line.
pub fn listening_addr(line: &str) -> Option<String> {
    let rest = line.split("listening on ws://").nth(1)?;
    Some(rest.split("/ws").next()?.to_owned())
}

/// Reads `stderr` until the listening line, keeping every line in `log`;
/// panics with what it saw after `wait`.
pub fn wait_listening(stderr: &Receiver<String>, log: &mut Vec<String>, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            panic!("wshub serve printed no listening line; saw {log:#?}");
        };
        let addr = listening_addr(&line);
        log.push(line);
        if let Some(addr) = addr {
            return addr;
        }
    }
}
