//! The model world: three clients that behave as the contract asks a client
//! to (track the position per channel, resume with `recover`, treat an
//! offset jump as a gap and re-sync, drop a repeated offset), a hub with a
//! small history, and the checks made on every message they receive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wshub_core::{ConnId, Event, HistoryConfig, HistoryRule, Hub, HubConfig, Message};

use super::ops::{RecoveryOp, CHANNELS, CLIENTS};
use super::sim::Sim;
use crate::virtual_time::VirtualTime;
use crate::wire::UNIX_AT_START;

pub(super) fn channel(ch: u8) -> String {
    format!("c{ch}")
}

fn config(seed: u64) -> HubConfig {
    HubConfig {
        history: HistoryConfig {
            rules: vec![HistoryRule {
                pattern: "*".into(),
                size: 5,
                ttl: Duration::from_secs(6),
            }],
            max_bytes: 1 << 20,
            meta_ttl: Duration::from_secs(20),
            max_replay: 7,
        },
        max_queued_messages: 6,
        seed,
        ..HubConfig::default()
    }
}

/// What a subscribe asked for, until its ack comes.
#[derive(Clone, Debug)]
enum Asked {
    Recover(u64, String),
    Positions,
    History,
}

#[derive(Clone, Debug, Default)]
struct Track {
    /// The position the client holds (kept across cuts, as a client does).
    position: Option<(String, u64)>,
    /// Offsets received since the state was (re)loaded; contiguous.
    seen: Vec<u64>,
    /// Subscribed on the current connection and acked.
    live: bool,
    /// Requests in flight, with the channel's position when each was made.
    asked: std::collections::VecDeque<(Asked, Option<wshub_core::StreamPosition>)>,
    /// A gap was seen: everything until the re-sync ack is dropped.
    dropping: bool,
    /// After a re-sync of a held subscription the replay repeats what was
    /// in flight: offsets up to this are duplicates the client drops.
    dups_upto: u64,
    /// Acks still in flight for subscriptions since unsubscribed.
    stale: usize,
}

#[derive(Default)]
struct Client {
    conn: Option<ConnId>,
    tracks: HashMap<u8, Track>,
}

pub(super) struct World {
    pub(super) sim: Sim,
    clients: Vec<Client>,
    /// (channel, epoch, offset) -> the payload published there.
    published: HashMap<(u8, String, u64), Value>,
    seq: u64,
    pub(super) gaps: u64,
    pub(super) dups: u64,
    unix: Duration,
    seed: u64,
}

impl World {
    pub(super) fn new(seed: u64, now: Instant) -> World {
        World {
            sim: Sim::new(config(seed), now),
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            published: HashMap::new(),
            seq: 0,
            gaps: 0,
            dups: 0,
            unix: UNIX_AT_START,
            seed,
        }
    }

    fn send(&mut self, c: u8, text: &str) {
        if let Some(id) = self.clients[c as usize].conn {
            if self.sim.hub.contains(id) {
                self.sim.send_text(id, text);
            }
        }
    }

