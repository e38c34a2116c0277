//! Drives the sans-IO client (`wshub_core::client::Client`) through the
//! Autobahn|Testsuite fuzzingserver: for every case, connect, echo each text
//! and binary message, and finish when the server closes.
//!
//! `cargo run -p wshub-blocking --example autobahn_client -- ws://127.0.0.1:9001`
//! (the runner `conformance/autobahn/check-client.sh` does this for you).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wshub_core::backoff::BackoffPolicy;
use wshub_core::client::{Client, ClientConfig, ClientEvent, Endpoint};

/// Runs one connection to `url` until the server closes it; returns the text
/// messages received (for `getCaseCount`).
fn run(url: &str, echo: bool) -> Result<Vec<String>, String> {
    let endpoint = Endpoint::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let mut cfg = ClientConfig::new(vec![endpoint]);
    cfg.backoff = BackoffPolicy {
        max_retries: Some(0),
        ..BackoffPolicy::default()
    };
    // No application pings or dead-server timer: the suite's payloads only.
    cfg.ping_interval = Duration::from_secs(24 * 3600);
    cfg.dead_timeout = Duration::from_secs(48 * 3600);
    cfg.max_message_size = 64 * 1024 * 1024;
    let start = Instant::now();
    let mut client = Client::new(cfg, start, 0x5eed).map_err(|e| e.to_string())?;
    client.start(start);
    let mut socket: Option<TcpStream> = None;
    let mut texts = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        client.handle_timeout(now);
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Connect { endpoint, .. } => {
                    match TcpStream::connect((endpoint.host.as_str(), endpoint.port)) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            socket = Some(s);
                            client.handle_connected(Instant::now());
                        }
                        Err(_) => client.handle_connect_failed(Instant::now()),
                    }
                }
                ClientEvent::Text(t) => {
                    if echo {
                        let _ = client.send_text(Instant::now(), &t);
                    }
                    texts.push(t);
                }
                ClientEvent::Binary(b) if echo => {
                    let _ = client.send_binary(Instant::now(), &b);
                }
                ClientEvent::CloseSocket => {
                    flush(&mut client, &mut socket);
                    return Ok(texts);
                }
                ClientEvent::GaveUp | ClientEvent::Closed | ClientEvent::AuthFailed { .. } => {
                    return Ok(texts)
                }
                ClientEvent::Disconnected { .. } => return Ok(texts),
                _ => {}
            }
        }
        flush(&mut client, &mut socket);
        let Some(s) = socket.as_mut() else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let wait = client
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let _ = s.set_read_timeout(Some(wait));
        match s.read(&mut buf) {
            Ok(0) => client.handle_eof(Instant::now()),
            Ok(n) => client.handle_read(Instant::now(), &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => client.handle_io_error(Instant::now()),
        }
    }
}

fn flush(client: &mut Client, socket: &mut Option<TcpStream>) {
    while let Some(bytes) = client.poll_transmit() {
        if let Some(s) = socket.as_mut() {
            if s.write_all(&bytes).is_err() {
                client.handle_io_error(Instant::now());
                return;
            }
        }
    }
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("AUTOBAHN_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = "wshub-client";
    let count: usize = match run(&format!("{base}/getCaseCount"), false) {
        Ok(texts) => texts
            .first()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("autobahn_client: {count} cases");
    for case in 1..=count {
        if let Err(e) = run(&format!("{base}/runCase?case={case}&agent={agent}"), true) {
            eprintln!("case {case}: {e}");
        }
    }
    let _ = run(&format!("{base}/updateReports?agent={agent}"), false);
}
