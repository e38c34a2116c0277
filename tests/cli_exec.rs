//! `wshub exec` end to end: the real binary, as child processes, streaming a
//! command's output to a real `wshub serve` (HTTP API) or to its own
//! in-process hub (`--serve`), watched by a WebSocket client.

mod proc_log;

use proc_log::{lines, serve_command};
use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

const WAIT: Duration = Duration::from_secs(8);
const BIN: &str = env!("CARGO_BIN_EXE_wshub");

fn wait_line<T>(rx: &Receiver<String>, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(t) = pick(&line) {
                    return t;
                }
                seen.push(line);
            }
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
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

/// Kills the child when dropped (a failing test leaves nothing behind).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A WebSocket client subscribed to `channel` (acknowledged).
fn subscriber(addr: &str, token: &str, channel: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws?token={token}"), stream)
        .expect("WebSocket upgrade");
    let sub = json!({"type": "subscribe", "channel": channel, "id": 1});
    ws.send(WsMessage::text(sub.to_string())).unwrap();
    let ack = next_json(&mut ws);
    assert_eq!(
        (&ack["type"], &ack["id"]),
        (&json!("ack"), &json!(1)),
        "{ack}"
    );
    ws
}

fn next_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("a message") {
            WsMessage::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            WsMessage::Binary(_) | WsMessage::Close(_) => panic!("unexpected frame"),
            _ => {}
        }
    }
}

/// Reads until the `process_status`; returns the output lines and the status.
fn collect_process(ws: &mut WebSocket<TcpStream>, id: &str) -> (Vec<String>, Value) {
    let mut out = Vec::new();
    loop {
        let m = next_json(ws);
        assert_eq!(m["channel"], format!("process:{id}"), "{m}");
        assert_eq!(m["processId"], id, "{m}");
        match m["type"].as_str() {
            Some("process_output") => out.push(m["data"].as_str().unwrap().to_owned()),
            Some("process_status") => return (out, m["data"].clone()),
            _ => panic!("unexpected {m}"),
        }
    }
}

