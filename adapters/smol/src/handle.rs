//! The application's handle: commands to the hub task.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use smol::channel::{self, Sender};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use wshub_core::command::{Command, Reply};
use wshub_core::{ConnId, Identity, Message, Rejection, Stats};

use crate::hub_task::Cmd;

/// The hub task is gone (after shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hub has stopped")
    }
}

impl std::error::Error for Stopped {}

/// Commands the hub from any task or thread. Cheap to clone.
///
/// Every method is an `async fn` whose future is `Send`. Commands are queued
/// to the hub task in order (the queue is bounded, so a flood of commands
/// waits instead of growing memory); the ones that return a count or stats
/// wait for its answer.
///
/// # From threads with no runtime
///
/// `smol::block_on(handle.publish(..))` works from any plain thread: the hub
/// runs on its executor's own threads (by default smol's global executor,
/// see [`Builder::executor`](crate::Builder::executor)), and `block_on` just
/// parks the calling thread until the answer comes.
///
/// Do **not** `block_on` from inside a task of the executor that runs the hub
/// (a task started with `smol::spawn` when the hub uses the global executor):
/// that blocks one of the hub's own threads, and with the default single
/// executor thread the hub can never answer, a deadlock. There, `.await`.
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: Sender<Cmd>,
    /// Closed by [`Handle::shutdown`]: stops the accept loop.
    pub(crate) stop_accept: Sender<()>,
}

impl Handle {
    /// Applies any [`Command`] and waits for the hub's [`Reply`]; the
    /// methods below are shorthands for it.
    pub async fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = channel::bounded(1);
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .await
            .map_err(|_| Stopped)?;
        rx.recv().await.map_err(|_| Stopped)
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

    /// go-ws `SendProcessOutput`.
    pub async fn process_output(&self, process_id: &str, line: &str) -> Result<usize, Stopped> {
        self.count(Command::process_output(process_id, line)).await
    }

    /// go-ws `SendProcessStatus`.
    pub async fn process_status(
        &self,
        process_id: &str,
        status: &str,
        exit_code: i32,
    ) -> Result<usize, Stopped> {
        self.count(Command::process_status(process_id, status, exit_code))
            .await
    }

    /// go-ws `SendEvent`.
    pub async fn send_event(&self, name: &str, data: Value) -> Result<usize, Stopped> {
        self.count(Command::send_event(name, data)).await
    }

    /// go-ws `SendError`.
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

    /// Accepts a deferred authentication (when no
    /// [`Builder::deferred_auth`](crate::Builder::deferred_auth) is set, the
    /// application answers `Event::AuthPending` itself).
    pub async fn accept(&self, conn: ConnId, identity: Identity) -> Result<(), Stopped> {
        self.tell(Command::Accept(conn, identity)).await
    }

    /// Rejects a deferred authentication.
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

    /// Every channel with its subscriber count.
    pub async fn channels(&self) -> Result<Vec<(String, usize)>, Stopped> {
        match self.command(Command::Channels).await? {
            Reply::Channels(channels) => Ok(channels),
            _ => unreachable!("Channels answers Channels"),
        }
    }

    /// Serves a stream accepted elsewhere (its upgrade request not yet read),
    /// for example by an HTTP server sharing the port. A blocking std stream
    /// converts with `TcpStream::try_from(std_stream)`.
    pub async fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.add_stream_from(stream, peer).await
    }

    pub(crate) async fn add_stream_from(
        &self,
        stream: TcpStream,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Open(stream, peer))
            .await
            .map_err(|_| Stopped)
    }

    /// Graceful shutdown: stops accepting, sends 1001 to every client, and
    /// returns `true` once every connection is closed and flushed, or `false`
    /// when `deadline` passed first (remaining sockets are then cut). The hub
    /// task ends either way, and with it the event stream.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.stop_accept.close();
        let (tx, rx) = channel::bounded(1);
        let done = future::or(
            async {
                self.tx.send(Cmd::Shutdown(tx)).await.ok()?;
                Some(rx.recv().await.unwrap_or(false))
            },
            async {
                Timer::after(deadline).await;
                Some(false)
            },
        )
        .await;
        let Some(done) = done else {
            return true; // already stopped
        };
        let _ = self.tx.send(Cmd::Stop).await;
        done
    }
}
