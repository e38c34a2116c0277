//! The server child: `e2e --serve <kind> --cpu <n|none>` serves one hub on
//! 127.0.0.1 (a port of its own), prints `port <p>`, then obeys one command
//! per stdin line, answering each on one stdout line:
//!
//! - `rss` -> `rss <KiB>`: this process's VmRSS;
//! - `subs` -> `subs <n>`: subscribers of the bench channel;
//! - `cpu` -> `cpu <ns>`: this process's CPU time (getrusage, µs resolution);
//! - `publish <m> <rate> <phase>` -> `done <start_ns> <end_ns> <accepted> <slow>`:
//!   publishes m messages from this (the main) thread, `rate` per second or
//!   back to back when 0; `accepted` sums what each publish call reported,
//!   `slow` is the hub's slow-consumer count so far (0 for the baseline);
//! - `broker` -> `broker <up> <publishes> <publications_in> <publish_failures>`:
//!   the Redis broker driver's status (`--broker <url>`; all 0 without one);
//! - `quit`: exits at once.
//!
//! With `--broker redis://...` (the `broker` bench) the wshub servers run as
//! one node of many: the adapter's builder gets `wshub_redis::link()`'s link
//! and a `RedisBroker` reports back through `Command::Broker`, as
//! `wshub serve --broker` does. A publish then returns once the hub has
//! handed it to the broker driver; every node, this one included, delivers
//! it when Redis sends it back.
//!
//! Each message is `{"type":"event","channel":"bench","data":<64 B>,
//! "timestamp":<RFC 3339>}`; the 64 B of data start with the CLOCK_MONOTONIC
//! reading taken just before the publish call, then the phase and sequence
//! number: `00000012345678901234.1.000000042.xxxx...`.
//!
//! Publishing goes through each server's application-facing API, from one
//! publisher (see [`Publisher`]) that starts the next message when the
//! previous call returns: a wshub publish returns once the hub has queued the
//! message (its answer is the subscriber count); the baseline's publish is a
//! direct call into its channel map (lock, serialize, clone into every
//! subscriber's unbounded queue), which never waits for the sockets.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wshub_core::command::Command;
use wshub_core::{HubCommands, HubConfig, Message, Stats, Timestamp};
use wshub_redis::{RedisBroker, RedisConfig};

use crate::sys;
use crate::{CHANNEL, PAYLOAD_LEN};

/// The data of message `seq` of `phase`, stamped `stamp_ns`: exactly
/// [`PAYLOAD_LEN`] bytes.
pub fn payload(stamp_ns: u64, phase: u32, seq: u64) -> String {
    let mut s = format!("{stamp_ns:020}.{phase}.{seq:09}.");
    while s.len() < PAYLOAD_LEN {
        s.push('x');
    }
    s
}

/// What to publish: `m` messages of `phase`, `rate` per second (0: back to
/// back).
#[derive(Clone, Copy)]
pub struct Plan {
    m: u64,
    rate: f64,
    phase: u32,
}

impl Plan {
    /// When message `seq` is due, if paced.
    fn due(&self, start: u64, seq: u64) -> Option<u64> {
        (self.rate > 0.0).then(|| start + (seq as f64 * 1e9 / self.rate) as u64)
    }
}

/// Publishes a plan; returns (first publish, end, sum of publish counts), in
/// CLOCK_MONOTONIC ns.
type PublishAll = Box<dyn Fn(Plan) -> (u64, u64, u64)>;

/// What the command loop needs from a server.
struct Served {
    port: u16,
    publish: PublishAll,
    subscribers: Box<dyn Fn() -> usize>,
    stats: Box<dyn Fn() -> Option<Stats>>,
    /// The broker driver, with `--broker` (kept alive with the hub).
    broker: Option<RedisBroker>,
}

/// Where the publisher runs.
///
/// - `Task` (default): a task on the server's own runtime, as application
///   code there would publish: `Handle::publish(..).await` (tokio, smol);
///   for the baseline, the direct call then `tokio::task::yield_now()`,
///   standing for the await any real publisher has between messages (without
///   it the task would queue all M messages before a writer ran).
/// - `Thread`: the child's main thread, through the blocking form of the
///   same API (`BlockingHandle::publish`, `smol::block_on(publish)`, the
///   baseline's direct call with no yield), so the publisher competes with
///   the runtime as another OS thread.
///
/// The blocking adapter has no runtime: it is published to from the main
/// thread either way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    Task,
    Thread,
}

