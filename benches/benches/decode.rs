//! `decode`: masked client text frames (payload 64 B and 64 KiB, printable
//! ASCII, a different mask key per frame) decoded server-side into owned text.
//!
//! - `wshub_bulk` / `wshub_per_frame`: `wshub_core::frame::FrameDecoder::decode`
//!   over one buffer holding every frame (called again on the rest after each
//!   message), or called once per frame with a slice holding just that frame.
//!   Each message comes out as a `String` (unmasked, UTF-8 checked).
//! - `tungstenite_bulk` / `tungstenite_per_frame` (baseline):
//!   `tungstenite::protocol::WebSocketContext` (server role, `read_buffer_size`
//!   4096, `write_buffer_size` 0, 1 MiB frame/message limits) reading the same
//!   bytes through the `Lend` in-memory stream, `read()` until `WouldBlock`:
//!   the whole buffer lent at once, or one frame lent per call.
//!
//! Throughput is frames per iteration, so `time / frames` is ns per frame.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::{Role as TRole, WebSocketConfig, WebSocketContext};
use wshub_benches::{bench_mode, masked_text_frames, Lend};
use wshub_core::frame::{Decoded, FrameDecoder, Role};

const LIMIT: usize = 1 << 20;

fn wshub_decode(dec: &mut FrameDecoder, buf: &[u8]) -> usize {
    let mut off = 0;
    let mut got = 0;
    while off < buf.len() {
        let (n, r) = dec.decode(&buf[off..]);
        off += n;
        match r {
            Ok(Some(Decoded::Text(t))) => {
                black_box(t);
                got += 1;
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => {}
            Err(v) => panic!("violation: {v}"),
        }
    }
    got
}

fn tungstenite_read(ctx: &mut WebSocketContext, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut lend = Lend { input, out };
    let mut got = 0;
    loop {
        match ctx.read(&mut lend) {
            Ok(m) => {
                black_box(m);
                got += 1;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return got;
            }
            Err(e) => panic!("tungstenite: {e}"),
        }
    }
}

fn tungstenite_ctx() -> WebSocketContext {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_frame_size(Some(LIMIT))
        .max_message_size(Some(LIMIT));
    WebSocketContext::new(TRole::Server, Some(cfg))
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    // (label, payload bytes, frames per iteration)
    let cases: [(&str, usize, usize); 2] = if bench_mode() {
        [("64B", 64, 1024), ("64KiB", 64 * 1024, 16)]
    } else {
        [("64B", 64, 8), ("64KiB", 64 * 1024, 2)]
    };
    for (label, payload, count) in cases {
        let (buf, bounds) = masked_text_frames(payload, count);
        let frames: Vec<&[u8]> = bounds.windows(2).map(|w| &buf[w[0]..w[1]]).collect();
        group.throughput(Throughput::Elements(count as u64));

        let mut dec = FrameDecoder::new(Role::Server, LIMIT);
        group.bench_function(BenchmarkId::new("wshub_bulk", label), |b| {
            b.iter(|| {
                let got = wshub_decode(&mut dec, black_box(&buf));
                debug_assert_eq!(got, count);
                got
            })
        });
        group.bench_function(BenchmarkId::new("wshub_per_frame", label), |b| {
            b.iter(|| {
                let mut got = 0;
                for f in &frames {
                    got += wshub_decode(&mut dec, black_box(f));
                }
                debug_assert_eq!(got, count);
                got
            })
        });

        let mut ctx = tungstenite_ctx();
        let mut out = Vec::new();
        group.bench_function(BenchmarkId::new("tungstenite_bulk", label), |b| {
            b.iter(|| {
                let got = tungstenite_read(&mut ctx, black_box(&buf), &mut out);
                debug_assert_eq!(got, count);
                got
            })
        });
        group.bench_function(BenchmarkId::new("tungstenite_per_frame", label), |b| {
            b.iter(|| {
                let mut got = 0;
                for f in &frames {
                    got += tungstenite_read(&mut ctx, black_box(f), &mut out);
                }
                debug_assert_eq!(got, count);
                got
            })
        });
        assert!(out.is_empty(), "tungstenite wrote {} bytes", out.len());
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decode
}
criterion_main!(benches);
