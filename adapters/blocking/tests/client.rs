//! The blocking client driver against the blocking server on loopback.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wshub_blocking::client::{
    self, ClientBuilder, ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint,
    SendError,
};
use wshub_blocking::{HubCommands, Server};
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::config::PublishPatterns;
use wshub_core::{
    AuthDecision, AuthFailure, CloseReason, ConnId, Event, HubConfig, Message, UpgradeRequest,
};

const WAIT: Duration = Duration::from_secs(5);

fn server(config: HubConfig) -> (Server, SocketAddr) {
    let server = Server::builder(config).bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    (server, addr)
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("ws://{addr}/ws")).unwrap()
}

/// Short, jitter-free backoff so reconnects happen within the test budget.
fn config(endpoints: Vec<Endpoint>) -> ClientConfig {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        jitter: Jitter::None,
        ..BackoffPolicy::default()
    };
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.close_timeout = Duration::from_secs(2);
    cfg
}

/// A port with nothing listening on it.
fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The first event `pick` accepts, within [`WAIT`]; the ones before it are
/// returned too (for assertions on what must not have happened).
fn wait_for<E: std::fmt::Debug, T>(
    rx: &Receiver<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> (T, Vec<E>) {
    let deadline = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => match pick(&e) {
                Some(t) => return (t, skipped),
                None => skipped.push(e),
            },
            Err(_) => panic!("no {what} within {WAIT:?}; saw {skipped:?}"),
        }
    }
}

/// Waits (up to [`WAIT`]) for `check` to hold.
fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connected_conn(events: &Receiver<Event>) -> ConnId {
    wait_for(events, "server Connected", |e| match e {
        Event::Connected { conn, .. } => Some(*conn),
        _ => None,
    })
    .0
}

fn message_on(events: &Receiver<ClientEvent>, channel: &str) -> serde_json::Value {
    wait_for(events, "message", |e| match e {
        ClientEvent::Message(m) if m.channel.as_deref() == Some(channel) => Some(m.data.clone()),
        _ => None,
    })
    .0
}

#[test]
fn subscribe_receive_send_and_close_with_1000() {
    let config_hub = HubConfig {
        policy: Arc::new(PublishPatterns::new(["chat:*"])),
        ..HubConfig::default()
    };
    let (server, addr) = server(config_hub);
    let hub = server.handle();
    let (client, events) = ClientBuilder::new(config(vec![endpoint(addr)]))
        .subscribe("news")
        .spawn()
        .unwrap();

    let conn = connected_conn(server.events());
    let (restored, _) = wait_for(&events, "SubscriptionsRestored", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    });
    assert_eq!(restored, ["news"]);
    assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });

    hub.publish("news", Message::new("event", json!({"n": 1})))
        .unwrap();
    assert_eq!(message_on(&events, "news"), json!({"n": 1}));

    // A live subscribe, then a client publish through the handle: the
    // message comes back on the new subscription, then the hub's ack.
    client.subscribe("chat:1");
    client
        .send(json!({"type": "publish", "channel": "chat:1", "data": "hi", "id": 7}))
        .unwrap();
    let (_, before) = wait_for(&events, "ack", |e| match e {
        ClientEvent::Message(m) if m.kind == "ack" && m.id == Some(json!(7)) => Some(()),
        _ => None,
    });
    assert!(
        before.iter().any(|e| matches!(e, ClientEvent::Message(m)
            if m.channel.as_deref() == Some("chat:1") && m.data == json!("hi"))),
        "{before:?}"
    );
    assert_eq!(hub.subscriber_count("chat:1").unwrap(), 1);
    client.unsubscribe("chat:1");
    eventually(|| hub.subscriber_count("chat:1").unwrap() == 0);

    client.close();
    let (code, _) = wait_for(server.events(), "server Closed", |e| match e {
        Event::Closed {
            conn: c,
            reason,
            code,
            ..
        } if *c == conn => Some((reason.clone(), *code)),
        _ => None,
    });
    assert_eq!(code, (CloseReason::PeerClosed(Some(1000)), Some(1000)));
    wait_for(&events, "Closed", |e| {
        matches!(e, ClientEvent::Closed).then_some(())
    });
    // The driver is done: the channel ends and sending is refused.
    assert!(events.recv_timeout(WAIT).is_err());
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(client.send(json!({"type": "ping"})), Err(SendError::Closed));
    hub.shutdown(WAIT);
}