/// The child's main: never returns.
pub fn main(kind: &str, cpu: Option<usize>, publisher: Publisher, broker: Option<&str>) -> ! {
    if let Some(c) = cpu {
        if let Err(e) = sys::pin_to(&[c]) {
            eprintln!("e2e server: cannot pin to CPU {c}: {e}");
        }
    }
    sys::raise_fd_limit(1 << 20);
    // Kept alive for the whole run: the runtimes and servers live here.
    let served = match kind {
        "blocking" => serve_blocking(broker),
        "smol" => serve_smol(publisher, broker),
        "tokio" => serve_tokio(publisher, broker),
        "baseline" if broker.is_some() => Err(io::Error::other("the baseline has no broker")),
        "baseline" => serve_baseline(publisher),
        other => Err(io::Error::other(format!("unknown server kind {other}"))),
    };
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            eprintln!("e2e server {kind}: {e}");
            std::process::exit(2);
        }
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "port {}", served.port);
    let _ = out.flush();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["rss"] => format!("rss {}", sys::self_rss_kib()),
            ["cpu"] => format!("cpu {}", sys::self_cpu_ns()),
            ["subs"] => format!("subs {}", (served.subscribers)()),
            ["publish", m, rate, phase] => {
                let plan = Plan {
                    m: m.parse().unwrap_or(0),
                    rate: rate.parse().unwrap_or(0.0),
                    phase: phase.parse().unwrap_or(0),
                };
                let (start, end, accepted) = (served.publish)(plan);
                let slow = (served.stats)().map_or(0, |s| s.slow_consumers);
                format!("done {start} {end} {accepted} {slow}")
            }
            ["broker"] => {
                let s = served.broker.as_ref().map(RedisBroker::status);
                let s = s.unwrap_or_default();
                format!(
                    "broker {} {} {} {}",
                    u8::from(s.up),
                    s.publishes,
                    s.publications_in,
                    s.publish_failures
                )
            }
            ["quit"] => break,
            _ => format!("error unknown command {line:?}"),
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
    std::process::exit(0);
}

/// Publishes a plan from this thread, one blocking call per message.
fn publish_blocking(plan: Plan, publish: impl Fn(String) -> usize) -> (u64, u64, u64) {
    let start = sys::mono_ns();
    let mut accepted = 0u64;
    for seq in 0..plan.m {
        if let Some(due) = plan.due(start, seq) {
            let now = sys::mono_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
        }
        accepted += publish(payload(sys::mono_ns(), plan.phase, seq)) as u64;
    }
    (start, sys::mono_ns(), accepted)
}

/// Publishes a plan from a task, awaiting each message; `sleep` is the
/// runtime's timer.
async fn publish_async<P, PF, S, SF>(plan: Plan, publish: P, sleep: S) -> (u64, u64, u64)
where
    P: Fn(String) -> PF,
    PF: Future<Output = usize>,
    S: Fn(Duration) -> SF,
    SF: Future<Output = ()>,
{
    let start = sys::mono_ns();
    let mut accepted = 0u64;
    for seq in 0..plan.m {
        if let Some(due) = plan.due(start, seq) {
            let now = sys::mono_ns();
            if due > now {
                sleep(Duration::from_nanos(due - now)).await;
            }
        }
        accepted += publish(payload(sys::mono_ns(), plan.phase, seq)).await as u64;
    }
    (start, sys::mono_ns(), accepted)
}

fn config() -> HubConfig {
    // Defaults, as an application would start: 256 messages / 1 MiB queued
    // per connection, 10 s write timeout, path /ws, the default history
    // (every channel, 100 publications, 5 min). `WSHUB_E2E_MAX_QUEUED`
    // (inherited from the bench process) overrides the message cap, and
    // `WSHUB_E2E_HISTORY=off` turns the history off (its cost, measured).
    let mut config = HubConfig::default();
    if std::env::var("WSHUB_E2E_HISTORY").as_deref() == Ok("off") {
        config.history = wshub_core::history::HistoryConfig::off();
    }
    if let Some(cap) = std::env::var("WSHUB_E2E_MAX_QUEUED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.max_queued_messages = cap;
    }
    config
}

