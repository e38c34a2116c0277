//! `recovery`: a mass reconnect that recovers. n = 1,000 clients (50 under
//! `cargo test --benches`) subscribed with `"positions":true` to one
//! channel are all cut at once (`handle_eof`), 100 publications go to the
//! channel while they are away (the default history keeps exactly the
//! newest 100), then every client reconnects and resubscribes with
//! `"recover":{"offset":..,"epoch":..}` at the position it held.
//!
//! Timed, per iteration (`mass_recovery/n`, throughput n: time / n is the
//! cost per client): feeding each client's subscribe frame through
//! `handle_read`, the events, and draining the replays as a driver whose
//! sockets take everything would (`poll_transmit` + `handle_written`) until
//! every client has its ack and its 100 messages (checked: n x 101 frames,
//! n more recoveries in `Stats`). Not timed: the cut, the 100 publications
//! and the n reconnects (open + upgrade), redone before each iteration on
//! the same hub. Pure core, virtual time (one fixed instant).

// The timing itself: the core bans clocks in the core only.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use wshub_benches::{
    bench_mode, drain_events, drain_output, masked_text_frame, new_hub, open_upgraded,
    start_instant, text_payload, CHANNEL,
};
use wshub_core::{ConnId, Hub, Message};

/// Publications missed while away: the default history's size.
const MISSED: usize = 100;

/// The hub and the clients of the current round.
struct Fixture {
    hub: Hub,
    now: Instant,
    conns: Vec<ConnId>,
    template: Message,
    frames: Vec<Bytes>,
}

impl Fixture {
    /// n clients subscribed with positions, one publication delivered.
    fn new(n: usize) -> Fixture {
        let now = start_instant();
        let mut f = Fixture {
            hub: new_hub(now, n * 2),
            now,
            conns: Vec::new(),
            template: Message::new("event", Value::String(text_payload(64))),
            frames: Vec::new(),
        };
        let subscribe = format!(r#"{{"type":"subscribe","channel":"{CHANNEL}","positions":true}}"#);
        f.reconnect(n, &subscribe);
        f.drain();
        f.hub.publish(now, CHANNEL, f.template.clone());
        f.drain();
        f
    }

    fn drain(&mut self) -> usize {
        drain_events(&mut self.hub);
        drain_output(&mut self.hub, self.now, &mut self.frames)
    }

    /// Opens n new connections and sends each `subscribe`.
    fn reconnect(&mut self, n: usize, subscribe: &str) {
        let frame = masked_text_frame(subscribe, [0x37, 0xfa, 0x21, 0x3d]);
        self.conns = (0..n)
            .map(|_| open_upgraded(&mut self.hub, self.now, &mut self.frames))
            .collect();
        for &id in &self.conns {
            if let Err(e) = self.hub.handle_read(self.now, id, &frame) {
                panic!("handle_read: {e:?}");
            }
        }
    }

    /// Cuts every client and publishes [`MISSED`] messages; returns the
    /// subscribe each client resumes with (all held the same position).
    fn cut_and_publish(&mut self) -> String {
        let held = self
            .hub
            .position(CHANNEL)
            .expect("the channel keeps positions");
        for &id in &self.conns {
            if let Err(e) = self.hub.handle_eof(self.now, id) {
                panic!("handle_eof: {e:?}");
            }
        }
        self.drain();
        assert!(self.conns.iter().all(|&id| !self.hub.contains(id)));
        for _ in 0..MISSED {
            self.hub.publish(self.now, CHANNEL, self.template.clone());
        }
        format!(
            r#"{{"type":"subscribe","channel":"{CHANNEL}","recover":{{"offset":{},"epoch":"{}"}}}}"#,
            held.offset, held.epoch
        )
    }
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    let n = if bench_mode() { 1_000 } else { 50 };
    group.throughput(Throughput::Elements(n as u64));
    let mut f = Fixture::new(n);
    group.bench_with_input(BenchmarkId::new("mass_recovery", n), &n, |b, &n| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let resume = f.cut_and_publish();
                let frame = masked_text_frame(&resume, [0x37, 0xfa, 0x21, 0x3d]);
                f.conns = (0..n)
                    .map(|_| open_upgraded(&mut f.hub, f.now, &mut f.frames))
                    .collect();
                let before = f.hub.stats().recoveries;
                let t = Instant::now();
                for &id in &f.conns {
                    if let Err(e) = f.hub.handle_read(f.now, id, black_box(&frame)) {
                        panic!("handle_read: {e:?}");
                    }
                }
                let written = f.drain();
                total += t.elapsed();
                assert_eq!(
                    written,
                    n * (MISSED + 1),
                    "every client: its ack and 100 messages"
                );
                assert_eq!(f.hub.stats().recoveries - before, n as u64);
            }
            total
        })
    });
    let s = f.hub.stats();
    assert_eq!((s.slow_consumers, s.recoveries_failed), (0, 0));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = recovery
}
criterion_main!(benches);
