//! One client-driver suite for every adapter: each adapter's client driver
//! against the same adapter's server on loopback. Each test file
//! (tests/client_{blocking,smol,tokio}.rs) implements [`Driver`] and the small
//! traits below for its runtime's types, then instantiates the suite with
//! `client_suite!`.
//!
//! The scenarios are `async` so that one text serves all three drivers: the
//! async drivers' futures wait on their runtime, the blocking driver's are
//! ready on the first poll (their waits block the thread).
#![allow(dead_code, async_fn_in_trait)]

pub mod tls;

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wshub_core::backoff::{BackoffPolicy, Jitter};
use wshub_core::client::{
    ClientConfig, ClientEvent, ClientState, DisconnectReason, Endpoint, SendError,
};
use wshub_core::config::PublishPatterns;
use wshub_core::{
    AuthDecision, AuthFailure, CloseReason, ConnId, Event, HubConfig, Message, Stats,
    UpgradeRequest,
};

pub const WAIT: Duration = Duration::from_secs(5);

/// What waiting for the next item of a channel came to.
pub enum Next<E> {
    Item(E),
    /// Every sender is gone.
    Ended,
    TimedOut,
}

/// A channel the suite reads: a server's hub events or a client's events.
pub trait Events<E> {
    /// The next item, waiting no later than `deadline`.
    async fn next_until(&mut self, deadline: Instant) -> Next<E>;
    /// The next item if one is queued now.
    fn next_now(&mut self) -> Option<E>;
}

/// A running server; its hub events are its [`Events`].
pub trait Server: Events<Event> {
    type Hub: Hub;
    fn addr(&self) -> SocketAddr;
    fn hub(&self) -> Self::Hub;
    /// Waits until the server (whose hub has shut down) is gone.
    async fn join(self);
}

/// A server's hub handle.
pub trait Hub {
    async fn publish(&self, channel: &str, m: Message) -> usize;
    async fn close(&self, conn: ConnId, code: u16, reason: &str);
    async fn subscriber_count(&self, channel: &str) -> usize;
    async fn stats(&self) -> Stats;
    /// Graceful shutdown; true when it completed before the deadline.
    async fn shutdown(&self, deadline: Duration) -> bool;
}

/// A client driver's handle.
pub trait Client {
    fn state(&self) -> ClientState;
    fn subscribe(&self, channel: &str);
    fn unsubscribe(&self, channel: &str);
    async fn send(&self, message: Value) -> Result<(), SendError>;
    fn close(&self);
}

/// One adapter's server and client driver on its runtime.
pub trait Driver {
    type Server: Server;
    type Client: Client;
    type Events: Events<ClientEvent>;
    /// Runs one scenario to completion on the runtime.
    fn run(scenario: impl Future<Output = ()>);
    /// A server on `addr` (port 0 for any).
    async fn bind(config: HubConfig, addr: SocketAddr) -> Self::Server;
    /// The driver's `client::spawn`.
    fn spawn(config: ClientConfig) -> io::Result<(Self::Client, Self::Events)>;
    /// The driver's `ClientBuilder`, subscribed to `channel` before the first
    /// connect.
    fn spawn_subscribed(
        config: ClientConfig,
        channel: &str,
    ) -> io::Result<(Self::Client, Self::Events)>;
    async fn sleep(d: Duration);
}

async fn server<D: Driver>(config: HubConfig) -> (D::Server, SocketAddr) {
    let server = D::bind(config, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr();
    (server, addr)
}

pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("ws://{addr}/ws")).unwrap()
}

