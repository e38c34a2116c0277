//! `e2e`: end-to-end fan-out over loopback, each wshub adapter against a
//! tokio-tungstenite baseline hub in the same run. Not a test, never fails on
//! a time: it prints a table and writes it to `target/e2e-results.json`.
//!
//! ```sh
//! cargo bench -p wshub-benches --bench e2e
//! WSHUB_E2E_SIZES=100,1000 WSHUB_E2E_SERVERS=baseline,tokio cargo bench -p wshub-benches --bench e2e
//! ```
//!
//! For each server (baseline, blocking, smol, tokio) and each N (100, 1,000,
//! 10,000 subscribers):
//!
//! 1. The bench binary re-executes itself as a child, `--serve <kind>`, pinned
//!    to CPU 0 (`sched_setaffinity`); this process, the load generator, pins
//!    itself to the other CPUs. The child serves one hub on a loopback port of
//!    its own and takes commands on stdin (see `e2e/server.rs`).
//! 2. **Handshakes/s**: N clients connect and upgrade as fast as the server
//!    takes them (at most 64 handshakes in flight, so the listen backlog
//!    never drops a SYN); N / (time until the last 101).
//! 3. **RSS per idle connection**: the child's VmRSS after the N upgrades
//!    (and 300 ms to settle) minus before, over N.
//! 4. Every client subscribes (`{"type":"subscribe","data":"bench"}`); the
//!    child is asked until the channel has N subscribers.
//! 5. **Flood**: the child publishes M messages of 64 B data back to back
//!    through each server's own API, from a task on the server's runtime
//!    (or a thread: `WSHUB_E2E_PUBLISHER=thread`; the blocking adapter always
//!    uses a thread; see `e2e/server.rs`): a wshub publish returns once the hub
//!    has queued the message; the baseline's publish is a direct call into its
//!    channel map, followed by a yield. Each message's data starts with a
//!    CLOCK_MONOTONIC stamp taken just before the call; the generator reads
//!    it on receipt. **Deliveries/s** = messages received / (first publish to
//!    last receipt); **p50 / p99** publish-to-receive latency; **lost** =
//!    N x M - received after a 2 s drain timeout (no message for 2 s). Over
//!    the same window: the generator's CPU (getrusage) and the server's
//!    (/proc/<pid>/stat), in % of one CPU; and the server's system calls,
//!    all of them and socket writes (`write`, `writev`, `sendto`,
//!    `sendmsg`), per delivery, counted by `perf stat` on syscall
//!    tracepoints (skipped without perf; they add a little to every call).
//! 6. **Paced**: messages at a steady rate (50,000 deliveries/s in all, so
//!    500 / 50 / 5 messages/s at N = 100 / 1,000 / 10,000) for about a second
//!    (at least 10 messages): latency when no queue builds up.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test: N = 100 and 1,000, 5 messages flooded, 3 paced, no perf.
//!
//! Knobs (environment): `WSHUB_E2E_SIZES` (e.g. `100,1000`),
//! `WSHUB_E2E_SERVERS` (e.g. `baseline,tokio`), `WSHUB_E2E_MESSAGES`
//! (flood messages, one number for every N), `WSHUB_E2E_PACED` (deliveries/s
//! of the paced phase, 0 skips it), `WSHUB_E2E_PUBLISHER=task` (publish from
//! a task on the server's runtime instead of a thread; see `e2e/server.rs`),
//! `WSHUB_E2E_SYSCALLS=0` (no perf phase), `WSHUB_E2E_RUNS` (repeat
//! everything and report medians, default 1), `WSHUB_E2E_GEN_THREADS`
//! (default: one per CPU left to the generator), `WSHUB_E2E_HISTORY=off`
//! (wshub servers keep no history; the default keeps the core's default).

#[path = "e2e/child.rs"]
mod child;
#[path = "e2e/loadgen.rs"]
mod loadgen;
#[path = "e2e/server.rs"]
mod server;
#[path = "e2e/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use child::{median, percentile, secs, wait_until, ServerProc};
use loadgen::Generator;

/// The channel every subscriber joins.
pub const CHANNEL: &str = "bench";
/// Bytes of data per message, as in the `fanout` micro-benchmark.
pub const PAYLOAD_LEN: usize = 64;

