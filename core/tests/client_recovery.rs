//! Recovery in the client, against a scripted server under fake time: the
//! positions it learns from acks and messages, the `recover` it sends after a
//! reconnect and after failing over, `Recovered` and `RecoveryFailed`, a live
//! gap repaired by a re-sync (bounded), duplicates dropped, a channel without
//! positions, and `recovery: false` sending today's bytes.

mod client_script;

use std::time::Duration;

use client_script::{cfg, secs, Dial, Drv};
use quickcheck::{QuickCheck, TestResult};
use serde_json::{json, Value};
use wshub_core::client::{ClientEvent, StreamPosition, RESYNC_LIMIT};
use wshub_core::frame::Decoded;

fn pos(offset: u64, epoch: &str) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: epoch.into(),
    }
}

/// A client subscribed to `c`, connected to endpoint 0 of `n`, its
/// subscribe not yet answered.
fn connected(n: usize) -> Drv {
    let mut d = Drv::new(cfg(n)).dialing(|_| Dial::Accept);
    d.c.subscribe(d.now, "c");
    d.start();
    d
}

/// The subscribes the client wrote on the current socket.
fn subscribes(d: &Drv) -> Vec<Value> {
    d.client_json()
        .into_iter()
        .filter(|v| v["type"] == "subscribe")
        .collect()
}

/// The id of the last subscribe written on this socket.
fn last_sub_id(d: &Drv) -> String {
    let subs = subscribes(d);
    let last = subs.last().expect("a subscribe");
    last["id"].as_str().expect("a string id").to_owned()
}

/// The server's outcome ack for the last subscribe.
fn ack(d: &mut Drv, recovered: bool, offset: u64, epoch: &str, replayed: u64) {
    let id = last_sub_id(d);
    let text = json!({"type": "ack", "id": id, "data": {
        "recovered": recovered, "offset": offset, "epoch": epoch, "replayed": replayed}});
    d.server_text(&text.to_string());
}

/// A positioned publication on `c`: `data` is the offset, so what the
/// application got says where it came from.
fn publish(d: &mut Drv, offset: u64) {
    d.server_text(&format!(
        r#"{{"type":"event","channel":"c","data":{offset},"timestamp":"t","offset":{offset}}}"#
    ));
}

/// The `data` of every message the application got on `c`, in order.
fn delivered(d: &Drv) -> Vec<u64> {
    d.events()
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) if m.channel.as_deref() == Some("c") => m.data.as_u64(),
            _ => None,
        })
        .collect()
}

/// The recovery events, in order.
fn outcomes(d: &Drv) -> Vec<ClientEvent> {
    d.events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::Recovered { .. } | ClientEvent::RecoveryFailed { .. }
            )
        })
        .cloned()
        .collect()
}

/// The server drops the connection; the client reconnects after its
/// backoff delay.
fn drop_and_reconnect(d: &mut Drv) {
    d.c.handle_eof(d.now);
    d.pump();
    d.advance(secs(5));
}

#[test]
fn the_first_subscribe_asks_for_positions_and_acks_and_messages_move_them() {
    let mut d = connected(1);
    assert_eq!(
        subscribes(&d),
        [json!({"type":"subscribe","channel":"c","data":"c","id":"sub-1","positions":true})]
    );
    assert_eq!(d.c.position("c"), None, "nothing known before the ack");
    ack(&mut d, true, 5, "e1", 0);
    assert_eq!(d.c.position("c"), Some(pos(5, "e1")));
    publish(&mut d, 6);
    publish(&mut d, 7);
    assert_eq!(d.c.position("c"), Some(pos(7, "e1")));
    assert_eq!(delivered(&d), [6, 7]);
    assert_eq!(outcomes(&d), [], "positions:true recovers nothing");

    // A subscribe made while connected asks the same way.
    d.c.subscribe(d.now, "other");
    d.pump();
    let last = subscribes(&d).pop().unwrap();
    assert_eq!(last["channel"], "other");
    assert_eq!(last["positions"], true);
}

