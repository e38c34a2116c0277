//! The application's handles: commands to the hub task, awaited
//! ([`Handle`]) or blocking ([`BlockingHandle`]).

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use wshub_core::command::{Command, Reply};
use wshub_core::{ConnId, Identity, Message, Rejection, Stats};

use crate::hub_task::{self, Cmd};

/// The hub task is gone (after shutdown, or with its runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hub has stopped")
    }
}

impl std::error::Error for Stopped {}

/// Commands the hub from any task. Cheap to clone.
///
/// Commands are queued to the hub task in order; the ones that return a count
/// or stats wait for its answer. For threads outside the runtime, use
/// [`Handle::blocking`].
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: mpsc::Sender<Cmd>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("stopped", &self.tx.is_closed())
            .finish()
    }
}

impl Handle {
    /// Applies any [`Command`] and waits for the hub's [`Reply`]; the
    /// methods below are shorthands for it.
    pub async fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    async fn count(&self, command: Command) -> Result<usize, Stopped> {
        Ok(self.command(command).await?.count())
    }

    /// Queues a command without waiting for its reply.
    async fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Hub(command, None))
            .await
            .map_err(|_| Stopped)
    }

    /// The same commands as blocking calls, for threads outside the runtime.
    pub fn blocking(&self) -> BlockingHandle {
        BlockingHandle {
            inner: self.clone(),
        }
    }

    /// Publishes to a channel's subscribers; returns how many got it.
    pub async fn publish(&self, channel: &str, message: Message) -> Result<usize, Stopped> {
        self.count(Command::publish(channel, message)).await
    }

    /// Sends to every connection; returns how many got it.
    pub async fn broadcast(&self, message: Message) -> Result<usize, Stopped> {
        self.count(Command::Broadcast(message)).await
    }

    /// Sends to one connection.
    pub async fn send(&self, conn: ConnId, message: Message) -> Result<(), Stopped> {
        self.tell(Command::Send(conn, message)).await
    }

    /// Sends to every connection of a user; returns how many.
    pub async fn send_to_user(&self, user_id: &str, message: Message) -> Result<usize, Stopped> {
        let user = user_id.to_owned();
        self.count(Command::SendToUser { user, message }).await
    }

    /// go-ws `SendProcessOutput`: a line to channel `process:<id>`.
    pub async fn process_output(&self, process_id: &str, line: &str) -> Result<usize, Stopped> {
        self.count(Command::process_output(process_id, line)).await
    }

    /// go-ws `SendProcessStatus` to channel `process:<id>`.
    pub async fn process_status(
        &self,
        process_id: &str,
        status: &str,
        exit_code: i32,
    ) -> Result<usize, Stopped> {
        self.count(Command::process_status(process_id, status, exit_code))
            .await
    }

    /// go-ws `SendEvent`: `{"event":name,"data":data}` to every connection.
    pub async fn send_event(&self, name: &str, data: Value) -> Result<usize, Stopped> {
        self.count(Command::send_event(name, data)).await
    }

    /// go-ws `SendError` to every connection.
    pub async fn send_error(&self, text: &str) -> Result<usize, Stopped> {
        self.count(Command::send_error(text)).await
    }

    /// Subscribes a connection on its behalf.
    pub async fn subscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Subscribe(conn, channel.to_owned()))
            .await
    }

    /// Unsubscribes a connection.
    pub async fn unsubscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Unsubscribe(conn, channel.to_owned()))
            .await
    }

    /// Closes a connection with a code (1000 or 3000-4999) and a reason.
    pub async fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), Stopped> {
        self.tell(Command::Close(conn, code, reason.to_owned()))
            .await
    }

    /// Accepts a deferred authentication (an `Event::AuthPending`).
    pub async fn accept(&self, conn: ConnId, identity: Identity) -> Result<(), Stopped> {
        self.tell(Command::Accept(conn, identity)).await
    }

    /// Rejects a deferred authentication (an `Event::AuthPending`).
    pub async fn reject(&self, conn: ConnId, rejection: Rejection) -> Result<(), Stopped> {
        self.tell(Command::Reject(conn, rejection)).await
    }

    /// Answers a plain HTTP request (`Event::HttpRequest`, with
    /// `HubConfig::http_fallback` on); the connection ends once it is written.
    pub async fn http_respond(
        &self,
        conn: ConnId,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), Stopped> {
        self.tell(Command::HttpRespond {
            conn,
            status,
            headers,
            body,
        })
        .await
    }

    /// Counters and sizes.
    pub async fn stats(&self) -> Result<Stats, Stopped> {
        match self.command(Command::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            _ => unreachable!("Stats answers Stats"),
        }
    }

    /// Subscribers of a channel.
    pub async fn subscriber_count(&self, channel: &str) -> Result<usize, Stopped> {
        self.count(Command::SubscriberCount(channel.to_owned()))
            .await
    }

    /// Every channel with its subscriber count, sorted by name.
    pub async fn channels(&self) -> Result<Vec<(String, usize)>, Stopped> {
        match self.command(Command::Channels).await? {
            Reply::Channels(channels) => Ok(channels),
            _ => unreachable!("Channels answers Channels"),
        }
    }

    /// Serves a stream accepted elsewhere (an HTTP server's, say) whose
    /// upgrade request has not been read yet. The stream must belong to the
    /// hub's runtime.
    pub async fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.tx
            .send(Cmd::Open(stream, peer))
            .await
            .map_err(|_| Stopped)
    }

    /// Graceful shutdown: stops accepting, sends 1001 to every client, and
    /// returns `true` once every connection is closed and flushed, or `false`
    /// when `deadline` passed first (remaining sockets are then cut). The hub
    /// task ends either way; later commands return [`Stopped`].
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let at = hub_task::now() + deadline;
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(at, tx)).await.is_err() {
            return true; // already stopped
        }
        rx.await.unwrap_or(false)
    }
}

