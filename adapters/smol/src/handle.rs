//! The application's handle: commands to the hub task.

use std::net::SocketAddr;
use std::time::Duration;

use smol::channel::{self, Sender};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use wshub_core::command::{Command, Reply, Stopped};

use crate::hub_task::Cmd;

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
    /// methods below (the same list as `wshub_core::HubCommands`) are
    /// shorthands for it and [`Handle::tell`].
    pub async fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = channel::bounded(1);
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .await
            .map_err(|_| Stopped)?;
        rx.recv().await.map_err(|_| Stopped)
    }

    /// Queues a command without waiting for its reply.
    pub async fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Hub(command, None))
            .await
            .map_err(|_| Stopped)
    }

    wshub_core::hub_command_methods!(async);

    /// Serves a stream accepted elsewhere (its upgrade request not yet read),
    /// for example by an HTTP server sharing the port. A blocking std stream
    /// converts with `TcpStream::try_from(std_stream)`.
    pub async fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        self.add_stream_read(stream, Vec::new()).await
    }

    /// Serves a stream accepted elsewhere whose first bytes the application
    /// already read (an HTTP server that looked at the request to route
    /// it): `read` is taken as the stream's first bytes, then the socket. The
    /// hub judges the whole request itself (path, origin, required headers,
    /// auth, limits), as for any connection.
    pub async fn add_stream_read(&self, stream: TcpStream, read: Vec<u8>) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.tx
            .send(Cmd::Open(stream, peer, read))
            .await
            .map_err(|_| Stopped)
    }

    pub(crate) async fn add_stream_from(
        &self,
        stream: TcpStream,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Open(stream, peer, Vec::new()))
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