#[test]
fn a_reconnect_resumes_with_recover_and_the_replay_is_delivered_once() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 6);
    publish(&mut d, 7);
    drop_and_reconnect(&mut d);
    assert!(
        matches!(d.events().last(), Some(ClientEvent::Reconnected { .. })),
        "{:?}",
        d.events()
    );
    assert_eq!(
        subscribes(&d),
        [
            json!({"type":"subscribe","channel":"c","data":"c","id":"sub-2",
                "recover":{"offset":7,"epoch":"e1"}})
        ]
    );
    d.clear_log();
    ack(&mut d, true, 10, "e1", 3);
    for o in 8..=12 {
        publish(&mut d, o);
    }
    assert_eq!(delivered(&d), [8, 9, 10, 11, 12]);
    assert_eq!(
        d.events()[..2],
        [
            &ClientEvent::Recovered {
                channel: "c".into(),
                replayed: 3
            },
            &ClientEvent::SubscriptionsRestored {
                restored: vec!["c".into()],
                refused: vec![],
                unconfirmed: vec![],
            },
        ],
        "the outcome, then the restore, then the replayed messages"
    );
    assert_eq!(d.c.position("c"), Some(pos(12, "e1")));

    // Nothing missed is still a recovery.
    drop_and_reconnect(&mut d);
    d.clear_log();
    ack(&mut d, true, 12, "e1", 0);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::Recovered {
            channel: "c".into(),
            replayed: 0
        }]
    );
}

#[test]
fn failing_over_to_another_endpoint_recovers_there_or_reports_the_new_position() {
    // Endpoint 0 works once, then is down for good; endpoint 1 is up.
    let mut first = true;
    let mut d = Drv::new(cfg(2)).dialing(move |i| match i {
        0 if first => {
            first = false;
            Dial::Accept
        }
        0 => Dial::Fail,
        _ => Dial::Accept,
    });
    d.c.subscribe(d.now, "c");
    d.start();
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 6);
    drop_and_reconnect(&mut d);
    assert_eq!(d.connects().last().unwrap().1, 1, "failed over");
    let sub = subscribes(&d).pop().unwrap();
    assert_eq!(sub["recover"], json!({"offset": 6, "epoch": "e1"}));

    // Endpoint 1 shares the history (the same epoch): recovered.
    d.clear_log();
    ack(&mut d, true, 8, "e1", 2);
    publish(&mut d, 7);
    publish(&mut d, 8);
    assert_eq!(delivered(&d), [7, 8]);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::Recovered {
            channel: "c".into(),
            replayed: 2
        }]
    );

    // Endpoint 1 after a restart: another epoch, nothing can be replayed.
    drop_and_reconnect(&mut d);
    let sub = subscribes(&d).pop().unwrap();
    assert_eq!(sub["recover"], json!({"offset": 8, "epoch": "e1"}));
    d.clear_log();
    ack(&mut d, false, 3, "e2", 0);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(3, "e2")
        }]
    );
    assert_eq!(d.c.position("c"), Some(pos(3, "e2")));
    publish(&mut d, 4);
    assert_eq!(delivered(&d), [4], "the live stream goes on from there");
    // The next resume counts in the new epoch.
    drop_and_reconnect(&mut d);
    let sub = subscribes(&d).pop().unwrap();
    assert_eq!(sub["recover"], json!({"offset": 4, "epoch": "e2"}));
}

#[test]
fn a_recovered_ack_in_another_epoch_is_a_failure() {
    // A server that claims success from a position it cannot know.
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    drop_and_reconnect(&mut d);
    d.clear_log();
    ack(&mut d, true, 9, "e2", 4);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(9, "e2")
        }]
    );
}

#[test]
fn a_live_gap_resyncs_and_every_publication_arrives_once_in_order() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 6);
    publish(&mut d, 7);
    let before = subscribes(&d).len();
    publish(&mut d, 9); // 8 is missing
    let subs = subscribes(&d);
    assert_eq!(subs.len(), before + 1, "one re-sync");
    let resync = subs.last().unwrap();
    assert_eq!(resync["channel"], "c");
    assert_eq!(resync["recover"], json!({"offset": 7, "epoch": "e1"}));
    // Live messages until the ack are dropped: the replay brings them.
    publish(&mut d, 10);
    assert_eq!(subscribes(&d).len(), before + 1, "no second re-sync");
    assert_eq!(delivered(&d), [6, 7]);
    ack(&mut d, true, 10, "e1", 3);
    for o in 8..=11 {
        publish(&mut d, o);
    }
    assert_eq!(delivered(&d), [6, 7, 8, 9, 10, 11]);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::Recovered {
            channel: "c".into(),
            replayed: 3
        }]
    );
    assert_eq!(d.c.position("c"), Some(pos(11, "e1")));
    let restores = d
        .events()
        .iter()
        .filter(|e| matches!(e, ClientEvent::SubscriptionsRestored { .. }))
        .count();
    assert_eq!(restores, 1, "the connect's; a re-sync is not a restore");
}

