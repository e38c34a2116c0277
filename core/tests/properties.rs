//! Property tests: routing against a model, and byte-split invariance.

mod common;

use std::collections::BTreeSet;

use common::*;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde_json::json;
use wshub_core::frame::OpCode;
use wshub_core::{ConnId, HubConfig, Message};

#[derive(Clone, Debug)]
enum Op {
    Connect(u8),
    Sub(u8, u8),
    Unsub(u8, u8),
    ServerSub(u8, u8),
    Disconnect(u8),
    Publish(u8),
}

const CONNS: u8 = 6;
const TOPICS: u8 = 4;

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let c = *g.choose(&(0..CONNS).collect::<Vec<_>>()).unwrap();
        let t = *g.choose(&(0..TOPICS).collect::<Vec<_>>()).unwrap();
        match *g.choose(&[0, 1, 1, 1, 2, 3, 4, 5, 5]).unwrap() {
            0 => Op::Connect(c),
            1 => Op::Sub(c, t),
            2 => Op::Unsub(c, t),
            3 => Op::ServerSub(c, t),
            4 => Op::Disconnect(c),
            _ => Op::Publish(t),
        }
    }
}

fn routing_matches_model(ops: Vec<Op>) -> TestResult {
    let mut sim = Sim::new(HubConfig::default());
    let mut ids: Vec<Option<ConnId>> = vec![None; CONNS as usize];
    let mut model: BTreeSet<(u8, u8)> = BTreeSet::new();
    let mut seq = 0u64;
    for op in &ops {
        match *op {
            Op::Connect(c) => {
                if ids[c as usize].is_none() {
                    ids[c as usize] = Some(sim.connect());
                }
            }
            Op::Sub(c, t) | Op::ServerSub(c, t) => {
                let Some(id) = ids[c as usize] else { continue };
                if matches!(op, Op::Sub(..)) {
                    sim.send_text(id, &format!(r#"{{"type":"subscribe","data":"t{t}"}}"#));
                } else {
                    let added = sim.hub.subscribe(sim.now, id, &format!("t{t}")).unwrap();
                    if added == model.contains(&(c, t)) {
                        return TestResult::error(format!("subscribe returned {added} for {op:?}"));
                    }
                }
                model.insert((c, t));
            }
            Op::Unsub(c, t) => {
                let Some(id) = ids[c as usize] else { continue };
                let removed = sim.hub.unsubscribe(sim.now, id, &format!("t{t}")).unwrap();
                if removed != model.remove(&(c, t)) {
                    return TestResult::error(format!("unsubscribe returned {removed} for {op:?}"));
                }
            }
            Op::Disconnect(c) => {
                let Some(id) = ids[c as usize].take() else {
                    continue;
                };
                sim.hub.handle_eof(sim.now, id).unwrap();
                sim.pump();
                model.retain(|&(mc, _)| mc != c);
            }
            Op::Publish(t) => {
                seq += 1;
                let n = sim
                    .hub
                    .publish(sim.now, &format!("t{t}"), Message::new("m", json!(seq)));
                sim.pump();
                let want: BTreeSet<u8> = model
                    .iter()
                    .filter(|&&(_, mt)| mt == t)
                    .map(|&(c, _)| c)
                    .collect();
                if n != want.len() {
                    return TestResult::error(format!(
                        "publish reached {n}, model says {}",
                        want.len()
                    ));
                }
                for (c, id) in ids.iter().enumerate() {
                    let Some(id) = *id else { continue };
                    let got: Vec<_> = sim
                        .take_json(id)
                        .into_iter()
                        .filter(|m| m["type"] == "m")
                        .collect();
                    let should = want.contains(&(c as u8));
                    if got.len() != usize::from(should) || (should && got[0]["data"] != json!(seq))
                    {
                        return TestResult::error(format!(
                            "conn {c} got {got:?} after {op:?}, model {should}"
                        ));
                    }
                }
            }
        }
        if let Err(e) = sim.hub.check_invariants() {
            return TestResult::error(e);
        }
        for t in 0..TOPICS {
            let want = model.iter().filter(|&&(_, mt)| mt == t).count();
            if sim.hub.subscriber_count(&format!("t{t}")) != want {
                return TestResult::error(format!("subscriber count of t{t} differs"));
            }
        }
        let channels = (0..TOPICS)
            .filter(|&t| model.iter().any(|&(_, mt)| mt == t))
            .count();
        if sim.hub.stats().channels != channels {
            return TestResult::error("channel count differs (empty channel kept?)".to_string());
        }
    }
    TestResult::passed()
}

#[test]
fn routing_against_a_model() {
    QuickCheck::new()
        .tests(300)
        .rng(Gen::new(60))
        .quickcheck(routing_matches_model as fn(Vec<Op>) -> TestResult);
}

/// A session's worth of client bytes: handshake, then a mix of messages.
fn session_bytes() -> Vec<u8> {
    let mut b = request("/ws?x=1", &[("Origin", "https://a.example")]);
    b.extend(text(r#"{"type":"subscribe","data":"alpha","id":1}"#));
    b.extend(masked(OpCode::Ping, b"p"));
    b.extend(text(r#"{"type":"ping","id":"two"}"#));
    b.extend(text("garbage"));
    b.extend(text(
        r#"{"type":"publish","channel":"alpha","data":{"ünï":"cödé"},"id":3}"#,
    ));
    // A fragmented text message with a 3-byte char split across fragments.
    let mut frag = Vec::new();
    let msg = r#"{"type":"unsubscribe","data":"alpha","id":"€"}"#.as_bytes();
    let cut = msg.iter().position(|&c| c == 0xe2).unwrap() + 1;
    push_fragment(&mut frag, 0x1, &msg[..cut], false);
    push_fragment(&mut frag, 0x9, b"mid", true);
    push_fragment(&mut frag, 0x0, &msg[cut..], true);
    b.extend(frag);
    b
}

fn push_fragment(out: &mut Vec<u8>, opcode: u8, payload: &[u8], fin: bool) {
    let mask = [7u8, 1, 9, 3];
    out.push(if fin { 0x80 } else { 0 } | opcode);
    assert!(payload.len() < 126);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

fn run_split(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, String) {
    let mut sim = Sim::new(HubConfig::default());
    let id = sim.open();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(start, bytes.len());
        sim.feed(id, &bytes[start..c]);
        start = c;
    }
    (sim.rx[&id].raw.clone(), format!("{:?}", sim.events))
}

#[test]
fn byte_split_invariance() {
    let bytes = session_bytes();
    let whole = run_split(&bytes, &[]);
    assert!(whole.1.contains("Connected"));
    assert!(
        String::from_utf8_lossy(&whole.0).contains("\"id\":\"€\""),
        "fragmented message handled"
    );
    let every: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(run_split(&bytes, &every), whole, "byte by byte");
    fn prop(cuts: Vec<u16>) -> bool {
        let bytes = session_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c as usize % bytes.len()).collect();
        cuts.sort();
        run_split(&bytes, &cuts) == run_split(&bytes, &[])
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(Vec<u16>) -> bool);
}
