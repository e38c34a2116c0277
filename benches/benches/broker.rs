//! `broker`: wshub nodes through one Redis (issue 12's benchmarks), each
//! against a run beside it. Not criterion and not a test, never fails on a
//! time: it prints a table and writes it to `target/broker-results.json`.
//!
//! ```sh
//! cargo bench -p wshub-benches --bench broker
//! WSHUB_BROKER_RUNS=3 cargo bench -p wshub-benches --bench broker
//! ```
//!
//! It starts its own `redis-server` (a free loopback port, `--save ''`,
//! `--appendonly no`) and runs every node as a child process: the bench
//! binary re-executed as the `e2e` server (`--serve tokio --broker <url>`,
//! see `e2e/server.rs`), whose publisher publishes through the node's own
//! handle, fire-and-forget (a publish returns once the hub handed it to the
//! broker driver). The `e2e` load generator (`e2e/loadgen.rs`) drives every
//! client from this process. Nodes and Redis are pinned to CPU 0, the
//! generator to the other CPUs, so the serving side has one core in every
//! case.
//!
//! Groups (per server kind, `WSHUB_BROKER_SERVERS`, default `tokio`):
//!
//! 1. **flood**: one channel, 64 B messages, M messages back to back from a
//!    publisher on node A. `one node` (no broker) serves all S subscribers
//!    (default 1,000); `one node + broker` the same through Redis (the
//!    broker's own cost); `two nodes` S/2 on each of two nodes on one
//!    Redis. Deliveries/s and the ratio to `one node` (target >= 0.8x).
//! 2. **latency**: paced publishes (1,000/s for 2 s) to L subscribers
//!    (default 100): one node without a broker, one with, and two nodes with
//!    L/2 each; p50 / p99 publish-to-receive and the difference to the
//!    first row.
//! 3. **wide**: two nodes, 1 and 10,000 subscribers per node (capped by the
//!    generator's open-files limit, 20,000 here: both nodes' clients live in
//!    this process), a flood; publishes/s through the broker and Redis CPU
//!    per publish, which must not grow with the subscribers. Each after one
//!    node without a broker holding both nodes' subscribers (the same
//!    deliveries per publish), its reference.
//!
//! Redis CPU per publish: utime + stime of the redis-server process over the
//! phase, from /proc/<pid>/stat (10 ms ticks) and from `INFO cpu`
//! (getrusage, µs), divided by the publishes.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs as a smoke
//! test with a few clients and messages (~5 s) and writes
//! `target/broker-results-smoke.json`.
//!
//! Knobs: `WSHUB_BROKER_SERVERS` (`tokio,smol,blocking`),
//! `WSHUB_BROKER_SUBS` (S), `WSHUB_BROKER_MESSAGES` (M, default 2,000),
//! `WSHUB_BROKER_LATENCY_SUBS` (L), `WSHUB_BROKER_RATE` (paced publishes/s),
//! `WSHUB_BROKER_PACED_SECS`, `WSHUB_BROKER_WIDE` (subscribers per node,
//! e.g. `1,10000`), `WSHUB_BROKER_WIDE_MESSAGES` (default: 2,000,000
//! deliveries' worth, 200..5,000), `WSHUB_BROKER_GROUPS`
//! (`flood,latency,wide`), `WSHUB_BROKER_RUNS` (repeat, report medians).

#[allow(dead_code)]
#[path = "e2e/child.rs"]
mod child;
#[allow(dead_code)]
#[path = "e2e/loadgen.rs"]
mod loadgen;
#[allow(dead_code)]
#[path = "e2e/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "e2e/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use child::{median, percentile, secs, wait_until, ServerProc};
use loadgen::Generator;

