//! `Command` / `Reply` / `Hub::apply`: what an adapter's handle sends.

use std::time::{Duration, Instant};

use std::cell::RefCell;

use wshub_core::command::{Command, HubCommands, Reply, Stopped};
use wshub_core::message::process_channel;
use wshub_core::{ConnId, Hub, HubConfig, Identity, Message, PeerInfo, Stats};

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

/// Records every command and answers as a hub with two subscribers would.
#[derive(Default)]
struct Recorder(RefCell<Vec<Command>>);

impl HubCommands for Recorder {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let reply = match &command {
            Command::Stats => Reply::Stats(Stats::default()),
            Command::Channels => Reply::Channels(vec![("c".into(), 2)]),
            _ => Reply::Count(2),
        };
        self.0.borrow_mut().push(command);
        Ok(reply)
    }
}

#[test]
fn go_ws_helpers_are_message_constructors_plus_one_publish() {
    let hub = Recorder::default();
    let line = Message::process_output("7", "line");
    assert_eq!(hub.publish(&process_channel("7"), line), Ok(2));
    assert_eq!(hub.broadcast(Message::error("e")), Ok(2));
    let sent = hub.0.borrow();
    match &sent[0] {
        Command::Publish { channel, message } => {
            assert_eq!(channel, "process:7");
            assert_eq!(message.kind, "process_output");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&sent[1], Command::Broadcast(m) if m.kind == "error"));
}

#[test]
fn hub_commands_build_each_command_and_read_its_reply() {
    let hub = Recorder::default();
    let (mut h, now) = self::hub();
    let id = h.open(now, PeerInfo::default()).unwrap();
    assert_eq!(hub.send_to_user("u", Message::error("x")), Ok(2));
    assert_eq!(hub.subscriber_count("c"), Ok(2));
    assert_eq!(hub.stats(), Ok(Stats::default()));
    assert_eq!(hub.channels(), Ok(vec![("c".to_owned(), 2)]));
    hub.subscribe(id, "c").unwrap();
    hub.close(id, 4000, "bye").unwrap();
    let sent = hub.0.borrow();
    assert!(matches!(&sent[0], Command::SendToUser { user, .. } if user == "u"));
    assert!(matches!(&sent[1], Command::SubscriberCount(c) if c == "c"));
    assert!(matches!(&sent[4], Command::Subscribe(i, c) if *i == id && c == "c"));
    assert!(matches!(&sent[5], Command::Close(i, 4000, r) if *i == id && r == "bye"));
}

#[test]
fn a_stopped_hub_fails_every_command_with_stopped() {
    struct Gone;
    impl HubCommands for Gone {
        fn command(&self, _: Command) -> Result<Reply, Stopped> {
            Err(Stopped)
        }
    }
    assert_eq!(Gone.publish("c", Message::error("x")), Err(Stopped));
    assert_eq!(Gone.stats(), Err(Stopped));
    assert_eq!(Gone.broadcast(Message::error("x")), Err(Stopped));
    let id = {
        let (mut h, now) = hub();
        h.open(now, PeerInfo::default()).unwrap()
    };
    assert_eq!(
        Gone.close(id, 1000, ""),
        Err(Stopped),
        "tell waits by default"
    );
    assert_eq!(Stopped.to_string(), "the hub has stopped");
}
