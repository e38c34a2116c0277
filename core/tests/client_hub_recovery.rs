//! The recovering client against a real hub with history, in virtual time.
//!
//! - 1,000 clients on 10 channels, publishing every 100 ms on every channel,
//!   and every connection cut at once in the middle of it. Each client comes
//!   back after its own jittered delay, resumes from its last position, and
//!   ends with every publication of its channel exactly once, in order.
//! - A frame lost on a live connection: the client re-syncs with the hub
//!   (a subscribe with `recover` on the subscription it holds) and the
//!   application still sees every publication once, in order.
//! - Failing over to another hub, and a hub restarted on the same endpoint:
//!   another epoch, so `RecoveryFailed` with the new position, and the new
//!   stream's offsets are delivered (not taken for duplicates of the old).
//! - An outage longer than the history: `RecoveryFailed` at the current
//!   position, live from there.
//! - A channel without history: plain subscribes, nothing tracked.

mod client_net;

use std::time::{Duration, Instant};

use client_net::Net;
use serde_json::json;
use wshub_core::client::{
    Client, ClientConfig, ClientEvent, ClientState, Endpoint, StreamPosition,
};
use wshub_core::frame::{encode_frame, Decoded, FrameDecoder, OpCode, Role};
use wshub_core::history::{HistoryConfig, HistoryRule};
use wshub_core::{ConnId, Hub, HubConfig, Message, PeerInfo};

const CLIENTS: usize = 1_000;
const CHANNELS: usize = 10;
const TICK: Duration = Duration::from_millis(100);
/// Publications per channel: 10 s of them.
const ROUNDS: u64 = 100;
/// The round at which every connection is cut.
const CUT: u64 = 30;

/// The only clock read here; the simulation runs on virtual time from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn channel(i: usize) -> String {
    format!("room:{}", i % CHANNELS)
}

#[test]
fn a_thousand_clients_cut_mid_stream_all_recover_every_message_once() {
    let start = t0();
    // The default history (100 per channel, 5 minutes) covers the outage.
    let mut net = Net::new(HubConfig::default(), start);
    for i in 0..CLIENTS {
        let cfg = ClientConfig::new(vec![Endpoint::parse("ws://hub.test/ws").unwrap()]);
        let mut client = Client::new(cfg, start, 0x5eed ^ ((i as u64) << 20)).unwrap();
        client.subscribe(start, &channel(i));
        client.start(start);
        let id = net.add(client);
        net.touch(id);
    }
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.hub.stats().connections, CLIENTS);

    for round in 1..=ROUNDS {
        for c in 0..CHANNELS {
            let m = Message::new("event", json!({"n": round}));
            net.hub.publish(net.now, &channel(c), m);
        }
        if round == CUT {
            // The server drops every connection (no close frame); it stays
            // up, so each client reconnects after its backoff delay while
            // publishing goes on.
            for i in 0..CLIENTS {
                net.drop_conn(i);
            }
            assert_eq!(net.hub.stats().connections, 0);
        }
        net.run_for(TICK);
    }
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.hub.stats().connections, CLIENTS);

    let mut recovered_with_replay = 0;
    for (i, peer) in net.peers.iter().enumerate() {
        let mut got = Vec::new();
        let mut recovered = 0;
        for (_, e) in &peer.events {
            match e {
                ClientEvent::Message(m) => {
                    assert_eq!(m.channel.as_deref(), Some(channel(i).as_str()));
                    got.push(m.data["n"].as_u64().expect("n"));
                }
                ClientEvent::Recovered {
                    channel: ch,
                    replayed,
                } => {
                    assert_eq!(*ch, channel(i));
                    recovered += 1;
                    if *replayed > 0 {
                        recovered_with_replay += 1;
                    }
                }
                ClientEvent::RecoveryFailed { .. } => panic!("client {i}: {e:?}"),
                _ => {}
            }
        }
        let want: Vec<u64> = (1..=ROUNDS).collect();
        assert_eq!(got, want, "client {i}: every message once, in order");
        assert_eq!(recovered, 1, "client {i}: one resume after the cut");
    }
    // The outage is real: most clients missed something and got it replayed.
    assert!(
        recovered_with_replay > CLIENTS / 2,
        "only {recovered_with_replay} replays"
    );
    let stats = net.hub.stats();
    assert_eq!(stats.recoveries, CLIENTS as u64);
    assert_eq!(stats.recoveries_failed, 0);
}

