//! `fanout`: one 64 B payload published to a channel with n = 1, 1,000 and
//! 100,000 subscribers.
//!
//! Fixture: n connections opened and upgraded through the hub (`open`,
//! `handle_read` of a real request, 101 written), each `subscribe`d to one
//! channel. The message is `Message::new("event", "<64 ASCII bytes>")`; the
//! hub adds the channel and a timestamp, so the frame on the wire is larger
//! than 64 B (printed at start-up).
//!
//! Functions (throughput = n deliveries per iteration, so time / n is ns per
//! delivery):
//! - `wshub_publish`: `Hub::publish` alone: serialize + frame once, then queue
//!   a shared `Bytes` on every subscriber. Timed per publish; the drain
//!   between iterations (`poll_transmit` + `handle_written` for every
//!   subscriber, which also drops the frames) is **excluded**. Every queue is
//!   empty when a publish starts, as in a server whose sockets keep up.
//! - `wshub_drain`: the other half, measured separately: the driver's
//!   `poll_transmit` + `handle_written` for every subscriber after one
//!   publish (the publish itself is excluded).
//! - `naive_publish` (baseline): `NaiveHub::publish` from the lib: serde_json
//!   once, then for each id in a `HashMap<String, HashSet<usize>>` channel
//!   map, look the client up in a `HashMap<usize, VecDeque<Vec<u8>>>` and push
//!   a `Vec<u8>` clone. Its drain (pop + drop) is excluded the same way.
//! - `naive_drain`: that drain, measured separately.
//! - `instant_pair`: cost of the `Instant::now()` pair around each timed
//!   region, included in every figure above (it matters only at n = 1).
//!
//! - `history_off` / `history_on` (n = 1,000 under `cargo bench`): the
//!   `wshub_publish` measurement on two hubs built the same way, one with
//!   `HistoryConfig::off()` and one with the default history (every channel,
//!   100 publications): the cost of numbering, framing the positioned
//!   variant once and storing it, with plain subscribers only. The hub
//!   default is history on, so `wshub_publish` above includes it too.
//!
//! Between timed publishes no `handle_timeout` runs: the write-stall check
//! armed by the first output stays armed, as it does in a server publishing
//! more often than once per `write_timeout`.

// The timing itself: the core bans clocks in the core only.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use wshub_benches::{
    bench_mode, drain_output, fanout_hub, open_upgraded, start_instant, text_payload, NaiveHub,
    CHANNEL, UNIX_START,
};
use wshub_core::{HistoryConfig, Hub, HubConfig, Message};

/// [`fanout_hub`] with the history configuration given.
fn hub_with_history(now: Instant, n: usize, history: HistoryConfig) -> Hub {
    let cfg = HubConfig {
        max_connections: n * 2,
        history,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(cfg, now, UNIX_START).expect("bench config");
    let mut frames = Vec::new();
    for _ in 0..n {
        let id = open_upgraded(&mut hub, now, &mut frames);
        hub.subscribe(now, id, CHANNEL).expect("subscribe");
    }
    hub
}

/// History on vs off, same fixture, same run.
fn history(c: &mut Criterion) {
    let mut group = c.benchmark_group("history");
    let now = start_instant();
    let n = if bench_mode() { 1_000 } else { 100 };
    let template = Message::new("event", Value::String(text_payload(64)));
    group.throughput(Throughput::Elements(n as u64));
    for (name, cfg) in [
        ("history_off", HistoryConfig::off()),
        ("history_on", HistoryConfig::default()),
    ] {
        let mut hub = hub_with_history(now, n, cfg);
        let mut frames: Vec<Bytes> = Vec::new();
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let m = template.clone();
                    let t = Instant::now();
                    let got = hub.publish(now, black_box(CHANNEL), m);
                    total += t.elapsed();
                    debug_assert_eq!(got, n);
                    black_box(got);
                    drain_output(&mut hub, now, &mut frames);
                }
                total
            })
        });
        assert_eq!(hub.stats().slow_consumers, 0);
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let now = start_instant();
    let sizes: &[usize] = if bench_mode() {
        &[1, 1_000, 100_000]
    } else {
        &[1, 100]
    };
    let payload = Value::String(text_payload(64));
    let template = Message::new("event", payload.clone());

    group.throughput(Throughput::Elements(1));
    group.bench_function("instant_pair", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                total += t.elapsed();
            }
            total
        })
    });

    for &n in sizes {
        group.throughput(Throughput::Elements(n as u64));
        let mut hub = fanout_hub(now, n);
        let mut frames: Vec<Bytes> = Vec::new();
        if n == sizes[0] {
            hub.publish(now, CHANNEL, template.clone());
            if let Some(id) = hub.poll_transmit(&mut frames) {
                let len = frames[0].len();
                eprintln!("fanout: 64 B payload -> {len} B frame on the wire");
                let _ = hub.handle_written(now, id, len);
            }
            frames.clear();
            drain_output(&mut hub, now, &mut frames);
        }

        group.bench_with_input(BenchmarkId::new("wshub_publish", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let m = template.clone();
                    let t = Instant::now();
                    let got = hub.publish(now, black_box(CHANNEL), m);
                    total += t.elapsed();
                    debug_assert_eq!(got, n);
                    black_box(got);
                    drain_output(&mut hub, now, &mut frames);
                }
                total
            })
        });

        group.bench_with_input(BenchmarkId::new("wshub_drain", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    hub.publish(now, CHANNEL, template.clone());
                    let t = Instant::now();
                    let written = drain_output(&mut hub, now, &mut frames);
                    total += t.elapsed();
                    debug_assert_eq!(written, n);
                    black_box(written);
                }
                total
            })
        });
        assert_eq!(hub.stats().slow_consumers, 0);
        drop(hub);

        let mut naive = NaiveHub::with_subscribers(n);
        group.bench_with_input(BenchmarkId::new("naive_publish", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let got = naive.publish(UNIX_START, black_box(CHANNEL), &payload);
                    total += t.elapsed();
                    debug_assert_eq!(got, n);
                    black_box(got);
                    naive.drain();
                }
                total
            })
        });

        group.bench_with_input(BenchmarkId::new("naive_drain", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    naive.publish(UNIX_START, CHANNEL, &payload);
                    let t = Instant::now();
                    let drained = naive.drain();
                    total += t.elapsed();
                    debug_assert_eq!(drained, n);
                    black_box(drained);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fanout, history
}
criterion_main!(benches);
