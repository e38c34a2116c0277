//! History and recovery through the real `wshub serve`: the flags and config
//! keys take effect, bad values exit 2 naming the flag, `GET /api/history`
//! answers and refuses, the stats and metrics counters move, and a client
//! that drops and comes back with `recover` gets exactly what it missed, in
//! order, on every runtime (tungstenite here, Python's `websockets` once).

mod proc_log;
mod serve;

use proc_log::run_serve;
use serve::Ws;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_wshub");
const TOKEN: &str = "history-token";
const ADMIN: &str = "history-admin";

/// A running `wshub serve` with a known client token and admin key, killed
/// when dropped.
struct Serve {
    /// Killed when dropped.
    _node: serve::Serve,
    addr: String,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        Serve::start_without_admin(&[&["--admin-key", ADMIN], args].concat())
    }

    /// A `wshub serve` with only the client token and `args`.
    fn start_without_admin(args: &[&str]) -> Serve {
        let token = format!("{TOKEN}=alice");
        let node = serve::Serve::start(&[&["--api-key", &token][..], args].concat());
        let addr = node.addr.clone();
        Serve { _node: node, addr }
    }

    fn client(&self) -> Ws {
        Ws::connect(&self.addr, TOKEN)
    }

    /// `POST /api/publish` of one event on `channel`; the delivery count.
    fn publish(&self, channel: &str, data: Value) -> u64 {
        let body = json!({"channel": channel, "data": data}).to_string();
        let (status, reply) = http(&self.addr, "POST", "/api/publish", Some(ADMIN), &body);
        assert_eq!(status, 200, "{reply}");
        reply["delivered"].as_u64().unwrap()
    }

    /// `GET target` with the admin key: the status and the JSON body.
    fn get(&self, target: &str) -> (u16, Value) {
        http(&self.addr, "GET", target, Some(ADMIN), "")
    }

    fn stats(&self) -> Value {
        let (status, v) = http(&self.addr, "GET", "/api/stats", None, "");
        assert_eq!(status, 200);
        v
    }

    fn metrics(&self) -> String {
        let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        serve::raw(&self.addr, req, false)
    }
}

/// One plain HTTP request (with the admin key as a bearer if given): the
/// status and the body as JSON (`null` when it is not JSON).
fn http(addr: &str, method: &str, target: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let r = serve::http(addr, method, target, key, body);
    (r.status, r.json)
}

/// Waits until `f` holds (the hub notices a drop on its own time).
fn eventually(what: &str, f: impl FnMut() -> bool) {
    serve::eventually(what, WAIT, f);
}

#[test]
fn bad_history_values_exit_2_naming_the_flag() {
    for (args, says) in [
        (&["--history", "process:*"][..], "--history: "),
        (&["--history", "*=many"], "--history: "),
        (&["--history", "*=5,forever"], "--history: "),
        (&["--history", "=5"], "--history: "),
        (&["--history-max-bytes", "0"], "--history-max-bytes: "),
        (&["--history-max-bytes", "lots"], "--history-max-bytes: "),
        (&["--history-meta-ttl", "0s"], "--history-meta-ttl: "),
        (&["--history-max-replay", "0"], "--history-max-replay: "),
        (&["--history-max-replay", "-4"], "--history-max-replay: "),
    ] {
        let (code, stderr) = run_serve(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let path = proc_log::config_file(
        "cli-history",
        "bad",
        "history = [\"process:*=5000,whenever\"]\n",
    );
    let (code, stderr) = run_serve(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("wshub.toml: key `history`: "), "{stderr}");
}

#[test]
fn history_off_subscribes_plainly_with_an_empty_epoch() {
    let s = Serve::start(&["--history", "*=0"]);
    let mut c = s.client();
    let ack = c.subscribe("news", json!({"positions": true}));
    assert_eq!(
        ack,
        json!({"recovered": false, "offset": 0, "epoch": "", "replayed": 0})
    );
    s.publish("news", json!("plain"));
    let m = c.next();
    assert_eq!(m["data"], "plain");
    assert!(m.get("offset").is_none(), "no offsets without history: {m}");
    let (status, body) = s.get("/api/history?channel=news");
    assert_eq!(status, 404, "{body}");
    assert_eq!(s.stats()["history_messages"], 0);
}

#[test]
fn rules_sizes_and_config_keys_take_effect() {
    // First match wins in the order given; other channels keep the default.
    let path = proc_log::config_file(
        "cli-history",
        "rules",
        "history = [\"small=2\", \"s*=0\"]\nhistory-max-replay = 3\n",
    );
    let s = Serve::start(&["--config", path.to_str().unwrap()]);
    for n in 1..=5 {
        s.publish("small", json!(n));
        s.publish("other", json!(n));
    }
    let (status, page) = s.get("/api/history?channel=small");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["offset"], 5);
    let offsets: Vec<&Value> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["offset"])
        .collect();
    assert_eq!(offsets, [&json!(4), &json!(5)], "size 2: the newest two");
    assert_eq!(s.get("/api/history?channel=smaller").0, 404, "s*=0");
    // history-max-replay = 3 is the default and largest limit.
    let (_, page) = s.get("/api/history?channel=other");
    assert_eq!(page["publications"].as_array().unwrap().len(), 3);
    assert_eq!(s.get("/api/history?channel=other&limit=4").0, 400);
    drop(s);

    // A flag replaces the file's list.
    let s = Serve::start(&["--config", path.to_str().unwrap(), "--history", "small=4"]);
    for n in 1..=5 {
        s.publish("smaller", json!(n));
    }
    let (status, page) = s.get("/api/history?channel=smaller");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["publications"].as_array().unwrap().len(),
        3,
        "default rule, replay 3"
    );
}

