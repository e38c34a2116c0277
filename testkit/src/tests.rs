//! The checks on hand-made and random inputs: each must pass, and the
//! hand-made ones must reach the states they are written for.

use std::time::Instant;

use quickcheck::{Gen, QuickCheck};
use wshub_core::frame::{self, OpCode};

use crate::hub_ops::{fnv1a, HubModel, St};
use crate::input::ByteCursor;
use crate::wire::upgrade_request;
use crate::{check_backoff, check_frames, check_handshake, check_hub_ops};

// Every check takes an anchor instant from its caller (`Instant` has no other
// constructor, and the core never reads a clock). Only offsets from it are
// used, so the outcome of an input does not depend on its value.
#[allow(clippy::disallowed_methods)]
fn anchor() -> Instant {
    Instant::now()
}

#[test]
fn handshake_hand_made() {
    let good = upgrade_request("/ws");
    let mut with_proto = good.clone();
    with_proto.truncate(good.len() - 2);
    with_proto.extend_from_slice(b"Sec-WebSocket-Protocol: v2, chat\r\n\r\n");
    let mut pipelined = good.clone();
    frame::encode_frame(&mut pipelined, OpCode::Ping, b"hi", Some([1, 2, 3, 4]));
    pipelined.extend_from_slice(&[0x81, 0x05, b'x']);
    let plain = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcdef".to_vec();
    let chunked = b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let bodies = [
        good.clone(),
        with_proto,
        pipelined,
        plain,
        chunked,
        upgrade_request("/elsewhere"),
        good[..good.len() - 1].to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        vec![b'a'; 9000],
        Vec::new(),
    ];
    for seed in [0u8, 1, 0x20, 0x3f, 0x40, 0x60, 0x85, 0xe7, 0xff] {
        for body in &bodies {
            let mut data = vec![seed];
            data.extend_from_slice(body);
            check_handshake(anchor(), &data);
        }
    }
    check_handshake(anchor(), &[]);
}

fn masked(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_frame(&mut out, op, payload, Some([9, 8, 7, 6]));
    out
}

#[test]
fn frames_hand_made() {
    let mut stream = Vec::new();
    stream.extend(masked(OpCode::Text, b"{\"type\":\"ping\",\"id\":1}"));
    stream.extend(masked(OpCode::Ping, b"p"));
    stream.extend(masked(OpCode::Binary, &[0; 300]));
    stream.extend(masked(OpCode::Pong, b""));
    let mut frag = Vec::new();
    frame::encode_fragment(&mut frag, OpCode::Text, false, b"{\"type\"", Some([1; 4]));
    frame::encode_fragment(&mut frag, OpCode::Continuation, true, b":1}", Some([2; 4]));
    let tails: [&[u8]; 6] = [
        &masked(OpCode::Close, &1000u16.to_be_bytes()),
        &masked(OpCode::Close, b""),
        &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], // unmasked
        &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],    // 2^63 bytes
        &masked(OpCode::Text, &[0xc3]),
        &frag,
    ];
    let pings: Vec<u8> = (0..40).flat_map(|_| masked(OpCode::Ping, b"")).collect();
    for flags in [0u8, 2, 5, 7, 0x08, 0x0d, 0x10, 0x16, 0x1f] {
        for seed in [0u8, 3, 0x3f] {
            for tail in tails {
                let mut data = vec![flags, seed];
                data.extend_from_slice(&stream);
                data.extend_from_slice(tail);
                data.extend_from_slice(&stream);
                check_frames(anchor(), &data);
            }
            let mut data = vec![flags, seed];
            data.extend_from_slice(&pings);
            check_frames(anchor(), &data);
        }
    }
    check_frames(anchor(), &[]);
    check_frames(anchor(), &[0]);
}

/// Builds hub_ops programs.
#[derive(Default)]
struct Prog(Vec<u8>);

