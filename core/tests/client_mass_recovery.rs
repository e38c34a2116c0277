//! The reconnecting client against a real hub with history, in virtual time:
//! 1,000 clients on 10 channels, publishing every 100 ms on every channel,
//! and every connection cut at once in the middle of it. Each client comes
//! back after its own jittered delay, resumes from its last position, and
//! ends with every publication of its channel exactly once, in order.

mod client_net;

use std::time::{Duration, Instant};

use client_net::Net;
use serde_json::json;
use wshub_core::client::{Client, ClientConfig, ClientEvent, Endpoint};
use wshub_core::{HubConfig, Message};

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
#[ignore = "needs the hub's recovery (hc1's branch)"]
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
