//! Scale: many concurrent clients connect, subscribe to one channel, and each
//! receives every one of 100 publishes, in order, none lost.
//!
//! The clients live in a child process (this test binary re-run as
//! [`load_client_process`]), one thread driving all of them with `polling`:
//! the server's sockets and the clients' then have a descriptor limit each
//! (10,000 + 10,000 would not fit one process under a 20,000 limit), and the
//! client side costs no thread per client.
//!
//! In a debug build on an otherwise idle 2-core machine the tests take about
//! 1 s (blocking, 2,000 clients) and 4 s (smol, tokio, 10,000 clients each),
//! so they run in the default `cargo test`, one at a time (they share a lock:
//! each needs most of the descriptor limit and both cores). On a machine busy
//! with other work they have taken up to 30-40 s; each fails after 60 s
//! (`WSHUB_SCALE_LIMIT_SECS` changes that). Optimised, e.g. in CI:
//! `cargo test --release --test scale -- --nocapture`.
//!
//! Each test prints its timings to stderr (`--nocapture` to see them).

mod adapters;
mod loadgen;
mod suite;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use adapters::{Blocking, Smol, Tokio};
use serde_json::json;
use suite::Adapter;
use wshub_core::{HubConfig, Message};

/// Publishes each client must receive.
const MESSAGES: usize = 100;
const CHANNEL: &str = "scale";
/// Each scale test fails past this many seconds (default 60); raise it with
/// `WSHUB_SCALE_LIMIT_SECS` on a machine busy with other work.
const LIMIT_ENV: &str = "WSHUB_SCALE_LIMIT_SECS";
/// Set in the child's environment: "<addr> <clients> <messages> <seconds>".
const CHILD_ENV: &str = "WSHUB_SCALE_CHILD";

/// One scale test at a time: each needs most of the descriptor limit and
/// both cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn blocking_2000_clients() {
    scale::<Blocking>(2_000);
}

#[test]
fn smol_10000_clients() {
    scale::<Smol>(10_000);
}

#[test]
fn tokio_10000_clients() {
    scale::<Tokio>(10_000);
}

/// Not a test of its own: the load client process the scale tests start.
/// Does nothing unless started by one of them.
#[test]
fn load_client_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [addr, clients, messages, secs] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let plan = loadgen::Plan {
        addr: addr.parse().unwrap(),
        clients: clients.parse().unwrap(),
        channel: CHANNEL.into(),
        messages: messages.parse().unwrap(),
        // Below the 128 backlog std's (and so smol's) listeners use.
        max_connecting: 64,
        deadline: Instant::now() + Duration::from_secs(secs.parse().unwrap()),
    };
    let need = plan.clients as u64 + 64;
    let have = loadgen::raise_fd_limit(need);
    assert!(have >= need, "need {need} open files, the limit is {have}");
    let report = loadgen::run(&plan, |t| {
        println!("SCALE connected {} in {:.2?}", plan.clients, t);
    });
    match report {
        Ok(r) => println!(
            "SCALE OK received {} connected {:.2?} total {:.2?}",
            r.received, r.connected, r.total
        ),
        Err(e) => {
            println!("SCALE FAIL {e}");
            panic!("{e}");
        }
    }
}

fn limit() -> Duration {
    let secs = std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn config() -> HubConfig {
    HubConfig {
        // 100 back-to-back publishes must not overflow anyone's queue.
        max_queued_messages: 1024,
        max_queued_bytes: 4 << 20,
        handshake_timeout: limit(),
        ping_interval: Duration::from_secs(600),
        pong_timeout: Duration::from_secs(1200),
        write_timeout: limit(),
        ..HubConfig::default()
    }
}

/// The load client process, its output so far (stdout lines) and its stderr
/// at the end. Killed when dropped, so a failed test leaves no clients behind.
struct LoadProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for LoadProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoadProcess {
    fn new(mut child: Child) -> LoadProcess {
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
        LoadProcess {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    fn scale_lines(&self) -> Vec<&str> {
        self.seen
            .iter()
            .filter(|l| l.starts_with("SCALE "))
            .map(String::as_str)
            .collect()
    }

    /// Ends the child; everything it said, for a failure message.
    fn dump(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        let stderr = self.stderr.take().and_then(|t| t.join().ok());
        format!(
            "child stdout:\n{}\nchild stderr:\n{}",
            self.seen.join("\n"),
            stderr.unwrap_or_default()
        )
    }
}

fn scale<A: Adapter>(clients: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let start = Instant::now();
    let deadline = start + limit();
    // The blocking adapter keeps three descriptors per connection (the stream
    // and one clone for each of its reader and writer threads).
    let per_conn = if A::NAME == "blocking" { 3 } else { 1 };
    let need = (clients * per_conn + 256) as u64;
    let have = loadgen::raise_fd_limit(need);
    assert!(have >= need, "need {need} open files, the limit is {have}");

    let s = A::start(config(), None);
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "load_client_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{} {clients} {MESSAGES} {}", s.addr(), limit().as_secs()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut load = LoadProcess::new(child);

    // Every client subscribed (as the hub sees it).
    loop {
        let n = s.subscriber_count(CHANNEL);
        if n == clients {
            break;
        }
        let exited = load.child.try_wait().unwrap();
        if exited.is_some() || Instant::now() >= deadline {
            let st = s.stats();
            panic!(
                "{}: {n} of {clients} subscribed ({} connections, {} pending) after {:.1?}, \
                 child {exited:?}\n{}",
                A::NAME,
                st.connections,
                st.pending,
                start.elapsed(),
                load.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let subscribed = start.elapsed();

    let published = Instant::now();
    let mut calls = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        let t = Instant::now();
        let got = s.publish(CHANNEL, Message::new("m", json!(n)));
        calls.push(t.elapsed());
        assert_eq!(got, clients, "{}: publish {n} reached {got}", A::NAME);
    }
    let publish_calls = published.elapsed();
    calls.sort();

    let status = loop {
        if let Some(status) = load.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}: deliveries not complete after {:.1?}\n{}",
                A::NAME,
                start.elapsed(),
                load.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let delivered = published.elapsed();
    // The stdout reader ends with the child's stdout.
    while let Ok(l) = load.lines.recv_timeout(Duration::from_secs(5)) {
        load.seen.push(l);
    }
    let ok = load.scale_lines().iter().any(|l| l.starts_with("SCALE OK"));
    if !status.success() || !ok {
        panic!(
            "{}: the load client failed ({status})\n{}",
            A::NAME,
            load.dump()
        );
    }
    let child_says = load.scale_lines().join("; ");
    drop(load);

    // The clients are gone: the server must free every connection.
    loop {
        let st = s.stats();
        if st.connections == 0 && st.pending == 0 && st.channels == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: state not freed after the clients left: {st:?}",
            A::NAME
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let freed = start.elapsed();
    assert!(s.shutdown(Duration::from_secs(5)), "{}: shutdown", A::NAME);
    eprintln!(
        "scale {}: {clients} clients x {MESSAGES} messages: all subscribed at {subscribed:.2?}, \
         {MESSAGES} publish calls took {publish_calls:.2?} (each: median {:.2?}, max {:.2?}), \
         all delivered {delivered:.2?} after \
         the first publish, state freed at {freed:.2?}, total {:.2?} [{child_says}]",
        A::NAME,
        calls[calls.len() / 2],
        calls[calls.len() - 1],
        start.elapsed()
    );
}
