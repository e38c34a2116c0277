//! A connection's two threads: a reader feeding the hub, a writer draining
//! shared frames to the socket with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use bytes::Bytes;
use wshub_core::ConnId;

use crate::hub_thread::Cmd;

/// Thread settings.
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    pub read_buffer: usize,
    pub stack: usize,
}

/// The hub thread's side of a connection.
pub(crate) struct ConnThreads {
    /// Frames for the writer; dropping it ends the writer.
    pub frames: Sender<Vec<Bytes>>,
    /// Kept to shut the socket down when the hub is done with it.
    pub stream: TcpStream,
}

impl ConnThreads {
    /// Ends the connection: the writer finishes what it holds, then both
    /// directions close; a reader blocked on a silent peer gives up shortly.
    pub fn end(self) {
        drop(self.frames);
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Cuts the connection at once (shutdown deadline passed).
    pub fn cut(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Starts the reader and writer threads of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: SyncSender<Cmd>,
    settings: Settings,
) -> io::Result<ConnThreads> {
    let _ = stream.set_nodelay(true);
    let reader = stream.try_clone()?;
    let writer = stream.try_clone()?;
    let (frames_tx, frames_rx) = mpsc::channel();
    let hub_w = hub.clone();
    std::thread::Builder::new()
        .name(format!("wshub-w{id}"))
        .stack_size(settings.stack)
        .spawn(move || write_loop(id, writer, frames_rx, hub_w))?;
    std::thread::Builder::new()
        .name(format!("wshub-r{id}"))
        .stack_size(settings.stack)
        .spawn(move || read_loop(id, reader, hub, settings.read_buffer))?;
    Ok(ConnThreads {
        frames: frames_tx,
        stream,
    })
}

fn read_loop(id: ConnId, mut stream: TcpStream, hub: SyncSender<Cmd>, size: usize) {
    let mut buf = vec![0u8; size];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                let _ = hub.send(Cmd::Eof(id));
                return;
            }
            // The bounded command channel is the backpressure: a peer that sends
            // faster than the hub thread handles it waits in TCP, not in memory.
            Ok(n) => {
                if hub.send(Cmd::Read(id, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id));
                return;
            }
        }
    }
}

fn write_loop(
    id: ConnId,
    mut stream: TcpStream,
    frames: Receiver<Vec<Bytes>>,
    hub: SyncSender<Cmd>,
) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    // Bytes of the front frame already written.
    let mut offset = 0usize;
    loop {
        if pending.is_empty() {
            match frames.recv() {
                Ok(batch) => pending.extend(batch),
                Err(_) => return, // the hub is done with this connection
            }
        }
        // Gather whatever else is queued so one system call carries it all.
        while let Ok(batch) = frames.try_recv() {
            pending.extend(batch);
        }
        let result = {
            // One small allocation per system call; the frames themselves are
            // the core's shared bytes, never copied.
            let slices: Vec<IoSlice<'_>> = pending
                .iter()
                .take(MAX_SLICES)
                .enumerate()
                .map(|(i, f)| IoSlice::new(&f[if i == 0 { offset } else { 0 }..]))
                .collect();
            stream.write_vectored(&slices)
        };
        let n = match result {
            Ok(0) => {
                let _ = hub.send(Cmd::IoError(id));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = hub.send(Cmd::IoError(id));
                return;
            }
        };
        if hub.send(Cmd::Written(id, n)).is_err() {
            return;
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
}

/// Most slices handed to one `writev` (Linux allows 1024; 64 frames of a
/// typical size already fill a socket buffer).
const MAX_SLICES: usize = 64;
