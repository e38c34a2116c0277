//! Reading a child `wshub` process's output in tests: its lines on a
//! channel, and the address from its "listening on ws://ADDR/ws" log line
//! (the same words in the human and JSON log formats).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

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
