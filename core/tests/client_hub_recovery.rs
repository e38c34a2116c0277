//! The recovering client against a real hub with history, in virtual time.
//!
//! - 1,000 clients on 10 channels, publishing every 100 ms on every channel,
//!   and every connection cut at once in the middle of it. Each client comes
//!   back after its own jittered delay, resumes from its last position, and
//!   ends with every publication of its channel exactly once, in order.
//! - A frame lost on a live connection: the client re-syncs with the hub
//!   (a subscribe with `recover` on the subscription it holds) and the
//!   application still sees every publication once, in order.

mod client_net;

use std::time::{Duration, Instant};

use client_net::Net;
use serde_json::json;
use wshub_core::client::{
    Client, ClientConfig, ClientEvent, ClientState, Endpoint, StreamPosition,
};
use wshub_core::frame::{encode_frame, Decoded, FrameDecoder, OpCode, Role};
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

/// One client and one hub wired by hand, with the hub's frames going
/// through `pipe`, which may drop some (what a lossy broker path would do).
struct Wire {
    hub: Hub,
    client: Client,
    now: Instant,
    conn: Option<ConnId>,
    /// Decodes the hub's output so whole frames can be dropped.
    from_hub: FrameDecoder,
    events: Vec<ClientEvent>,
    frames: Vec<bytes::Bytes>,
}

impl Wire {
    fn pump(&mut self, pipe: &mut dyn FnMut(&str) -> bool) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                match &event {
                    ClientEvent::Connect { .. } => {
                        self.conn = Some(self.hub.open(self.now, PeerInfo::default()).unwrap());
                        self.client.handle_connected(self.now);
                    }
                    ClientEvent::CloseSocket => self.conn = None,
                    _ => {}
                }
                self.events.push(event);
            }
            while let Some(bytes) = self.client.poll_transmit() {
                progressed = true;
                self.hub
                    .handle_read(self.now, self.conn.unwrap(), &bytes)
                    .unwrap();
            }
            while let Some(id) = self.hub.poll_transmit(&mut self.frames) {
                progressed = true;
                let n = self.frames.iter().map(|f| f.len()).sum();
                let bytes: Vec<u8> = self.frames.drain(..).flat_map(|f| f.to_vec()).collect();
                self.hub.handle_written(self.now, id, n).unwrap();
                if !self.client_open() {
                    // The handshake response: straight through.
                    self.client.handle_read(self.now, &bytes);
                    continue;
                }
                let mut rest = &bytes[..];
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
            if !progressed {
                break;
            }
        }
    }

    fn client_open(&self) -> bool {
        self.client.state() == (ClientState::Connected { endpoint: 0 })
    }

    fn publish(&mut self, n: u64) {
        let m = Message::new("event", json!({"n": n}));
        self.hub.publish(self.now, "c", m);
    }
}

#[test]
fn a_live_gap_is_resynced_by_the_hub_and_nothing_is_lost_or_doubled() {
    let now = t0();
    let hub = Hub::new(
        HubConfig::default(),
        now,
        Duration::from_secs(1_771_575_165),
    )
    .unwrap();
    let cfg = ClientConfig::new(vec![Endpoint::parse("ws://hub.test/ws").unwrap()]);
    let mut client = Client::new(cfg, now, 7).unwrap();
    client.subscribe(now, "c");
    client.start(now);
    let mut w = Wire {
        hub,
        client,
        now,
        conn: None,
        from_hub: FrameDecoder::new(Role::Client, 1 << 20),
        events: Vec::new(),
        frames: Vec::new(),
    };
    let mut pass = |_: &str| true;
    w.pump(&mut pass);
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
        w.publish(n);
    }
    w.pump(&mut lossy);
    assert!(lost);
    for n in 11..=12 {
        w.publish(n);
    }
    w.pump(&mut pass);

    let got: Vec<u64> = w
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) => m.data["n"].as_u64(),
            _ => None,
        })
        .collect();
    assert_eq!(got, (1..=12).collect::<Vec<_>>());
    let outcomes: Vec<&ClientEvent> = w
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::Recovered { .. } | ClientEvent::RecoveryFailed { .. }
            )
        })
        .collect();
    assert!(
        matches!(outcomes.as_slice(), [ClientEvent::Recovered { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(
        w.client.position("c"),
        Some(StreamPosition { offset: 12, epoch })
    );
    assert_eq!(w.hub.subscriber_count("c"), 1, "still one subscription");
}