const SERVERS: [&str; 4] = ["baseline", "blocking", "smol", "tokio"];
/// Handshakes in flight at once, over every generator thread.
const INFLIGHT: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let kind = args.get(i + 1).map_or("", String::as_str);
        let cpu = child::arg_after(&args, "--cpu").and_then(|c| c.parse().ok());
        let publisher = match child::arg_after(&args, "--publisher") {
            Some("thread") => server::Publisher::Thread,
            _ => server::Publisher::Task,
        };
        server::main(kind, cpu, publisher, child::arg_after(&args, "--broker"));
    }
    let bench = args.iter().any(|a| a == "--bench");
    if child::filtered_out(&args, "e2e") {
        return;
    }
    let settings = Settings::from_env(bench);
    // The stamp written by the server reads back in the generator.
    let probe = format!(
        r#"{{"type":"event","channel":"bench","data":"{}"}}"#,
        server::payload(123_456_789, 2, 7)
    );
    assert_eq!(loadgen::stamp(&probe), Some((123_456_789, 2)));

    let report = run(&settings);
    print_table(&report);
    write_json(&report, bench);
    if report.errors > 0 && !bench {
        // Smoke mode: a case that could not run at all is a broken bench.
        std::process::exit(1);
    }
}

/// What one invocation runs.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    mode: &'static str,
    sizes: Vec<usize>,
    servers: Vec<String>,
    /// Flood messages for each size (same order as `sizes`).
    messages: Vec<u64>,
    /// Deliveries per second in the paced phase (0: no paced phase).
    paced_deliveries_per_s: f64,
    /// Paced messages: at least this many, else a second's worth.
    paced_min_messages: u64,
    /// Count the server's system calls with `perf stat` (bench mode).
    count_syscalls: bool,
    /// The CPU the server is pinned to, if any.
    server_cpu: Option<usize>,
    runs: usize,
    /// Where the server child's publisher runs: `task` or `thread`.
    publisher: String,
    gen_threads: usize,
    drain_timeout_ms: u64,
    connect_timeout_ms: u64,
}

impl Settings {
    fn from_env(bench: bool) -> Settings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let list = |k: &str| -> Option<Vec<String>> {
            env(k).map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        };
        let sizes: Vec<usize> = list("WSHUB_E2E_SIZES")
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.replace('_', "").parse().ok())
                    .collect()
            })
            .unwrap_or_else(|| {
                if bench {
                    vec![100, 1_000, 10_000]
                } else {
                    vec![100, 1_000]
                }
            });
        let servers = list("WSHUB_E2E_SERVERS")
            .unwrap_or_else(|| SERVERS.iter().map(|s| s.to_string()).collect());
        let fixed: Option<u64> = env("WSHUB_E2E_MESSAGES").and_then(|v| v.parse().ok());
        let messages = sizes
            .iter()
            .map(|&n| match (fixed, bench) {
                (Some(m), _) => m,
                (None, false) => 5,
                (None, true) if n <= 100 => 2_000,
                (None, true) if n <= 1_000 => 500,
                (None, true) => 100,
            })
            .collect();
        Settings {
            mode: if bench { "bench" } else { "smoke" },
            sizes,
            servers,
            messages,
            paced_deliveries_per_s: env("WSHUB_E2E_PACED")
                .and_then(|v| v.parse().ok())
                .unwrap_or(50_000.0),
            paced_min_messages: if bench { 10 } else { 3 },
            server_cpu: None,
            count_syscalls: bench
                && env("WSHUB_E2E_SYSCALLS").is_none_or(|v| v != "0")
                && perf_available(),
            runs: env("WSHUB_E2E_RUNS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1),
            publisher: match env("WSHUB_E2E_PUBLISHER").as_deref() {
                Some("thread") => "thread".to_owned(),
                _ => "task".to_owned(),
            },
            gen_threads: env("WSHUB_E2E_GEN_THREADS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            drain_timeout_ms: if bench { 2_000 } else { 1_000 },
            connect_timeout_ms: if bench { 60_000 } else { 20_000 },
        }
    }
}