    fn subscribe(&mut self, c: u8, ch: u8, pick: u8) {
        if self.clients[c as usize].conn.is_none() {
            let id = self.sim.connect();
            self.clients[c as usize].conn = Some(id);
        }
        let t = self.clients[c as usize].tracks.entry(ch).or_default();
        let (asked, extra) = match (&t.position, pick % 3) {
            (Some((e, o)), _) => (
                Asked::Recover(*o, e.clone()),
                format!(r#""recover":{{"offset":{o},"epoch":"{e}"}}"#),
            ),
            (None, 0) => {
                let n = 1 + u64::from(pick % 7);
                (Asked::History, format!(r#""history":{n}"#))
            }
            (None, _) => (Asked::Positions, r#""positions":true"#.to_owned()),
        };
        t.dropping = false;
        let text = format!(
            r#"{{"type":"subscribe","channel":"{}","id":{ch},{extra}}}"#,
            channel(ch)
        );
        self.send(c, &text);
        let at = self.sim.hub.position(&channel(ch));
        let t = self.clients[c as usize].tracks.entry(ch).or_default();
        t.asked.push_back((asked, at));
    }

    pub(super) fn apply(&mut self, op: &RecoveryOp) -> Result<(), String> {
        match *op {
            RecoveryOp::Publish(ch, n) => {
                for _ in 0..n {
                    self.seq += 1;
                    let data = json!(self.seq);
                    let now = self.sim.now;
                    self.sim
                        .hub
                        .publish(now, &channel(ch), Message::new("event", data.clone()));
                    let p = self.sim.hub.position(&channel(ch)).ok_or("no position")?;
                    self.published.insert((ch, p.epoch, p.offset), data);
                }
                self.sim.pump();
            }
            RecoveryOp::Cut(c) => {
                if let Some(id) = self.clients[c as usize].conn {
                    self.observe()?;
                    if self.sim.hub.contains(id) {
                        self.sim.hub.handle_eof(self.sim.now, id).unwrap();
                    }
                    self.sim.stalled.retain(|&s| s != id);
                    self.sim.pump();
                }
            }
            RecoveryOp::Subscribe(c, ch, pick) => self.subscribe(c, ch, pick),
            RecoveryOp::Unsubscribe(c, ch) => {
                let t = self.clients[c as usize].tracks.entry(ch).or_default();
                t.live = false;
                t.stale += t.asked.len();
                t.asked.clear();
                let text = format!(r#"{{"type":"unsubscribe","channel":"{}"}}"#, channel(ch));
                self.send(c, &text);
            }
            RecoveryOp::Stall(c) => {
                if let Some(id) = self.clients[c as usize].conn {
                    if !self.sim.stalled.contains(&id) {
                        self.sim.stalled.push(id);
                    }
                }
            }
            RecoveryOp::Release(c) => {
                if let Some(id) = self.clients[c as usize].conn {
                    self.release(id);
                }
            }
            RecoveryOp::Advance(s) => self.sim.advance(Duration::from_secs(u64::from(s))),
            RecoveryOp::Restart => {
                self.observe()?;
                self.unix += Duration::from_secs(30);
                self.sim.hub = Hub::new(config(self.seed), self.sim.now, self.unix).unwrap();
                self.sim.rx.clear();
                self.sim.stalled.clear();
                self.sim.held.clear();
                for cl in &mut self.clients {
                    cl.conn = None;
                    for t in cl.tracks.values_mut() {
                        t.live = false;
                        t.asked.clear();
                        t.dropping = false;
                        t.stale = 0;
                    }
                }
            }
        }
        self.observe()
    }

    fn release(&mut self, id: ConnId) {
        self.sim.stalled.retain(|&s| s != id);
        let held = self.sim.held.remove(&id).unwrap_or_default();
        if !self.sim.hub.contains(id) {
            return;
        }
        let n: usize = held.iter().map(|f| f.len()).sum();
        for f in held {
            self.sim.rx.get_mut(&id).unwrap().extend_from_slice(&f);
        }
        self.sim.hub.handle_written(self.sim.now, id, n).unwrap();
        self.sim.pump();
    }

    /// Feeds every client what it received and checks each message.
    fn observe(&mut self) -> Result<(), String> {
        self.sim.hub.check_invariants()?;
        let mut resync = Vec::new();
        for c in 0..CLIENTS {
            let Some(id) = self.clients[c as usize].conn else {
                continue;
            };
            let msgs = if self.sim.rx.contains_key(&id) {
                self.sim.take_json(id)
            } else {
                Vec::new()
            };
            for m in msgs {
                self.on_message(c, &m, &mut resync)?;
            }
            let closed = self
                .sim
                .events
                .iter()
                .any(|e| matches!(e, Event::Closed { conn, .. } if *conn == id));
            if closed || !self.sim.hub.contains(id) {
                let cl = &mut self.clients[c as usize];
                cl.conn = None;
                for t in cl.tracks.values_mut() {
                    t.live = false;
                    t.asked.clear();
                    t.dropping = false;
                    t.stale = 0;
                }
            }
        }
        for (c, ch) in resync {
            if self.clients[c as usize].conn.is_some() {
                self.subscribe(c, ch, 0);
                self.observe()?;
            }
        }
        Ok(())
    }

    fn on_message(&mut self, c: u8, m: &Value, resync: &mut Vec<(u8, u8)>) -> Result<(), String> {
        match m["type"].as_str() {
            Some("ack") if m["data"].is_object() => {
                let ch = m["id"].as_u64().ok_or("ack without id")? as u8;
                let d = &m["data"];
                let recovered = d["recovered"].as_bool().ok_or("no recovered")?;
                let offset = d["offset"].as_u64().ok_or("no offset")?;
                let epoch = d["epoch"].as_str().ok_or("no epoch")?.to_owned();
                let replayed = d["replayed"].as_u64().ok_or("no replayed")?;
                let t = self.clients[c as usize].tracks.entry(ch).or_default();
                if t.stale > 0 {
                    t.stale -= 1;
                    return Ok(());
                }
                let (asked, current) = t.asked.pop_front().ok_or("an ack nobody asked for")?;
                let current = current.ok_or("no position when asked")?;
                t.live = true;
                t.dropping = false;
                match asked {
                    Asked::Recover(from, e) if recovered => {
                        if e != epoch || replayed != offset - from {
                            return Err(format!("recovered ack {d} for {from}@{e}"));
                        }
                        // What arrived since the request comes again.
                        let last = t.position.as_ref().map_or(from, |p| p.1);
                        t.dups_upto = last;
                        t.position = Some((epoch, from));
                        t.seen.retain(|&o| o <= from);
                    }
                    Asked::Recover(..) | Asked::Positions | Asked::History => {
                        if !recovered && replayed != 0 {
                            return Err(format!("failed recovery replays: {d}"));
                        }
                        if (offset, &epoch) != (current.offset, &current.epoch) {
                            return Err(format!("ack {d} is not the current {current:?}"));
                        }
                        // The state is (re)loaded at the acked position.
                        t.seen.clear();
                        t.dups_upto = 0;
                        t.position = Some((epoch, offset - replayed));
                    }
                }
            }
            Some("event") => {
                let ch: u8 = m["channel"].as_str().ok_or("no channel")?[1..]
                    .parse()
                    .map_err(|_| "bad channel")?;
                let o = m["offset"].as_u64().ok_or("event without offset")?;
                let t = self.clients[c as usize].tracks.entry(ch).or_default();
                if t.dropping || !t.live {
                    return Ok(());
                }
                let (epoch, last) = t.position.clone().ok_or("event before any ack")?;
                if o <= t.dups_upto && o == last + 1 {
                    // The replay after a re-sync repeats in-flight offsets
                    // in order; the client keeps one copy (checked below).
                    self.dups += 1;
                } else if o <= last {
                    return Err(format!("client {c} got {o} again on c{ch} (last {last})"));
                }
                if o > last + 1 {
                    // A gap is allowed only for publications already gone.
                    let page = self
                        .sim
                        .hub
                        .history(self.sim.now, &channel(ch), Some(last), 1)
                        .map_err(|e| e.to_string())?;
                    if page
                        .publications
                        .first()
                        .is_some_and(|p| p.offset == last + 1)
                    {
                        return Err(format!(
                            "c{ch}: {last} then {o} while {} is stored",
                            last + 1
                        ));
                    }
                    t.dropping = true;
                    self.gaps += 1;
                    resync.push((c, ch));
                    return Ok(());
                }
                let want = self.published.get(&(ch, epoch.clone(), o));
                if want != Some(&m["data"]) {
                    return Err(format!(
                        "c{ch} {o}@{epoch}: got {} want {want:?}",
                        m["data"]
                    ));
                }
                if o > t.dups_upto {
                    t.dups_upto = 0;
                }
                t.seen.push(o);
                t.position = Some((epoch, o));
            }
            _ => {}
        }
        Ok(())
    }

    /// At the end: unstalled and re-synced, every live subscription holds
    /// everything up to its channel's head. A replay overtaken by a trim
    /// shows as a jump at the channel's next publication (the contract's
    /// gap signal), so one more goes to every channel first.
    pub(super) fn settle(&mut self) -> Result<(), String> {
        let stalled = self.sim.stalled.clone();
        for id in stalled {
            self.release(id);
        }
        self.observe()?;
        for ch in 0..CHANNELS {
            self.apply(&RecoveryOp::Publish(ch, 1))?;
        }
        for c in 0..CLIENTS {
            if self.clients[c as usize].conn.is_none() {
                continue;
            }
            for ch in 0..CHANNELS {
                let Some(t) = self.clients[c as usize].tracks.get(&ch) else {
                    continue;
                };
                if !t.live || t.dropping {
                    continue;
                }
                let head = self.sim.hub.position(&channel(ch)).ok_or("no position")?;
                match &t.position {
                    Some((e, o)) if *e == head.epoch && *o == head.offset => {}
                    other => {
                        return Err(format!("client {c} on c{ch} at {other:?}, head {head:?}"))
                    }
                }
            }
        }
        Ok(())
    }
}