/// Short, jitter-free backoff so reconnects happen within the test budget.
pub fn config(endpoints: Vec<Endpoint>) -> ClientConfig {
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
pub fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The first item `pick` accepts, within [`WAIT`]; the ones before it are
/// returned too (for assertions on what must not have happened).
async fn wait_for<E: Debug, T>(
    rx: &mut impl Events<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> (T, Vec<E>) {
    let deadline = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        match rx.next_until(deadline).await {
            Next::Item(e) => match pick(&e) {
                Some(t) => return (t, skipped),
                None => skipped.push(e),
            },
            Next::Ended => panic!("channel ended before {what}; saw {skipped:?}"),
            Next::TimedOut => panic!("no {what} within {WAIT:?}; saw {skipped:?}"),
        }
    }
}

/// Asserts that the channel ends (within [`WAIT`]) with nothing more on it.
async fn ends<E: Debug>(rx: &mut impl Events<E>) {
    match rx.next_until(Instant::now() + WAIT).await {
        Next::Ended => {}
        Next::Item(e) => panic!("the channel should have ended; got {e:?}"),
        Next::TimedOut => panic!("the channel did not end within {WAIT:?}"),
    }
}

async fn connected_conn(events: &mut impl Events<Event>) -> ConnId {
    wait_for(events, "server Connected", |e| match e {
        Event::Connected { conn, .. } => Some(*conn),
        _ => None,
    })
    .await
    .0
}

async fn message_on(events: &mut impl Events<ClientEvent>, channel: &str) -> Value {
    wait_for(events, "message", |e| match e {
        ClientEvent::Message(m) if m.channel.as_deref() == Some(channel) => Some(m.data.clone()),
        _ => None,
    })
    .await
    .0
}

async fn closed(events: &mut impl Events<ClientEvent>) {
    wait_for(events, "Closed", |e| {
        matches!(e, ClientEvent::Closed).then_some(())
    })
    .await;
}

pub async fn subscribe_receive_send_and_close_with_1000<D: Driver>() {
    let config_hub = HubConfig {
        policy: Arc::new(PublishPatterns::new(["chat:*"])),
        ..HubConfig::default()
    };
    let (mut server, addr) = server::<D>(config_hub).await;
    let hub = server.hub();
    let (client, mut events) = D::spawn_subscribed(config(vec![endpoint(addr)]), "news").unwrap();

    let conn = connected_conn(&mut server).await;
    let (restored, _) = wait_for(&mut events, "SubscriptionsRestored", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    })
    .await;
    assert_eq!(restored, ["news"]);
    assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });

    hub.publish("news", Message::new("event", json!({"n": 1})))
        .await;
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
    assert_eq!(hub.subscriber_count("chat:1").await, 1);
    client.unsubscribe("chat:1");
    let deadline = Instant::now() + WAIT;
    while hub.subscriber_count("chat:1").await != 0 {
        assert!(Instant::now() < deadline, "still subscribed");
        D::sleep(Duration::from_millis(10)).await;
    }

    client.close();
    let (code, _) = wait_for(&mut server, "server Closed", |e| match e {
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
    ends(&mut events).await;
    assert_eq!(client.state(), ClientState::Closed);
    assert_eq!(
        client.send(json!({"type": "ping"})).await,
        Err(SendError::Closed)
    );
    hub.shutdown(WAIT).await;
}

pub async fn reconnects_and_restores_subscriptions_after_the_server_drops_it<D: Driver>() {
    let (mut server, addr) = server::<D>(HubConfig::default()).await;
    let hub = server.hub();
    let (client, mut events) = D::spawn_subscribed(config(vec![endpoint(addr)]), "c1").unwrap();
    let first = connected_conn(&mut server).await;
    wait_for(&mut events, "first restore", |e| {
        matches!(e, ClientEvent::SubscriptionsRestored { .. }).then_some(())
    })
    .await;

    hub.close(first, 4000, "go away").await;
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
    let second = connected_conn(&mut server).await;
    assert_ne!(first, second);
    assert_eq!(hub.subscriber_count("c1").await, 1);
    hub.publish("c1", Message::new("event", json!("after")))
        .await;
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
    let restarted = D::bind(HubConfig::default(), addr).await;
    let (restored, _) = wait_for(&mut events, "restore on the new server", |e| match e {
        ClientEvent::SubscriptionsRestored { restored, .. } => Some(restored.clone()),
        _ => None,
    })
    .await;
    assert_eq!(restored, ["c1"]);
    restarted
        .hub()
        .publish("c1", Message::new("event", json!("new server")))
        .await;
    assert_eq!(message_on(&mut events, "c1").await, json!("new server"));
    client.close();
    closed(&mut events).await;
    restarted.hub().shutdown(WAIT).await;
}

pub async fn a_client_closed_mid_stream_reconnects_and_recovers_everything<D: Driver>() {
    let (mut server, addr) = server::<D>(HubConfig::default()).await;
    let hub = server.hub();
    let (client, mut events) = D::spawn_subscribed(config(vec![endpoint(addr)]), "c").unwrap();
    let first = connected_conn(&mut server).await;
    wait_for(&mut events, "first restore", |e| {
        matches!(e, ClientEvent::SubscriptionsRestored { .. }).then_some(())
    })
    .await;
    // The server closes the connection in the middle of the stream: what
    // comes after the close is published while the client is away.
    for n in 1..=20 {
        if n == 11 {
            hub.close(first, 4000, "go away").await;
        }
        hub.publish("c", Message::new("event", json!({"n": n})))
            .await;
    }
    let (_, seen) = wait_for(&mut events, "the 20th message", |e| match e {
        ClientEvent::Message(m) if m.data == json!({"n": 20}) => Some(()),
        _ => None,
    })
    .await;
    let mut got: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(m) if m.channel.as_deref() == Some("c") => m.data["n"].as_u64(),
            _ => None,
        })
        .collect();
    got.push(20);
    assert_eq!(
        got,
        (1..=20).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let outcomes: Vec<&ClientEvent> = seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::Recovered { .. } | ClientEvent::RecoveryFailed { .. }
            )
        })
        .collect();
    assert!(
        matches!(outcomes.as_slice(), [ClientEvent::Recovered { channel, .. }] if channel == "c"),
        "{outcomes:?}"
    );
    let stats = hub.stats().await;
    assert_eq!((stats.recoveries, stats.recoveries_failed), (1, 0));
    client.close();
    closed(&mut events).await;
    hub.shutdown(WAIT).await;
}