/// One case: a server at one N, in one run.
#[derive(Clone, Debug, Default, Serialize)]
struct Row {
    server: String,
    n: usize,
    messages: u64,
    deliveries_per_s: f64,
    /// Deliveries/s over the baseline's at the same N (same run).
    ratio_vs_baseline: Option<f64>,
    p50_us: f64,
    p99_us: f64,
    lost: u64,
    /// Clients the server closed during the flood (1013 slow consumer, ...).
    closed: usize,
    /// Messages of an earlier phase that arrived during the flood.
    stale: u64,
    /// Clients the server closed after the flood (in the paced phase).
    closed_later: usize,
    /// The hub's slow-consumer count at the end of the case (all phases).
    slow_consumers: u64,
    handshakes_per_s: f64,
    /// Generator CPU while connecting, % of one CPU.
    handshake_gen_cpu_pct: f64,
    rss_kib_per_conn: f64,
    /// Generator CPU over the flood window, % of one CPU.
    gen_cpu_pct: f64,
    /// Server process CPU over the flood window, % of one CPU.
    server_cpu_pct: f64,
    /// The server's CPU during the flood: % of its time used by other
    /// processes (user + system time not the server's, plus hypervisor
    /// steal), and % idle. Other work on a shared machine shows here.
    server_core_others_pct: Option<f64>,
    server_core_idle_pct: Option<f64>,
    /// Deliveries per second of server CPU time: deliveries/s over the
    /// server's CPU share, less sensitive to other work on the machine.
    deliveries_per_cpu_s: f64,
    /// Server system calls during the flood (all / socket writes: write,
    /// writev, sendto, sendmsg) per delivery, counted by `perf stat`.
    syscalls_per_delivery: Option<f64>,
    writes_per_delivery: Option<f64>,
    /// The raw counts, in the order of `sys::SYSCALL_EVENTS`.
    syscall_counts: Vec<u64>,
    paced_msgs_per_s: f64,
    paced_messages: u64,
    paced_p50_us: f64,
    paced_p99_us: f64,
    paced_lost: u64,
    /// Why the row is incomplete, if it is.
    note: String,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    /// Medians over the runs, per server and N.
    rows: Vec<Row>,
    /// Min and max deliveries/s over the runs, per server and N.
    spread: Vec<(String, usize, f64, f64)>,
    /// Every run's rows.
    runs: Vec<Vec<Row>>,
    #[serde(skip)]
    errors: usize,
}

#[derive(Clone, Serialize)]
struct Machine {
    cpus: usize,
    server_cpu: Option<usize>,
    generator_cpus: Vec<usize>,
    pinning: String,
    fd_limit: u64,
    /// 1-minute load average before and after: other work on the machine
    /// (anything above ~1 competes with the server or the generator).
    loadavg_before: f64,
    loadavg_after: f64,
}

fn run(settings: &Settings) -> Report {
    let cpus = sys::online_cpus();
    let fd_limit = sys::raise_fd_limit(1 << 20);
    let (server_cpu, generator_cpus, pinning) = if cpus >= 2 {
        let gen: Vec<usize> = (1..cpus).collect();
        match sys::pin_to(&gen) {
            Ok(()) => (
                Some(0),
                gen,
                "sched_setaffinity: server CPU 0, generator the others".to_owned(),
            ),
            Err(e) => (
                None,
                Vec::new(),
                format!("unpinned: sched_setaffinity: {e}"),
            ),
        }
    } else {
        (None, Vec::new(), "unpinned: one CPU".to_owned())
    };
    let threads = if settings.gen_threads > 0 {
        settings.gen_threads
    } else {
        generator_cpus.len().max(1)
    };
    let mut machine = Machine {
        loadavg_before: sys::loadavg(),
        loadavg_after: 0.0,
        cpus,
        server_cpu,
        generator_cpus,
        pinning,
        fd_limit,
    };
    eprintln!(
        "e2e ({}): {} CPUs, {}; open files {fd_limit}; {threads} generator thread(s)",
        settings.mode, machine.cpus, machine.pinning
    );
    let gen = match Generator::new(threads) {
        Ok(g) => g,
        Err(e) => panic!("load generator: {e}"),
    };
    let mut settings = settings.clone();
    settings.gen_threads = gen.threads();
    settings.server_cpu = server_cpu;
    let mut runs = Vec::new();
    let mut errors = 0;
    for r in 0..settings.runs {
        let mut rows = Vec::new();
        for (i, &n) in settings.sizes.iter().enumerate() {
            let mut baseline: Option<f64> = None;
            for kind in &settings.servers {
                let started = Instant::now();
                let mut row = match skip_reason(kind, n, fd_limit) {
                    Some(why) => Row {
                        note: why,
                        ..Row::default()
                    },
                    None => run_case(&settings, &gen, kind, n, i, server_cpu).unwrap_or_else(|e| {
                        errors += 1;
                        Row {
                            note: format!("failed: {e}"),
                            ..Row::default()
                        }
                    }),
                };
                row.server = kind.clone();
                row.n = n;
                row.messages = settings.messages[i];
                if kind == "baseline" && row.deliveries_per_s > 0.0 {
                    baseline = Some(row.deliveries_per_s);
                }
                row.ratio_vs_baseline = baseline
                    .filter(|b| *b > 0.0 && row.deliveries_per_s > 0.0)
                    .map(|b| row.deliveries_per_s / b);
                eprintln!(
                    "run {}/{}: {kind:>8} N={n:<6} {:>10.0} deliveries/s, p99 {}, lost {} ({} clients closed), {:.1} s{}",
                    r + 1,
                    settings.runs,
                    row.deliveries_per_s,
                    fmt_us(row.p99_us),
                    row.lost,
                    row.closed,
                    started.elapsed().as_secs_f64(),
                    if row.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", row.note)
                    }
                );
                rows.push(row);
            }
        }
        runs.push(rows);
    }
    machine.loadavg_after = sys::loadavg();
    let (rows, spread) = medians(&runs);
    Report {
        machine,
        settings,
        rows,
        spread,
        runs,
        errors,
    }
}