#[test]
fn api_history_answers_and_refuses() {
    let s = Serve::start(&[]);
    for n in 1..=6 {
        s.publish("feed", json!({ "n": n }));
    }
    let (status, page) = s.get("/api/history?channel=feed&since=3&limit=2");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["channel"], "feed");
    assert_eq!(page["offset"], 6);
    let epoch = page["epoch"].as_str().unwrap();
    assert!(!epoch.is_empty(), "{page}");
    let pubs = page["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2);
    // Each is the message a positioned subscriber gets.
    assert_eq!(
        (
            &pubs[0]["type"],
            &pubs[0]["channel"],
            &pubs[0]["data"],
            &pubs[0]["offset"]
        ),
        (&json!("event"), &json!("feed"), &json!({"n": 4}), &json!(4))
    );
    assert_eq!(pubs[1]["offset"], 5);
    let (_, newest) = s.get("/api/history?channel=feed&limit=2");
    let offsets: Vec<u64> = newest["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [5, 6], "without since: the newest");
    assert_eq!(
        s.get("/api/history?channel=feed&since=6").1["publications"],
        json!([])
    );

    for (target, status) in [
        ("/api/history", 400),
        ("/api/history?channel=feed&since=7", 400),
        ("/api/history?channel=feed&since=minus", 400),
        ("/api/history?channel=feed&limit=0", 400),
        ("/api/history?channel=feed&limit=301", 400),
    ] {
        let (got, body) = s.get(target);
        assert_eq!(got, status, "{target}: {body}");
        assert!(body["error"].is_string(), "{target}: {body}");
    }
    let (status, _) = http(&s.addr, "GET", "/api/history?channel=feed", None, "");
    assert_eq!(status, 401);
    let (status, _) = http(
        &s.addr,
        "GET",
        "/api/history?channel=feed",
        Some("nope"),
        "",
    );
    assert_eq!(status, 401);
    // A client token is not the admin key.
    let (status, _) = http(&s.addr, "GET", "/api/history?channel=feed", Some(TOKEN), "");
    assert_eq!(status, 401);
}

#[test]
fn no_admin_key_no_history_api() {
    let s = Serve::start_without_admin(&[]);
    let (status, _) = http(&s.addr, "GET", "/api/history?channel=c", Some(ADMIN), "");
    assert_eq!(status, 403);
}

#[test]
fn resume_after_a_drop_blocking() {
    resume_after_a_drop("blocking");
}

#[test]
fn resume_after_a_drop_smol() {
    resume_after_a_drop("smol");
}

#[test]
fn resume_after_a_drop_tokio() {
    resume_after_a_drop("tokio");
}

/// A client subscribed with positions drops; messages published meanwhile
/// come back, exactly those and in order, when it resubscribes with
/// `recover`; then live ones follow. A recover from another epoch fails
/// cleanly. The stats and metrics count both.
fn resume_after_a_drop(runtime: &str) {
    let s = Serve::start(&["--runtime", runtime]);
    let mut c = s.client();
    let ack = c.subscribe("process:job", json!({"positions": true}));
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["replayed"], 0, "{ack}");
    let epoch = ack["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty(), "{ack}");
    let start = ack["offset"].as_u64().unwrap();
    for n in 1..=3 {
        assert_eq!(s.publish("process:job", json!(n)), 1);
    }
    let seen = c.messages(3);
    assert_eq!(
        seen,
        (1..=3).map(|n| (start + n, json!(n))).collect::<Vec<_>>()
    );
    let last = seen[2].0;
    c.close();
    eventually("the hub saw the drop", || s.stats()["connections"] == 0);

    for n in 4..=8 {
        assert_eq!(
            s.publish("process:job", json!(n)),
            0,
            "nobody is subscribed"
        );
    }
    let mut c = s.client();
    let ack = c.subscribe(
        "process:job",
        json!({"recover": {"offset": last, "epoch": epoch}}),
    );
    assert_eq!(
        ack,
        json!({"recovered": true, "offset": last + 5, "epoch": epoch, "replayed": 5})
    );
    let replayed = c.messages(5);
    assert_eq!(
        replayed,
        (4..=8).map(|n| (start + n, json!(n))).collect::<Vec<_>>(),
        "exactly the missed ones, in order"
    );
    s.publish("process:job", json!(9));
    assert_eq!(c.messages(1), [(start + 9, json!(9))], "then live");

    // Another epoch: recovered false, the current position, nothing replayed.
    let mut other = s.client();
    let ack = other.subscribe(
        "process:job",
        json!({"recover": {"offset": 2, "epoch": "someother"}}),
    );
    assert_eq!(
        ack,
        json!({"recovered": false, "offset": start + 9, "epoch": epoch, "replayed": 0})
    );
    s.publish("process:job", json!(10));
    assert_eq!(other.messages(1), [(start + 10, json!(10))]);
    assert_eq!(c.messages(1), [(start + 10, json!(10))]);

    let stats = s.stats();
    assert_eq!(stats["recoveries"], 1, "{stats}");
    assert_eq!(stats["recoveries_failed"], 1, "{stats}");
    assert_eq!(stats["history_messages"], 10, "{stats}");
    assert!(stats["history_bytes"].as_u64().unwrap() > 0, "{stats}");
    let metrics = s.metrics();
    for line in [
        "wshub_recoveries_total 1\n",
        "wshub_recoveries_failed_total 1\n",
        "wshub_history_messages 10\n",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
}

#[test]
fn the_global_byte_cap_evicts_and_counts() {
    let s = Serve::start(&["--history-max-bytes", "4KiB"]);
    let big = "x".repeat(500);
    for n in 0..20 {
        s.publish(&format!("c{}", n % 3), json!(big));
    }
    let stats = s.stats();
    assert!(stats["history_bytes"].as_u64().unwrap() <= 4096, "{stats}");
    assert!(stats["history_evictions"].as_u64().unwrap() > 0, "{stats}");
    assert!(s.metrics().contains("wshub_history_evictions_total "));
}

#[test]
fn ttls_take_effect() {
    // The history expires after its TTL; the position lives on for the
    // meta TTL, then a returning client is told it missed something.
    let s = Serve::start(&[
        "--history",
        "brief=10,1s",
        "--history",
        "gone=10,1s",
        "--history-meta-ttl",
        "1s",
    ]);
    let s_default = Serve::start(&["--history", "brief=10,1s"]);
    for srv in [&s, &s_default] {
        srv.publish("brief", json!(1));
        srv.publish("gone", json!(1));
    }
    let position = |srv: &Serve, c: &str| {
        let (_, page) = srv.get(&format!("/api/history?channel={c}"));
        assert_eq!(page["publications"].as_array().unwrap().len(), 1, "{page}");
        (page["offset"].clone(), page["epoch"].clone())
    };
    let kept = position(&s_default, "brief");
    let gone = position(&s, "gone");
    std::thread::sleep(Duration::from_millis(2500));
    let (_, page) = s_default.get("/api/history?channel=brief");
    assert_eq!(page["publications"], json!([]), "expired after 1s: {page}");
    assert_eq!((page["offset"].clone(), page["epoch"].clone()), kept);
    // Nothing was missed and the position is still known: recovered.
    let mut c = s_default.client();
    let ack = c.subscribe(
        "brief",
        json!({"recover": {"offset": kept.0, "epoch": kept.1}}),
    );
    assert_eq!(ack["recovered"], true, "{ack}");
    // With a 1 s meta TTL the position is forgotten: not recovered.
    let mut c = s.client();
    let ack = c.subscribe(
        "gone",
        json!({"recover": {"offset": gone.0, "epoch": gone.1}}),
    );
    assert_eq!(ack["recovered"], false, "{ack}");
}

/// The venv's python (tests/python/setup.sh, as tests/python_clients.rs
/// makes it).
fn venv_python() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = repo.join("target").join("pyvenv");
    let out = Command::new("sh")
        .arg(repo.join("tests/python/setup.sh"))
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/python/setup.sh");
    assert!(
        out.status.success(),
        "tests/python/setup.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin").join("python3")
}

#[test]
fn python_websockets_resumes() {
    let s = Serve::start(&["--runtime", "tokio"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/recover_check.py");
    let out = Command::new(venv_python())
        .arg(script)
        .arg(format!("ws://{}/ws?token={TOKEN}", s.addr))
        .arg(format!("http://{}", s.addr))
        .arg(ADMIN)
        .stdin(Stdio::null())
        .output()
        .expect("run recover_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK recovered 4 in order"),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// A TCP proxy in front of a server whose connections the test can cut, as
/// a network drop would: `cut` shuts every connection through it and
/// refuses new ones until `restore`, which may point it at another server.
struct Proxy {
    addr: String,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    upstream: Option<String>,
    open: Vec<TcpStream>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            upstream: Some(upstream.to_owned()),
            open: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut st = shared.lock().unwrap();
                let Some(server) = st
                    .upstream
                    .as_ref()
                    .and_then(|u| TcpStream::connect(u).ok())
                else {
                    continue; // refused: dropped at once
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                st.open.extend([client, server]);
            }
        });
        Proxy { addr, state }
    }

    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.upstream = None;
        for s in st.open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self, upstream: &str) {
        self.state.lock().unwrap().upstream = Some(upstream.to_owned());
    }
}

