//! The live page in a real headless browser: Debian's `chromium` driven by
//! `playwright-core` (tests/browser/page.test.mjs) against a real
//! `wshub serve` on loopback. Scenarios, asserting what the user sees:
//! subscribe through the page and see an API publish; a wrong token shows the
//! auth failure and never connects; `wshub exec` output appears line by line
//! with the exit badge; a long log keeps only its newest lines; a page whose
//! socket drops (a proxy cuts it) resumes with `recover` and shows every
//! line exactly once, in order; one that comes back to another hub says
//! output may be missing.
//!
//! Needs `/usr/bin/chromium`, node and tests/browser/node_modules: run
//! `tests/browser/install.sh` once. Without them this test fails (saying so)
//! unless `WSHUB_SKIP_BROWSER=1` is set.

mod proc_log;

use proc_log::lines;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wshub");
const TOKEN: &str = "browser-test-token";
const ADMIN_KEY: &str = "browser-test-admin";
/// The node script's own limit is 50 s; this one catches a hung node.
const NODE_LIMIT: Duration = Duration::from_secs(90);

/// Kills the child when dropped (a failing test leaves nothing behind).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_all(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut s);
        s
    })
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser tests, if anything.
fn missing(chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("Chromium ({} not found)", chromium.display()));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push("node (not on PATH)".into());
    }
    let module = browser_dir().join("node_modules/playwright-core/package.json");
    if !module.is_file() {
        missing.push(format!("playwright-core ({} not found)", module.display()));
    }
    missing
}

/// `wshub serve` on a free loopback port with known keys; its address.
fn serve() -> (Reap, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--api-key", &format!("{TOKEN}=alice")])
        .args(["--admin-key", ADMIN_KEY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wshub serve");
    let stderr = lines(child.stderr.take().unwrap());
    let child = Reap(child);
    let mut seen = Vec::new();
    let addr = proc_log::wait_listening(&stderr, &mut seen, Duration::from_secs(10));
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in stderr {});
    (child, addr)
}

#[test]
fn the_page_in_headless_chromium() {
    if std::env::var("WSHUB_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("browser tests SKIPPED (WSHUB_SKIP_BROWSER=1)");
        return;
    }
    let chromium = PathBuf::from(
        std::env::var("WSHUB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let missing = missing(&chromium);
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run tests/browser/install.sh \
         (or set WSHUB_SKIP_BROWSER=1 to skip them)",
        missing.join(", ")
    );

    let (_server, addr) = serve();
    let started = Instant::now();
    let mut node = Command::new("node")
        .arg("page.test.mjs")
        .current_dir(browser_dir())
        .env("WSHUB_TEST_URL", format!("http://{addr}"))
        .env("WSHUB_TEST_TOKEN", TOKEN)
        .env("WSHUB_TEST_ADMIN_KEY", ADMIN_KEY)
        .env("WSHUB_TEST_BIN", BIN)
        .env("WSHUB_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = read_all(node.stdout.take().unwrap());
    let stderr = read_all(node.stderr.take().unwrap());
    let mut node = Reap(node);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > NODE_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        // Killing node closes its pipes, so the readers finish.
        let _ = node.0.kill();
    }
    let out = stdout.join().unwrap();
    let err = stderr.join().unwrap();
    let report = format!("--- node stdout ---\n{out}--- node stderr ---\n{err}");
    let Some(status) = status else {
        panic!("the browser tests did not finish within {NODE_LIMIT:?}\n{report}");
    };
    assert!(
        status.success(),
        "the browser tests failed ({status})\n{report}"
    );
    for n in 1..=6 {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("ok {n} - "))),
            "scenario {n} did not pass\n{report}"
        );
    }
    assert!(!out.contains("not ok"), "{report}");
    // Shown with --nocapture.
    println!("{out}");
}