/// Starts the broker driver for `--broker <url>`; `tell` hands its inputs
/// to the hub (false once the hub is gone).
fn start_broker(
    url: &str,
    outputs: wshub_redis::Outputs,
    tell: impl Fn(Command) -> bool + Send + Sync + 'static,
) -> io::Result<RedisBroker> {
    RedisBroker::start(RedisConfig::new(url), outputs, move |input| {
        tell(Command::Broker(input))
    })
    .map_err(|e| io::Error::other(format!("--broker: {e}")))
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn message(data: String) -> Message {
    Message::new("event", Value::String(data))
}

fn serve_blocking(broker: Option<&str>) -> io::Result<Served> {
    let mut builder = wshub_blocking::Server::builder(config());
    let mut outputs = None;
    if broker.is_some() {
        let (link, out) = wshub_redis::link();
        builder = builder.broker(link);
        outputs = Some(out);
    }
    let server = builder.bind(localhost())?;
    let port = server.local_addr().map_or(0, |a| a.port());
    let handle = server.handle();
    let broker = match broker.zip(outputs) {
        Some((url, out)) => {
            let h = handle.clone();
            Some(start_broker(url, out, move |c| h.tell(c).is_ok())?)
        }
        None => None,
    };
    // Events must be read or their channel grows; the server moves along.
    std::thread::spawn(move || for _ in server.events() {});
    let (h1, h2, h3) = (handle.clone(), handle.clone(), handle);
    Ok(Served {
        port,
        publish: Box::new(move |plan| {
            publish_blocking(plan, |d| h1.publish(CHANNEL, message(d)).unwrap_or(0))
        }),
        subscribers: Box::new(move || h2.subscriber_count(CHANNEL).unwrap_or(0)),
        stats: Box::new(move || h3.stats().ok()),
        broker,
    })
}

fn serve_smol(publisher: Publisher, broker: Option<&str>) -> io::Result<Served> {
    // The hub's tasks run on smol's global executor (SMOL_THREADS, default 1);
    // this thread only blocks on answers.
    let mut builder = wshub_smol::Server::builder(config());
    let mut outputs = None;
    if broker.is_some() {
        let (link, out) = wshub_redis::link();
        builder = builder.broker(link);
        outputs = Some(out);
    }
    let server = smol::block_on(builder.bind(localhost()))?;
    let port = server.local_addr().map_or(0, |a| a.port());
    let handle = server.handle();
    let broker = match broker.zip(outputs) {
        Some((url, out)) => {
            let h = handle.clone();
            Some(start_broker(url, out, move |c| {
                smol::block_on(h.tell(c)).is_ok()
            })?)
        }
        None => None,
    };
    let events = server.events();
    std::thread::spawn(move || while events.recv_blocking().is_ok() {});
    // Dropping the Server leaves the hub running (until shutdown).
    drop(server);
    let (h1, h2, h3) = (handle.clone(), handle.clone(), handle);
    let publish: PublishAll = match publisher {
        Publisher::Thread => Box::new(move |plan| {
            publish_blocking(plan, |d| {
                smol::block_on(h1.publish(CHANNEL, message(d))).unwrap_or(0)
            })
        }),
        Publisher::Task => Box::new(move |plan| {
            let h = h1.clone();
            let task = smol::spawn(async move {
                publish_async(
                    plan,
                    |d| {
                        let h = h.clone();
                        async move { h.publish(CHANNEL, message(d)).await.unwrap_or(0) }
                    },
                    |d| async move {
                        smol::Timer::after(d).await;
                    },
                )
                .await
            });
            smol::block_on(task)
        }),
    };
    Ok(Served {
        port,
        publish,
        subscribers: Box::new(move || smol::block_on(h2.subscriber_count(CHANNEL)).unwrap_or(0)),
        stats: Box::new(move || smol::block_on(h3.stats()).ok()),
        broker,
    })
}

/// A multi-thread runtime with default settings: one worker per CPU this
/// process may run on (one, when pinned).
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(Box::leak(Box::new(rt)))
}

/// Runs `f` as a task on `rt` and waits for it from this thread.
fn on_runtime<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    rt.block_on(rt.spawn(f)).ok()
}

fn tokio_sleep(d: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(d)
}

fn serve_tokio(publisher: Publisher, broker: Option<&str>) -> io::Result<Served> {
    let rt = runtime()?;
    let mut builder = wshub_tokio::Server::builder(config());
    let mut outputs = None;
    if broker.is_some() {
        let (link, out) = wshub_redis::link();
        builder = builder.broker(link);
        outputs = Some(out);
    }
    let mut server = rt.block_on(builder.bind(localhost()))?;
    let port = server.local_addr().map_or(0, |a| a.port());
    let mut events = server.take_events();
    rt.spawn(async move { while events.recv().await.is_some() {} });
    let handle = server.handle().blocking();
    let broker = match broker.zip(outputs) {
        Some((url, out)) => {
            let h = handle.clone();
            Some(start_broker(url, out, move |c| h.tell(c).is_ok())?)
        }
        None => None,
    };
    drop(server);
    let (h1, h2, h3) = (handle.clone(), handle.clone(), handle);
    let publish: PublishAll = match publisher {
        Publisher::Thread => Box::new(move |plan| {
            publish_blocking(plan, |d| h1.publish(CHANNEL, message(d)).unwrap_or(0))
        }),
        Publisher::Task => Box::new(move |plan| {
            let h = h1.handle().clone();
            let all = async move {
                publish_async(
                    plan,
                    |d| {
                        let h = h.clone();
                        async move { h.publish(CHANNEL, message(d)).await.unwrap_or(0) }
                    },
                    tokio_sleep,
                )
                .await
            };
            on_runtime(rt, all).unwrap_or_default()
        }),
    };
    Ok(Served {
        port,
        publish,
        subscribers: Box::new(move || h2.subscriber_count(CHANNEL).unwrap_or(0)),
        stats: Box::new(move || h3.stats().ok()),
        broker,
    })
}