/// `wshub sub` as a child process: its stdout and stderr lines.
struct Sub {
    child: Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    err: Vec<String>,
}

impl Sub {
    fn start(url: &str, channel: &str) -> Sub {
        let mut child = Command::new(BIN)
            .args(["sub", "--token", TOKEN, url, channel])
            .env_remove("WSHUB_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Sub {
            stdout: proc_log::lines(child.stdout.take().unwrap()),
            stderr: proc_log::lines(child.stderr.take().unwrap()),
            child,
            err: Vec::new(),
        }
    }

    /// Waits for a stderr line holding `what`; returns it.
    fn wait_log(&mut self, what: &str) -> String {
        let deadline = std::time::Instant::now() + 2 * WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.err.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no {what:?} from wshub sub; stderr: {:#?}", self.err),
            }
        }
    }

    /// The data of the next `n` lines on stdout.
    fn data(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| {
                let line = self
                    .stdout
                    .recv_timeout(WAIT)
                    .unwrap_or_else(|_| panic!("no line on stdout; stderr: {:#?}", self.err));
                serde_json::from_str::<Value>(&line).unwrap()["data"].clone()
            })
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn wshub_sub_resumes_across_a_drop_and_says_when_it_cannot() {
    let s = Serve::start(&[]);
    let proxy = Proxy::start(&s.addr);
    let mut sub = Sub::start(&format!("ws://{}/ws", proxy.addr), "process:sub");
    sub.wait_log("subscribed to process:sub");
    for n in 1..=2 {
        s.publish("process:sub", json!(n));
    }
    assert_eq!(sub.data(2), [json!(1), json!(2)]);

    proxy.cut();
    sub.wait_log("disconnected");
    for n in 3..=5 {
        s.publish("process:sub", json!(n));
    }
    proxy.restore(&s.addr);
    let line = sub.wait_log("resumed process:sub");
    assert!(line.contains("3 missed message(s) replayed"), "{line}");
    s.publish("process:sub", json!(6));
    assert_eq!(
        sub.data(4),
        [json!(3), json!(4), json!(5), json!(6)],
        "the missed ones once each, in order, then live"
    );

    // Back on another hub (a restart, a failover): another epoch, which
    // cannot be recovered from, and says so.
    let other = Serve::start(&[]);
    proxy.cut();
    sub.wait_log("disconnected");
    proxy.restore(&other.addr);
    let line = sub.wait_log("could not recover process:sub");
    assert!(line.contains("may be missing"), "{line}");
    eventually("resubscribed on the other hub", || {
        other.stats()["subscribers"]["process:sub"] == 1
    });
    other.publish("process:sub", json!(7));
    assert_eq!(sub.data(1), [json!(7)], "and goes on live");
}
