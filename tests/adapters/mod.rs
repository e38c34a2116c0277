//! The three adapters behind the suite's [`Adapter`] / [`Running`] traits,
//! shared by the behaviour suite (tests/{blocking,smol,tokio}.rs), the scale
//! tests and the real-client tests. A test crate using this module must also
//! declare `mod suite;` at its root.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::suite::{Adapter, Deferred, Running};
use wshub_core::command::{Command, HubCommands, Reply, Stopped};
use wshub_core::{AuthDecision, Event, HubConfig, Message, Stats};

/// The event channel's capacity: the suites count every event, even in the
/// hostile suite's bursts (5,000 connections dropped at once) while a test
/// thread may be descheduled, so they must never drop one. Dropping is
/// tested on its own (tests/bounded_events.rs).
const EVENTS: usize = 1 << 16;

/// What a running adapter adds to the hub's commands.
trait Live: HubCommands + Send + Sync {
    fn addr(&self) -> SocketAddr;
    fn shutdown(&self, deadline: Duration) -> bool;
    fn next_event(&self, timeout: Duration) -> Option<Event>;
}

/// The suite's face, written once over [`HubCommands`].
impl<T: Live> Running for T {
    fn addr(&self) -> SocketAddr {
        Live::addr(self)
    }
    fn publish(&self, channel: &str, m: Message) -> usize {
        HubCommands::publish(self, channel, m).unwrap()
    }
    fn broadcast(&self, m: Message) -> usize {
        HubCommands::broadcast(self, m).unwrap()
    }
    fn send_to_user(&self, user: &str, m: Message) -> usize {
        HubCommands::send_to_user(self, user, m).unwrap()
    }
    fn stats(&self) -> Stats {
        HubCommands::stats(self).unwrap()
    }
    fn subscriber_count(&self, channel: &str) -> usize {
        HubCommands::subscriber_count(self, channel).unwrap()
    }
    fn shutdown(&self, deadline: Duration) -> bool {
        Live::shutdown(self, deadline)
    }
    fn next_event(&self, timeout: Duration) -> Option<Event> {
        Live::next_event(self, timeout)
    }
}

/// wshub-blocking: a hub thread and two threads per connection.
pub struct Blocking;

struct BlockingLive {
    handle: wshub_blocking::Handle,
    addr: SocketAddr,
    server: Mutex<wshub_blocking::Server>,
}

impl HubCommands for BlockingLive {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        self.handle.command(command)
    }
    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.handle.tell(command)
    }
}

impl Live for BlockingLive {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn shutdown(&self, deadline: Duration) -> bool {
        self.handle.shutdown(deadline)
    }
    fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.server
            .lock()
            .unwrap()
            .events()
            .recv_timeout(timeout)
            .ok()
    }
}

impl Adapter for Blocking {
    const NAME: &'static str = "blocking";
    fn start(config: HubConfig, deferred: Option<Deferred>) -> Box<dyn Running> {
        let mut b = wshub_blocking::Server::builder(config).event_capacity(EVENTS);
        if let Some(f) = deferred {
            b = b.deferred_auth(move |r| f(r));
        }
        let server = b.bind("127.0.0.1:0").unwrap();
        Box::new(BlockingLive {
            handle: server.handle(),
            addr: server.local_addr().unwrap(),
            server: Mutex::new(server),
        })
    }
}

/// wshub-smol on smol's global executor.
pub struct Smol;

struct SmolLive {
    handle: wshub_smol::Handle,
    addr: SocketAddr,
    events: smol::channel::Receiver<Event>,
    _server: wshub_smol::Server,
}

impl HubCommands for SmolLive {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        smol::block_on(self.handle.command(command))
    }
    fn tell(&self, command: Command) -> Result<(), Stopped> {
        smol::block_on(self.handle.tell(command))
    }
}

impl Live for SmolLive {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn shutdown(&self, deadline: Duration) -> bool {
        smol::block_on(self.handle.shutdown(deadline))
    }
    fn next_event(&self, timeout: Duration) -> Option<Event> {
        smol::block_on(smol::future::or(
            async { self.events.recv().await.ok() },
            async {
                smol::Timer::after(timeout).await;
                None
            },
        ))
    }
}

impl Adapter for Smol {
    const NAME: &'static str = "smol";
    fn start(config: HubConfig, deferred: Option<Deferred>) -> Box<dyn Running> {
        let mut b = wshub_smol::Server::builder(config).event_capacity(EVENTS);
        if let Some(f) = deferred {
            // The suite's checks block (they sleep): run them off the executor.
            b = b.deferred_auth(move |r| {
                let f = f.clone();
                smol::unblock(move || f(&r))
            });
        }
        let server = smol::block_on(b.bind("127.0.0.1:0")).unwrap();
        Box::new(SmolLive {
            handle: server.handle(),
            addr: server.local_addr().unwrap(),
            events: server.events(),
            _server: server,
        })
    }
}

/// wshub-tokio on a current-thread runtime running on a background thread.
pub struct Tokio;

struct TokioLive {
    handle: wshub_tokio::BlockingHandle,
    addr: SocketAddr,
    events: Mutex<std_mpsc::Receiver<Event>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HubCommands for TokioLive {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        self.handle.command(command)
    }
    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.handle.tell(command)
    }
}

impl Live for TokioLive {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn shutdown(&self, deadline: Duration) -> bool {
        self.handle.shutdown(deadline)
    }
    fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.lock().unwrap().recv_timeout(timeout).ok()
    }
}

impl Drop for TokioLive {
    fn drop(&mut self) {
        drop(self.stop.lock().unwrap().take());
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";
    fn start(config: HubConfig, deferred: Option<Deferred>) -> Box<dyn Running> {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (event_tx, event_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // The forwarder below shares this current-thread runtime with
                // the hub, so it reads only between the hub's turns.
                let mut b = wshub_tokio::Server::builder(config).event_capacity(EVENTS);
                if let Some(f) = deferred {
                    // The suite's check blocks (it sleeps), so it runs on the
                    // blocking pool; the async function awaits it.
                    b = b.deferred_auth(move |req| {
                        let f = f.clone();
                        async move {
                            tokio::task::spawn_blocking(move || f(&req))
                                .await
                                .unwrap_or(AuthDecision::Defer)
                        }
                    });
                }
                let mut server = b.bind("127.0.0.1:0").await.unwrap();
                let mut events = server.take_events();
                ready_tx
                    .send((server.handle(), server.local_addr().unwrap()))
                    .unwrap();
                tokio::spawn(async move {
                    while let Some(e) = events.recv().await {
                        if event_tx.send(e).is_err() {
                            break;
                        }
                    }
                });
                let _ = stop_rx.await;
            });
            // Do not wait for a deferred check still sleeping on the blocking pool.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let (handle, addr) = ready_rx.recv().unwrap();
        Box::new(TokioLive {
            handle: handle.blocking(),
            addr,
            events: Mutex::new(event_rx),
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }
}