/// The channel every subscriber joins.
pub const CHANNEL: &str = "bench";
/// Bytes of data per message.
pub const PAYLOAD_LEN: usize = 64;
/// The Redis pub/sub channel of [`CHANNEL`] (default prefix `wshub`).
const REDIS_CHANNEL: &str = "wshub.pub.bench";
/// Handshakes in flight at once.
const INFLIGHT: usize = 64;
/// The most connections one blocking node is given (a thread each: 16,362
/// threads hit vm.max_map_count, 65,530, on this machine).
const BLOCKING_MAX_CONNS: usize = 12_000;
/// The CPU the nodes and Redis share.
const SERVER_CPU: usize = 0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let kind = args.get(i + 1).map_or("", String::as_str);
        let cpu = child::arg_after(&args, "--cpu").and_then(|c| c.parse().ok());
        server::main(
            kind,
            cpu,
            server::Publisher::Task,
            child::arg_after(&args, "--broker"),
        );
    }
    let bench = args.iter().any(|a| a == "--bench");
    if child::filtered_out(&args, "broker") {
        return;
    }
    let settings = Settings::from_env(bench);
    let report = match run(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker: {e}");
            std::process::exit(1);
        }
    };
    print_table(&report);
    write_json(&report, bench);
    if report.errors > 0 && !bench {
        std::process::exit(1);
    }
}

#[derive(Clone, Debug, Serialize)]
struct Settings {
    mode: &'static str,
    servers: Vec<String>,
    groups: Vec<String>,
    subs: usize,
    messages: u64,
    latency_subs: usize,
    rate: f64,
    paced_secs: f64,
    wide: Vec<usize>,
    wide_messages: Option<u64>,
    runs: usize,
    drain_timeout_ms: u64,
    connect_timeout_ms: u64,
    gen_threads: usize,
    server_cpu: Option<usize>,
    count_syscalls: bool,
}