pub async fn unreachable_first_endpoint_fails_over_to_the_second<D: Driver>() {
    let (mut server, addr) = server::<D>(HubConfig::default()).await;
    let dead = dead_port();
    let (client, mut events) = D::spawn(config(vec![endpoint(dead), endpoint(addr)])).unwrap();
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
    connected_conn(&mut server).await;
    client.close();
    closed(&mut events).await;
    server.hub().shutdown(WAIT).await;
}

pub async fn auth_failure_stops_the_walk_and_the_second_server_never_sees_a_connection<
    D: Driver,
>() {
    let refuse_all = HubConfig {
        authenticator: Arc::new(|_: &UpgradeRequest| {
            AuthDecision::reject(AuthFailure::InvalidCredentials)
        }),
        ..HubConfig::default()
    };
    let (mut refusing, refusing_addr) = server::<D>(refuse_all).await;
    let (mut second, second_addr) = server::<D>(HubConfig::default()).await;
    let (client, mut events) =
        D::spawn(config(vec![endpoint(refusing_addr), endpoint(second_addr)])).unwrap();
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
    wait_for(&mut refusing, "server AuthFailed", |e| {
        matches!(e, Event::AuthFailed { status: 401, .. }).then_some(())
    })
    .await;
    assert_eq!(client.state(), ClientState::AuthFailed { status: 401 });

    // Well past several backoff delays: nothing more is tried anywhere.
    D::sleep(Duration::from_millis(400)).await;
    let stats = second.hub().stats().await;
    assert_eq!(
        (stats.connections, stats.pending, stats.bytes_in),
        (0, 0, 0)
    );
    assert!(second.next_now().is_none());
    assert_eq!(refusing.hub().stats().await.auth_failures, 1);
    assert!(events.next_now().is_none());
    assert_eq!(
        client.send(json!({"type": "ping"})).await,
        Err(SendError::Closed)
    );

    // Dropping the last handle closes the client; the event channel ends.
    drop(client);
    closed(&mut events).await;
    ends(&mut events).await;
    refusing.hub().shutdown(WAIT).await;
    second.hub().shutdown(WAIT).await;
}

/// A plain hub behind a TLS terminator whose certificate (signed by `ca`)
/// is for `names`; returns the server and its `wss://` endpoint.
async fn tls_server<D: Driver>(
    config: HubConfig,
    ca: &tls::Ca,
    names: &[&str],
) -> (D::Server, Endpoint) {
    let (server, addr) = server::<D>(config).await;
    let tls_addr = tls::terminator(ca.server(names), addr);
    (server, wss(tls_addr))
}

pub fn wss(addr: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("wss://{addr}/ws")).unwrap()
}

fn tls_config(endpoints: Vec<Endpoint>, ca: &tls::Ca) -> ClientConfig {
    let mut cfg = config(endpoints);
    cfg.ca_file = Some(ca.file.clone());
    cfg
}

/// The reason of the first `ConnectFailed` for `index`, the events before it.
async fn connect_failed(
    events: &mut impl Events<ClientEvent>,
    index: usize,
) -> (DisconnectReason, Vec<ClientEvent>) {
    wait_for(events, "ConnectFailed", |e| match e {
        ClientEvent::ConnectFailed {
            endpoint_index,
            reason,
        } if *endpoint_index == index => Some(reason.clone()),
        _ => None,
    })
    .await
}