/// A [`Handle`] whose calls block the calling thread: for threads outside the
/// tokio runtime (calling one from inside a runtime panics, as tokio's
/// `blocking_*` functions do). Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlockingHandle {
    inner: Handle,
}

impl From<Handle> for BlockingHandle {
    fn from(inner: Handle) -> Self {
        BlockingHandle { inner }
    }
}

impl BlockingHandle {
    /// Applies any [`Command`] and waits for the hub's [`Reply`].
    pub fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .blocking_send(Cmd::Hub(command, Some(tx)))
            .map_err(|_| Stopped)?;
        rx.blocking_recv().map_err(|_| Stopped)
    }

    fn count(&self, command: Command) -> Result<usize, Stopped> {
        Ok(self.command(command)?.count())
    }

    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.inner
            .tx
            .blocking_send(Cmd::Hub(command, None))
            .map_err(|_| Stopped)
    }

    /// The async handle.
    pub fn handle(&self) -> &Handle {
        &self.inner
    }

    /// Publishes to a channel's subscribers; returns how many got it.
    pub fn publish(&self, channel: &str, message: Message) -> Result<usize, Stopped> {
        self.count(Command::publish(channel, message))
    }

    /// Sends to every connection; returns how many got it.
    pub fn broadcast(&self, message: Message) -> Result<usize, Stopped> {
        self.count(Command::Broadcast(message))
    }

    /// Sends to one connection.
    pub fn send(&self, conn: ConnId, message: Message) -> Result<(), Stopped> {
        self.tell(Command::Send(conn, message))
    }

    /// Sends to every connection of a user; returns how many.
    pub fn send_to_user(&self, user_id: &str, message: Message) -> Result<usize, Stopped> {
        let user = user_id.to_owned();
        self.count(Command::SendToUser { user, message })
    }

    /// go-ws `SendProcessOutput`: a line to channel `process:<id>`.
    pub fn process_output(&self, process_id: &str, line: &str) -> Result<usize, Stopped> {
        self.count(Command::process_output(process_id, line))
    }

    /// go-ws `SendProcessStatus` to channel `process:<id>`.
    pub fn process_status(
        &self,
        process_id: &str,
        status: &str,
        exit_code: i32,
    ) -> Result<usize, Stopped> {
        self.count(Command::process_status(process_id, status, exit_code))
    }

    /// go-ws `SendEvent`: `{"event":name,"data":data}` to every connection.
    pub fn send_event(&self, name: &str, data: Value) -> Result<usize, Stopped> {
        self.count(Command::send_event(name, data))
    }

    /// go-ws `SendError` to every connection.
    pub fn send_error(&self, text: &str) -> Result<usize, Stopped> {
        self.count(Command::send_error(text))
    }

    /// Subscribes a connection on its behalf.
    pub fn subscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Subscribe(conn, channel.to_owned()))
    }

    /// Unsubscribes a connection.
    pub fn unsubscribe(&self, conn: ConnId, channel: &str) -> Result<(), Stopped> {
        self.tell(Command::Unsubscribe(conn, channel.to_owned()))
    }

    /// Closes a connection with a code (1000 or 3000-4999) and a reason.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), Stopped> {
        self.tell(Command::Close(conn, code, reason.to_owned()))
    }

    /// Accepts a deferred authentication (an `Event::AuthPending`).
    pub fn accept(&self, conn: ConnId, identity: Identity) -> Result<(), Stopped> {
        self.tell(Command::Accept(conn, identity))
    }

    /// Rejects a deferred authentication (an `Event::AuthPending`).
    pub fn reject(&self, conn: ConnId, rejection: Rejection) -> Result<(), Stopped> {
        self.tell(Command::Reject(conn, rejection))
    }

    /// Answers a plain HTTP request; see [`Handle::http_respond`].
    pub fn http_respond(
        &self,
        conn: ConnId,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), Stopped> {
        self.tell(Command::HttpRespond {
            conn,
            status,
            headers,
            body,
        })
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Result<Stats, Stopped> {
        match self.command(Command::Stats)? {
            Reply::Stats(stats) => Ok(stats),
            _ => unreachable!("Stats answers Stats"),
        }
    }

    /// Subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> Result<usize, Stopped> {
        self.count(Command::SubscriberCount(channel.to_owned()))
    }

    /// Every channel with its subscriber count, sorted by name.
    pub fn channels(&self) -> Result<Vec<(String, usize)>, Stopped> {
        match self.command(Command::Channels)? {
            Reply::Channels(channels) => Ok(channels),
            _ => unreachable!("Channels answers Channels"),
        }
    }

    /// Serves a stream accepted elsewhere; see [`Handle::add_stream`].
    pub fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.inner
            .tx
            .blocking_send(Cmd::Open(stream, peer))
            .map_err(|_| Stopped)
    }

    /// Graceful shutdown; see [`Handle::shutdown`].
    pub fn shutdown(&self, deadline: Duration) -> bool {
        let at = hub_task::now() + deadline;
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.blocking_send(Cmd::Shutdown(at, tx)).is_err() {
            return true; // already stopped
        }
        rx.blocking_recv().unwrap_or(false)
    }
}
