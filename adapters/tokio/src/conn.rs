//! A connection's two tasks: a reader feeding the hub task, a writer draining
//! shared frames to the socket with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use wshub_core::ConnId;

use crate::hub_task::Cmd;

/// How long a closed connection may take to flush what its writer holds, and
/// how long its reader waits for the peer's FIN (so unread bytes do not turn
/// our close into a reset).
const LINGER: Duration = Duration::from_secs(1);

/// Most slices handed to one `writev` (Linux allows 1024; 64 frames of a
/// typical size already fill a socket buffer).
const MAX_SLICES: usize = 64;

/// The hub task's side of a connection.
pub(crate) struct ConnTasks {
    pub id: ConnId,
    /// Frames for the writer; dropping it ends the writer once it has flushed.
    pub frames: mpsc::UnboundedSender<Vec<Bytes>>,
    /// Dropping it stops the reader feeding the hub.
    closed: oneshot::Sender<()>,
    reader: AbortHandle,
    writer: AbortHandle,
    /// A deferred authentication in progress.
    pub auth: Option<AbortHandle>,
}

impl ConnTasks {
    /// Ends the connection (the core reported it closed): the writer flushes
    /// what it holds, then shuts the socket down; the reader stops.
    pub fn end(self) {
        if let Some(auth) = self.auth {
            auth.abort();
        }
        drop(self.frames);
        drop(self.closed);
    }

    /// Cuts the connection at once (shutdown deadline passed).
    pub fn cut(self) {
        self.reader.abort();
        self.writer.abort();
        if let Some(auth) = self.auth {
            auth.abort();
        }
    }
}

/// Starts the reader and writer tasks of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: mpsc::Sender<Cmd>,
    read_buffer: usize,
) -> ConnTasks {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(id, wr, frames_rx, hub.clone()));
    let reader = tokio::spawn(read_loop(id, rd, hub, read_buffer, closed_rx));
    ConnTasks {
        id,
        frames: frames_tx,
        closed: closed_tx,
        reader: reader.abort_handle(),
        writer: writer.abort_handle(),
        auth: None,
    }
}

async fn read_loop(
    id: ConnId,
    mut rd: OwnedReadHalf,
    hub: mpsc::Sender<Cmd>,
    size: usize,
    mut closed: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; size];
    loop {
        // Both branches are cancel-safe: a read that loses the race read nothing.
        let read = tokio::select! {
            biased;
            _ = &mut closed => break,
            r = rd.read(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                let _ = hub.send(Cmd::Eof(id)).await;
                return;
            }
            // The bounded command channel is the backpressure: a peer that sends
            // faster than the hub task handles it waits in TCP, not in memory.
            Ok(n) => {
                let sent = tokio::select! {
                    biased;
                    _ = &mut closed => break,
                    r = hub.send(Cmd::Read(id, buf[..n].to_vec())) => r,
                };
                if sent.is_err() {
                    return; // the hub has stopped
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
        }
    }
    // The hub is done with the connection. Discard what the peer still sends
    // until its FIN, briefly, so closing the socket does not reset it.
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn write_loop(
    id: ConnId,
    mut wr: OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<Vec<Bytes>>,
    hub: mpsc::Sender<Cmd>,
) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    // Bytes of the front frame already written.
    let mut offset = 0usize;
    // Set once the hub is done with the connection: finish by then or give up.
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            match frames.recv().await {
                Some(batch) => pending.extend(batch),
                None => break, // closed and flushed
            }
        }
        // Gather whatever else is queued so one system call carries it all.
        loop {
            match frames.try_recv() {
                Ok(batch) => pending.extend(batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    give_up.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                    break;
                }
            }
        }
        // One small allocation per system call; the frames themselves are the
        // core's shared bytes, never copied. A single `write_vectored` is
        // cancel-safe (unlike `write_all`), so the timeout below loses nothing.
        let write = async {
            let slices: Vec<IoSlice<'_>> = pending
                .iter()
                .take(MAX_SLICES)
                .enumerate()
                .map(|(i, f)| IoSlice::new(&f[if i == 0 { offset } else { 0 }..]))
                .collect();
            wr.write_vectored(&slices).await
        };
        let result = match give_up {
            None => write.await,
            Some(at) => match tokio::time::timeout_at(at, write).await {
                Ok(r) => r,
                Err(_) => return, // the peer is not reading; dropping `wr` shuts down
            },
        };
        let n = match result {
            Ok(0) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id)).await;
                return;
            }
        };
        if give_up.is_none() && hub.send(Cmd::Written(id, n)).await.is_err() {
            return; // the hub has stopped
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = pending.front() else { break };
            let avail = front.len() - offset;
            if left >= avail {
                left -= avail;
                offset = 0;
                pending.pop_front();
            } else {
                offset += left;
                left = 0;
            }
        }
    }
    // Everything handed over is written: send FIN.
    let _ = wr.shutdown().await;
}