async fn connected_to(events: &mut impl Events<ClientEvent>) -> (usize, Vec<ClientEvent>) {
    wait_for(events, "Connected", |e| match e {
        ClientEvent::Connected { endpoint_index, .. } => Some(*endpoint_index),
        _ => None,
    })
    .await
}

/// The reason is a TLS failure whose text names `problem`.
fn assert_tls_failure(reason: &DisconnectReason, problem: &str) {
    match reason {
        DisconnectReason::Tls(why) => assert!(why.contains(problem), "{why}"),
        other => panic!("expected a TLS failure naming {problem}, got {other:?}"),
    }
}

pub async fn wss_subscribe_receive_and_publish<D: Driver>() {
    let ca = tls::Ca::new();
    let config_hub = HubConfig {
        policy: Arc::new(PublishPatterns::new(["chat:*"])),
        ..HubConfig::default()
    };
    let (mut server, endpoint) = tls_server::<D>(config_hub, &ca, &["127.0.0.1"]).await;
    let hub = server.hub();
    let (client, mut events) =
        D::spawn_subscribed(tls_config(vec![endpoint], &ca), "news").unwrap();
    connected_conn(&mut server).await;
    wait_for(&mut events, "SubscriptionsRestored", |e| {
        matches!(e, ClientEvent::SubscriptionsRestored { .. }).then_some(())
    })
    .await;
    assert_eq!(client.state(), ClientState::Connected { endpoint: 0 });
    hub.publish("news", Message::new("event", json!({"n": 1})))
        .await;
    assert_eq!(message_on(&mut events, "news").await, json!({"n": 1}));
    // A large message crosses several TLS records both ways.
    let big = "x".repeat(40_000);
    client.subscribe("chat:1");
    client
        .send(json!({"type": "publish", "channel": "chat:1", "data": big, "id": 7}))
        .await
        .unwrap();
    assert_eq!(message_on(&mut events, "chat:1").await, json!(big));
    client.close();
    closed(&mut events).await;
    ends(&mut events).await;
    hub.shutdown(WAIT).await;
}

pub async fn wss_dead_endpoint_fails_over_to_a_live_one<D: Driver>() {
    let ca = tls::Ca::new();
    let (mut server, live) = tls_server::<D>(HubConfig::default(), &ca, &["127.0.0.1"]).await;
    let (client, mut events) = D::spawn(tls_config(vec![wss(dead_port()), live], &ca)).unwrap();
    let (index, skipped) = connected_to(&mut events).await;
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
    connected_conn(&mut server).await;
    client.close();
    closed(&mut events).await;
    server.hub().shutdown(WAIT).await;
}

pub async fn wss_wrong_host_certificate_is_refused_and_the_walk_goes_on<D: Driver>() {
    let ca = tls::Ca::new();
    let (mut wrong, wrong_endpoint) =
        tls_server::<D>(HubConfig::default(), &ca, &["other.example"]).await;
    let (mut right, right_endpoint) =
        tls_server::<D>(HubConfig::default(), &ca, &["127.0.0.1"]).await;
    let (client, mut events) =
        D::spawn(tls_config(vec![wrong_endpoint, right_endpoint], &ca)).unwrap();
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_tls_failure(&reason, "not valid for name");
    assert!(
        reason.to_string().starts_with("TLS handshake failed"),
        "{reason}"
    );
    let (index, skipped) = connected_to(&mut events).await;
    assert_eq!(index, 1);
    assert!(
        !skipped
            .iter()
            .any(|e| matches!(e, ClientEvent::AuthFailed { .. })),
        "{skipped:?}"
    );
    connected_conn(&mut right).await;
    // The refused handshake never reached the hub behind the terminator.
    assert_eq!(wrong.hub().stats().await.connections, 0);
    assert!(wrong.next_now().is_none());
    client.close();
    closed(&mut events).await;
    wrong.hub().shutdown(WAIT).await;
    right.hub().shutdown(WAIT).await;
}

