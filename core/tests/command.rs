//! `Command` / `Reply` / `Hub::apply`: what an adapter's handle sends.

use std::time::{Duration, Instant};

use wshub_core::command::{Command, Reply};
use wshub_core::{ConnId, Hub, HubConfig, Identity, Message, PeerInfo};

/// Any instant will do: the hub only ever sees this one.
#[allow(clippy::disallowed_methods)]
fn hub() -> (Hub, Instant) {
    let now = Instant::now();
    (
        Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap(),
        now,
    )
}

#[test]
fn commands_on_a_closed_connection_are_refused_not_panics() {
    let (mut hub, now) = hub();
    let id = hub.open(now, PeerInfo::default()).unwrap();
    hub.handle_eof(now, id).unwrap();
    while hub.poll_event().is_some() {}
    let commands: [fn(ConnId) -> Command; 4] = [
        |id| Command::Send(id, Message::error("x")),
        |id| Command::Subscribe(id, "c".into()),
        |id| Command::Close(id, 1000, String::new()),
        |id| Command::Accept(id, Identity::user("u")),
    ];
    for make in commands {
        let reply = hub.apply(now, make(id));
        assert!(
            matches!(reply, Reply::Refused(_)),
            "{:?}: {reply:?}",
            make(id)
        );
    }
}

#[test]
fn a_pending_connection_cannot_be_subscribed_and_counts_stay_zero() {
    let (mut hub, now) = hub();
    let id = hub.open(now, PeerInfo::default()).unwrap();
    let reply = hub.apply(now, Command::Subscribe(id, "c".into()));
    assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
    assert_eq!(
        hub.apply(now, Command::SubscriberCount("c".into())),
        Reply::Count(0)
    );
    assert_eq!(hub.apply(now, Command::Channels), Reply::Channels(vec![]));
    match hub.apply(now, Command::Stats) {
        Reply::Stats(s) => assert_eq!((s.connections, s.pending), (0, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn go_ws_helpers_target_the_process_channel() {
    match Command::process_output("7", "line") {
        Command::Publish { channel, message } => {
            assert_eq!(channel, "process:7");
            assert_eq!(message.kind, "process_output");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(Command::send_error("e"), Command::Broadcast(m) if m.kind == "error"));
}
