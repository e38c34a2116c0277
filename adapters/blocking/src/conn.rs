//! A connection: a reader thread feeding the hub, and an outbox the hub
//! thread writes from without blocking; a writer thread exists only while the
//! peer's socket buffer is full.
//!
//! Why: with a writer thread per connection every publish woke one thread per
//! subscriber, and at 1,000 subscribers the core spent its time switching
//! between 2,000 threads (0.11x the tokio-tungstenite baseline). The hub
//! thread now writes each connection's share of a round in one `sendmsg`
//! with `MSG_DONTWAIT`, which never waits whatever the socket's mode (the
//! reader keeps its blocking reads on the same socket). A socket that cannot
//! take everything gets a thread that finishes the job with blocking writes,
//! so a stuck client still delays only itself, then hands the socket back.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wshub_core::write_queue::{Flushed, WriteQueue, MAX_SLICES};
use wshub_core::ConnId;

use crate::hub_thread::Cmd;

/// Thread settings.
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    pub read_buffer: usize,
    pub stack: usize,
}

/// How long a finished connection's reader keeps discarding input until the
/// peer's FIN, so closing the socket does not turn unread bytes into a reset;
/// a peer still sending after that is cut.
const LINGER: Duration = Duration::from_secs(1);

/// `sendmsg` flags: never wait; on Linux, no SIGPIPE for a reset peer (an
/// embedding C host may not ignore it as Rust binaries do).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// How long a writer thread that caught up waits for more before it hands
/// the socket back to the hub thread and exits: a client that is slow once
/// tends to be slow again, and creating a thread costs the hub ~30 us.
const WRITER_IDLE: Duration = Duration::from_secs(1);

/// Frames the core handed out and the socket has not taken yet.
#[derive(Default)]
struct Outbox {
    pending: WriteQueue,
    /// A writer thread owns the socket's write side until it empties this.
    writer: bool,
    /// That thread has written everything and waits for more.
    idle: bool,
    /// The connection is over: an idle writer thread exits.
    done: bool,
}

/// An outbox and the signal that wakes its idle writer thread.
#[derive(Default)]
struct Shared {
    out: Mutex<Outbox>,
    more: Condvar,
}

/// The hub thread's side of a connection.
pub(crate) struct ConnIo {
    id: ConnId,
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    /// Set when the core is done with the connection: the reader then only
    /// lingers.
    ended: Arc<AtomicBool>,
    stack: usize,
}

fn lock(out: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    // A writer thread holds the lock only between system calls and never
    // panics while holding it; a poisoned outbox is still consistent.
    out.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnIo {
    /// Queues `frames` and writes what the socket takes without waiting.
    /// What the hub thread wrote is returned; once a writer thread owns the
    /// socket it reports its own writes, and these frames join its queue.
    pub fn send(&mut self, frames: &mut Vec<Bytes>, hub: &SyncSender<Cmd>) -> Flushed {
        let mut out = lock(&self.shared.out);
        out.pending.extend(frames);
        if out.writer {
            if out.idle {
                self.shared.more.notify_one();
            }
            return Flushed::All(0); // its thread takes these too
        }
        let socket = socket2::SockRef::from(&*self.stream);
        let flushed = out
            .pending
            .write_with(|slices| socket.send_vectored_with_flags(slices, SEND_FLAGS));
        if let Flushed::Blocked(written) = flushed {
            out.writer = true;
            let spawned = std::thread::Builder::new()
                .name(format!("wshub-w{}", self.id))
                .stack_size(self.stack)
                .spawn({
                    let (id, stream) = (self.id, self.stream.clone());
                    let (shared, hub) = (self.shared.clone(), hub.clone());
                    move || write_until_empty(id, &stream, &shared, &hub)
                });
            if spawned.is_err() {
                return Flushed::Failed(written);
            }
        }
        flushed
    }

    /// Ends the connection (the core reported it closed with its output
    /// written): FIN after the last byte; a reader blocked on a silent peer
    /// gives up shortly.
    pub fn end(self) {
        let busy = {
            let mut out = lock(&self.shared.out);
            // An idle writer thread has written everything it took.
            let busy = !out.pending.is_empty() || (out.writer && !out.idle);
            out.done = true;
            busy
        };
        self.shared.more.notify_one();
        if busy {
            return self.cut(); // cannot happen: the core said it was flushed
        }
        self.ended.store(true, Ordering::Release);
        let _ = self.stream.set_read_timeout(Some(LINGER));
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Cuts the connection at once; a writer thread blocked on it fails and
    /// exits.
    pub fn cut(self) {
        lock(&self.shared.out).done = true;
        self.shared.more.notify_one();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A writer thread: blocking writes, each reported to the hub, until the
/// outbox has stayed empty for [`WRITER_IDLE`]; then the hub thread writes
/// again.
fn write_until_empty(id: ConnId, stream: &TcpStream, shared: &Shared, hub: &SyncSender<Cmd>) {
    // Frames taken out of the outbox, so the hub can keep queueing while this
    // thread waits in `write`.
    let mut mine = WriteQueue::default();
    loop {
        if mine.is_empty() {
            let mut out = lock(&shared.out);
            let give_back = Instant::now() + WRITER_IDLE;
            while out.pending.is_empty() {
                let now = Instant::now();
                if out.done || now >= give_back {
                    out.writer = false;
                    out.idle = false;
                    return;
                }
                out.idle = true;
                out = shared
                    .more
                    .wait_timeout(out, give_back - now)
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            }
            out.idle = false;
            mine = out.pending.take();
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = mine.slices(&mut slices);
        let mut writer = stream;
        match writer.write_vectored(&slices[..count]) {
            Ok(0) => break,
            Ok(n) => {
                mine.advance(n);
                if hub.send(Cmd::Written(id, n)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // The socket failed; `writer` stays set, so the hub writes no more.
    let _ = hub.send(Cmd::IoError(id));
}

/// Starts the reader thread of `stream` for connection `id`.
pub(crate) fn spawn(
    id: ConnId,
    stream: TcpStream,
    hub: SyncSender<Cmd>,
    settings: Settings,
) -> io::Result<ConnIo> {
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let ended = Arc::new(AtomicBool::new(false));
    let (reader, reader_ended) = (stream.clone(), ended.clone());
    std::thread::Builder::new()
        .name(format!("wshub-r{id}"))
        .stack_size(settings.stack)
        .spawn(move || read_loop(id, &reader, &reader_ended, hub, settings.read_buffer))?;
    Ok(ConnIo {
        id,
        stream,
        shared: Arc::new(Shared::default()),
        ended,
        stack: settings.stack,
    })
}

fn read_loop(
    id: ConnId,
    stream: &TcpStream,
    ended: &AtomicBool,
    hub: SyncSender<Cmd>,
    size: usize,
) {
    let mut buf = vec![0u8; size];
    let mut reader = stream;
    // Set once the hub has ended the connection: input is discarded until the
    // peer's FIN or this instant, whichever comes first. The read timeout
    // alone would never fire for a peer that keeps sending.
    let mut linger_until: Option<Instant> = None;
    loop {
        let read = reader.read(&mut buf);
        if ended.load(Ordering::Acquire) {
            let until = *linger_until.get_or_insert_with(|| Instant::now() + LINGER);
            match read {
                Ok(n) if n > 0 && Instant::now() < until => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // FIN, timeout, error, or a peer still sending: let go.
                _ => {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        match read {
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