impl Settings {
    fn from_env(bench: bool) -> Settings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let list = |k: &str, d: &str| -> Vec<String> {
            env(k)
                .unwrap_or_else(|| d.to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let num = |k: &str| env(k).and_then(|v| v.replace('_', "").parse::<f64>().ok());
        let pick = |b: f64, s: f64| if bench { b } else { s };
        Settings {
            mode: if bench { "bench" } else { "smoke" },
            servers: list("WSHUB_BROKER_SERVERS", "tokio"),
            groups: list("WSHUB_BROKER_GROUPS", "flood,latency,wide"),
            subs: num("WSHUB_BROKER_SUBS").unwrap_or(pick(1_000.0, 20.0)) as usize,
            messages: num("WSHUB_BROKER_MESSAGES").unwrap_or(pick(2_000.0, 5.0)) as u64,
            latency_subs: num("WSHUB_BROKER_LATENCY_SUBS").unwrap_or(pick(100.0, 10.0)) as usize,
            rate: num("WSHUB_BROKER_RATE").unwrap_or(1_000.0),
            paced_secs: num("WSHUB_BROKER_PACED_SECS").unwrap_or(pick(2.0, 0.02)),
            wide: list("WSHUB_BROKER_WIDE", if bench { "1,10000" } else { "1,10" })
                .iter()
                .filter_map(|s| s.replace('_', "").parse().ok())
                .collect(),
            wide_messages: num("WSHUB_BROKER_WIDE_MESSAGES").map(|m| m as u64),
            runs: num("WSHUB_BROKER_RUNS").unwrap_or(1.0).max(1.0) as usize,
            drain_timeout_ms: if bench { 2_000 } else { 1_000 },
            connect_timeout_ms: if bench { 60_000 } else { 20_000 },
            gen_threads: num("WSHUB_BROKER_GEN_THREADS").unwrap_or(0.0) as usize,
            server_cpu: None,
            count_syscalls: env("WSHUB_BROKER_SYSCALLS").is_some_and(|v| v == "1"),
        }
    }
}

/// One case of one run.
#[derive(Clone, Debug, Default, Serialize)]
struct Row {
    group: String,
    case: String,
    server: String,
    /// Subscribers per node; the publisher is on the first.
    nodes: Vec<usize>,
    broker: bool,
    messages: u64,
    /// Publishes per second asked for (0: a flood).
    rate: f64,
    deliveries_per_s: f64,
    /// Messages / (first publish to last receipt).
    publishes_per_s: f64,
    /// Deliveries/s over the group's reference row's (same run: the latest
    /// row of the group without a broker); in the group `wide`, publishes/s.
    ratio: Option<f64>,
    p50_us: f64,
    p99_us: f64,
    /// p50 / p99 minus the group's first row's.
    p50_added_us: Option<f64>,
    p99_added_us: Option<f64>,
    lost: u64,
    /// Clients the nodes closed during the case.
    closed: usize,
    /// Redis CPU per publish, µs: from `INFO cpu` and from /proc/<pid>/stat.
    redis_us_per_publish: Option<f64>,
    redis_proc_us_per_publish: Option<f64>,
    /// Redis CPU over the phase window, % of one CPU.
    redis_cpu_pct: Option<f64>,
    /// Redis CPU just before the phase, with the nodes connected and
    /// subscribed but nothing published (heartbeats, presence, its own
    /// cron), % of one CPU.
    redis_idle_pct: Option<f64>,
    /// `redis_us_per_publish` less that idle rate over the window.
    redis_net_us_per_publish: Option<f64>,
    /// Deliveries per second of serving CPU: received / (every node's CPU
    /// time + Redis's over the window). Steadier than deliveries/s when
    /// other work shares the serving core.
    deliveries_per_cpu_s: f64,
    /// Its ratio to the reference row's.
    cpu_ratio: Option<f64>,
    /// Every node's socket writes (write, writev, sendto, sendmsg) per
    /// delivery, from `perf stat` (with `WSHUB_BROKER_SYSCALLS=1`).
    writes_per_delivery: Option<f64>,
    /// All nodes' CPU over the window, % of one CPU.
    nodes_cpu_pct: f64,
    gen_cpu_pct: f64,
    /// Publishes the publishing node's driver had Redis store, and failed.
    broker_publishes: u64,
    broker_publish_failures: u64,
    note: String,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    /// Medians over the runs.
    rows: Vec<Row>,
    runs: Vec<Vec<Row>>,
    #[serde(skip)]
    errors: usize,
}

#[derive(Clone, Serialize)]
struct Machine {
    cpus: usize,
    pinning: String,
    fd_limit: u64,
    redis_version: String,
    loadavg_before: f64,
    loadavg_after: f64,
}

/// A case to run.
struct Case {
    group: &'static str,
    case: String,
    nodes: Vec<usize>,
    broker: bool,
    messages: u64,
    rate: f64,
}

fn cases(s: &Settings, fd_limit: u64) -> Vec<(Case, String)> {
    let mut out = Vec::new();
    let half = |n: usize| vec![n.div_ceil(2), n / 2];
    if s.groups.iter().any(|g| g == "flood") {
        let m = s.messages;
        for (case, nodes, broker) in [
            ("one node", vec![s.subs], false),
            ("one node + broker", vec![s.subs], true),
            ("two nodes", half(s.subs), true),
        ] {
            let c = Case {
                group: "flood",
                case: case.into(),
                nodes,
                broker,
                messages: m,
                rate: 0.0,
            };
            out.push((c, String::new()));
        }
    }
    if s.groups.iter().any(|g| g == "latency") {
        let m = ((s.rate * s.paced_secs).round() as u64).max(3);
        let l = s.latency_subs;
        for (case, nodes, broker) in [
            ("one node", vec![l], false),
            ("one node + broker", vec![l], true),
            ("two nodes", half(l), true),
        ] {
            let c = Case {
                group: "latency",
                case: case.into(),
                nodes,
                broker,
                messages: m,
                rate: s.rate,
            };
            out.push((c, String::new()));
        }
    }
    if s.groups.iter().any(|g| g == "wide") {
        // Both nodes' clients are this process's descriptors.
        let cap = (fd_limit.saturating_sub(200) / 2) as usize;
        for &w in &s.wide {
            let per = w.min(cap).max(1);
            let m = s.wide_messages.unwrap_or_else(|| {
                if s.mode == "smoke" {
                    5
                } else {
                    (2_000_000 / (2 * per as u64)).clamp(200, 5_000)
                }
            });
            let note = if per < w {
                format!("{per} per node, not {w}: the generator's open-files limit is {fd_limit}")
            } else {
                String::new()
            };
            // The same deliveries per publish from one node without a
            // broker: what the subscribers cost by themselves.
            out.push((
                Case {
                    group: "wide",
                    case: format!("one node, {} subs", 2 * per),
                    nodes: vec![2 * per],
                    broker: false,
                    messages: m,
                    rate: 0.0,
                },
                note.clone(),
            ));
            out.push((
                Case {
                    group: "wide",
                    case: format!("two nodes, {per}/node"),
                    nodes: vec![per, per],
                    broker: true,
                    messages: m,
                    rate: 0.0,
                },
                note,
            ));
        }
    }
    out
}

fn run(settings: &Settings) -> Result<Report, String> {
    let cpus = sys::online_cpus();
    let fd_limit = sys::raise_fd_limit(1 << 20);
    let mut settings = settings.clone();
    let loadavg_before = sys::loadavg();
    let server_cpu = (cpus >= 2).then_some(SERVER_CPU);
    // Redis first (pinned by its own pre_exec), then this process moves to
    // the generator's CPUs.
    let redis = Redis::start(server_cpu)?;
    let pinning = match server_cpu {
        Some(c) => match sys::pin_to(&(1..cpus).collect::<Vec<_>>()) {
            Ok(()) => format!("nodes and redis-server on CPU {c}, generator on the others"),
            Err(e) => {
                settings.server_cpu = None;
                format!("unpinned: sched_setaffinity: {e}")
            }
        },
        None => "unpinned: one CPU".to_owned(),
    };
    if !pinning.starts_with("unpinned") {
        settings.server_cpu = server_cpu;
    }
    let threads = if settings.gen_threads > 0 {
        settings.gen_threads
    } else {
        cpus.saturating_sub(1).max(1)
    };
    let gen = Generator::new(threads).map_err(|e| format!("load generator: {e}"))?;
    settings.gen_threads = gen.threads();
    let redis_version = redis
        .info("server")
        .ok()
        .and_then(|i| info_field(&i, "redis_version"))
        .unwrap_or_default();
    eprintln!(
        "broker ({}): {cpus} CPUs, {pinning}; open files {fd_limit}; redis {redis_version} on port {}",
        settings.mode, redis.port
    );
    let mut runs = Vec::new();
    let mut errors = 0;
    for r in 0..settings.runs {
        let mut rows: Vec<Row> = Vec::new();
        for kind in &settings.servers {
            for (case, note) in cases(&settings, fd_limit) {
                let started = Instant::now();
                let biggest = case.nodes.iter().copied().max().unwrap_or(0);
                let mut row = if kind == "blocking" && biggest > BLOCKING_MAX_CONNS {
                    // A thread per connection: past ~16,000 threads this
                    // machine's vm.max_map_count stops the node.
                    Row {
                        note: format!(
                            "skipped: the blocking adapter's thread per connection, {biggest} threads in one node"
                        ),
                        ..Row::default()
                    }
                } else {
                    run_case(&settings, &gen, &redis, kind, &case).unwrap_or_else(|e| {
                        errors += 1;
                        Row {
                            note: format!("failed: {e}"),
                            ..Row::default()
                        }
                    })
                };
                if row.note.is_empty() {
                    row.note = note;
                }
                row.group = case.group.to_owned();
                row.case = case.case.clone();
                row.server = kind.clone();
                row.nodes = case.nodes.clone();
                row.broker = case.broker;
                row.messages = case.messages;
                row.rate = case.rate;
                // Against the group's latest row without a broker, in this
                // run (flood, latency: the first; wide: the row before).
                let reference = rows
                    .iter()
                    .rev()
                    .find(|x| x.group == row.group && x.server == row.server && !x.broker);
                if !row.broker {
                    row.ratio = (row.deliveries_per_s > 0.0).then_some(1.0);
                    row.cpu_ratio = (row.deliveries_per_cpu_s > 0.0).then_some(1.0);
                } else if let Some(first) = reference {
                    if first.deliveries_per_cpu_s > 0.0 && row.deliveries_per_cpu_s > 0.0 {
                        row.cpu_ratio = Some(row.deliveries_per_cpu_s / first.deliveries_per_cpu_s);
                    }
                    // wide: publishes/s (the subscriber count differs).
                    let rate = |x: &Row| {
                        if x.group == "wide" {
                            x.publishes_per_s
                        } else {
                            x.deliveries_per_s
                        }
                    };
                    if rate(first) > 0.0 && rate(&row) > 0.0 {
                        row.ratio = Some(rate(&row) / rate(first));
                    }
                    if row.group == "latency" && first.p50_us > 0.0 && row.p50_us > 0.0 {
                        row.p50_added_us = Some(row.p50_us - first.p50_us);
                        row.p99_added_us = Some(row.p99_us - first.p99_us);
                    }
                }
                eprintln!(
                    "run {}/{}: {kind} {:<8} {:<22} {:>10.0} deliveries/s {:>8.0} publishes/s, p50 {}, p99 {}, lost {}, redis {} /publish (net {}), {:.1} s{}",
                    r + 1,
                    settings.runs,
                    row.group,
                    row.case,
                    row.deliveries_per_s,
                    row.publishes_per_s,
                    fmt_us(row.p50_us),
                    fmt_us(row.p99_us),
                    row.lost,
                    row.redis_us_per_publish.map_or("-".into(), |u| format!("{u:.1} us")),
                    row.redis_net_us_per_publish.map_or("-".into(), |u| format!("{u:.1} us")),
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
    drop(gen);
    drop(redis);
    let machine = Machine {
        cpus,
        pinning,
        fd_limit,
        redis_version,
        loadavg_before,
        loadavg_after: sys::loadavg(),
    };
    Ok(Report {
        machine,
        settings,
        rows: medians(&runs),
        runs,
        errors,
    })
}

fn run_case(
    settings: &Settings,
    gen: &Generator,
    redis: &Redis,
    kind: &str,
    case: &Case,
) -> Result<Row, String> {
    let _ = redis.command(&["FLUSHALL"]);
    let url = redis.url();
    let extra: Vec<&str> = if case.broker {
        vec!["--broker", &url]
    } else {
        Vec::new()
    };
    let mut nodes = Vec::new();
    for _ in &case.nodes {
        nodes.push(ServerProc::start_with(
            kind,
            settings.server_cpu,
            "task",
            &extra,
        )?);
    }
    let result = measure(settings, gen, redis, &mut nodes, case);
    // The servers close first, so TIME_WAIT stays on their side.
    for n in nodes {
        n.quit();
    }
    gen.reset();
    result
}

fn measure(
    settings: &Settings,
    gen: &Generator,
    redis: &Redis,
    nodes: &mut [ServerProc],
    case: &Case,
) -> Result<Row, String> {
    let shared = gen.shared.clone();
    let ask = Duration::from_secs(30);
    let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    if case.broker {
        for (i, node) in nodes.iter_mut().enumerate() {
            let up = wait_until(Duration::from_secs(10), || {
                std::thread::sleep(Duration::from_millis(10));
                node.ask("broker", ask).is_ok_and(|v| v.first() == Some(&1))
            });
            if !up {
                return Err(format!("node {i}: the broker link never came up"));
            }
        }
    }
    let mut total = 0;
    for (node, &n) in nodes.iter().zip(&case.nodes) {
        if n == 0 {
            continue;
        }
        total += n;
        gen.connect(SocketAddr::from(([127, 0, 0, 1], node.port)), n, INFLIGHT);
        wait_until(connect_timeout, || {
            shared.connected.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst) >= total
        });
        let connected = shared.connected.load(Ordering::SeqCst);
        if connected < total {
            return Err(format!("{connected} of {total} clients upgraded"));
        }
    }
    gen.subscribe();
    for (i, (node, &n)) in nodes.iter_mut().zip(&case.nodes).enumerate() {
        let mut subs = 0;
        wait_until(connect_timeout, || {
            std::thread::sleep(Duration::from_millis(10));
            subs = node.ask("subs", ask).map_or(0, |v| v[0] as usize);
            subs >= n
        });
        if subs < n {
            return Err(format!("node {i}: only {subs} of {n} clients subscribed"));
        }
    }
    if case.broker {
        // Every node with subscribers holds the channel at Redis.
        let want = case.nodes.iter().filter(|&&n| n > 0).count() as u64;
        let mut have = 0;
        wait_until(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(10));
            have = redis.numsub(REDIS_CHANNEL).unwrap_or(0);
            have >= want
        });
        if have < want {
            return Err(format!("{have} of {want} nodes subscribed at Redis"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Redis's CPU with nothing published, as a rate.
    let mut redis_idle_ns_per_s = None;
    if case.broker {
        let idle_ms = if settings.mode == "bench" { 1_000 } else { 50 };
        let a = redis.info_cpu_ns();
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(idle_ms));
        let b = redis.info_cpu_ns();
        let el = t.elapsed().as_secs_f64();
        redis_idle_ns_per_s = a.zip(b).map(|(a, b)| b.saturating_sub(a) as f64 / el);
    }
    let closed0 = shared.closed.load(Ordering::SeqCst);

    // The phase: node A publishes, everyone receives.
    gen.start_phase(1);
    drop(gen.take_latencies());
    // Every node's CPU time, from its own getrusage (µs resolution).
    let nodes_cpu = |nodes: &mut [ServerProc]| -> u64 {
        nodes
            .iter_mut()
            .filter_map(|n| n.ask("cpu", ask).ok()?.first().copied())
            .sum::<u64>()
    };
    let counters: Vec<sys::Syscalls> = if settings.count_syscalls {
        nodes
            .iter()
            .filter_map(|n| sys::Syscalls::start(n.pid))
            .collect()
    } else {
        Vec::new()
    };
    let b0 = nodes[0].ask("broker", ask)?;
    let gen0 = sys::self_cpu_ns();
    let nodes0 = nodes_cpu(nodes);
    let redis0 = (redis.info_cpu_ns(), sys::proc_cpu_ns(redis.pid()));
    let t_cmd = sys::mono_ns();
    let timeout = Duration::from_secs(120 + case.messages * total as u64 / 10_000);
    let done = nodes[0].ask(
        &format!("publish {} {} 1", case.messages, case.rate),
        timeout,
    )?;
    let [start, end, _accepted, _slow] = done[..] else {
        return Err(format!("bad publish answer {done:?}"));
    };
    let expected = case.messages * total as u64;
    let drain = Duration::from_millis(settings.drain_timeout_ms);
    let timed_out = !child::drain(&shared.received, expected, drain);
    let idle = if timed_out {
        drain.as_nanos() as u64
    } else {
        0
    };
    let active_ns = sys::mono_ns().saturating_sub(t_cmd).saturating_sub(idle);
    let gen_cpu = sys::self_cpu_ns().saturating_sub(gen0);
    let nodes_cpu_ns = nodes_cpu(nodes).saturating_sub(nodes0);
    let redis1 = (redis.info_cpu_ns(), sys::proc_cpu_ns(redis.pid()));
    let b1 = nodes[0].ask("broker", ask)?;
    let mut writes = None;
    if !counters.is_empty() {
        let n = counters.len();
        let counts: Vec<Vec<u64>> = counters
            .into_iter()
            .filter_map(sys::Syscalls::stop)
            .collect();
        if counts.len() == n {
            writes = Some(
                counts
                    .iter()
                    .map(|c| c[1..].iter().sum::<u64>())
                    .sum::<u64>(),
            );
        }
    }
    let received = shared.received.load(Ordering::SeqCst);
    let last_recv = shared.last_recv_ns.load(Ordering::SeqCst);
    let window = last_recv.max(end).saturating_sub(start);
    let cpu_window = window.max(active_ns).max(1) as f64;
    let latencies = gen.take_latencies();
    let per_publish = |a: Option<u64>, b: Option<u64>| {
        a.zip(b)
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e3 / case.messages.max(1) as f64)
    };
    let mut row = Row {
        deliveries_per_s: received as f64 / secs(window),
        publishes_per_s: case.messages as f64 / secs(window),
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        lost: expected.saturating_sub(received),
        closed: shared.closed.load(Ordering::SeqCst) - closed0,
        nodes_cpu_pct: 100.0 * nodes_cpu_ns as f64 / cpu_window,
        writes_per_delivery: writes
            .filter(|_| received > 0)
            .map(|w| w as f64 / received as f64),
        deliveries_per_cpu_s: {
            let redis_ns = redis0
                .0
                .zip(redis1.0)
                .map_or(0, |(a, b)| b.saturating_sub(a));
            let serving = nodes_cpu_ns + if case.broker { redis_ns } else { 0 };
            if serving > 0 {
                received as f64 / secs(serving)
            } else {
                0.0
            }
        },
        gen_cpu_pct: 100.0 * gen_cpu as f64 / cpu_window,
        ..Row::default()
    };
    if case.broker {
        row.redis_us_per_publish = per_publish(redis0.0, redis1.0);
        row.redis_proc_us_per_publish = per_publish(redis0.1, redis1.1);
        row.redis_cpu_pct = redis0
            .0
            .zip(redis1.0)
            .map(|(a, b)| 100.0 * b.saturating_sub(a) as f64 / cpu_window);
        row.redis_idle_pct = redis_idle_ns_per_s.map(|r| r / 1e7);
        row.redis_net_us_per_publish =
            redis0
                .0
                .zip(redis1.0)
                .zip(redis_idle_ns_per_s)
                .map(|((a, b), idle)| {
                    let busy = b.saturating_sub(a) as f64 - idle * cpu_window / 1e9;
                    busy.max(0.0) / 1e3 / case.messages.max(1) as f64
                });
        let d = |i: usize| b1.get(i).zip(b0.get(i)).map_or(0, |(x, y)| x - y);
        row.broker_publishes = d(1);
        row.broker_publish_failures = d(3);
    }
    if row.closed > 0 || row.broker_publish_failures > 0 {
        row.note = format!(
            "{} clients closed, {} publishes failed",
            row.closed, row.broker_publish_failures
        );
    }
    Ok(row)
}

/// The bench's own redis-server: a free loopback port, no persistence,
/// pinned to `cpu`; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(cpu: Option<usize>) -> Result<Redis, String> {
        let dir = std::env::temp_dir().join(format!("wshub-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut why = String::new();
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("a free port: {e}"))?
                .port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(c) = cpu {
                // SAFETY: only sched_setaffinity on a stack cpu_set_t
                // between fork and exec (async-signal-safe).
                unsafe {
                    cmd.pre_exec(move || {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_ZERO(&mut set);
                        libc::CPU_SET(c, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().map_err(|e| {
                format!("redis-server: {e} (install it: apt-get install redis-server)")
            })?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    why = format!("redis-server exited: {status}");
                    break;
                }
                if command(port, &["PING"]).is_ok_and(|r| r == "PONG") {
                    return Ok(Redis { child, port, dir });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(format!("redis-server did not start: {why}"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> Result<String, String> {
        command(self.port, args)
    }

    fn info(&self, section: &str) -> Result<String, String> {
        self.command(&["INFO", section])
    }

    /// used_cpu_sys + used_cpu_user (getrusage of the whole process), ns.
    fn info_cpu_ns(&self) -> Option<u64> {
        let i = self.info("cpu").ok()?;
        let f = |k: &str| info_field(&i, k)?.parse::<f64>().ok();
        Some(((f("used_cpu_sys")? + f("used_cpu_user")?) * 1e9) as u64)
    }

    /// Subscribers of a pub/sub channel (connections, i.e. nodes).
    fn numsub(&self, channel: &str) -> Option<u64> {
        let r = self.command(&["PUBSUB", "NUMSUB", channel]).ok()?;
        r.lines().nth(1)?.parse().ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command to the Redis on `port`, on a fresh connection; the reply
/// flattened to text (arrays: elements joined by newlines). An error reply
/// is an Err.
fn command(port: u16, args: &[&str]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    read_reply(&mut r).map_err(|e| e.to_string())
}

fn read_reply(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || io::Error::other(format!("bad reply {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(io::Error::other(rest.to_owned())),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(bad()),
    }
}

fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Per case: the median of every figure over the runs (ratios and added
/// latencies are medians of each run's own).
fn medians(runs: &[Vec<Row>]) -> Vec<Row> {
    let mut groups: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
    for rows in runs {
        for (i, r) in rows.iter().enumerate() {
            groups.entry(i).or_default().push(r);
        }
    }
    groups
        .values()
        .map(|rows| {
            let m = |f: fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
            let opt = |f: fn(&Row) -> Option<f64>| {
                let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| median(v))
            };
            let first = rows[0];
            Row {
                deliveries_per_s: m(|r| r.deliveries_per_s),
                publishes_per_s: m(|r| r.publishes_per_s),
                ratio: opt(|r| r.ratio),
                p50_us: m(|r| r.p50_us),
                p99_us: m(|r| r.p99_us),
                p50_added_us: opt(|r| r.p50_added_us),
                p99_added_us: opt(|r| r.p99_added_us),
                lost: m(|r| r.lost as f64) as u64,
                closed: m(|r| r.closed as f64) as usize,
                redis_us_per_publish: opt(|r| r.redis_us_per_publish),
                redis_proc_us_per_publish: opt(|r| r.redis_proc_us_per_publish),
                redis_cpu_pct: opt(|r| r.redis_cpu_pct),
                redis_idle_pct: opt(|r| r.redis_idle_pct),
                redis_net_us_per_publish: opt(|r| r.redis_net_us_per_publish),
                nodes_cpu_pct: m(|r| r.nodes_cpu_pct),
                writes_per_delivery: opt(|r| r.writes_per_delivery),
                deliveries_per_cpu_s: m(|r| r.deliveries_per_cpu_s),
                cpu_ratio: opt(|r| r.cpu_ratio),
                gen_cpu_pct: m(|r| r.gen_cpu_pct),
                broker_publishes: m(|r| r.broker_publishes as f64) as u64,
                broker_publish_failures: m(|r| r.broker_publish_failures as f64) as u64,
                note: rows
                    .iter()
                    .map(|r| r.note.as_str())
                    .find(|n| !n.is_empty())
                    .unwrap_or("")
                    .to_owned(),
                ..first.clone()
            }
        })
        .collect()
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

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("-".to_owned(), f)
}

fn print_table(report: &Report) {
    let s = &report.settings;
    println!();
    println!(
        "broker: wshub nodes through one Redis {} ({} mode, {} run(s){}; {})",
        report.machine.redis_version,
        s.mode,
        s.runs,
        if s.runs > 1 { ", medians" } else { "" },
        report.machine.pinning
    );
    println!(
        "load average {:.2} before, {:.2} after; x ref = deliveries/s (wide: pub/s) over the group's row without a broker above it; +p50/+p99 = latency over it",
        report.machine.loadavg_before, report.machine.loadavg_after
    );
    println!(
        "{:<7} {:<8} {:<22} {:>13} {:>5} {:>6} {:>11} {:>6} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>10} {:>8} {:>6} {:>8} {:>7} {:>8}",
        "server",
        "group",
        "case",
        "subs/node",
        "M",
        "rate",
        "deliv/s",
        "x ref",
        "deliv/CPUs",
        "x ref",
        "pub/s",
        "p50",
        "p99",
        "+p50",
        "+p99",
        "lost",
        "redis/pub",
        "net/pub",
        "proc/pub",
        "redis%",
        "idle%",
        "nodes%",
        "gen%",
        "wr/deliv"
    );
    for r in &report.rows {
        let subs: Vec<String> = r.nodes.iter().map(usize::to_string).collect();
        if r.deliveries_per_s == 0.0 && !r.note.is_empty() {
            println!("{:<7} {:<8} {:<22} {}", r.server, r.group, r.case, r.note);
            continue;
        }
        println!(
            "{:<7} {:<8} {:<22} {:>13} {:>5} {:>6} {:>11.0} {:>6} {:>10.0} {:>6} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>10} {:>8} {:>6} {:>7.0}% {:>6.0}% {:>8}{}",
            r.server,
            r.group,
            r.case,
            subs.join("+"),
            r.messages,
            if r.rate > 0.0 { format!("{:.0}", r.rate) } else { "flood".into() },
            r.deliveries_per_s,
            fmt_opt(r.ratio, |x| format!("{x:.2}")),
            r.deliveries_per_cpu_s,
            fmt_opt(r.cpu_ratio, |x| format!("{x:.2}")),
            r.publishes_per_s,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            fmt_opt(r.p50_added_us, |x| format!("{x:+.0} us")),
            fmt_opt(r.p99_added_us, |x| format!("{x:+.0} us")),
            r.lost,
            fmt_opt(r.redis_us_per_publish, |x| format!("{x:.1} us")),
            fmt_opt(r.redis_net_us_per_publish, |x| format!("{x:.1} us")),
            fmt_opt(r.redis_proc_us_per_publish, |x| format!("{x:.1} us")),
            fmt_opt(r.redis_cpu_pct, |x| format!("{x:.0}%")),
            fmt_opt(r.redis_idle_pct, |x| format!("{x:.1}%")),
            r.nodes_cpu_pct,
            r.gen_cpu_pct,
            fmt_opt(r.writes_per_delivery, |x| format!("{x:.3}")),
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        );
    }
}

fn write_json(report: &Report, bench: bool) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    // Smoke runs must not overwrite the figures of a real run.
    let name = if bench {
        "broker-results.json"
    } else {
        "broker-results-smoke.json"
    };
    let path = dir.join(name);
    match serde_json::to_string_pretty(report) {
        Ok(json) => match std::fs::write(&path, json) {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("broker: cannot write {}: {e}", path.display()),
        },
        Err(e) => eprintln!("broker: cannot serialize the report: {e}"),
    }
}