/// Cases that cannot run here, and why.
fn skip_reason(kind: &str, n: usize, fd_limit: u64) -> Option<String> {
    // Every server holds one descriptor per connection (the blocking
    // adapter's reader thread shares the hub's stream).
    let _ = kind;
    let need = n as u64 + 64;
    (need > fd_limit).then(|| {
        format!("skipped: needs ~{need} descriptors in the server, the limit is {fd_limit}")
    })
}

fn run_case(
    settings: &Settings,
    gen: &Generator,
    kind: &str,
    n: usize,
    size_index: usize,
    server_cpu: Option<usize>,
) -> Result<Row, String> {
    let mut srv = ServerProc::start(kind, server_cpu, &settings.publisher)?;
    let result = measure(settings, gen, &mut srv, n, settings.messages[size_index]);
    // The server closes first, so TIME_WAIT stays on its side, not on the
    // generator's ephemeral ports; then the generator drops its clients.
    srv.quit();
    gen.reset();
    result
}

fn measure(
    settings: &Settings,
    gen: &Generator,
    srv: &mut ServerProc,
    n: usize,
    messages: u64,
) -> Result<Row, String> {
    let shared = gen.shared.clone();
    let ask = Duration::from_secs(30);
    let mut row = Row::default();

    // Handshakes, then RSS of N idle connections.
    let settle = Duration::from_millis(if settings.mode == "bench" { 300 } else { 50 });
    std::thread::sleep(settle / 3);
    let rss0 = srv.ask("rss", ask)?[0];
    let t0 = sys::mono_ns();
    let cpu0 = sys::self_cpu_ns();
    gen.connect(SocketAddr::from(([127, 0, 0, 1], srv.port)), n, INFLIGHT);
    wait_until(Duration::from_millis(settings.connect_timeout_ms), || {
        shared.connected.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst) >= n
    });
    let connected = shared.connected.load(Ordering::SeqCst);
    if connected == 0 {
        return Err(format!(
            "no client upgraded ({} failed)",
            shared.failed.load(Ordering::SeqCst)
        ));
    }
    let t1 = shared.last_connect_ns.load(Ordering::SeqCst);
    row.handshakes_per_s = connected as f64 / secs(t1.saturating_sub(t0));
    row.handshake_gen_cpu_pct = 100.0 * sys::self_cpu_ns().saturating_sub(cpu0) as f64
        / t1.saturating_sub(t0).max(1) as f64;
    if connected < n {
        row.note = format!("{connected} of {n} clients upgraded");
    }
    std::thread::sleep(settle);
    let rss1 = srv.ask("rss", ask)?[0];
    row.rss_kib_per_conn = rss1.saturating_sub(rss0) as f64 / connected as f64;

    // Subscriptions.
    gen.subscribe();
    let mut subs = 0;
    wait_until(Duration::from_millis(settings.connect_timeout_ms), || {
        std::thread::sleep(Duration::from_millis(10));
        subs = srv.ask("subs", ask).map_or(0, |v| v[0] as usize);
        subs >= connected
    });
    if subs < connected {
        return Err(format!("only {subs} of {connected} clients subscribed"));
    }

    // Flood, with the server's system calls counted by `perf stat` (syscall
    // tracepoints add a little to every system call, the generator's too).
    let counter = if settings.count_syscalls {
        sys::Syscalls::start(srv.pid)
    } else {
        None
    };
    let flood = phase(settings, gen, srv, 1, messages, 0.0, n)?;
    if let Some(c) = counter
        .and_then(sys::Syscalls::stop)
        .filter(|_| flood.received > 0)
    {
        let per = |x: u64| x as f64 / flood.received as f64;
        row.syscalls_per_delivery = Some(per(c[0]));
        row.writes_per_delivery = Some(per(c[1] + c[2] + c[3] + c[4]));
        row.syscall_counts = c;
    }
    row.deliveries_per_s = flood.received as f64 / secs(flood.window_ns);
    row.p50_us = percentile(&flood.latencies, 0.50);
    row.p99_us = percentile(&flood.latencies, 0.99);
    row.lost = flood.expected.saturating_sub(flood.received);
    row.closed = shared.closed.load(Ordering::SeqCst);
    row.stale = flood.stale;
    row.slow_consumers = flood.slow;
    row.gen_cpu_pct = 100.0 * flood.gen_cpu_ns as f64 / flood.cpu_window_ns.max(1) as f64;
    row.server_cpu_pct = flood.server_cpu_ns.map_or(0.0, |c| {
        100.0 * c as f64 / flood.cpu_window_ns.max(1) as f64
    });
    row.server_core_others_pct = flood.core.map(|c| c.0);
    row.server_core_idle_pct = flood.core.map(|c| c.1);
    row.deliveries_per_cpu_s = flood
        .server_cpu_ns
        .filter(|&c| c > 0)
        .map_or(0.0, |c| flood.received as f64 / secs(c));

    // Paced.
    if settings.paced_deliveries_per_s > 0.0 {
        let rate = settings.paced_deliveries_per_s / n as f64;
        let count = (rate.round() as u64).max(settings.paced_min_messages);
        let count = if settings.mode == "smoke" {
            settings.paced_min_messages
        } else {
            count
        };
        let paced = phase(settings, gen, srv, 2, count, rate, n)?;
        row.paced_msgs_per_s = rate;
        row.paced_messages = count;
        row.paced_p50_us = percentile(&paced.latencies, 0.50);
        row.paced_p99_us = percentile(&paced.latencies, 0.99);
        row.paced_lost = paced.expected.saturating_sub(paced.received);
        row.slow_consumers = paced.slow;
    }
    row.closed_later = shared.closed.load(Ordering::SeqCst) - row.closed;
    if row.closed + row.closed_later > 0 {
        row.note = format!(
            "server closed {} clients in the flood, {} later (slow consumers: {})",
            row.closed, row.closed_later, row.slow_consumers
        );
    }
    Ok(row)
}

