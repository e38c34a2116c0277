//! The adapter behaviour suite against the blocking adapter.

mod suite;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use suite::{Adapter, Deferred, Running};
use wshub_blocking::{Handle, Server};
use wshub_core::{Event, HubConfig, Message, Stats};

struct Blocking;

struct Live {
    handle: Handle,
    addr: SocketAddr,
    server: Mutex<Server>,
}

impl Running for Live {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn publish(&self, channel: &str, m: Message) -> usize {
        self.handle.publish(channel, m).unwrap()
    }
    fn broadcast(&self, m: Message) -> usize {
        self.handle.broadcast(m).unwrap()
    }
    fn send_to_user(&self, user: &str, m: Message) -> usize {
        self.handle.send_to_user(user, m).unwrap()
    }
    fn stats(&self) -> Stats {
        self.handle.stats().unwrap()
    }
    fn subscriber_count(&self, channel: &str) -> usize {
        self.handle.subscriber_count(channel).unwrap()
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
        let mut b = Server::builder(config);
        if let Some(f) = deferred {
            b = b.deferred_auth(move |r| f(r));
        }
        let server = b.bind("127.0.0.1:0").unwrap();
        Box::new(Live {
            handle: server.handle(),
            addr: server.local_addr().unwrap(),
            server: Mutex::new(server),
        })
    }
}

adapter_suite!(Blocking);
