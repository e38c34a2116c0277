//! The adapter behaviour suite against the smol adapter.

mod suite;

use std::net::SocketAddr;
use std::time::Duration;

use smol::channel::Receiver;
use smol::future;
use suite::{Adapter, Deferred, Running};
use wshub_core::{Event, HubConfig, Message, Stats};
use wshub_smol::{Handle, Server};

struct Smol;

struct Live {
    handle: Handle,
    addr: SocketAddr,
    events: Receiver<Event>,
    _server: Server,
}

impl Running for Live {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn publish(&self, channel: &str, m: Message) -> usize {
        smol::block_on(self.handle.publish(channel, m)).unwrap()
    }
    fn broadcast(&self, m: Message) -> usize {
        smol::block_on(self.handle.broadcast(m)).unwrap()
    }
    fn send_to_user(&self, user: &str, m: Message) -> usize {
        smol::block_on(self.handle.send_to_user(user, m)).unwrap()
    }
    fn stats(&self) -> Stats {
        smol::block_on(self.handle.stats()).unwrap()
    }
    fn subscriber_count(&self, channel: &str) -> usize {
        smol::block_on(self.handle.subscriber_count(channel)).unwrap()
    }
    fn shutdown(&self, deadline: Duration) -> bool {
        smol::block_on(self.handle.shutdown(deadline))
    }
    fn next_event(&self, timeout: Duration) -> Option<Event> {
        smol::block_on(future::or(async { self.events.recv().await.ok() }, async {
            smol::Timer::after(timeout).await;
            None
        }))
    }
}

impl Adapter for Smol {
    const NAME: &'static str = "smol";
    fn start(config: HubConfig, deferred: Option<Deferred>) -> Box<dyn Running> {
        let mut b = Server::builder(config);
        if let Some(f) = deferred {
            // The suite's checks block (they sleep): run them off the executor.
            b = b.deferred_auth(move |r| {
                let f = f.clone();
                smol::unblock(move || f(&r))
            });
        }
        let server = smol::block_on(b.bind("127.0.0.1:0")).unwrap();
        Box::new(Live {
            handle: server.handle(),
            addr: server.local_addr().unwrap(),
            events: server.events(),
            _server: server,
        })
    }
}

adapter_suite!(Smol);
