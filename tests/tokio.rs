//! The adapter behaviour suite against the tokio adapter, on a current-thread
//! runtime running on a background thread.

mod suite;

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use suite::{Adapter, Deferred, Running};
use wshub_core::{AuthDecision, Event, HubConfig, Message, Stats};
use wshub_tokio::{BlockingHandle, Server};

struct Tokio;

struct Live {
    handle: BlockingHandle,
    addr: SocketAddr,
    events: Mutex<std_mpsc::Receiver<Event>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        self.events.lock().unwrap().recv_timeout(timeout).ok()
    }
}

impl Drop for Live {
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
                let mut b = Server::builder(config);
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
        Box::new(Live {
            handle: handle.blocking(),
            addr,
            events: Mutex::new(event_rx),
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

adapter_suite!(Tokio);
