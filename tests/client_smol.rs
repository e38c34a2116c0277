//! The client-driver suite against the smol client driver and server.

mod client_suite;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_suite::{Events, Next};
use serde_json::Value;
use smol::channel::Receiver;
use smol::{future, Timer};
use wshub_core::client::{ClientState, SendError};
use wshub_core::{ConnId, Event, HubConfig, Message, Stats};
use wshub_smol::client::{self, ClientBuilder, ClientConfig, ClientEvent, ClientHandle};
use wshub_smol::{Handle, Server};

struct Smol;

impl client_suite::Driver for Smol {
    type Server = Server;
    type Client = ClientHandle;
    type Events = Receiver<ClientEvent>;
    fn run(scenario: impl std::future::Future<Output = ()>) {
        smol::block_on(scenario)
    }
    async fn bind(config: HubConfig, addr: SocketAddr) -> Server {
        Server::builder(config).bind(addr).await.unwrap()
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
        Timer::after(d).await;
    }
}

async fn recv_until<E>(rx: &Receiver<E>, deadline: Instant) -> Next<E> {
    let got = future::or(async { Some(rx.recv().await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await;
    match got {
        Some(Ok(e)) => Next::Item(e),
        Some(Err(_)) => Next::Ended,
        None => Next::TimedOut,
    }
}

impl<E> Events<E> for Receiver<E> {
    async fn next_until(&mut self, deadline: Instant) -> Next<E> {
        recv_until(self, deadline).await
    }
    fn next_now(&mut self) -> Option<E> {
        self.try_recv().ok()
    }
}

impl Events<Event> for Server {
    async fn next_until(&mut self, deadline: Instant) -> Next<Event> {
        recv_until(&self.events(), deadline).await
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
        Server::join(self).await;
    }
}

impl client_suite::Hub for Handle {
    async fn publish(&self, channel: &str, m: Message) -> usize {
        Handle::publish(self, channel, m).await.unwrap()
    }
    async fn close(&self, conn: ConnId, code: u16, reason: &str) {
        Handle::close(self, conn, code, reason).await.unwrap();
    }
    async fn subscriber_count(&self, channel: &str) -> usize {
        Handle::subscriber_count(self, channel).await.unwrap()
    }
    async fn stats(&self) -> Stats {
        Handle::stats(self).await.unwrap()
    }
    async fn shutdown(&self, deadline: Duration) -> bool {
        Handle::shutdown(self, deadline).await
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
        ClientHandle::send(self, message).await
    }
    fn close(&self) {
        ClientHandle::close(self);
    }
}

client_suite!(Smol);