#[test]
fn a_resync_that_cannot_recover_reports_the_new_position() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 9);
    ack(&mut d, false, 30, "e1", 0);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(30, "e1")
        }]
    );
    publish(&mut d, 31);
    assert_eq!(delivered(&d), [31]);
}

#[test]
fn a_refused_resync_stops_tracking_and_says_so() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 7);
    let id = last_sub_id(&d);
    d.server_text(&format!(
        r#"{{"type":"error","id":"{id}","data":{{"code":"bad_request","message":"m"}}}}"#
    ));
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(5, "e1")
        }]
    );
    assert_eq!(d.c.position("c"), None);
    assert_eq!(d.c.subscriptions(), ["c"], "the subscription itself stands");
    publish(&mut d, 8);
    assert_eq!(delivered(&d), [8]);
}

#[test]
fn gaps_without_end_cost_a_bounded_number_of_resyncs() {
    let mut d = connected(1);
    ack(&mut d, true, 0, "e1", 0);
    let mut next = 1;
    // Every re-sync "succeeds" and every publication after it skips one.
    for _ in 0..RESYNC_LIMIT {
        publish(&mut d, next + 1);
        ack(&mut d, true, next + 1, "e1", 1);
        publish(&mut d, next);
        publish(&mut d, next + 1);
        next += 2;
    }
    let subs = subscribes(&d).len();
    assert_eq!(subs, 1 + RESYNC_LIMIT as usize);
    // Past the limit a gap is taken and reported; no more subscribes.
    publish(&mut d, next + 5);
    publish(&mut d, next + 7);
    assert_eq!(subscribes(&d).len(), subs);
    let failed: Vec<_> = outcomes(&d)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::RecoveryFailed { .. }))
        .collect();
    assert_eq!(
        failed,
        [
            ClientEvent::RecoveryFailed {
                channel: "c".into(),
                position: pos(next + 4, "e1")
            },
            ClientEvent::RecoveryFailed {
                channel: "c".into(),
                position: pos(next + 6, "e1")
            }
        ]
    );
    let got = delivered(&d);
    assert_eq!(got.len() as u64, next + 1, "1..next once each, then two");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");

    // A new connection has a new budget.
    drop_and_reconnect(&mut d);
    ack(&mut d, true, next + 7, "e1", 0);
    let subs = subscribes(&d).len();
    publish(&mut d, next + 9);
    assert_eq!(subscribes(&d).len(), subs + 1, "re-syncs again");
}

#[test]
fn duplicates_are_dropped() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    for o in [5, 6, 6, 4, 7, 7, 1] {
        publish(&mut d, o);
    }
    assert_eq!(delivered(&d), [6, 7]);
    assert_eq!(outcomes(&d), []);

    // Also in a batched frame, and after a recovery.
    drop_and_reconnect(&mut d);
    ack(&mut d, true, 9, "e1", 2);
    d.server_text(
        "{\"type\":\"event\",\"channel\":\"c\",\"data\":7,\"offset\":7}\n\
         {\"type\":\"event\",\"channel\":\"c\",\"data\":8,\"offset\":8}\n\
         {\"type\":\"event\",\"channel\":\"c\",\"data\":8,\"offset\":8}\n\
         {\"type\":\"event\",\"channel\":\"c\",\"data\":9,\"offset\":9}",
    );
    assert_eq!(delivered(&d), [6, 7, 8, 9]);
}

#[test]
fn a_changed_epoch_on_a_live_message_is_reported_and_followed() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    publish(&mut d, 6);
    d.server_text(r#"{"type":"event","channel":"c","data":2,"offset":2,"epoch":"e2"}"#);
    d.server_text(r#"{"type":"event","channel":"c","data":3,"offset":3,"epoch":"e2"}"#);
    assert_eq!(delivered(&d), [6, 2, 3]);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(1, "e2")
        }],
        "the stream goes on after offset 1 (with 2)"
    );
    assert_eq!(d.c.position("c"), Some(pos(3, "e2")));
}