#[test]
fn reconnects_and_restores_subscriptions_after_the_server_drops_it() {
    let (server, addr) = server(HubConfig::default());
    let hub = server.handle();
    let (client, events) = ClientBuilder::new(config(vec![endpoint(addr)]))
        .subscribe("c1")
        .spawn()
        .unwrap();
    let first = connected_conn(server.events());
    wait_for(&events, "first restore", |e| {
        matches!(e, ClientEvent::SubscriptionsRestored { .. }).then_some(())
    });

    hub.close(first, 4000, "go away").unwrap();
    let (reason, _) = wait_for(&events, "Disconnected", |e| match e {
        ClientEvent::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: Some(4000),
            reason: "go away".into()
        }
    );
    wait_for(&events, "Reconnected", |e| {
        matches!(
            e,
            ClientEvent::Reconnected {
                endpoint_index: 0,
                ..
            }
        )
        .then_some(())
    });
    let (restored, _) = wait_for(&events, "SubscriptionsRestored", |e| match e {
        ClientEvent::SubscriptionsRestored {
            restored,
            refused,
            unconfirmed,
        } => Some((restored.clone(), refused.len(), unconfirmed.len())),
        _ => None,
    });
    assert_eq!(restored, (vec!["c1".to_string()], 0, 0));
    let second = connected_conn(server.events());
    assert_ne!(first, second);
    assert_eq!(hub.subscriber_count("c1").unwrap(), 1);
    hub.publish("c1", Message::new("event", json!("after")))
        .unwrap();
    assert_eq!(message_on(&events, "c1"), json!("after"));

    // The whole server goes away and a new one comes up on the same port.
    assert!(hub.shutdown(WAIT));
    let (code, _) = wait_for(&events, "Disconnected 1001", |e| match e {
        ClientEvent::Disconnected {
            reason: DisconnectReason::ServerClosed { code, .. },
        } => Some(*code),
        _ => None,
    });
    assert_eq!(code, Some(1001));
    server.join();
    let restarted = Server::builder(HubConfig::default()).bind(addr).unwrap();
    let (restored, _) = wait_for(&events, "restore on the new server", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    });
    assert_eq!(restored, ["c1"]);
    restarted
        .handle()
        .publish("c1", Message::new("event", json!("new server")))
        .unwrap();
    assert_eq!(message_on(&events, "c1"), json!("new server"));
    client.close();
    restarted.handle().shutdown(WAIT);
}

#[test]
fn unreachable_first_endpoint_fails_over_to_the_second() {
    let (server, addr) = server(HubConfig::default());
    let dead = dead_port();
    let (client, events) = client::spawn(config(vec![endpoint(dead), endpoint(addr)])).unwrap();
    let (index, skipped) = wait_for(&events, "Connected", |e| match e {
        ClientEvent::Connected { endpoint_index, .. } => Some(*endpoint_index),
        _ => None,
    });
    assert_eq!(index, 1);
    assert!(
        matches!(
            skipped.as_slice(),
            [ClientEvent::ConnectFailed {
                endpoint_index: 0,
                reason: DisconnectReason::ConnectFailed
            }]
        ),
        "{skipped:?}"
    );
    assert_eq!(client.state(), ClientState::Connected { endpoint: 1 });
    connected_conn(server.events());
    client.close();
    server.handle().shutdown(WAIT);
}

#[test]
fn auth_failure_stops_the_walk_and_the_second_server_never_sees_a_connection() {
    let refuse_all = HubConfig {
        authenticator: Arc::new(|_: &UpgradeRequest| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }),
        ..HubConfig::default()
    };
    let (refusing, refusing_addr) = server(refuse_all);
    let (second, second_addr) = server(HubConfig::default());
    let (client, events) =
        client::spawn(config(vec![endpoint(refusing_addr), endpoint(second_addr)])).unwrap();
    let (status, skipped) = wait_for(&events, "AuthFailed", |e| match e {
        ClientEvent::AuthFailed {
            endpoint_index,
            status,
        } => Some((*endpoint_index, *status)),
        _ => None,
    });
    assert_eq!(status, (0, 401));
    assert!(skipped.is_empty(), "{skipped:?}");
    wait_for(refusing.events(), "server AuthFailed", |e| {
        matches!(e, Event::AuthFailed { status: 401, .. }).then_some(())
    });
    assert_eq!(client.state(), ClientState::AuthFailed { status: 401 });

    // Well past several backoff delays: nothing more is tried anywhere.
    std::thread::sleep(Duration::from_millis(400));
    let stats = second.handle().stats().unwrap();
    assert_eq!(
        (stats.connections, stats.pending, stats.bytes_in),
        (0, 0, 0)
    );
    assert!(second.events().try_recv().is_err());
    assert_eq!(refusing.handle().stats().unwrap().auth_failures, 1);
    assert!(events.try_recv().is_err());
    assert_eq!(client.send(json!({"type": "ping"})), Err(SendError::Closed));

    // Dropping the last handle closes the client; the event channel ends.
    drop(client);
    wait_for(&events, "Closed", |e| {
        matches!(e, ClientEvent::Closed).then_some(())
    });
    assert!(events.recv_timeout(WAIT).is_err());
    refusing.handle().shutdown(WAIT);
    second.handle().shutdown(WAIT);
}

#[test]
fn wss_endpoints_are_refused_with_a_clear_error() {
    let e = client::spawn(ClientConfig::new(vec![
        Endpoint::parse("ws://127.0.0.1:1/ws").unwrap(),
        Endpoint::parse("wss://example.com/ws").unwrap(),
    ]))
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("endpoint 1 is wss://"), "{e}");
    assert!(e.to_string().contains("TLS is not supported"), "{e}");
}

#[test]
fn send_while_disconnected_is_refused() {
    let dead = dead_port();
    let (client, events) = client::spawn(config(vec![endpoint(dead)])).unwrap();
    wait_for(&events, "ConnectFailed", |e| {
        matches!(e, ClientEvent::ConnectFailed { .. }).then_some(())
    });
    assert_eq!(
        client.send(json!({"type": "ping"})),
        Err(SendError::NotConnected)
    );
    client.close();
    wait_for(&events, "Closed", |e| {
        matches!(e, ClientEvent::Closed).then_some(())
    });
}
