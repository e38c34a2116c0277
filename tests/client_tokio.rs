//! The client-driver suite against the tokio client driver and server, on a
//! current-thread runtime as `#[tokio::test]` builds it.

mod client_suite;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_suite::{config, dead_port, endpoint, Events, Next};
use serde_json::Value;
use tokio::runtime::Builder;
use tokio::sync::mpsc::UnboundedReceiver;
use wshub_core::client::{ClientState, SendError};
use wshub_core::{ConnId, Event, HubConfig, Message, Stats};
use wshub_tokio::client::{self, ClientBuilder, ClientConfig, ClientEvent, ClientHandle};
use wshub_tokio::{Handle, Server};

struct Tokio;

impl client_suite::Driver for Tokio {
    type Server = Server;
    type Client = ClientHandle;
    type Events = UnboundedReceiver<ClientEvent>;
    fn run(scenario: impl Future<Output = ()>) {
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(scenario)
    }
    async fn bind(config: HubConfig, addr: SocketAddr) -> Server {
        Server::builder(config).bind(addr).await.unwrap()
    }
    fn spawn(config: ClientConfig) -> io::Result<(ClientHandle, UnboundedReceiver<ClientEvent>)> {
        client::spawn(config)
    }
    fn spawn_subscribed(
        config: ClientConfig,
        channel: &str,
    ) -> io::Result<(ClientHandle, UnboundedReceiver<ClientEvent>)> {
        ClientBuilder::new(config).subscribe(channel).spawn()
    }
    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// The next of `recv` (a bounded or an unbounded channel's), by `deadline`.
async fn recv_until<E>(recv: impl Future<Output = Option<E>>, deadline: Instant) -> Next<E> {
    let deadline = tokio::time::Instant::from_std(deadline);
    match tokio::time::timeout_at(deadline, recv).await {
        Ok(Some(e)) => Next::Item(e),
        Ok(None) => Next::Ended,
        Err(_) => Next::TimedOut,
    }
}

impl<E> Events<E> for UnboundedReceiver<E> {
    async fn next_until(&mut self, deadline: Instant) -> Next<E> {
        recv_until(self.recv(), deadline).await
    }
    fn next_now(&mut self) -> Option<E> {
        self.try_recv().ok()
    }
}

impl Events<Event> for Server {
    async fn next_until(&mut self, deadline: Instant) -> Next<Event> {
        recv_until(self.events().recv(), deadline).await
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

client_suite!(Tokio);

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let e = client::spawn(config(vec![endpoint(dead_port())])).unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
}

#[test]
fn send_while_disconnected_is_refused_on_a_multi_thread_runtime() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client_suite::send_while_disconnected_is_refused::<Tokio>());
}