struct PhaseResult {
    expected: u64,
    received: u64,
    stale: u64,
    /// First publish to last receipt (or to the last publish, if later).
    window_ns: u64,
    /// What CPU figures are divided by (see `phase`).
    cpu_window_ns: u64,
    /// The server CPU's others% and idle% over the phase.
    core: Option<(f64, f64)>,
    latencies: Vec<u64>,
    gen_cpu_ns: u64,
    server_cpu_ns: Option<u64>,
    slow: u64,
}

fn phase(
    settings: &Settings,
    gen: &Generator,
    srv: &mut ServerProc,
    phase: u32,
    messages: u64,
    rate: f64,
    n: usize,
) -> Result<PhaseResult, String> {
    let shared = gen.shared.clone();
    gen.start_phase(phase);
    drop(gen.take_latencies());
    let gen_cpu0 = sys::self_cpu_ns();
    let srv_cpu0 = sys::proc_cpu_ns(srv.pid);
    let core0 = settings.server_cpu.and_then(sys::cpu_ticks);
    let t_cmd = sys::mono_ns();
    // Generous: the baseline's publisher never waits, the others wait for
    // every answer; either way this is far longer than any run here.
    let publish_timeout = Duration::from_secs(120 + messages * n as u64 / 10_000);
    let done = srv.ask(
        &format!("publish {messages} {rate} {phase}"),
        publish_timeout,
    )?;
    let [start, end, _accepted, slow] = done[..] else {
        return Err(format!("bad publish answer {done:?}"));
    };
    let expected = messages * n as u64;
    // Drain: until everything arrived, or nothing did for the drain timeout.
    let drain = Duration::from_millis(settings.drain_timeout_ms);
    let timed_out = !child::drain(&shared.received, expected, drain);
    // CPU is divided by the time something was happening: the delivery
    // window, or, when clients were cut early, the time up to the drain
    // timeout (which is idle).
    let idle = if timed_out {
        drain.as_nanos() as u64
    } else {
        0
    };
    let active_ns = sys::mono_ns().saturating_sub(t_cmd).saturating_sub(idle);
    let received = shared.received.load(Ordering::SeqCst);
    let last_recv = shared.last_recv_ns.load(Ordering::SeqCst);
    let gen_cpu_ns = sys::self_cpu_ns().saturating_sub(gen_cpu0);
    let server_cpu_ns = srv_cpu0
        .zip(sys::proc_cpu_ns(srv.pid))
        .map(|(a, b)| b.saturating_sub(a));
    let window_ns = last_recv.max(end).saturating_sub(start);
    // Other processes and idle time on the server's CPU, over the phase.
    let core = core0
        .zip(settings.server_cpu.and_then(sys::cpu_ticks))
        .filter(|(a, b)| b[3] > a[3])
        .map(|(a, b)| {
            let d = |i: usize| b[i].saturating_sub(a[i]);
            let total = d(3) as f64;
            let ours = server_cpu_ns.unwrap_or(0) as f64 / sys::tick_ns() as f64;
            let others = (d(0) as f64 - ours).max(0.0) + d(2) as f64;
            (100.0 * others / total, 100.0 * d(1) as f64 / total)
        });
    Ok(PhaseResult {
        expected,
        received,
        stale: shared.stale.load(Ordering::SeqCst),
        window_ns,
        cpu_window_ns: window_ns.max(active_ns),
        core,
        latencies: gen.take_latencies(),
        gen_cpu_ns,
        server_cpu_ns,
        slow,
    })
}