pub async fn wss_unknown_ca_is_refused_unless_ca_file_names_it<D: Driver>() {
    let ca = tls::Ca::new();
    let (mut server, endpoint) = tls_server::<D>(HubConfig::default(), &ca, &["127.0.0.1"]).await;
    // The webpki roots do not know the test CA.
    let (client, mut events) = D::spawn(config(vec![endpoint.clone()])).unwrap();
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_tls_failure(&reason, "UnknownIssuer");
    // A single endpoint: the client backs off and fails the same way again.
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_tls_failure(&reason, "UnknownIssuer");
    client.close();
    closed(&mut events).await;
    // Another CA's file is no better.
    let other = tls::Ca::new();
    let (client, mut events) = D::spawn(tls_config(vec![endpoint.clone()], &other)).unwrap();
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_tls_failure(&reason, "UnknownIssuer");
    client.close();
    closed(&mut events).await;
    assert!(server.next_now().is_none());
    // With the right CA file it connects.
    let (client, mut events) = D::spawn(tls_config(vec![endpoint], &ca)).unwrap();
    assert_eq!(connected_to(&mut events).await.0, 0);
    connected_conn(&mut server).await;
    client.close();
    closed(&mut events).await;
    server.hub().shutdown(WAIT).await;
}

pub async fn wss_expired_certificate_is_refused<D: Driver>() {
    let ca = tls::Ca::new();
    let (server, addr) = server::<D>(HubConfig::default()).await;
    let expired = ca.server_with(&["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let endpoint = wss(tls::terminator(expired, addr));
    let (client, mut events) = D::spawn(tls_config(vec![endpoint], &ca)).unwrap();
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_tls_failure(&reason, "certificate expired");
    client.close();
    closed(&mut events).await;
    server.hub().shutdown(WAIT).await;
}

pub async fn wss_connect_timeout_covers_the_tls_handshake<D: Driver>() {
    let ca = tls::Ca::new();
    // Accepts TCP, never answers the ClientHello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (mut server, live) = tls_server::<D>(HubConfig::default(), &ca, &["127.0.0.1"]).await;
    let mut cfg = tls_config(vec![wss(silent_addr), live], &ca);
    cfg.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (client, mut events) = D::spawn(cfg).unwrap();
    let (reason, _) = connect_failed(&mut events, 0).await;
    assert_eq!(reason, DisconnectReason::ConnectTimeout);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(connected_to(&mut events).await.0, 1);
    connected_conn(&mut server).await;
    client.close();
    closed(&mut events).await;
    drop(silent);
    server.hub().shutdown(WAIT).await;
}

pub async fn a_bad_ca_file_is_refused_at_spawn<D: Driver>() {
    let mut cfg = config(vec![wss(dead_port())]);
    cfg.ca_file = Some("/nonexistent/wshub-ca.pem".into());
    let e = D::spawn(cfg).err().expect("a missing CA file is refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("CA file /nonexistent/wshub-ca.pem"),
        "{e}"
    );
    let empty = std::env::temp_dir().join(format!("wshub-empty-ca-{}.pem", std::process::id()));
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let mut cfg = config(vec![wss(dead_port())]);
    cfg.ca_file = Some(empty.clone());
    let e = D::spawn(cfg)
        .err()
        .expect("a CA file without a certificate is refused");
    let _ = std::fs::remove_file(&empty);
    assert!(e.to_string().contains("no certificate"), "{e}");
}

pub async fn send_while_disconnected_is_refused<D: Driver>() {
    let (client, mut events) = D::spawn(config(vec![endpoint(dead_port())])).unwrap();
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

/// The suite's tests for one [`Driver`], each running its scenario with
/// [`Driver::run`].
#[macro_export]
macro_rules! client_suite {
    ($driver:ty) => {
        client_suite!(@tests $driver;
            subscribe_receive_send_and_close_with_1000,
            reconnects_and_restores_subscriptions_after_the_server_drops_it,
            a_client_closed_mid_stream_reconnects_and_recovers_everything,
            unreachable_first_endpoint_fails_over_to_the_second,
            auth_failure_stops_the_walk_and_the_second_server_never_sees_a_connection,
            send_while_disconnected_is_refused,
            wss_subscribe_receive_and_publish,
            wss_dead_endpoint_fails_over_to_a_live_one,
            wss_wrong_host_certificate_is_refused_and_the_walk_goes_on,
            wss_unknown_ca_is_refused_unless_ca_file_names_it,
            wss_expired_certificate_is_refused,
            wss_connect_timeout_covers_the_tls_handshake,
            a_bad_ca_file_is_refused_at_spawn,
        );
    };
    (@tests $driver:ty; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                <$driver as client_suite::Driver>::run(client_suite::$name::<$driver>());
            }
        )*
    };
}
