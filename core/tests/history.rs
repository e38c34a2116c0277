//! History and recovery through the protocol: positioned frames, the
//! subscribe outcomes (`recover`, `history`, `positions`), bad input, paced
//! replays within the queue caps, re-syncs, restarts and mass recovery.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wshub_core::command::{Command, Reply};
use wshub_core::config::ChannelPolicy;
use wshub_core::{
    ConnId, HistoryConfig, HistoryError, HistoryRule, Hub, HubConfig, Identity, Message,
};

fn rules(size: usize, ttl: Duration) -> HistoryConfig {
    HistoryConfig {
        rules: vec![
            HistoryRule {
                pattern: "plain:*".into(),
                size: 0,
                ttl: Duration::from_secs(1),
            },
            HistoryRule {
                pattern: "*".into(),
                size,
                ttl,
            },
        ],
        ..HistoryConfig::default()
    }
}

fn sim_with(size: usize) -> Sim {
    sim_history(rules(size, Duration::from_secs(60)))
}

/// A hub with the default config but for its history.
fn sim_history(history: HistoryConfig) -> Sim {
    Sim::new(HubConfig {
        history,
        ..HubConfig::default()
    })
}

/// The `recover` field of a subscribe, as `subscribe`'s `extra`.
fn recover(offset: u64, epoch: &str) -> String {
    format!(r#","recover":{{"offset":{offset},"epoch":"{epoch}"}}"#)
}

/// The text frames `id` received, as sent.
fn texts(sim: &Sim, id: ConnId) -> Vec<String> {
    sim.rx[&id]
        .frames()
        .into_iter()
        .filter_map(|d| match d {
            wshub_core::frame::Decoded::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

fn publish(sim: &mut Sim, channel: &str, n: usize) {
    for i in 0..n {
        let m = Message::new("event", json!(i));
        sim.hub.publish(sim.now, channel, m);
    }
    sim.pump();
}

/// Subscribes to "c" with `extra` fields; the reply, and the offsets of
/// what followed it.
fn subscribe(sim: &mut Sim, id: ConnId, extra: &str) -> (Value, Vec<u64>) {
    sim.send_text(
        id,
        &format!(r#"{{"type":"subscribe","channel":"c","id":1{extra}}}"#),
    );
    let msgs = sim.take_json(id);
    assert!(!msgs.is_empty(), "no reply to subscribe {extra}");
    let rest = offsets(&msgs[1..]);
    (msgs[0].clone(), rest)
}

/// Offsets of the channel messages received, in order.
fn offsets(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["offset"].as_u64().expect("an offset"))
        .collect()
}

fn position(sim: &Sim) -> (u64, String) {
    let p = sim.hub.position("c").expect("a position");
    (p.offset, p.epoch)
}

#[test]
fn positioned_subscribers_get_offsets_and_plain_ones_todays_bytes() {
    let mut sim = sim_with(10);
    let plain = sim.connect();
    let pos = sim.connect();
    sim.send_text(plain, r#"{"type":"subscribe","channel":"c"}"#);
    let (ack, _replay) = subscribe(&mut sim, pos, r#","positions":true"#);
    assert_eq!(ack["data"]["recovered"], true);
    assert_eq!(ack["data"]["replayed"], 0);
    sim.take_json(plain);
    publish(&mut sim, "c", 2);
    let p = texts(&sim, plain);
    let q = texts(&sim, pos);
    assert_eq!(p.len(), 2);
    for (i, (p, q)) in p.iter().zip(&q).enumerate() {
        assert!(!p.contains("offset"), "{p}");
        let expected = format!("{},\"offset\":{}}}", &p[..p.len() - 1], i + 1);
        assert_eq!(q, &expected);
    }
}

#[test]
fn a_recover_replays_exactly_what_was_missed_then_goes_live() {
    let mut sim = sim_with(100);
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, r#","positions":true"#);
    let epoch = ack["data"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(ack["data"]["offset"], 0);
    assert!(!epoch.is_empty());
    publish(&mut sim, "c", 3);
    assert_eq!(offsets(&sim.take_json(a)), [1, 2, 3]);
    sim.hub.handle_eof(sim.now, a).unwrap();
    publish(&mut sim, "c", 4);
    let b = sim.connect();
    let recover = recover(3, &epoch);
    sim.send_text(
        b,
        &format!(r#"{{"type":"subscribe","channel":"c","id":9{recover}}}"#),
    );
    publish(&mut sim, "c", 1);
    let msgs = sim.take_json(b);
    assert_eq!(
        msgs[0],
        json!({"type":"ack","id":9,"data":{"recovered":true,"offset":7,"epoch":epoch,"replayed":4},
               "timestamp": msgs[0]["timestamp"]})
    );
    assert_eq!(offsets(&msgs), [4, 5, 6, 7, 8]);
    assert_eq!(sim.hub.stats().recoveries, 1);
}

#[test]
fn the_outcome_ack_is_sent_without_an_id_too() {
    let mut sim = sim_with(10);
    let a = sim.connect();
    sim.send_text(a, r#"{"type":"subscribe","channel":"c","positions":true}"#);
    let msgs = sim.take_json(a);
    assert_eq!(types(&msgs), ["ack"]);
    assert!(msgs[0].get("id").is_none());
    assert_eq!(msgs[0]["data"]["recovered"], true);
}

#[test]
fn another_epoch_gives_recovered_false_with_the_current_position_and_no_replay() {
    let mut sim = sim_with(100);
    publish(&mut sim, "c", 5);
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, r#","recover":{"offset":2,"epoch":"old"}"#);
    let (offset, epoch) = position(&sim);
    assert_eq!(
        ack["data"],
        json!({"recovered":false,"offset":offset,"epoch":epoch,"replayed":0})
    );
    assert_eq!(offset, 5);
    // A big offset in another epoch is just a failed recovery.
    let b = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, b, r#","recover":{"offset":999,"epoch":"old"}"#);
    assert_eq!(ack["data"]["recovered"], false);
    publish(&mut sim, "c", 1);
    assert_eq!(
        offsets(&sim.take_json(a)),
        [6],
        "live from the current position"
    );
    assert_eq!(sim.hub.stats().recoveries_failed, 2);
}

#[test]
fn history_trimmed_past_the_position_gives_recovered_false() {
    let mut sim = sim_with(3);
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, r#","positions":true"#);
    let epoch = ack["data"]["epoch"].as_str().unwrap().to_owned();
    publish(&mut sim, "c", 5); // the ring keeps 3..=5
    let b = sim.connect();
    let (ok, replay) = subscribe(&mut sim, b, &recover(2, &epoch));
    assert_eq!(
        ok["data"]["recovered"], true,
        "2 is the last missing one kept"
    );
    assert_eq!(replay, [3, 4, 5]);
    let c = sim.connect();
    let (fail, replay) = subscribe(&mut sim, c, &recover(1, &epoch));
    assert_eq!(fail["data"]["recovered"], false);
    assert_eq!(fail["data"]["offset"], 5);
    assert!(replay.is_empty());
}

#[test]
fn a_replay_over_max_replay_gives_recovered_false() {
    let mut sim = sim_history(HistoryConfig {
        max_replay: 5,
        ..rules(100, Duration::from_secs(60))
    });
    publish(&mut sim, "c", 10);
    let (_, epoch) = position(&sim);
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, &recover(4, &epoch));
    assert_eq!(ack["data"]["recovered"], false);
    let b = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, b, &recover(5, &epoch));
    assert_eq!(ack["data"]["recovered"], true);
    assert_eq!(ack["data"]["replayed"], 5);
}

#[test]
fn ttl_expiry_then_meta_ttl_end_recovery_honestly() {
    let mut sim = sim_history(HistoryConfig {
        meta_ttl: Duration::from_secs(120),
        ..rules(100, Duration::from_secs(10))
    });
    publish(&mut sim, "c", 3);
    let (_, epoch) = position(&sim);
    sim.advance(Duration::from_secs(11));
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, &recover(1, &epoch));
    assert_eq!(
        ack["data"],
        json!({"recovered":false,"offset":3,"epoch":epoch,"replayed":0}),
        "expired entries, the position kept"
    );
    assert_eq!(sim.hub.stats().history_messages, 0);
    // Up to date: nothing to replay is a success even with nothing stored.
    let b = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, b, &recover(3, &epoch));
    assert_eq!(ack["data"]["recovered"], true);
    sim.hub.handle_eof(sim.now, a).unwrap();
    sim.hub.handle_eof(sim.now, b).unwrap();
    sim.pump();
    sim.hub.handle_timeout(sim.now + Duration::from_secs(200));
    assert_eq!(sim.hub.position("c"), None, "metadata freed after meta_ttl");
}

#[test]
fn bad_input_is_bad_request_and_changes_nothing() {
    let mut sim = sim_with(10);
    publish(&mut sim, "c", 2);
    let (_, epoch) = position(&sim);
    let a = sim.connect();
    for extra in [
        r#","recover":5"#.to_owned(),
        r#","recover":{"offset":"1","epoch":"e"}"#.to_owned(),
        r#","recover":{"offset":1,"epoch":"bad epoch"}"#.to_owned(),
        format!(r#","recover":{{"offset":1,"epoch":"{}"}}"#, "e".repeat(65)),
        recover(3, &epoch), // from the future
        r#","history":0"#.to_owned(),
        r#","history":301"#.to_owned(),
        r#","history":2,"recover":{"offset":1,"epoch":"e"}"#.to_owned(),
        r#","positions":"yes""#.to_owned(),
    ] {
        let (reply, _replay) = subscribe(&mut sim, a, &extra);
        assert_eq!(reply["type"], "error", "{extra}");
        assert_eq!(reply["data"]["code"], "bad_request", "{extra}");
        assert!(sim.hub.subscriptions(a).is_empty(), "{extra}");
    }
    // Without an id the error still comes (as the ack would have).
    sim.send_text(a, r#"{"type":"subscribe","channel":"c","history":0}"#);
    assert_eq!(types(&sim.take_json(a)), ["error"]);
}

struct NoSecrets;
impl ChannelPolicy for NoSecrets {
    fn can_subscribe(&self, _: &Identity, channel: &str) -> bool {
        !channel.starts_with("secret")
    }
}

#[test]
fn a_recover_on_a_forbidden_channel_is_forbidden() {
    let mut sim = Sim::new(HubConfig {
        policy: std::sync::Arc::new(NoSecrets),
        ..HubConfig::default()
    });
    let a = sim.connect();
    sim.send_text(
        a,
        r#"{"type":"subscribe","channel":"secret","id":1,"recover":{"offset":0,"epoch":"e"}}"#,
    );
    let msgs = sim.take_json(a);
    assert_eq!(msgs[0]["data"]["code"], "forbidden");
    assert!(sim.hub.subscriptions(a).is_empty());
}

#[test]
fn a_recover_counts_against_max_subscriptions() {
    let mut sim = Sim::new(HubConfig {
        max_subscriptions: 1,
        ..HubConfig::default()
    });
    let a = sim.connect();
    sim.send_text(a, r#"{"type":"subscribe","channel":"other"}"#);
    let (reply, _) = subscribe(&mut sim, a, r#","positions":true"#);
    assert_eq!(reply["data"]["code"], "limit");
    assert_eq!(sim.hub.subscriptions(a), ["other"]);
}

#[test]
fn history_n_replays_the_newest_n() {
    let mut sim = sim_with(100);
    publish(&mut sim, "c", 8);
    let a = sim.connect();
    let (ack, replay) = subscribe(&mut sim, a, r#","history":3"#);
    assert_eq!(ack["data"]["recovered"], true);
    assert_eq!(ack["data"]["replayed"], 3);
    assert_eq!(replay, [6, 7, 8]);
    let b = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, b, r#","history":50"#);
    assert_eq!(ack["data"]["replayed"], 8, "no more than is stored");
}

#[test]
fn a_channel_without_history_subscribes_plainly_with_an_empty_epoch() {
    let mut sim = sim_with(10);
    let a = sim.connect();
    sim.send_text(
        a,
        r#"{"type":"subscribe","channel":"plain:1","id":1,"recover":{"offset":4,"epoch":"e"}}"#,
    );
    let msgs = sim.take_json(a);
    assert_eq!(
        msgs[0]["data"],
        json!({"recovered":false,"offset":0,"epoch":"","replayed":0})
    );
    publish(&mut sim, "plain:1", 1);
    let msgs = sim.take_json(a);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].get("offset").is_none());
    assert_eq!(sim.hub.position("plain:1"), None);
}

/// Writes what a stalled connection had leased, then lets it read on.
fn release(sim: &mut Sim, id: ConnId) {
    sim.stalled.retain(|&s| s != id);
    let held = sim.held.remove(&id).unwrap_or_default();
    let n: usize = held.iter().map(|f| f.len()).sum();
    for f in held {
        sim.rx.get_mut(&id).unwrap().raw.extend_from_slice(&f);
    }
    sim.hub.handle_written(sim.now, id, n).unwrap();
    sim.pump();
}

#[test]
fn a_replay_bigger_than_the_queue_is_paced_and_never_cuts_the_client() {
    let mut sim = Sim::new(HubConfig {
        history: rules(300, Duration::from_secs(60)),
        max_queued_messages: 16,
        ..HubConfig::default()
    });
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, r#","positions":true"#);
    let epoch = ack["data"]["epoch"].as_str().unwrap().to_owned();
    sim.hub.handle_eof(sim.now, a).unwrap();
    publish(&mut sim, "c", 200);
    let b = sim.connect();
    sim.stalled.push(b);
    sim.send_text(
        b,
        &format!(
            r#"{{"type":"subscribe","channel":"c","id":1{}}}"#,
            recover(0, &epoch)
        ),
    );
    for round in 0..100 {
        let (msgs, _) = sim.hub.queued(b).unwrap();
        assert!(msgs <= 16, "round {round}: {msgs} queued");
        // Live publications race the replay.
        publish(&mut sim, "c", 1);
        sim.stalled.push(b);
        release(&mut sim, b);
        sim.stalled.push(b);
    }
    sim.stalled.retain(|&s| s != b);
    release(&mut sim, b);
    assert!(sim.closed(b).is_empty(), "never cut as slow");
    let msgs = sim.take_json(b);
    assert_eq!(msgs[0]["data"]["recovered"], true);
    assert_eq!(msgs[0]["data"]["replayed"], 200);
    assert_eq!(offsets(&msgs), (1..=300).collect::<Vec<_>>());
    assert_eq!(sim.hub.stats().slow_consumers, 0);
}

#[test]
fn a_trim_overtaking_a_paced_replay_shows_as_a_jump_in_offsets() {
    let mut sim = Sim::new(HubConfig {
        history: rules(20, Duration::from_secs(60)),
        max_queued_messages: 4,
        ..HubConfig::default()
    });
    publish(&mut sim, "c", 20);
    let (_, epoch) = position(&sim);
    let b = sim.connect();
    sim.stalled.push(b);
    sim.send_text(
        b,
        &format!(
            r#"{{"type":"subscribe","channel":"c","id":1{}}}"#,
            recover(0, &epoch)
        ),
    );
    publish(&mut sim, "c", 30); // the ring now holds 31..=50
    release(&mut sim, b);
    let got = offsets(&sim.take_json(b));
    assert_eq!(got[0], 1);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    assert_eq!(*got.last().unwrap(), 50);
    assert!(got.contains(&31) && !got.contains(&25), "{got:?}");
}

#[test]
fn a_recover_on_a_held_subscription_re_syncs() {
    let mut sim = sim_with(100);
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, r#","positions":true"#);
    let epoch = ack["data"]["epoch"].as_str().unwrap().to_owned();
    publish(&mut sim, "c", 5);
    sim.take_json(a);
    let (ack, replay) = subscribe(&mut sim, a, &recover(2, &epoch));
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["data"]["replayed"], 3);
    assert_eq!(replay, [3, 4, 5]);
    publish(&mut sim, "c", 1);
    assert_eq!(offsets(&sim.take_json(a)), [6]);
    assert_eq!(sim.hub.subscriptions(a), ["c"]);
    assert_eq!(sim.hub.subscriber_count("c"), 1);
    // A plain subscriber re-syncing with positions turns them on.
    sim.send_text(a, r#"{"type":"unsubscribe","channel":"c"}"#);
    sim.send_text(a, r#"{"type":"subscribe","channel":"c"}"#);
    let (ack, _replay) = subscribe(&mut sim, a, r#","positions":true"#);
    assert_eq!(ack["data"]["offset"], 6);
    publish(&mut sim, "c", 1);
    assert_eq!(offsets(&sim.take_json(a)), [7]);
}

#[test]
fn a_new_hub_has_a_new_epoch_and_recovery_fails() {
    let cfg = || HubConfig {
        seed: 42,
        ..HubConfig::default()
    };
    let mut sim = Sim::new(cfg());
    publish(&mut sim, "c", 3);
    let (_, old) = position(&sim);
    // The same seed, started later.
    let unix = Duration::from_secs(1_771_575_165 + 5);
    sim.hub = Hub::new(cfg(), sim.now, unix).unwrap();
    sim.rx.clear();
    publish(&mut sim, "c", 1);
    let (offset, new) = position(&sim);
    assert_ne!(old, new);
    assert_eq!(offset, 1, "offsets restart, under another epoch");
    let a = sim.connect();
    let (ack, _replay) = subscribe(&mut sim, a, &recover(1, &old));
    assert_eq!(ack["data"]["recovered"], false);
    assert_eq!(ack["data"]["epoch"], new.as_str());
}

#[test]
fn the_history_read_returns_pages_in_offset_order() {
    let mut sim = sim_with(10);
    publish(&mut sim, "c", 12);
    let now = sim.now;
    let page = sim.hub.history(now, "c", None, 3).unwrap();
    let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offs, [10, 11, 12]);
    assert_eq!(page.position.offset, 12);
    let j: Value = serde_json::from_slice(&page.publications[0].json).unwrap();
    assert_eq!(j["offset"], 10);
    let page = sim.hub.history(now, "c", Some(0), 300).unwrap();
    let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(
        offs,
        (3..=12).collect::<Vec<_>>(),
        "what is left after the trim"
    );
    let page = sim.hub.history(now, "c", Some(5), 2).unwrap();
    assert_eq!(page.publications[0].offset, 6);
    assert_eq!(page.publications.len(), 2);
    assert_eq!(
        sim.hub.history(now, "c", Some(13), 2),
        Err(HistoryError::FromTheFuture)
    );
    assert_eq!(
        sim.hub.history(now, "plain:x", None, 2),
        Err(HistoryError::NoHistory)
    );
    let reply = sim.hub.apply(
        now,
        Command::History {
            channel: "c".into(),
            since: Some(11),
            limit: 5,
        },
    );
    let Reply::History(Ok(page)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(page.publications.len(), 1);
}

#[test]
fn a_channel_nobody_can_subscribe_to_keeps_nothing() {
    let mut sim = sim_with(10);
    let long = "x".repeat(300);
    for ch in ["", long.as_str()] {
        let now = sim.now;
        sim.hub.publish(now, ch, Message::new("event", json!(1)));
        assert_eq!(sim.hub.position(ch), None);
        assert_eq!(
            sim.hub.history(now, ch, None, 1),
            Err(HistoryError::NoHistory)
        );
    }
    assert_eq!(sim.hub.stats().history_messages, 0);
}

#[test]
fn stats_count_stored_messages_bytes_and_evictions() {
    let mut sim = sim_history(HistoryConfig {
        max_bytes: 1000,
        ..rules(100, Duration::from_secs(60))
    });
    publish(&mut sim, "a", 5);
    let s = sim.hub.stats();
    assert_eq!(s.history_messages, 5);
    assert!(s.history_bytes > 5 * 50);
    publish(&mut sim, "b", 50);
    let s = sim.hub.stats();
    assert!(s.history_bytes <= 1000);
    assert!(s.history_evictions > 0);
    assert_eq!(
        s.history_messages as u64 + s.history_evictions,
        55,
        "every publication is stored or counted as evicted"
    );
}

#[test]
fn a_thousand_cut_clients_all_recover_every_message() {
    let mut sim = Sim::new(HubConfig {
        max_connections: 2000,
        history: rules(300, Duration::from_secs(60)),
        ..HubConfig::default()
    });
    let clients: Vec<ConnId> = (0..1000).map(|_| sim.connect()).collect();
    let mut seen: Vec<(String, u64, Vec<u64>)> = Vec::new();
    for &c in &clients {
        let (ack, _) = subscribe(&mut sim, c, r#","positions":true"#);
        let epoch = ack["data"]["epoch"].as_str().unwrap().to_owned();
        seen.push((epoch, 0, Vec::new()));
    }
    publish(&mut sim, "c", 10);
    for (i, &c) in clients.iter().enumerate() {
        let got = offsets(&sim.take_json(c));
        seen[i].1 = *got.last().unwrap();
        seen[i].2.extend(got);
        // Every connection is cut; publishing goes on between the cuts.
        sim.hub.handle_eof(sim.now, c).unwrap();
        if i % 10 == 0 {
            publish(&mut sim, "c", 1);
        }
    }
    sim.pump();
    publish(&mut sim, "c", 20);
    for s in seen.iter_mut() {
        let c = sim.connect();
        let (ack, replay) = subscribe(&mut sim, c, &recover(s.1, &s.0));
        assert_eq!(ack["data"]["recovered"], true);
        s.2.extend(replay);
    }
    let head = position(&sim).0;
    assert_eq!(head, 10 + 100 + 20);
    for (_, _, got) in &seen {
        assert_eq!(got, &(1..=head).collect::<Vec<_>>());
    }
    assert_eq!(sim.hub.stats().recoveries, 1000);
}
