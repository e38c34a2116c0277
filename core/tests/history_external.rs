//! The external-store seam: a subscribe asks the driver for a read, live
//! publications racing the read are buffered, and the answer is merged with
//! no loss and no duplicate.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use wshub_core::command::{Command, Reply};
use wshub_core::{
    ConnId, Event, HistoryError, HistoryPage, HistoryReadId, HubConfig, Message, Publication,
    StreamPosition,
};

fn external() -> Sim {
    Sim::new(HubConfig {
        external_history: true,
        ..HubConfig::default()
    })
}

fn pos(offset: u64, epoch: &str) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: epoch.into(),
    }
}

/// What the external store would hold: the positioned JSON of `n`.
fn stored(n: u64) -> Publication {
    let json =
        format!(r#"{{"type":"event","channel":"c","data":{n},"timestamp":"t","offset":{n}}}"#);
    Publication {
        offset: n,
        json: Bytes::from(json),
    }
}

fn publish(sim: &mut Sim, n: u64, epoch: &str) {
    let now = sim.now;
    let command = Command::PublishPositioned {
        channel: "c".into(),
        message: Box::new(Message::new("event", json!(n))),
        position: pos(n, epoch),
    };
    sim.hub.apply(now, command);
    sim.pump();
}

fn take_read(sim: &mut Sim) -> (HistoryReadId, Option<u64>, usize) {
    let i = sim
        .events
        .iter()
        .position(|e| matches!(e, Event::HistoryRead { .. }))
        .expect("a history read");
    match sim.events.remove(i) {
        Event::HistoryRead {
            read,
            channel,
            since,
            limit,
        } => {
            assert_eq!(channel, "c");
            (read, since, limit)
        }
        _ => unreachable!(),
    }
}

fn events_of(msgs: &[Value]) -> Vec<(u64, Option<String>)> {
    msgs.iter()
        .filter(|m| m["type"] == "event")
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["epoch"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Answered through the command surface, as a handle would.
fn answer(sim: &mut Sim, read: HistoryReadId, result: Result<HistoryPage, HistoryError>) {
    let now = sim.now;
    let reply = sim
        .hub
        .apply(now, Command::AnswerHistoryRead { read, result });
    assert_eq!(reply, Reply::Done);
    sim.pump();
}

fn recover(sim: &mut Sim, id: ConnId, offset: u64, epoch: &str) {
    sim.send_text(
        id,
        &format!(r#"{{"type":"subscribe","channel":"c","id":1,"recover":{{"offset":{offset},"epoch":"{epoch}"}}}}"#),
    );
}

#[test]
fn a_read_answered_late_while_publications_race_it_loses_and_doubles_nothing() {
    let mut sim = external();
    let a = sim.connect();
    recover(&mut sim, a, 3, "e1");
    let (read, since, limit) = take_read(&mut sim);
    assert_eq!((since, limit), (Some(3), 301));
    // Published meanwhile: 7 and 8 reached the store before the read, 9 and
    // 10 after it; all four come through the live stream while it is out.
    for n in 7..=10 {
        publish(&mut sim, n, "e1");
    }
    assert!(sim.take_json(a).is_empty(), "held back until the answer");
    let page = HistoryPage {
        position: pos(8, "e1"),
        publications: (4..=8).map(stored).collect(),
    };
    answer(&mut sim, read, Ok(page));
    publish(&mut sim, 11, "e1");
    let msgs = sim.take_json(a);
    assert_eq!(
        msgs[0]["data"],
        json!({"recovered":true,"offset":8,"epoch":"e1","replayed":5})
    );
    let got: Vec<u64> = events_of(&msgs).into_iter().map(|e| e.0).collect();
    assert_eq!(got, (4..=11).collect::<Vec<_>>());
    assert_eq!(sim.hub.stats().recoveries, 1);
}

#[test]
fn a_page_with_a_hole_or_another_epoch_is_recovered_false() {
    let mut sim = external();
    let a = sim.connect();
    recover(&mut sim, a, 3, "e1");
    let (read, ..) = take_read(&mut sim);
    let page = HistoryPage {
        position: pos(8, "e1"),
        publications: (6..=8).map(stored).collect(), // 4 and 5 trimmed
    };
    answer(&mut sim, read, Ok(page));
    let msgs = sim.take_json(a);
    assert_eq!(
        msgs[0]["data"],
        json!({"recovered":false,"offset":8,"epoch":"e1","replayed":0})
    );
    assert!(events_of(&msgs).is_empty());
    publish(&mut sim, 9, "e1");
    assert_eq!(events_of(&sim.take_json(a)), [(9, None)]);

    let b = sim.connect();
    recover(&mut sim, b, 3, "old");
    let (read, ..) = take_read(&mut sim);
    let page = HistoryPage {
        position: pos(9, "e1"),
        publications: (4..=9).map(stored).collect(),
    };
    answer(&mut sim, read, Ok(page));
    assert_eq!(sim.take_json(b)[0]["data"]["recovered"], false);
    assert_eq!(sim.hub.stats().recoveries_failed, 2);
}

#[test]
fn a_live_epoch_change_is_marked_on_the_message() {
    let mut sim = external();
    let a = sim.connect();
    sim.send_text(a, r#"{"type":"subscribe","channel":"c","positions":true}"#);
    let (read, since, limit) = take_read(&mut sim);
    assert_eq!((since, limit), (None, 0));
    let page = HistoryPage {
        position: pos(2, "e1"),
        publications: Vec::new(),
    };
    answer(&mut sim, read, Ok(page));
    publish(&mut sim, 3, "e1");
    publish(&mut sim, 1, "e2");
    let msgs = sim.take_json(a);
    assert_eq!(msgs[0]["data"]["offset"], 2);
    assert_eq!(events_of(&msgs), [(3, None), (1, Some("e2".into()))]);
}

#[test]
fn no_history_subscribes_plainly_and_a_cancelled_read_is_ignored() {
    let mut sim = external();
    let a = sim.connect();
    sim.send_text(
        a,
        r#"{"type":"subscribe","channel":"c","history":5,"id":2}"#,
    );
    let (read, since, limit) = take_read(&mut sim);
    assert_eq!((since, limit), (None, 5));
    answer(&mut sim, read, Err(HistoryError::NoHistory));
    let msgs = sim.take_json(a);
    assert_eq!(
        msgs[0]["data"],
        json!({"recovered":false,"offset":0,"epoch":"","replayed":0})
    );
    publish(&mut sim, 1, "e1");
    let msgs = sim.take_json(a);
    assert!(msgs[0].get("offset").is_none(), "plain bytes");

    let b = sim.connect();
    recover(&mut sim, b, 0, "e1");
    let (read, ..) = take_read(&mut sim);
    sim.send_text(b, r#"{"type":"unsubscribe","channel":"c"}"#);
    sim.take_json(b);
    let page = HistoryPage {
        position: pos(1, "e1"),
        publications: vec![stored(1)],
    };
    answer(&mut sim, read, Ok(page));
    assert!(sim.take_json(b).is_empty());
    assert!(sim.hub.subscriptions(b).is_empty());
    sim.hub.check_invariants().unwrap();
}

#[test]
fn a_buffer_past_the_queue_caps_ends_in_recovered_false() {
    let mut sim = Sim::new(HubConfig {
        external_history: true,
        max_queued_messages: 8,
        ..HubConfig::default()
    });
    let a = sim.connect();
    recover(&mut sim, a, 0, "e1");
    let (read, ..) = take_read(&mut sim);
    for n in 1..=20 {
        publish(&mut sim, n, "e1");
    }
    let page = HistoryPage {
        position: pos(2, "e1"),
        publications: (1..=2).map(stored).collect(),
    };
    answer(&mut sim, read, Ok(page));
    let msgs = sim.take_json(a);
    assert_eq!(msgs[0]["data"]["recovered"], false);
    assert!(events_of(&msgs).is_empty());
    assert!(sim.closed(a).is_empty(), "not cut");
    sim.hub.check_invariants().unwrap();
}
