//! The tokio client driver against the tokio server on loopback.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::config::PublishPatterns;
use wshub_core::{
    AuthDecision, AuthFailure, CloseReason, ConnId, Event, HubConfig, Message, UpgradeRequest,
};
use wshub_tokio::client::{
    self, ClientBuilder, ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint,
    SendError,
};
use wshub_tokio::Server;

const WAIT: Duration = Duration::from_secs(5);

async fn server(config: HubConfig) -> (Server, SocketAddr) {
    let server = Server::builder(config).bind("127.0.0.1:0").await.unwrap();
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
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The server's events come on a bounded channel, the client's on an
/// unbounded one.
trait Recv<E> {
    async fn recv(&mut self) -> Option<E>;
}

impl<E> Recv<E> for UnboundedReceiver<E> {
    async fn recv(&mut self) -> Option<E> {
        UnboundedReceiver::recv(self).await
    }
}

impl<E> Recv<E> for tokio::sync::mpsc::Receiver<E> {
    async fn recv(&mut self) -> Option<E> {
        tokio::sync::mpsc::Receiver::recv(self).await
    }
}

/// The first event `pick` accepts, within [`WAIT`]; the ones before it are
/// returned too.
async fn wait_for<E: Debug, T>(
    rx: &mut impl Recv<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> (T, Vec<E>) {
    let deadline = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => match pick(&e) {
                Some(t) => return (t, skipped),
                None => skipped.push(e),
            },
            Ok(None) => panic!("channel ended before {what}; saw {skipped:?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; saw {skipped:?}"),
        }
    }
}

async fn connected_conn(events: &mut tokio::sync::mpsc::Receiver<Event>) -> ConnId {
    wait_for(events, "server Connected", |e| match e {
        Event::Connected { conn, .. } => Some(*conn),
        _ => None,
    })
    .await
    .0
}

async fn message_on(
    events: &mut UnboundedReceiver<ClientEvent>,
    channel: &str,
) -> serde_json::Value {
    wait_for(events, "message", |e| match e {
        ClientEvent::Message(m) if m.channel.as_deref() == Some(channel) => Some(m.data.clone()),
        _ => None,
    })
    .await
    .0
}

async fn closed(events: &mut UnboundedReceiver<ClientEvent>) {
    wait_for(events, "Closed", |e| {
        matches!(e, ClientEvent::Closed).then_some(())
    })
    .await;
}

