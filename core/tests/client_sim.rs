//! A reconnect storm in virtual time: one hub and 1,000 clients wired in
//! memory. All connect and subscribe; the server goes away for 5 s (every
//! connection drops, every connect attempt fails) and comes back. The test
//! records the instant of every reconnect attempt and compares the busiest
//! 100 ms window with and without jitter.

mod client_net;

use std::time::{Duration, Instant};

use client_net::Net;
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::client::{Client, ClientConfig, ClientEvent, ClientState, Endpoint};
use wshub_core::HubConfig;

const CLIENTS: usize = 1_000;
const CHANNELS: usize = 10;
const OUTAGE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_millis(100);

/// The only clock read here; the simulation runs on virtual time from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

struct Storm {
    /// Every `Connect` from the moment the server went away.
    attempts: Vec<Instant>,
    /// The largest number of attempts in any 100 ms window.
    busiest_window: usize,
    /// Time from the server's return until every client was back.
    recovery: Duration,
}

fn storm(jitter: Jitter) -> Storm {
    let start = t0();
    let mut net = Net::new(HubConfig::default(), start);
    for i in 0..CLIENTS {
        let mut cfg = ClientConfig::new(vec![Endpoint::parse("ws://hub.test/ws").unwrap()]);
        cfg.backoff = BackoffPolicy {
            jitter,
            ..BackoffPolicy::default()
        };
        // Each client its own seed, as each process would draw its own.
        let mut client = Client::new(cfg, start, 0x5eed ^ ((i as u64) << 20)).unwrap();
        client.subscribe(start, &format!("room:{}", i % CHANNELS));
        client.start(start);
        let id = net.add(client);
        net.touch(id);
    }
    // Connected long enough for the backoff to reset (reset_after 30 s).
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.hub.stats().connections, CLIENTS);
    for c in 0..CHANNELS {
        assert_eq!(
            net.hub.subscriber_count(&format!("room:{c}")),
            CLIENTS / CHANNELS
        );
    }

    let down = net.now;
    for p in &mut net.peers {
        p.events.clear();
    }
    net.server_down();
    assert_eq!(net.hub.stats().connections, 0);
    net.run_for(OUTAGE);
    net.server_up = true;
    let up = net.now;
    net.run_for(Duration::from_secs(60));

    // Everyone is back, with their subscriptions.
    assert_eq!(net.hub.stats().connections, CLIENTS);
    for c in 0..CHANNELS {
        assert_eq!(
            net.hub.subscriber_count(&format!("room:{c}")),
            CLIENTS / CHANNELS
        );
    }
    let mut back = Vec::new();
    for (i, p) in net.peers.iter().enumerate() {
        assert_eq!(p.client.state(), ClientState::Connected { endpoint: 0 });
        let restored = p.events.iter().find_map(|(t, e)| match e {
            ClientEvent::SubscriptionsRestored { restored, .. } => Some((*t, restored.clone())),
            _ => None,
        });
        let (t, restored) = restored.unwrap_or_else(|| panic!("client {i} not restored"));
        assert_eq!(restored, [format!("room:{}", i % CHANNELS)]);
        back.push(t);
    }

    let mut attempts: Vec<Instant> = net.peers.iter().flat_map(|p| p.connect_times()).collect();
    attempts.sort();
    assert!(attempts.iter().all(|&t| t >= down));
    let recovery = back.iter().max().copied().unwrap_or(up) - up;
    Storm {
        busiest_window: busiest_window(&attempts),
        attempts,
        recovery,
    }
}

/// The most instants (sorted) within any half-open window `[t, t + WINDOW)`.
fn busiest_window(sorted: &[Instant]) -> usize {
    let mut best = 0;
    let mut from = 0;
    for (to, &t) in sorted.iter().enumerate() {
        while sorted[from] + WINDOW <= t {
            from += 1;
        }
        best = best.max(to - from + 1);
    }
    best
}

#[test]
fn jitter_spreads_a_reconnect_storm() {
    let none = storm(Jitter::None);
    let full = storm(Jitter::Full);
    println!(
        "reconnect storm, {CLIENTS} clients, {OUTAGE:?} outage: busiest {WINDOW:?} window \
         jitter None {} attempts (of {}), jitter Full {} attempts (of {}); \
         all back {:?} (None) / {:?} (Full) after the server returned",
        none.busiest_window,
        none.attempts.len(),
        full.busiest_window,
        full.attempts.len(),
        none.recovery,
        full.recovery,
    );
    // Without jitter every client retries in the same instant: at +1 s, +3 s
    // (both failing) and +7 s (succeeding).
    assert_eq!(none.busiest_window, CLIENTS);
    assert_eq!(none.attempts.len(), 3 * CLIENTS);
    // Full jitter spreads each wave over its whole window.
    assert!(
        full.busiest_window * 2 < none.busiest_window,
        "jitter did not spread the storm: {} vs {}",
        full.busiest_window,
        none.busiest_window
    );
    assert!(full.busiest_window < CLIENTS / 4, "{}", full.busiest_window);
}

#[test]
fn busiest_window_counts_a_sliding_window() {
    let base = t0();
    let at = |ms: u64| base + Duration::from_millis(ms);
    assert_eq!(busiest_window(&[]), 0);
    assert_eq!(busiest_window(&[at(0)]), 1);
    assert_eq!(
        busiest_window(&[at(0), at(99), at(100), at(150), at(199)]),
        3
    );
    assert_eq!(busiest_window(&[at(0), at(100), at(200)]), 1);
}