/// One client and hubs wired by hand (endpoint `i` is hub `i`), with the
/// hubs' frames going through a pipe that may drop some (what a lossy
/// broker path would do).
struct Wire {
    hubs: Vec<Hub>,
    /// While false, connecting to that hub fails.
    up: Vec<bool>,
    client: Client,
    now: Instant,
    /// The hub and connection of the client's socket.
    at: Option<(usize, ConnId)>,
    /// Decodes the hub's output so whole frames can be dropped.
    from_hub: FrameDecoder,
    events: Vec<ClientEvent>,
    frames: Vec<bytes::Bytes>,
}

fn hub(seed: u64, history: HistoryConfig, now: Instant) -> Hub {
    let cfg = HubConfig {
        seed,
        history,
        ..HubConfig::default()
    };
    Hub::new(cfg, now, Duration::from_secs(1_771_575_165)).unwrap()
}

impl Wire {
    /// A client of `hubs` (in endpoint order), subscribed to `c`, started.
    fn new(hubs: Vec<Hub>, now: Instant) -> Wire {
        let endpoints = (0..hubs.len())
            .map(|i| Endpoint::parse(&format!("ws://hub{i}.test/ws")).unwrap())
            .collect();
        let mut cfg = ClientConfig::new(endpoints);
        cfg.ping_interval = Duration::ZERO;
        cfg.dead_timeout = Duration::ZERO;
        let mut client = Client::new(cfg, now, 7).unwrap();
        client.subscribe(now, "c");
        client.start(now);
        let mut w = Wire {
            up: vec![true; hubs.len()],
            hubs,
            client,
            now,
            at: None,
            from_hub: FrameDecoder::new(Role::Client, 1 << 20),
            events: Vec::new(),
            frames: Vec::new(),
        };
        w.pump(&mut |_| true);
        w
    }

    fn pump(&mut self, pipe: &mut dyn FnMut(&str) -> bool) {
        let now = self.now;
        loop {
            let mut progressed = false;
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                match &event {
                    ClientEvent::Connect { endpoint_index, .. } => {
                        let i = *endpoint_index;
                        if self.up[i] {
                            let conn = self.hubs[i].open(now, PeerInfo::default()).unwrap();
                            self.at = Some((i, conn));
                            self.from_hub = FrameDecoder::new(Role::Client, 1 << 20);
                            self.client.handle_connected(now);
                        } else {
                            self.client.handle_connect_failed(now);
                        }
                    }
                    ClientEvent::CloseSocket => {
                        if let Some((i, conn)) = self.at.take() {
                            let _ = self.hubs[i].handle_eof(now, conn);
                        }
                    }
                    _ => {}
                }
                self.events.push(event);
            }
            while let Some(bytes) = self.client.poll_transmit() {
                progressed = true;
                let (i, conn) = self.at.expect("bytes without a socket");
                let _ = self.hubs[i].handle_read(now, conn, &bytes);
            }
            for i in 0..self.hubs.len() {
                while self.hubs[i].poll_event().is_some() {}
                while let Some(id) = self.hubs[i].poll_transmit(&mut self.frames) {
                    progressed = true;
                    let n = self.frames.iter().map(|f| f.len()).sum();
                    let bytes: Vec<u8> = self.frames.drain(..).flat_map(|f| f.to_vec()).collect();
                    self.hubs[i].handle_written(now, id, n).unwrap();
                    if self.at == Some((i, id)) {
                        self.deliver(&bytes, pipe);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Hands the hub's bytes to the client: the handshake response as is,
    /// then each text frame that `pipe` lets through.
    fn deliver(&mut self, bytes: &[u8], pipe: &mut dyn FnMut(&str) -> bool) {
        if !self.client_open() {
            self.client.handle_read(self.now, bytes);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let (used, r) = self.from_hub.decode(rest);
            rest = &rest[used..];
            match r.unwrap() {
                Some(Decoded::Text(t)) if pipe(&t) => {
                    let mut f = Vec::new();
                    encode_frame(&mut f, OpCode::Text, t.as_bytes(), None);
                    self.client.handle_read(self.now, &f);
                }
                Some(Decoded::Text(_)) => {}
                Some(other) => panic!("unexpected frame {other:?}"),
                None if used == 0 => break,
                None => {}
            }
        }
    }

    /// Runs every deadline (client and hubs) up to `now + d`.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .hubs
                .iter()
                .filter_map(Hub::poll_timeout)
                .chain(self.client.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for h in &mut self.hubs {
                        h.handle_timeout(self.now);
                    }
                    self.client.handle_timeout(self.now);
                    self.pump(&mut |_| true);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Hub `i` dies: its connection ends, and connecting to it fails.
    fn kill(&mut self, i: usize) {
        self.up[i] = false;
        if let Some((at, conn)) = self.at {
            if at == i {
                self.at = None;
                let _ = self.hubs[i].handle_eof(self.now, conn);
                self.client.handle_eof(self.now);
            }
        }
        self.pump(&mut |_| true);
    }

    fn client_open(&self) -> bool {
        matches!(self.client.state(), ClientState::Connected { .. })
    }

    fn publish(&mut self, hub: usize, n: u64) {
        let m = Message::new("event", json!({"n": n}));
        self.hubs[hub].publish(self.now, "c", m);
        self.pump(&mut |_| true);
    }

    /// `n` of every message the application got.
    fn got(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => m.data["n"].as_u64(),
                _ => None,
            })
            .collect()
    }

    fn outcomes(&self) -> Vec<ClientEvent> {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::Recovered { .. } | ClientEvent::RecoveryFailed { .. }
                )
            })
            .cloned()
            .collect()
    }
}