#[tokio::test]
async fn subscribe_receive_send_and_close_with_1000() {
    let config_hub = HubConfig {
        policy: Arc::new(PublishPatterns::new(["chat:*"])),
        ..HubConfig::default()
    };
    let (mut server, addr) = server(config_hub).await;
    let hub = server.handle();
    let (client, mut events) = ClientBuilder::new(config(vec![endpoint(addr)]))
        .subscribe("news")
        .spawn()
        .unwrap();

    let conn = connected_conn(server.events()).await;
    let (restored, _) = wait_for(&mut events, "SubscriptionsRestored", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    })
    .await;
    assert_eq!(restored, ["news"]);
    assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });

    hub.publish("news", Message::new("event", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(message_on(&mut events, "news").await, json!({"n": 1}));

    // A live subscribe, then a client publish through the handle: the
    // message comes back on the new subscription, then the hub's ack.
    client.subscribe("chat:1");
    client
        .send(json!({"type": "publish", "channel": "chat:1", "data": "hi", "id": 7}))
        .await
        .unwrap();
    let (_, before) = wait_for(&mut events, "ack", |e| match e {
        ClientEvent::Message(m) if m.kind == "ack" && m.id == Some(json!(7)) => Some(()),
        _ => None,
    })
    .await;
    assert!(
        before.iter().any(|e| matches!(e, ClientEvent::Message(m)
            if m.channel.as_deref() == Some("chat:1") && m.data == json!("hi"))),
        "{before:?}"
    );
    assert_eq!(hub.subscriber_count("chat:1").await.unwrap(), 1);
    client.unsubscribe("chat:1");
    let deadline = Instant::now() + WAIT;
    while hub.subscriber_count("chat:1").await.unwrap() != 0 {
        assert!(Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    client.close();
    let (code, _) = wait_for(server.events(), "server Closed", |e| match e {
        Event::Closed {
            conn: c,
            reason,
            code,
            ..
        } if *c == conn => Some((reason.clone(), *code)),
        _ => None,
    })
    .await;
    assert_eq!(code, (CloseReason::PeerClosed(Some(1000)), Some(1000)));
    closed(&mut events).await;
    // The driver is done: the channel ends and sending is refused.
    assert!(tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(
        client.send(json!({"type": "ping"})).await,
        Err(SendError::Closed)
    );
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn reconnects_and_restores_subscriptions_after_the_server_drops_it() {
    let (mut server, addr) = server(HubConfig::default()).await;
    let hub = server.handle();
    let (client, mut events) = ClientBuilder::new(config(vec![endpoint(addr)]))
        .subscribe("c1")
        .spawn()
        .unwrap();
    let first = connected_conn(server.events()).await;
    wait_for(&mut events, "first restore", |e| {
        matches!(e, ClientEvent::SubscriptionsRestored { .. }).then_some(())
    })
    .await;

    hub.close(first, 4000, "go away").await.unwrap();
    let (reason, _) = wait_for(&mut events, "Disconnected", |e| match e {
        ClientEvent::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        reason,
        DisconnectReason::ServerClosed {
            code: Some(4000),
            reason: "go away".into()
        }
    );
    wait_for(&mut events, "Reconnected", |e| {
        matches!(
            e,
            ClientEvent::Reconnected {
                endpoint_index: 0,
                ..
            }
        )
        .then_some(())
    })
    .await;
    let (restored, _) = wait_for(&mut events, "SubscriptionsRestored", |e| match e {
        ClientEvent::SubscriptionsRestored {
            restored,
            refused,
            unconfirmed,
        } => Some((restored.clone(), refused.len(), unconfirmed.len())),
        _ => None,
    })
    .await;
    assert_eq!(restored, (vec!["c1".to_string()], 0, 0));
    let second = connected_conn(server.events()).await;
    assert_ne!(first, second);
    assert_eq!(hub.subscriber_count("c1").await.unwrap(), 1);
    hub.publish("c1", Message::new("event", json!("after")))
        .await
        .unwrap();
    assert_eq!(message_on(&mut events, "c1").await, json!("after"));

    // The whole server goes away and a new one comes up on the same port.
    assert!(hub.shutdown(WAIT).await);
    let (code, _) = wait_for(&mut events, "Disconnected 1001", |e| match e {
        ClientEvent::Disconnected {
            reason: DisconnectReason::ServerClosed { code, .. },
        } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, Some(1001));
    server.join().await;
    let restarted = Server::builder(HubConfig::default())
        .bind(addr)
        .await
        .unwrap();
    let (restored, _) = wait_for(&mut events, "restore on the new server", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    })
    .await;
    assert_eq!(restored, ["c1"]);
    restarted
        .handle()
        .publish("c1", Message::new("event", json!("new server")))
        .await
        .unwrap();
    assert_eq!(message_on(&mut events, "c1").await, json!("new server"));
    client.close();
    closed(&mut events).await;
    restarted.handle().shutdown(WAIT).await;
}

#[tokio::test]
async fn unreachable_first_endpoint_fails_over_to_the_second() {
    let (mut server, addr) = server(HubConfig::default()).await;
    let dead = dead_port();
    let (client, mut events) = client::spawn(config(vec![endpoint(dead), endpoint(addr)])).unwrap();
    let (index, skipped) = wait_for(&mut events, "Connected", |e| match e {
        ClientEvent::Connected { endpoint_index, .. } => Some(*endpoint_index),
        _ => None,
    })
    .await;
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
    connected_conn(server.events()).await;
    client.close();
    closed(&mut events).await;
    server.handle().shutdown(WAIT).await;
}

#[tokio::test]
async fn auth_failure_stops_the_walk_and_the_second_server_never_sees_a_connection() {
    let refuse_all = HubConfig {
        authenticator: Arc::new(|_: &UpgradeRequest| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }),
        ..HubConfig::default()
    };
    let (mut refusing, refusing_addr) = server(refuse_all).await;
    let (mut second, second_addr) = server(HubConfig::default()).await;
    let (client, mut events) =
        client::spawn(config(vec![endpoint(refusing_addr), endpoint(second_addr)])).unwrap();
    let (status, skipped) = wait_for(&mut events, "AuthFailed", |e| match e {
        ClientEvent::AuthFailed {
            endpoint_index,
            status,
        } => Some((*endpoint_index, *status)),
        _ => None,
    })
    .await;
    assert_eq!(status, (0, 401));
    assert!(skipped.is_empty(), "{skipped:?}");
    wait_for(refusing.events(), "server AuthFailed", |e| {
        matches!(e, Event::AuthFailed { status: 401, .. }).then_some(())
    })
    .await;
    assert_eq!(client.state(), ClientState::AuthFailed { status: 401 });

    // Well past several backoff delays: nothing more is tried anywhere.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = second.handle().stats().await.unwrap();
    assert_eq!(
        (stats.connections, stats.pending, stats.bytes_in),
        (0, 0, 0)
    );
    assert!(second.events().try_recv().is_err());
    assert_eq!(refusing.handle().stats().await.unwrap().auth_failures, 1);
    assert!(events.try_recv().is_err());
    assert_eq!(
        client.send(json!({"type": "ping"})).await,
        Err(SendError::Closed)
    );

    // Dropping the last handle closes the client; the event channel ends.
    drop(client);
    closed(&mut events).await;
    assert!(tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .is_none());
    refusing.handle().shutdown(WAIT).await;
    second.handle().shutdown(WAIT).await;
}

#[tokio::test]
async fn wss_endpoints_are_refused_with_a_clear_error() {
    let e = client::spawn(ClientConfig::new(vec![Endpoint::parse(
        "wss://example.com/ws",
    )
    .unwrap()]))
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("TLS is not supported"), "{e}");
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let e = client::spawn(config(vec![endpoint(dead_port())])).unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_while_disconnected_is_refused() {
    let (client, mut events) = client::spawn(config(vec![endpoint(dead_port())])).unwrap();
    wait_for(&mut events, "ConnectFailed", |e| {
        matches!(e, ClientEvent::ConnectFailed { .. }).then_some(())
    })
    .await;
    assert_eq!(
        client.send(json!({"type": "ping"})).await,
        Err(SendError::NotConnected)
    );
    client.close();
    closed(&mut events).await;
}
