//! An application that never reads its events, under a flood of failed
//! upgrades: on every adapter the event channel stays at its capacity (memory
//! bounded), the hub keeps serving, and the application, once it reads, is
//! told exactly how many events were dropped.

mod suite;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use suite::client::Client;
use suite::eventually;
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::{Event, HubCommands, HubConfig, Message, Stats};

/// The event channel's capacity in these tests.
const CAPACITY: usize = 256;
/// Bad-token upgrade attempts, each on its own connection.
const ATTEMPTS: usize = 10_000;
/// Connections attempted at once.
const FLOODERS: usize = 4;

/// A server whose application holds the event receiver and does not read it.
trait Idle: HubCommands {
    fn addr(&self) -> SocketAddr;
    /// Events waiting unread, where the channel can tell.
    fn backlog(&self) -> Option<usize>;
    /// An event already waiting.
    fn try_next(&self) -> Option<Event>;
}

fn config() -> HubConfig {
    HubConfig {
        authenticator: Arc::new(
            ApiKeyAuth::new([("key-good".to_string(), "good".to_string())])
                .source(TokenSource::BearerOrQuery("token".into())),
        ),
        ..HubConfig::default()
    }
}

/// One refused upgrade: sends a request with a bad token, reads the 401 up
/// to the server's close.
fn refused_upgrade(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /ws?token=nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 401"), "{response:?}");
}

fn never_reading_application_loses_events_not_memory(s: &dyn Idle) {
    let addr = s.addr();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..ATTEMPTS / FLOODERS {
                    refused_upgrade(addr);
                }
            })
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    let stats = || -> Stats { s.stats().unwrap() };
    eventually("every refusal counted", || {
        stats().auth_failures == ATTEMPTS as u64
    });

    // The hub still serves: a good client subscribes and gets a publish.
    let mut good = Client::connect_with(addr, "/ws?token=key-good", &[]).unwrap();
    good.send_json(&json!({"type":"subscribe","channel":"c","id":1}));
    assert_eq!(good.next_json()["type"], "ack");
    assert_eq!(s.publish("c", Message::new("news", json!(1))), Ok(1));
    assert_eq!(good.next_json()["type"], "news");

    if let Some(n) = s.backlog() {
        assert_eq!(n, CAPACITY, "the channel holds its capacity, no more");
    }
    // The application reads at last: what fitted, then the count of the rest.
    let mut read = 0;
    while let Some(e) = s.try_next() {
        assert!(!matches!(e, Event::EventsDropped { .. }), "{e:?}");
        read += 1;
    }
    assert_eq!(read, CAPACITY, "the channel never held more");
    // Any command makes a round, which reports the drops now there is room.
    let _ = stats();
    let notice = std::cell::RefCell::new(None);
    eventually("the drop notice", || {
        *notice.borrow_mut() = s.try_next();
        notice.borrow().is_some()
    });
    // Each refusal is an AuthFailed and a Closed; the good client's Connected.
    let produced = 2 * stats().auth_failures + 1;
    assert_eq!(
        notice.into_inner(),
        Some(Event::EventsDropped {
            count: produced - CAPACITY as u64
        })
    );
    // Newer events come through again.
    drop(good);
    eventually("the good client's Closed", || {
        matches!(s.try_next(), Some(Event::Closed { .. }))
    });
}

struct Blocking {
    handle: wshub_blocking::Handle,
    server: wshub_blocking::Server,
}

impl HubCommands for Blocking {
    fn command(
        &self,
        c: wshub_core::command::Command,
    ) -> Result<wshub_core::command::Reply, wshub_core::Stopped> {
        self.handle.command(c)
    }
}

impl Idle for Blocking {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }
    fn backlog(&self) -> Option<usize> {
        None // std's channel cannot tell; the count of events read does
    }
    fn try_next(&self) -> Option<Event> {
        self.server.events().try_recv().ok()
    }
}

#[test]
fn blocking() {
    let server = wshub_blocking::Server::builder(config())
        .event_capacity(CAPACITY)
        .bind("127.0.0.1:0")
        .unwrap();
    let s = Blocking {
        handle: server.handle(),
        server,
    };
    never_reading_application_loses_events_not_memory(&s);
    assert!(s.handle.shutdown(Duration::from_secs(2)));
}

struct Smol {
    handle: wshub_smol::Handle,
    events: smol::channel::Receiver<Event>,
    addr: SocketAddr,
    _server: wshub_smol::Server,
}

impl HubCommands for Smol {
    fn command(
        &self,
        c: wshub_core::command::Command,
    ) -> Result<wshub_core::command::Reply, wshub_core::Stopped> {
        smol::block_on(self.handle.command(c))
    }
}

impl Idle for Smol {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn backlog(&self) -> Option<usize> {
        Some(self.events.len())
    }
    fn try_next(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

#[test]
fn smol() {
    let builder = wshub_smol::Server::builder(config()).event_capacity(CAPACITY);
    let server = smol::block_on(builder.bind("127.0.0.1:0")).unwrap();
    let s = Smol {
        handle: server.handle(),
        events: server.events(),
        addr: server.local_addr().unwrap(),
        _server: server,
    };
    never_reading_application_loses_events_not_memory(&s);
    assert!(smol::block_on(s.handle.shutdown(Duration::from_secs(2))));
}

struct Tokio {
    handle: wshub_tokio::BlockingHandle,
    events: Mutex<tokio::sync::mpsc::Receiver<Event>>,
    addr: SocketAddr,
    _server: wshub_tokio::Server,
    // Dropped last: the server's tasks run on it.
    _runtime: tokio::runtime::Runtime,
}

impl HubCommands for Tokio {
    fn command(
        &self,
        c: wshub_core::command::Command,
    ) -> Result<wshub_core::command::Reply, wshub_core::Stopped> {
        self.handle.command(c)
    }
}

impl Idle for Tokio {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn backlog(&self) -> Option<usize> {
        Some(self.events.lock().unwrap().len())
    }
    fn try_next(&self) -> Option<Event> {
        self.events.lock().unwrap().try_recv().ok()
    }
}

#[test]
fn tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let builder = wshub_tokio::Server::builder(config()).event_capacity(CAPACITY);
    let mut server = runtime.block_on(builder.bind("127.0.0.1:0")).unwrap();
    let s = Tokio {
        handle: server.handle().blocking(),
        events: Mutex::new(server.take_events()),
        addr: server.local_addr().unwrap(),
        _server: server,
        _runtime: runtime,
    };
    never_reading_application_loses_events_not_memory(&s);
    assert!(s.handle.shutdown(Duration::from_secs(2)));
}