#[test]
fn a_live_gap_is_resynced_by_the_hub_and_nothing_is_lost_or_doubled() {
    let now = t0();
    let mut w = Wire::new(vec![hub(1, HistoryConfig::default(), now)], now);
    assert!(w.client_open());
    let epoch = w
        .client
        .position("c")
        .expect("positions from the ack")
        .epoch;

    // The frame with the 4th publication is lost on the way, once.
    let mut lost = false;
    let mut lossy = |t: &str| {
        if !lost && t.contains(r#""n":4"#) {
            lost = true;
            return false;
        }
        true
    };
    for n in 1..=10 {
        let m = Message::new("event", json!({"n": n}));
        w.hubs[0].publish(w.now, "c", m);
    }
    w.pump(&mut lossy);
    assert!(lost);
    for n in 11..=12 {
        w.publish(0, n);
    }
    assert_eq!(w.got(), (1..=12).collect::<Vec<_>>());
    assert!(
        matches!(w.outcomes().as_slice(), [ClientEvent::Recovered { .. }]),
        "{:?}",
        w.outcomes()
    );
    assert_eq!(
        w.client.position("c"),
        Some(StreamPosition { offset: 12, epoch })
    );
    assert_eq!(w.hubs[0].subscriber_count("c"), 1, "still one subscription");
}

#[test]
fn failing_over_to_a_hub_with_another_history_reports_recovery_failed() {
    let now = t0();
    let hubs = vec![
        hub(1, HistoryConfig::default(), now),
        hub(2, HistoryConfig::default(), now),
    ];
    let mut w = Wire::new(hubs, now);
    for n in 1..=3 {
        w.publish(0, n);
    }
    let old = w.client.position("c").unwrap();
    assert_eq!(old.offset, 3);
    // Hub 1 has its own stream of `c` already.
    for n in 101..=105 {
        w.publish(1, n);
    }
    w.kill(0);
    w.advance(Duration::from_secs(10));
    assert_eq!(w.client.state(), ClientState::Connected { endpoint: 1 });
    let new = w.hubs[1].position("c").unwrap();
    assert_ne!(new.epoch, old.epoch, "two hubs, two epochs");
    assert_eq!(
        w.outcomes(),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: new.clone()
        }]
    );
    w.publish(1, 106);
    assert_eq!(w.got(), [1, 2, 3, 106], "never hub 1's old offsets");
    assert_eq!(
        w.client.position("c"),
        Some(StreamPosition {
            offset: new.offset + 1,
            epoch: new.epoch
        })
    );
}