impl Prog {
    fn new(a: u8, b: u8) -> Self {
        Prog(vec![a, b])
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Open slot `s` and upgrade with target index `target`.
    fn connect(self, s: u8, target: u8) -> Self {
        self.op(&[20, s, target])
    }
    fn frame(self, s: u8, kind: u8, ch: u8) -> Self {
        self.op(&[2, s, kind, ch, 1, 2, 3, 4, 0xff])
    }
    fn publish(self, ch: u8) -> Self {
        self.op(&[4, ch, 0])
    }
}

fn programs() -> Vec<Vec<u8>> {
    let chat = Prog::new(0x80 | 0x08, 0)
        .connect(0, 1)
        .connect(1, 2)
        .connect(2, 0)
        .frame(0, 0x80, 0) // subscribe c0 with id
        .frame(1, 0x81, 0) // level-0 subscribe c0
        .frame(2, 0x80 | 12, 1) // fragmented subscribe c1
        .publish(0)
        .publish(1)
        .frame(1, 0x83, 0) // client publish to c0
        .op(&[5]) // broadcast
        .op(&[7, 0]) // to user a
        .op(&[6, 2]) // send
        .frame(0, 0x82, 0) // unsubscribe
        .publish(0)
        .op(&[8, 3, 3, 9, 3, 3]) // server subscribe then unsubscribe news
        .frame(1, 0x84, 0) // ping
        .frame(1, 0x85, 0) // unknown type
        .frame(1, 8, 0)
        .op(&[0]) // payload length of the ping
        .frame(2, 10 | 0x10, 0) // close 1000
        .op(&[10, 0, 1]) // server close 4000
        .publish(0)
        .op(&[15, 8]); // 30 s
    let slow = Prog::new(0x03, 0x02)
        .connect(0, 0)
        .connect(1, 0)
        .op(&[8, 0, 0, 8, 1, 0])
        .publish(0)
        .publish(0)
        .publish(0)
        .op(&[11, 0, 3]) // write 10 bytes of slot 0
        .publish(0)
        .op(&[12])
        .publish(0)
        .op(&[15, 5, 15, 5, 16, 3, 0, 0, 16, 0, 5, 0]);
    let auth = Prog::new(0x40 | 0x80, 0x02)
        .connect(0, 3) // deferred
        .connect(1, 4) // deferred
        .connect(2, 5) // 401
        .connect(3, 6) // 403
        .connect(4, 7) // 404
        .connect(4, 9) // 403 with the origin allow-list
        .frame(0, 0x80, 0) // pipelined while pending
        .op(&[17, 0, 0]) // accept
        .op(&[17, 1, 3]) // still deferred
        .op(&[17, 2, 0]) // not pending
        .connect(5, 0)
        .connect(6, 0)
        .connect(7, 0) // over the connection limit
        .op(&[15, 2]) // 2 s: the deferred one expires
        .op(&[17, 1, 1]);
    let garbage = Prog::new(0x80, 0x01)
        .connect(0, 0)
        .op(&[3, 0, 4, 0x81, 0x83, 0, 0])
        .op(&[0, 1, 3, 1, 5, b'G', b'E', b'T', b' ', b'/'])
        .op(&[15, 9, 13, 1, 14, 0, 6, 0, 18, 0, 0, 2])
        .frame(0, 6, 0)
        .frame(0, 7, 0)
        .frame(0, 7, 0);
    let churn = Prog::new(0x44, 0x03)
        .connect(0, 0)
        .op(&[13, 0])
        .connect(0, 1)
        .op(&[14, 0, 6, 0, 11, 0, 7, 10, 0, 0])
        .connect(0, 2)
        .connect(1, 2)
        .op(&[7, 1, 18, 0, 0, 1, 5]);
    let http = Prog::new(0x80, 0x06)
        .connect(0, 8) // a plain request, handed over
        .connect(1, 8)
        .op(&[19, 0, 0, 19, 0, 2]) // answered 200, then again (WrongState)
        .connect(2, 0)
        .op(&[15, 3, 19, 1, 1]); // 2 s: the other one timed out (408)
    let keep_alive = Prog::new(0x80, 0x04)
        .connect(0, 8)
        .op(&[19, 0, 0]) // 200, kept alive
        .connect(0, 8) // the next request on the same connection
        .op(&[19, 0, 1]) // 204
        .connect(0, 1) // then an upgrade on it
        .frame(0, 0x84, 0) // ping with an id: pong
        .op(&[1, 1, 8, 0]) // slot 1 is not open: nothing
        .connect(1, 8)
        .op(&[1, 1, 8, 0]) // pipelined, byte by byte, before the answer
        .op(&[19, 1, 0, 19, 1, 2]) // both answered, in order
        .connect(1, 8)
        .op(&[19, 1, 0])
        .op(&[15, 7]) // 11 s idle: closed
        .connect(2, 8)
        .op(&[19, 2, 0])
        .op(&[3, 2, 5, b'x', b'\r', b'\n', b'\r', b'\n']) // garbage: 400
        .connect(3, 8)
        .op(&[19, 3, 0])
        .op(&[10, 3, 0]); // closed between requests
    vec![
        chat.0,
        slow.0,
        auth.0,
        garbage.0,
        churn.0,
        http.0,
        keep_alive.0,
    ]
}

#[test]
fn hub_ops_hand_made() {
    for p in programs() {
        check_hub_ops(anchor(), &p);
        // Other configurations too.
        for a in [0x00u8, 0x1b, 0x27, 0x7f, 0xff] {
            for b in [0x03u8, 0x1c, 0x1f] {
                let mut q = p.clone();
                q[0] = a;
                q[1] ^= b;
                check_hub_ops(anchor(), &q);
            }
        }
    }
    check_hub_ops(anchor(), &[]);
    check_hub_ops(anchor(), &[0xff; 40]);
}

#[test]
fn hub_ops_model_sees_deliveries() {
    // Guards the harness itself: the hand-made chat program must deliver
    // tagged publishes, or the delivery check would be vacuous.
    let p = programs().remove(0);
    let mut input = ByteCursor::new(&p);
    let mut ops = HubModel::new(input.byte(), input.byte(), fnv1a(&p), anchor());
    while !input.is_empty() {
        ops.step(&mut input);
    }
    let delivered: usize = ops.tracks.iter().map(|t| t.got).sum();
    assert!(delivered >= 6, "only {delivered} deliveries");
    assert!(ops
        .tracks
        .iter()
        .any(|t| t.st == St::Open && t.subs.contains("c0")));
    ops.finish();
}

#[test]
fn hub_ops_model_sees_kept_alive_connections() {
    // Guards the harness: the keep-alive program answers two requests on
    // one connection, which then upgrades; with a cap of two requests the
    // second answer ends it instead.
    for (b, upgraded) in [(0x04, true), (0x24, false)] {
        let mut p = programs().remove(6);
        p[1] = b;
        let mut input = ByteCursor::new(&p);
        let mut ops = HubModel::new(input.byte(), input.byte(), fnv1a(&p), anchor());
        while !input.is_empty() {
            ops.step(&mut input);
        }
        let first = &ops.tracks[0];
        assert!(first.http_answered >= 2, "{} answers", first.http_answered);
        assert_eq!(first.st == St::Open, upgraded, "{:?}", first.st);
        ops.finish();
    }
}

#[test]
fn backoff_hand_made() {
    let inputs: [&[u8]; 6] = [
        &[],
        &[2, 0, 0, 3, 1, 0, 3, 30, 0, 0],
        &[6, 1, 1, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3],
        &[
            4, 2, 2, 3, 2, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[0xff; 64],
        &[
            1, 0, 3, 2, 0, 1, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 5, 1, 0, 6,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
        ],
    ];
    for data in inputs {
        check_backoff(anchor(), data);
    }
}

/// Fixed seeds: a failure reproduces on every run (and the corpus
/// replay, not luck, decides whether a known crash shows).
fn quick(tests: u64, size: usize, seed: u64, f: fn(Vec<u8>) -> bool) {
    QuickCheck::new()
        .tests(tests)
        .rng(Gen::from_size_and_seed(size, seed))
        .quickcheck(f);
}

#[test]
fn random_inputs_hold() {
    quick(1000, 300, 1, |d| {
        check_handshake(anchor(), &d);
        true
    });
    quick(1000, 300, 2, |d| {
        check_frames(anchor(), &d);
        true
    });
    quick(2000, 100, 3, |d| {
        check_backoff(anchor(), &d);
        true
    });
    quick(3000, 400, 4, |d| {
        check_hub_ops(anchor(), &d);
        true
    });
}

#[test]
fn random_programs_hold() {
    // Random programs built from the hand-made ones by splicing random
    // bytes in reach far deeper than random bytes alone.
    quick(2000, 64, 5, |noise| {
        let base = programs();
        let mut p = base[noise.len() % base.len()].clone();
        let at = 2 + noise.first().map_or(0, |&b| usize::from(b)) % (p.len() - 2);
        p.splice(at..at, noise.iter().copied());
        check_hub_ops(anchor(), &p);
        true
    });
}