/// Whether `perf stat` can count syscall tracepoints here.
fn perf_available() -> bool {
    Command::new("perf")
        .args(["stat", "-e", sys::SYSCALL_EVENTS[0], "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

type Spread = Vec<(String, usize, f64, f64)>;

/// Per server and N: the median of every figure over the runs (ratios are
/// medians of each run's own ratio), and the deliveries/s range.
fn medians(runs: &[Vec<Row>]) -> (Vec<Row>, Spread) {
    let mut groups: BTreeMap<(usize, usize), Vec<&Row>> = BTreeMap::new();
    for rows in runs {
        for (i, r) in rows.iter().enumerate() {
            groups.entry((r.n, i)).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    let mut spread = Vec::new();
    for rows in groups.values() {
        let first = rows[0];
        let m = |f: fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
        let opt = |f: fn(&Row) -> Option<f64>| {
            let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let d: Vec<f64> = rows.iter().map(|r| r.deliveries_per_s).collect();
        spread.push((
            first.server.clone(),
            first.n,
            d.iter().copied().fold(f64::INFINITY, f64::min),
            d.iter().copied().fold(0.0, f64::max),
        ));
        let notes: Vec<&str> = rows
            .iter()
            .map(|r| r.note.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        out.push(Row {
            server: first.server.clone(),
            n: first.n,
            messages: first.messages,
            deliveries_per_s: m(|r| r.deliveries_per_s),
            ratio_vs_baseline: opt(|r| r.ratio_vs_baseline),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            lost: m(|r| r.lost as f64) as u64,
            closed: m(|r| r.closed as f64) as usize,
            stale: m(|r| r.stale as f64) as u64,
            closed_later: m(|r| r.closed_later as f64) as usize,
            slow_consumers: m(|r| r.slow_consumers as f64) as u64,
            handshakes_per_s: m(|r| r.handshakes_per_s),
            handshake_gen_cpu_pct: m(|r| r.handshake_gen_cpu_pct),
            rss_kib_per_conn: m(|r| r.rss_kib_per_conn),
            gen_cpu_pct: m(|r| r.gen_cpu_pct),
            server_cpu_pct: m(|r| r.server_cpu_pct),
            deliveries_per_cpu_s: m(|r| r.deliveries_per_cpu_s),
            server_core_others_pct: opt(|r| r.server_core_others_pct),
            server_core_idle_pct: opt(|r| r.server_core_idle_pct),
            syscalls_per_delivery: opt(|r| r.syscalls_per_delivery),
            writes_per_delivery: opt(|r| r.writes_per_delivery),
            syscall_counts: first.syscall_counts.clone(),
            paced_msgs_per_s: first.paced_msgs_per_s,
            paced_messages: first.paced_messages,
            paced_p50_us: m(|r| r.paced_p50_us),
            paced_p99_us: m(|r| r.paced_p99_us),
            paced_lost: m(|r| r.paced_lost as f64) as u64,
            note: notes.first().map_or(String::new(), |s| s.to_string()),
        });
    }
    (out, spread)
}

fn fmt_us(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else if us < 1_000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

fn print_table(report: &Report) {
    let s = &report.settings;
    println!();
    println!(
        "e2e fan-out over loopback ({} mode, {} run(s){}; {}; {} generator thread(s))",
        s.mode,
        s.runs,
        if s.runs > 1 { ", medians" } else { "" },
        report.machine.pinning,
        s.gen_threads
    );
    println!(
        "load average {:.2} before, {:.2} after; publisher: {}",
        report.machine.loadavg_before, report.machine.loadavg_after, s.publisher
    );
    println!(
        "flood: M messages back to back; paced: {:.0} deliveries/s; latency = publish call to receipt",
        s.paced_deliveries_per_s
    );
    println!(
        "{:<8} {:>6} {:>5} {:>11} {:>6} {:>9} {:>9} {:>7} {:>8} {:>9} {:>8} {:>8} {:>9} {:>10} {:>8} {:>9} {:>7} {:>9} {:>9}",
        "server",
        "N",
        "M",
        "deliv/s",
        "x base",
        "p50",
        "p99",
        "lost",
        "hs/s",
        "KiB/conn",
        "gen CPU",
        "srv CPU",
        "oth/idle",
        "deliv/CPUs",
        "wr/deliv",
        "sys/deliv",
        "paced/s",
        "paced p50",
        "paced p99"
    );
    for r in &report.rows {
        if r.deliveries_per_s == 0.0 && !r.note.is_empty() {
            println!("{:<8} {:>6} {}", r.server, r.n, r.note);
            continue;
        }
        println!(
            "{:<8} {:>6} {:>5} {:>11.0} {:>6} {:>9} {:>9} {:>7} {:>8.0} {:>9.1} {:>7.0}% {:>7.0}% {:>9} {:>10.0} {:>8} {:>9} {:>7} {:>9} {:>9}{}",
            r.server,
            r.n,
            r.messages,
            r.deliveries_per_s,
            r.ratio_vs_baseline
                .map_or("-".to_owned(), |x| format!("{x:.2}")),
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.lost,
            r.handshakes_per_s,
            r.rss_kib_per_conn,
            r.gen_cpu_pct,
            r.server_cpu_pct,
            r.server_core_others_pct
                .zip(r.server_core_idle_pct)
                .map_or("-".to_owned(), |(o, i)| format!("{o:.0}/{i:.0}%")),
            r.deliveries_per_cpu_s,
            r.writes_per_delivery
                .map_or("-".to_owned(), |w| format!("{w:.3}")),
            r.syscalls_per_delivery
                .map_or("-".to_owned(), |w| format!("{w:.2}")),
            if r.paced_msgs_per_s > 0.0 {
                format!("{:.0}", r.paced_msgs_per_s)
            } else {
                "-".to_owned()
            },
            fmt_us(r.paced_p50_us),
            fmt_us(r.paced_p99_us),
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        );
    }
    if s.runs > 1 {
        println!("deliveries/s spread over {} runs:", s.runs);
        for (server, n, lo, hi) in &report.spread {
            println!("  {server:<8} N={n:<6} {lo:>10.0} .. {hi:>10.0}");
        }
    }
}

fn write_json(report: &Report, bench: bool) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    // Smoke runs must not overwrite the figures of a real run.
    let name = if bench {
        "e2e-results.json"
    } else {
        "e2e-results-smoke.json"
    };
    let path = dir.join(name);
    match serde_json::to_string_pretty(report) {
        Ok(json) => match std::fs::write(&path, json) {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("e2e: cannot write {}: {e}", path.display()),
        },
        Err(e) => eprintln!("e2e: cannot serialize the report: {e}"),
    }
}
