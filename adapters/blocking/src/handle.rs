//! The application's handle: commands to the hub thread.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use wshub_core::command::{Command, HubCommands, Reply, Stopped};

use crate::hub_thread::Cmd;

/// Commands the hub from any thread. Cheap to clone.
///
/// The hub's commands are the [`HubCommands`] methods (bring the trait into
/// scope): queued to the hub thread in order; the ones that return a count or
/// stats wait for its answer.
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: SyncSender<Cmd>,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) listen_addr: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl HubCommands for Handle {
    fn command(&self, command: Command) -> Result<Reply, Stopped> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Cmd::Hub(command, Some(tx)))
            .map_err(|_| Stopped)?;
        rx.recv().map_err(|_| Stopped)
    }

    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.tx.send(Cmd::Hub(command, None)).map_err(|_| Stopped)
    }
}

impl Handle {
    /// Serves a stream accepted elsewhere (its upgrade request not yet read).
    pub fn add_stream(&self, stream: TcpStream) -> Result<(), Stopped> {
        self.add_stream_read(stream, Vec::new())
    }

    /// Serves a stream accepted elsewhere whose first bytes the application
    /// already read (an HTTP server that looked at the request to route
    /// it): `read` is taken as the stream's first bytes, then the socket. The
    /// hub judges the whole request itself (path, origin, required headers,
    /// auth, limits), as for any connection.
    pub fn add_stream_read(&self, stream: TcpStream, read: Vec<u8>) -> Result<(), Stopped> {
        let peer = stream.peer_addr().ok();
        self.tx
            .send(Cmd::Open(stream, peer, read))
            .map_err(|_| Stopped)
    }

    pub(crate) fn add_stream_from(
        &self,
        stream: TcpStream,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Cmd::Open(stream, peer, Vec::new()))
            .map_err(|_| Stopped)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Graceful shutdown: stops accepting, sends 1001 to every client, and
    /// returns `true` once every connection is closed and flushed, or `false`
    /// when `deadline` passed first (remaining sockets are then cut).
    pub fn shutdown(&self, deadline: Duration) -> bool {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(addr) = self.listen_addr.get() {
            crate::poke(*addr);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Cmd::Shutdown(tx)).is_err() {
            return true;
        }
        let done = rx.recv_timeout(deadline).unwrap_or(false);
        let _ = self.tx.send(Cmd::Stop);
        done
    }
}