fn exec(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("exec")
        .args(args)
        .env_remove("WSHUB_ADMIN_KEY")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn streams_to_a_running_server_through_the_api() {
    let mut server = Command::new(BIN)
        .args(["serve", "--runtime", "blocking", "--listen", "127.0.0.1:0"])
        .args(["--api-key", "k=u", "--admin-key", "adm"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(server.stderr.take().unwrap());
    let _server = Reap(server);
    let addr = wait_line(&stderr, "listening line", proc_log::listening_addr);
    let mut ws = subscriber(&addr, "k", "process:t1");

    let url = format!("ws://{addr}/ws");
    let out = exec(&["--url", &url, "--admin-key", "adm", "--id", "t1", "--"])
        .args(["sh", "-c", "echo one; echo two >&2; exit 3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("process:t1"), "{err}");
    assert!(!err.contains("cannot publish"), "{err}");

    let (mut lines, status) = collect_process(&mut ws, "t1");
    lines.sort();
    assert_eq!(lines, ["one", "two"]);
    assert_eq!(status, json!({"status": "exited", "exitCode": 3}));

    // http://host:port works too, and the key may come from the environment.
    let out = exec(&["--url", &format!("http://{addr}"), "--id", "t1", "true"])
        .env("WSHUB_ADMIN_KEY", "adm")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (lines, status) = collect_process(&mut ws, "t1");
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(status, json!({"status": "exited", "exitCode": 0}));
}

#[test]
fn serves_its_own_hub_with_the_page_url() {
    let mut child = exec(&["--serve", "127.0.0.1:0", "--linger", "300ms", "--"])
        .args(["sh", "-c", "sleep 1; echo hi; echo 'caf\u{e9}'; exit 4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut child = Reap(child);
    // http://ADDR/?token=T&channel=process:ID
    let (addr, token, channel) = wait_line(&stdout, "page URL", |l| {
        let rest = l.strip_prefix("http://")?;
        let (addr, query) = rest.split_once("/?token=")?;
        let (token, channel) = query.split_once("&channel=")?;
        Some((addr.to_owned(), token.to_owned(), channel.to_owned()))
    });
    let id = channel.strip_prefix("process:").unwrap().to_owned();
    // The default id is the child's pid.
    assert!(id.parse::<u32>().is_ok(), "{id}");
    let mut ws = subscriber(&addr, &token, &channel);
    // The page and the API are served like `wshub serve` does.
    let mut http = TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    http.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let (lines, status) = collect_process(&mut ws, &id);
    assert_eq!(lines, ["hi", "caf\u{e9}"]);
    assert_eq!(status, json!({"status": "exited", "exitCode": 4}));
    // Graceful shutdown after the linger: a 1001 close.
    match ws.read() {
        Ok(WsMessage::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    assert_eq!(wait_exit(&mut child.0).code(), Some(4));
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.contains(&channel)), "{log:?}");
}

#[test]
fn exit_codes_mirror_the_process() {
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -9 $$", 137),
    ] {
        let out = exec(&["--serve", "127.0.0.1:0", "--linger", "10ms", "--"])
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{script}");
    }
}

#[test]
fn a_missing_command_exits_127_and_bad_arguments_2() {
    let out = exec(&["--serve", "127.0.0.1:0", "--", "/no/such/command-xyz"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains("cannot run `/no/such/command-xyz`"), "{err}");

    for args in [
        &["--serve", "127.0.0.1:0"][..],
        &["--url", "ws://127.0.0.1:1/ws", "--", "true"],
        &["--bogus", "--", "true"],
        &["--", "true"],
    ] {
        let out = exec(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// A `wshub serve` with an admin key and `extra` flags: the process, its
/// address and its log lines.
fn serve_with_admin(extra: &[&str]) -> (Reap, String, Receiver<String>) {
    let mut server = serve_command()
        .args(["--runtime", "blocking", "--listen", "127.0.0.1:0"])
        .args(["--api-key", "k=u", "--admin-key", "adm"])
        .args(extra)
        .spawn()
        .unwrap();
    let stderr = lines(server.stderr.take().unwrap());
    let server = Reap(server);
    let addr = wait_line(&stderr, "listening line", proc_log::listening_addr);
    (server, addr, stderr)
}

#[test]
fn interleaved_stdout_and_stderr_lines_arrive_in_the_order_printed() {
    let (_server, addr, _log) = serve_with_admin(&[]);
    let mut ws = subscriber(&addr, "k", "process:order");
    // Paced, so that each line has been read before the next is printed:
    // the order is then the one the OS saw, which both pipes' lines keep
    // through exec's single queue.
    let script =
        "for i in 1 2 3 4 5 6; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done";
    let url = format!("ws://{addr}/ws");
    let child = exec(&["--url", &url, "--admin-key", "adm", "--id", "order", "--"])
        .args(["sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let (lines, status) = collect_process(&mut ws, "order");
    let want: Vec<String> = (1..=6)
        .flat_map(|i| [format!("out{i}"), format!("err{i}")])
        .collect();
    assert_eq!(lines, want);
    assert_eq!(status, json!({"status": "exited", "exitCode": 0}));
    assert_eq!(wait_exit(&mut child.0).code(), Some(0));
}

#[test]
fn many_lines_go_in_few_requests_and_in_order() {
    // The subscriber reads while exec runs; roomy queues all the same, so
    // that a slow test thread is not cut as a slow consumer.
    let (_server, addr, log) = serve_with_admin(&[
        "--log-level",
        "debug",
        "--max-queued-messages",
        "100000",
        "--max-queued-bytes",
        "64MiB",
    ]);
    let mut ws = subscriber(&addr, "k", "process:many");
    const LINES: usize = 3000;
    let url = format!("ws://{addr}/ws");
    let child = exec(&["--url", &url, "--admin-key", "adm", "--id", "many", "--"])
        .args(["seq", "1", &LINES.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let (lines, status) = collect_process(&mut ws, "many");
    let want: Vec<String> = (1..=LINES).map(|i| i.to_string()).collect();
    assert!(
        lines == want,
        "{} lines, not 1..={LINES} in order",
        lines.len()
    );
    assert_eq!(status, json!({"status": "exited", "exitCode": 0}));
    assert_eq!(wait_exit(&mut child.0).code(), Some(0));
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("cannot publish"), "{err}");

    // The server logs each HTTP request at debug level; every one was
    // answered before exec exited, so the lines are on their way.
    let mut requests = 0;
    let mut conns = std::collections::BTreeSet::new();
    while let Ok(line) = log.recv_timeout(Duration::from_millis(500)) {
        if line.contains("path=/api/publish") {
            assert!(line.contains("status=200"), "{line}");
            requests += 1;
            let conn = line.split_whitespace().find(|w| w.starts_with("conn="));
            conns.insert(conn.expect("the http line names its connection").to_owned());
        }
    }
    // All of them over one kept-alive connection (issue 10): ureq's agent
    // reuses it, the server never says `Connection: close` to it.
    assert_eq!(conns.len(), 1, "{requests} requests over {conns:?}");
    // At most 256 lines a request, then one for the status; far fewer than
    // one request per line.
    assert!(
        (LINES / 256 + 2..=60).contains(&requests),
        "{requests} requests for {LINES} lines"
    );
}

#[test]
fn lines_that_grow_when_escaped_still_fit_the_servers_body_limit() {
    // A control character is six bytes of JSON (\u0001): batches are
    // measured as the JSON they become, not as the lines' text.
    let (_server, addr, _log) = serve_with_admin(&[
        "--max-queued-messages",
        "100000",
        "--max-queued-bytes",
        "64MiB",
    ]);
    let mut ws = subscriber(&addr, "k", "process:ctl");
    let script = "line=$(printf '\\001%.0s' $(seq 100)); yes \"$line\" | head -n 1000";
    let url = format!("ws://{addr}/ws");
    let out = exec(&["--url", &url, "--admin-key", "adm", "--id", "ctl", "--"])
        .args(["sh", "-c", script])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("cannot publish"), "{err}");
    let (lines, _) = collect_process(&mut ws, "ctl");
    assert_eq!(lines.len(), 1000);
    assert!(lines.iter().all(|l| l == &"\u{1}".repeat(100)));
}

/// Reads one HTTP response (head and `Content-Length` body) from `stream`,
/// `buf` holding what was read past the previous one.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let response: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return String::from_utf8(response).unwrap();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("a response within the wait");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn the_http_api_keeps_connections_alive_on_every_runtime() {
    for runtime in ["blocking", "smol", "tokio"] {
        let mut server = serve_command()
            .args(["--runtime", runtime, "--listen", "127.0.0.1:0"])
            .args(["--api-key", "k=u"])
            .spawn()
            .unwrap();
        let stderr = lines(server.stderr.take().unwrap());
        let _server = Reap(server);
        let addr = wait_line(&stderr, "listening line", proc_log::listening_addr);
        let mut http = TcpStream::connect(&addr).unwrap();
        http.set_read_timeout(Some(WAIT)).unwrap();
        let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        // Two pipelined in one write, then one more after reading them: all
        // answered in order on the one connection.
        std::io::Write::write_all(&mut http, format!("{get}{get}").as_bytes()).unwrap();
        let mut buf = Vec::new();
        for _ in 0..2 {
            let r = read_response(&mut http, &mut buf);
            assert!(
                r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"),
                "{runtime}: {r}"
            );
            assert!(!r.contains("Connection: close"), "{runtime}: {r}");
        }
        std::io::Write::write_all(
            &mut http,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let r = read_response(&mut http, &mut buf);
        assert!(r.contains("Connection: close\r\n"), "{runtime}: {r}");
        // Then the server closes it.
        let mut rest = Vec::new();
        http.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty() && buf.is_empty(), "{runtime}: {rest:?}");
    }
}
