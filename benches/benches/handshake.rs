//! `handshake`: one upgrade request in, one 101 out.
//!
//! - `wshub_hub_cycle`: the whole life of a connection that upgrades and leaves,
//!   through `wshub_core::Hub`, as a driver runs it: `open`, `handle_read` of
//!   the full request, `poll_transmit` + `handle_written` of the 101, drain
//!   events (`Connected`), `handle_eof`, drain events (`Closed`), and the
//!   `poll_timeout`/`handle_timeout` step the crate docs' loop ends with (it
//!   sweeps the stale deadline entries each cycle leaves in the timer heap;
//!   without it that heap would grow without bound during the run).
//! - `wshub_request_reader`: `wshub_core::handshake::RequestReader::feed` alone
//!   (parse + the request-only checks + building the `Upgrade`), no 101.
//! - `baseline_tungstenite`: `Request::try_parse` (httparse with 124 header
//!   slots, into an `http::Request`), `create_response`, `write_response` into
//!   a `Vec`: what tungstenite's own `accept` does per request, minus I/O.
//! - `baseline_raw_minimum`: httparse into 64 stack slots, find
//!   `Sec-WebSocket-Key`, `wshub_core::handshake::switching_protocols` (SHA-1,
//!   base64, the 101 bytes). No validation at all: a floor no real server
//!   should go under, not a competitor.
//!
//! All four take the same browser-like request (`wshub_benches::REQUEST`).
//! Throughput is one handshake per iteration, so criterion's `elem/s` is
//! handshakes per second.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};
use wshub_benches::{drain_events, drain_output, new_hub, start_instant, REQUEST};
use wshub_core::handshake::{switching_protocols, HandshakeConfig, Parsed, RequestReader};
use wshub_core::PeerInfo;

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    let now = start_instant();
    let mut hub = new_hub(now, 1024);
    let mut frames: Vec<Bytes> = Vec::new();
    group.bench_function("wshub_hub_cycle", |b| {
        b.iter(|| {
            let id = match hub.open(now, PeerInfo::default()) {
                Ok(id) => id,
                Err(e) => panic!("open: {e:?}"),
            };
            if let Err(e) = hub.handle_read(now, id, black_box(REQUEST)) {
                panic!("handle_read: {e:?}");
            }
            let written = drain_output(&mut hub, now, &mut frames);
            let events = drain_events(&mut hub);
            if let Err(e) = hub.handle_eof(now, id) {
                panic!("handle_eof: {e:?}");
            }
            let closed = drain_events(&mut hub);
            if hub.poll_timeout().is_some_and(|t| t <= now) {
                hub.handle_timeout(now);
            }
            debug_assert_eq!((written, events, closed), (1, 1, 1));
            black_box((written, events, closed))
        })
    });
    assert_eq!(hub.stats().connections, 0);

    let cfg = HandshakeConfig {
        paths: vec!["/ws".to_owned()],
        ..HandshakeConfig::default()
    };
    let peer = PeerInfo::default();
    group.bench_function("wshub_request_reader", |b| {
        b.iter(|| {
            let mut reader = RequestReader::new();
            let parsed = reader.feed(&cfg, &peer, black_box(REQUEST));
            debug_assert!(matches!(parsed, Parsed::Done { .. }));
            parsed
        })
    });

    group.bench_function("baseline_tungstenite", |b| {
        b.iter(|| {
            let req = match Request::try_parse(black_box(REQUEST)) {
                Ok(Some((_, req))) => req,
                other => panic!("try_parse: {other:?}"),
            };
            let resp = match create_response(&req) {
                Ok(r) => r,
                Err(e) => panic!("create_response: {e:?}"),
            };
            let mut out = Vec::with_capacity(160);
            if let Err(e) = write_response(&mut out, &resp) {
                panic!("write_response: {e:?}");
            }
            out
        })
    });

    group.bench_function("baseline_raw_minimum", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(black_box(REQUEST)) {
                Ok(httparse::Status::Complete(_)) => {}
                other => panic!("httparse: {other:?}"),
            }
            let key = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .unwrap_or_default();
            switching_protocols(key, None)
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = handshake
}
criterion_main!(benches);