fn serve_baseline(publisher: Publisher) -> io::Result<Served> {
    let rt = runtime()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(localhost()))?;
    let port = listener.local_addr()?.port();
    let hub = Arc::new(baseline::Hub::default());
    rt.spawn(baseline::accept_loop(listener, hub.clone()));
    let (h1, h2) = (hub.clone(), hub);
    let publish: PublishAll = match publisher {
        Publisher::Thread => {
            Box::new(move |plan| publish_blocking(plan, |d| h1.publish(CHANNEL, d)))
        }
        // The publish itself never waits; the yield after it stands for
        // the await an application's publisher has between messages (on
        // whatever produces them), so the writers get to run.
        Publisher::Task => Box::new(move |plan| {
            let h = h1.clone();
            let all = async move {
                publish_async(
                    plan,
                    |d| {
                        let n = h.publish(CHANNEL, d);
                        async move {
                            tokio::task::yield_now().await;
                            n
                        }
                    },
                    tokio_sleep,
                )
                .await
            };
            on_runtime(rt, all).unwrap_or_default()
        }),
    };
    Ok(Served {
        port,
        publish,
        subscribers: Box::new(move || h2.subscriber_count(CHANNEL)),
        stats: Box::new(|| None),
        broker: None,
    })
}

/// The JSON every server sends: wshub's `Message` shape for a channel publish.
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    channel: &'a str,
    data: &'a str,
    timestamp: String,
}

/// What baseline clients send: `{"type":"subscribe","data":"bench"}`.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: String,
}

/// A small tokio-tungstenite hub written the way a typical application does
/// it: a task per connection with an unbounded mpsc queue drained by a writer
/// task (`SinkExt::send`, which flushes each message), a mutex-guarded map of
/// channel -> connection ids and one of id -> queue, serialize once with
/// serde_json, clone the `String` into a `Message` per subscriber. Default
/// `WebSocketConfig` and socket options (no TCP_NODELAY), as in the
/// tokio-tungstenite examples.
mod baseline {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    type ConnId = u64;

    #[derive(Default)]
    pub struct Hub {
        channels: Mutex<HashMap<String, HashSet<ConnId>>>,
        clients: Mutex<HashMap<ConnId, mpsc::UnboundedSender<WsMessage>>>,
        next_id: AtomicU64,
    }

    impl Hub {
        pub fn publish(&self, channel: &str, data: String) -> usize {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let msg = Outgoing {
                kind: "event",
                channel,
                data: &data,
                timestamp: Timestamp::from_unix(since_epoch).to_string(),
            };
            let Ok(text) = serde_json::to_string(&msg) else {
                return 0;
            };
            let channels = self.channels.lock().unwrap();
            let Some(subscribers) = channels.get(channel) else {
                return 0;
            };
            let clients = self.clients.lock().unwrap();
            let mut sent = 0;
            for id in subscribers {
                if let Some(tx) = clients.get(id) {
                    if tx.send(WsMessage::text(text.clone())).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        }

        pub fn subscriber_count(&self, channel: &str) -> usize {
            self.channels
                .lock()
                .unwrap()
                .get(channel)
                .map_or(0, HashSet::len)
        }
    }

    pub async fn accept_loop(listener: TcpListener, hub: Arc<Hub>) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, hub.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn connection(stream: TcpStream, hub: Arc<Hub>) {
        let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut source) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel();
        hub.clients.lock().unwrap().insert(id, tx);
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(msg)) = source.next().await {
            let WsMessage::Text(text) = msg else { continue };
            let Ok(req) = serde_json::from_str::<Incoming>(&text) else {
                continue;
            };
            let mut channels = hub.channels.lock().unwrap();
            match req.kind.as_str() {
                "subscribe" => {
                    channels.entry(req.data).or_default().insert(id);
                }
                "unsubscribe" => {
                    if let Some(set) = channels.get_mut(&req.data) {
                        set.remove(&id);
                    }
                }
                _ => {}
            }
        }
        hub.clients.lock().unwrap().remove(&id);
        for set in hub.channels.lock().unwrap().values_mut() {
            set.remove(&id);
        }
        writer.abort();
    }
}
