//! The client-driver suite against the blocking client driver and server.

mod client_suite;

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use client_suite::{Events, Next};
use serde_json::Value;
use wshub_blocking::client::{self, ClientBuilder, ClientConfig, ClientEvent, ClientHandle};
use wshub_blocking::{Handle, Server};
use wshub_core::client::{ClientState, SendError};
use wshub_core::command::HubCommands;
use wshub_core::{ConnId, Event, HubConfig, Message, Stats};

struct Blocking;

impl client_suite::Driver for Blocking {
    type Server = Server;
    type Client = ClientHandle;
    type Events = Receiver<ClientEvent>;
    fn run(scenario: impl std::future::Future<Output = ()>) {
        // Every wait here blocks the thread: the future is ready when first polled.
        smol::block_on(scenario)
    }
    async fn bind(config: HubConfig, addr: SocketAddr) -> Server {
        Server::builder(config).bind(addr).unwrap()
    }
    fn spawn(config: ClientConfig) -> io::Result<(ClientHandle, Receiver<ClientEvent>)> {
        client::spawn(config)
    }
    fn spawn_subscribed(
        config: ClientConfig,
        channel: &str,
    ) -> io::Result<(ClientHandle, Receiver<ClientEvent>)> {
        ClientBuilder::new(config).subscribe(channel).spawn()
    }
    async fn sleep(d: Duration) {
        std::thread::sleep(d);
    }
}

fn recv_until<E>(rx: &Receiver<E>, deadline: Instant) -> Next<E> {
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(e) => Next::Item(e),
        Err(RecvTimeoutError::Disconnected) => Next::Ended,
        Err(RecvTimeoutError::Timeout) => Next::TimedOut,
    }
}

impl<E> Events<E> for Receiver<E> {
    async fn next_until(&mut self, deadline: Instant) -> Next<E> {
        recv_until(self, deadline)
    }
    fn next_now(&mut self) -> Option<E> {
        self.try_recv().ok()
    }
}

impl Events<Event> for Server {
    async fn next_until(&mut self, deadline: Instant) -> Next<Event> {
        recv_until(self.events(), deadline)
    }
    fn next_now(&mut self) -> Option<Event> {
        self.events().try_recv().ok()
    }
}

impl client_suite::Server for Server {
    type Hub = Handle;
    fn addr(&self) -> SocketAddr {
        self.local_addr().unwrap()
    }
    fn hub(&self) -> Handle {
        self.handle()
    }
    async fn join(self) {
        Server::join(self);
    }
}

impl client_suite::Hub for Handle {
    async fn publish(&self, channel: &str, m: Message) -> usize {
        HubCommands::publish(self, channel, m).unwrap()
    }
    async fn close(&self, conn: ConnId, code: u16, reason: &str) {
        HubCommands::close(self, conn, code, reason).unwrap();
    }
    async fn subscriber_count(&self, channel: &str) -> usize {
        HubCommands::subscriber_count(self, channel).unwrap()
    }
    async fn stats(&self) -> Stats {
        HubCommands::stats(self).unwrap()
    }
    async fn shutdown(&self, deadline: Duration) -> bool {
        Handle::shutdown(self, deadline)
    }
}

impl client_suite::Client for ClientHandle {
    fn state(&self) -> ClientState {
        ClientHandle::state(self)
    }
    fn subscribe(&self, channel: &str) {
        ClientHandle::subscribe(self, channel);
    }
    fn unsubscribe(&self, channel: &str) {
        ClientHandle::unsubscribe(self, channel);
    }
    async fn send(&self, message: Value) -> Result<(), SendError> {
        ClientHandle::send(self, message)
    }
    fn close(&self) {
        ClientHandle::close(self);
    }
}

client_suite!(Blocking);