#[test]
fn a_restarted_hub_is_a_new_epoch_and_old_offsets_are_not_reused_silently() {
    let now = t0();
    let mut w = Wire::new(vec![hub(1, HistoryConfig::default(), now)], now);
    for n in 1..=5 {
        w.publish(0, n);
    }
    let old = w.client.position("c").unwrap();
    w.kill(0);
    // The same endpoint comes back as a new process, started later.
    w.advance(Duration::from_secs(1));
    let later = Duration::from_secs(1_771_575_165 + 60);
    let cfg = HubConfig {
        seed: 1,
        ..HubConfig::default()
    };
    w.hubs[0] = Hub::new(cfg, w.now, later).unwrap();
    w.up[0] = true;
    w.advance(Duration::from_secs(30));
    assert!(w.client_open());
    let outcomes = w.outcomes();
    let [ClientEvent::RecoveryFailed { position, .. }] = outcomes.as_slice() else {
        panic!("{outcomes:?}");
    };
    assert_ne!(position.epoch, old.epoch);
    assert_eq!(position.offset, 0);
    // Offsets 1..=5 again, in the new epoch: delivered, not taken for
    // duplicates of the old ones.
    for n in 11..=15 {
        w.publish(0, n);
    }
    assert_eq!(w.got(), [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]);
}

#[test]
fn a_channel_without_history_is_plain_and_untracked() {
    let now = t0();
    let mut w = Wire::new(vec![hub(1, HistoryConfig::off(), now)], now);
    assert!(w.client_open());
    assert_eq!(w.client.position("c"), None);
    for n in 1..=3 {
        w.publish(0, n);
    }
    w.kill(0);
    w.up[0] = true;
    w.advance(Duration::from_secs(10));
    assert!(w.client_open());
    w.publish(0, 4);
    assert_eq!(w.got(), [1, 2, 3, 4]);
    assert_eq!(w.outcomes(), [], "no positions, nothing to report");
}

#[test]
fn failing_over_to_a_hub_without_history_says_continuity_is_lost() {
    let now = t0();
    let hubs = vec![
        hub(1, HistoryConfig::default(), now),
        hub(2, HistoryConfig::off(), now),
    ];
    let mut w = Wire::new(hubs, now);
    w.publish(0, 1);
    w.kill(0);
    w.advance(Duration::from_secs(10));
    assert_eq!(w.client.state(), ClientState::Connected { endpoint: 1 });
    assert_eq!(
        w.outcomes(),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: StreamPosition {
                offset: 0,
                epoch: String::new()
            }
        }]
    );
    assert_eq!(w.client.position("c"), None);
    w.publish(1, 2);
    assert_eq!(w.got(), [1, 2]);
}

#[test]
fn an_outage_longer_than_the_history_reports_recovery_failed_at_the_current_position() {
    let now = t0();
    let short = HistoryConfig {
        rules: vec![HistoryRule {
            pattern: "*".into(),
            size: 5,
            ttl: Duration::from_secs(300),
        }],
        ..HistoryConfig::default()
    };
    let mut w = Wire::new(vec![hub(1, short, now)], now);
    w.publish(0, 1);
    w.kill(0);
    w.up[0] = true;
    // Twenty publications while the client is away; the hub keeps five.
    for n in 2..=21 {
        w.publish(0, n);
    }
    w.advance(Duration::from_secs(10));
    assert!(w.client_open());
    let current = w.hubs[0].position("c").unwrap();
    assert_eq!(current.offset, 21);
    assert_eq!(
        w.outcomes(),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: current
        }]
    );
    w.publish(0, 22);
    assert_eq!(w.got(), [1, 22], "live from the current position");
    assert_eq!(w.hubs[0].stats().recoveries_failed, 1);
}
