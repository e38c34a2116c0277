//! Shared by the `e2e` and `broker` benches: the server child (the bench
//! binary re-executed with `--serve <kind>`, see `server.rs`) and its command
//! pipe, and the small statistics both report.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The server child and its command pipe.
pub struct ServerProc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pub pid: u32,
    pub port: u16,
}

impl ServerProc {
    pub fn start(kind: &str, cpu: Option<usize>, publisher: &str) -> Result<ServerProc, String> {
        ServerProc::start_with(kind, cpu, publisher, &[])
    }

    /// [`ServerProc::start`] with more arguments for the child (e.g.
    /// `--broker <url>`).
    pub fn start_with(
        kind: &str,
        cpu: Option<usize>,
        publisher: &str,
        extra: &[&str],
    ) -> Result<ServerProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args(["--serve", kind, "--cpu"])
            .arg(cpu.map_or("none".to_owned(), |c| c.to_string()))
            .args(["--publisher", publisher])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn server: {e}"))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => return Err("server pipes missing".into()),
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        let mut proc = ServerProc {
            child,
            stdin,
            lines,
            pid,
            port: 0,
        };
        let first = proc.recv(Duration::from_secs(20))?;
        proc.port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("server said {first:?}"))?;
        Ok(proc)
    }

    pub fn send(&mut self, cmd: &str) -> Result<(), String> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("server stdin: {e}"))
    }

    pub fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| "no answer from the server".to_owned())
    }

    /// Sends `cmd`; returns the answer's words after the first.
    pub fn ask(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<u64>, String> {
        self.send(cmd)?;
        let line = self.recv(timeout)?;
        let mut words = line.split_whitespace();
        words.next();
        words
            .map(|w| w.parse().map_err(|_| format!("server answered {line:?}")))
            .collect()
    }

    pub fn quit(mut self) {
        let _ = self.send("quit");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `done` every millisecond until it holds or `timeout` passes.
/// Waits until `received` reaches `expected`, or nothing arrived for
/// `drain`: true when everything arrived.
pub fn drain(received: &std::sync::atomic::AtomicU64, expected: u64, drain: Duration) -> bool {
    let mut last = u64::MAX;
    let mut last_change = std::time::Instant::now();
    loop {
        let got = received.load(std::sync::atomic::Ordering::SeqCst);
        if got >= expected {
            return true;
        }
        if got != last {
            last = got;
            last_change = std::time::Instant::now();
        } else if last_change.elapsed() >= drain {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `cargo bench -p wshub-benches -- <filter>` (which passes the
/// filter to every target, criterion's or not) names another target than
/// `name`; says so on stderr.
pub fn filtered_out(args: &[String], name: &str) -> bool {
    let filters: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let other = !filters.is_empty()
        && !filters
            .iter()
            .any(|f| name.contains(f.as_str()) || f.contains(name));
    if other {
        eprintln!("{name}: skipped (filter {filters:?})");
    }
    other
}

/// The argument after `flag`, if any.
pub fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}
pub fn secs(ns: u64) -> f64 {
    (ns.max(1) as f64) / 1e9
}

/// The q-quantile of sorted ns values, in µs.
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