#[test]
fn a_channel_without_positions_is_not_tracked() {
    let mut d = connected(1);
    ack(&mut d, false, 0, "", 0);
    assert_eq!(d.c.position("c"), None);
    d.server_text(r#"{"type":"event","channel":"c","data":1}"#);
    d.server_text(r#"{"type":"event","channel":"c","data":1}"#);
    assert_eq!(delivered(&d), [1, 1], "no offsets: handed on as they come");
    assert_eq!(outcomes(&d), [], "quietly");
    // The next connection asks again (that server may keep history).
    drop_and_reconnect(&mut d);
    let sub = subscribes(&d).pop().unwrap();
    assert_eq!(sub["positions"], true);
    assert!(sub.get("recover").is_none());

    // A server that does not know positions acks without data.
    let id = last_sub_id(&d);
    d.server_text(&format!(r#"{{"type":"ack","id":"{id}"}}"#));
    assert_eq!(d.c.position("c"), None);
    assert_eq!(outcomes(&d), []);
}

#[test]
fn a_resume_answered_without_positions_is_a_failed_recovery() {
    // Failing over from a server with history to one without: what was
    // published meanwhile may be gone, so the application hears it.
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    drop_and_reconnect(&mut d);
    assert!(subscribes(&d)[0].get("recover").is_some());
    ack(&mut d, false, 0, "", 0);
    assert_eq!(
        outcomes(&d),
        [ClientEvent::RecoveryFailed {
            channel: "c".into(),
            position: pos(0, "")
        }]
    );
    assert_eq!(d.c.position("c"), None, "no longer tracked");
    d.server_text(r#"{"type":"event","channel":"c","data":1}"#);
    assert_eq!(delivered(&d), [1]);
}

#[test]
fn unsubscribing_forgets_the_position() {
    let mut d = connected(1);
    ack(&mut d, true, 5, "e1", 0);
    assert!(d.c.unsubscribe(d.now, "c"));
    assert_eq!(d.c.position("c"), None);
    // Messages still in flight for it are handed on as before.
    publish(&mut d, 6);
    publish(&mut d, 6);
    assert_eq!(delivered(&d), [6, 6]);
    d.c.subscribe(d.now, "c");
    d.pump();
    let sub = subscribes(&d).pop().unwrap();
    assert_eq!(sub["positions"], true, "starts afresh, no recover");
}

#[test]
fn recovery_off_sends_todays_bytes_and_hands_everything_on() {
    let mut c = cfg(1);
    c.recovery = false;
    let mut d = Drv::new(c).dialing(|_| Dial::Accept);
    d.c.subscribe(d.now, "c");
    d.start();
    let texts = |d: &Drv| -> Vec<String> {
        d.client_frames()
            .into_iter()
            .filter_map(|f| match f {
                Decoded::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        texts(&d),
        [r#"{"type":"subscribe","channel":"c","data":"c","id":"sub-1"}"#]
    );
    ack(&mut d, true, 5, "e1", 0);
    assert_eq!(d.c.position("c"), None);
    for o in [5, 9, 9, 2] {
        publish(&mut d, o);
    }
    assert_eq!(delivered(&d), [5, 9, 9, 2]);
    assert_eq!(texts(&d).len(), 1, "no re-sync");
    drop_and_reconnect(&mut d);
    assert_eq!(
        texts(&d),
        [r#"{"type":"subscribe","channel":"c","data":"c","id":"sub-2"}"#]
    );
    assert_eq!(outcomes(&d), []);
}

// ---------------------------------------------------------------------------
// A model server against random outages, losses and duplicates
// ---------------------------------------------------------------------------

/// One channel's stream as a hub with history keeps it, answering the
/// client's subscribes as PROTOCOL.md says, and sending live publications
/// to it (or losing or repeating them when told).
struct Model {
    epoch: u32,
    /// The latest offset in this epoch.
    offset: u64,
    /// Offsets up to this one are no longer stored.
    trimmed: u64,
    /// The client's subscription on the current connection is in place.
    subscribed: bool,
    /// Client frames already read on the current socket, and which socket.
    read: usize,
    sockets: usize,
}

impl Model {
    fn epoch(&self) -> String {
        format!("e{}", self.epoch)
    }

    fn message(&self, offset: u64) -> String {
        json!({"type": "event", "channel": "c", "timestamp": "t", "offset": offset,
               "data": {"o": offset, "e": self.epoch()}})
        .to_string()
    }

    fn publish(&mut self, d: &mut Drv, send: bool) {
        self.offset += 1;
        if send && self.subscribed {
            d.server_text(&self.message(self.offset));
        }
    }

    /// Sends an offset already sent (a duplicate).
    fn repeat(&mut self, d: &mut Drv, back: u64) {
        if self.subscribed && self.offset > 0 {
            let o = self.offset.saturating_sub(back).max(1);
            d.server_text(&self.message(o));
        }
    }

    /// Reads what the client wrote since the last read and answers it.
    fn read(&mut self, d: &mut Drv) {
        let sockets = d.connects().len();
        if sockets != self.sockets {
            self.sockets = sockets;
            self.read = 0;
        }
        let subs: Vec<Value> = subscribes(d);
        let id_of = |v: &Value| v["id"].as_str().unwrap().to_owned();
        for sub in subs.iter().skip(self.read) {
            self.read += 1;
            let (recovered, replay) = match sub.get("recover") {
                None => {
                    assert_eq!(sub["positions"], true, "{sub}");
                    (true, None)
                }
                Some(r) => {
                    let from = r["offset"].as_u64().unwrap();
                    let same = r["epoch"] == self.epoch();
                    assert!(!same || from <= self.offset, "a position from the future");
                    if same && from >= self.trimmed {
                        (true, Some(from))
                    } else {
                        (false, None)
                    }
                }
            };
            let replayed = replay.map_or(0, |from| self.offset - from);
            let ack = json!({"type": "ack", "id": id_of(sub), "data": {"recovered": recovered,
                "offset": self.offset, "epoch": self.epoch(), "replayed": replayed}});
            d.server_text(&ack.to_string());
            if let Some(from) = replay {
                for o in from + 1..=self.offset {
                    d.server_text(&self.message(o));
                }
            }
            self.subscribed = true;
        }
    }

    fn drop_connection(&mut self, d: &mut Drv) {
        self.subscribed = false;
        d.c.handle_eof(d.now);
        d.pump();
        d.advance(secs(120));
    }
}

/// Checks the contract on everything the application got: each message on
/// `c` is the one right after the last (offset and epoch), unless a
/// `RecoveryFailed` said where the stream goes on. Returns the next
/// position expected.
fn check_stream(d: &Drv) -> Result<(u64, String), String> {
    let mut expect = (1, "e0".to_owned());
    for e in d.events() {
        match e {
            ClientEvent::Message(m) if m.channel.as_deref() == Some("c") => {
                let got = (
                    m.data["o"].as_u64().unwrap(),
                    m.data["e"].as_str().unwrap().to_owned(),
                );
                if got != expect {
                    return Err(format!("expected {expect:?}, got {got:?}"));
                }
                expect.0 += 1;
            }
            ClientEvent::RecoveryFailed { position, .. } => {
                expect = (position.offset + 1, position.epoch.clone());
            }
            _ => {}
        }
    }
    Ok(expect)
}

#[test]
fn random_outages_losses_and_duplicates_never_make_a_silent_gap_or_a_duplicate() {
    fn prop(ops: Vec<u8>) -> TestResult {
        let mut c = cfg(1);
        c.ping_interval = Duration::ZERO;
        c.dead_timeout = Duration::ZERO;
        let mut d = Drv::new(c).dialing(|_| Dial::Accept);
        d.c.subscribe(d.now, "c");
        d.start();
        let mut m = Model {
            epoch: 0,
            offset: 0,
            trimmed: 0,
            subscribed: false,
            read: 0,
            sockets: 0,
        };
        m.read(&mut d);
        for op in ops {
            match op % 16 {
                0..=5 => m.publish(&mut d, true),
                6 | 7 => m.publish(&mut d, false),
                8 => m.repeat(&mut d, u64::from(op >> 4)),
                9..=11 => m.read(&mut d),
                12 | 13 => m.drop_connection(&mut d),
                14 => m.trimmed = m.offset,
                _ => {
                    m.epoch += 1;
                    m.offset = 0;
                    m.trimmed = 0;
                    m.drop_connection(&mut d);
                }
            }
        }
        // The end of the stream is found by the next resume.
        m.read(&mut d);
        m.drop_connection(&mut d);
        m.read(&mut d);
        match check_stream(&d) {
            Err(e) => TestResult::error(e),
            Ok(next) if next != (m.offset + 1, m.epoch()) => TestResult::error(format!(
                "ended expecting {next:?}, the stream is at {} of {}",
                m.offset,
                m.epoch()
            )),
            Ok(_) => TestResult::passed(),
        }
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<u8>) -> TestResult);
}
