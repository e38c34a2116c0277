//! The pub/sub connection: a raw TCP stream split in two. This thread writes
//! (SUBSCRIBE, UNSUBSCRIBE, the PING probe) and never reads, so a request is
//! never stuck behind a blocked read; a reader thread per connection parses
//! what Redis pushes and hands it to the hub.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use wshub_core::broker::BrokerInput;

use crate::backoff::Backoff;
use crate::command::Msg;
use crate::envelope;
use crate::resp::{self, Resp};
use crate::shared::{Conn, Shared};

/// What the pub/sub thread takes.
pub(crate) enum SubMsg {
    /// `stamp`: [`Shared::downs`] when the hub asked.
    Subscribe {
        channel: String,
        stamp: u64,
    },
    Unsubscribe {
        channel: String,
        stamp: u64,
    },
    /// The reader of connection `gen` saw the stream end.
    ReaderDone(u64),
    Stop,
}

impl SubMsg {
    fn channel(&self) -> Option<&str> {
        match self {
            SubMsg::Subscribe { channel, .. } | SubMsg::Unsubscribe { channel, .. } => {
                Some(channel)
            }
            _ => None,
        }
    }
}

/// What the reader tells the probe.
#[derive(Default)]
struct Probe {
    /// PONGs read.
    pongs: AtomicU64,
    /// The reader is handing an input to the hub: a PONG queued behind it
    /// is not read yet, and the hub's backpressure is no dead link.
    busy: AtomicBool,
}

pub(crate) struct PubSubThread {
    shared: Arc<Shared>,
    rx: Receiver<SubMsg>,
    tx: Sender<SubMsg>,
    /// To ask the command thread to check its link when this one is lost.
    cmd_tx: Sender<Msg>,
    /// Requests taken while disconnected, the last one per channel (a
    /// subscribe then an unsubscribe is just the unsubscribe): bounded by the
    /// channel count, however long Redis stays away.
    pending: BTreeMap<String, SubMsg>,
    /// Requests written on the current connection, the last per channel: if
    /// it dies they may never have reached Redis, so they go back to
    /// `pending` (where the stamp check drops those a Down overtook).
    inflight: BTreeMap<String, SubMsg>,
    gen: u64,
    /// The node dialled first next time: the one that last answered.
    node: usize,
}

/// Why a connection ended.
enum End {
    Lost,
    Stop,
}

impl PubSubThread {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<SubMsg>,
        tx: Sender<SubMsg>,
        cmd_tx: Sender<Msg>,
    ) -> PubSubThread {
        PubSubThread {
            shared,
            rx,
            tx,
            cmd_tx,
            pending: BTreeMap::new(),
            inflight: BTreeMap::new(),
            gen: 0,
            node: 0,
        }
    }

    pub fn run(mut self) {
        let cfg = &self.shared.config;
        let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        let mut was_up = false;
        while !self.shared.stopping() {
            if let Ok((node, stream)) = connect(&self.shared, self.node) {
                self.node = node;
                backoff.reset();
                if was_up {
                    self.shared.counters.reconnects.fetch_add(1, Relaxed);
                }
                was_up = true;
                let end = self.serve(stream);
                // Newer requests (already pending) win over older in-flight ones.
                for (channel, m) in std::mem::take(&mut self.inflight) {
                    self.pending.entry(channel).or_insert(m);
                }
                if let End::Stop = end {
                    return;
                }
                let _ = self.cmd_tx.send(Msg::Check);
            }
            self.shared.conn_down(Conn::PubSub);
            let until = Instant::now() + backoff.next_delay();
            if !self.wait(until) {
                return;
            }
        }
    }

    /// Keeps requests until `until` (to send once connected); false on stop.
    fn wait(&mut self, until: Instant) -> bool {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(SubMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(SubMsg::ReaderDone(_)) => {}
                Ok(m) => {
                    if let Some(channel) = m.channel() {
                        self.pending.insert(channel.to_string(), m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return !self.shared.stopping(),
            }
            if self.shared.stopping() {
                return false;
            }
        }
    }

    fn serve(&mut self, stream: TcpStream) -> End {
        self.gen += 1;
        let end = match stream.try_clone() {
            Ok(read_half) => {
                let probe = Arc::new(Probe::default());
                let reader = {
                    let (shared, tx, probe, gen) = (
                        self.shared.clone(),
                        self.tx.clone(),
                        probe.clone(),
                        self.gen,
                    );
                    thread::Builder::new()
                        .name("wshub-redis-sub-read".into())
                        .spawn(move || read_loop(&shared, read_half, &probe, &tx, gen))
                };
                match reader {
                    Ok(reader) => {
                        let end = self.write_loop(&stream, &probe);
                        let _ = stream.shutdown(Shutdown::Both);
                        let _ = reader.join();
                        end
                    }
                    Err(_) => End::Lost,
                }
            }
            Err(_) => End::Lost,
        };
        let _ = stream.shutdown(Shutdown::Both);
        end
    }

    fn write_loop(&mut self, mut stream: &TcpStream, probe: &Probe) -> End {
        // Broadcasts and sends to a user: every node hears them, always.
        let everyone = self.shared.keys.everyone();
        if resp::write_command(&mut stream, &[b"SUBSCRIBE", everyone.as_bytes()]).is_err() {
            return End::Lost;
        }
        self.shared.conn_up(Conn::PubSub);
        // A request older than the last Down is dropped: the hub
        // resubscribes every channel it holds on the Up that follows.
        let downs = self.shared.downs();
        for m in std::mem::take(&mut self.pending).into_values() {
            let fresh = match &m {
                SubMsg::Subscribe { stamp, .. } | SubMsg::Unsubscribe { stamp, .. } => {
                    *stamp >= downs
                }
                _ => false,
            };
            if fresh && self.send(&mut stream, m).is_err() {
                return End::Lost;
            }
        }
        let interval = self.shared.config.probe_interval;
        let mut pings = 0u64;
        let mut next_probe = Instant::now() + interval;
        loop {
            let left = next_probe.saturating_duration_since(Instant::now());
            let sent = match self.rx.recv_timeout(left) {
                Ok(SubMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return End::Stop,
                Ok(SubMsg::ReaderDone(gen)) if gen == self.gen => return End::Lost,
                Ok(SubMsg::ReaderDone(_)) => Ok(()),
                Ok(m) => self.send(&mut stream, m),
                Err(RecvTimeoutError::Timeout) => {
                    // The PING sent one interval ago is still unanswered: the
                    // link may look open while delivering nothing.
                    if probe.pongs.load(Relaxed) < pings {
                        if probe.busy.load(Relaxed) {
                            next_probe = Instant::now() + interval;
                            continue;
                        }
                        self.shared.counters.probe_failures.fetch_add(1, Relaxed);
                        return End::Lost;
                    }
                    pings += 1;
                    next_probe = Instant::now() + interval;
                    resp::write_command(&mut stream, &[b"PING"])
                }
            };
            if sent.is_err() {
                return End::Lost;
            }
            if self.shared.stopping() {
                return End::Stop;
            }
        }
    }

    fn send(&mut self, stream: &mut &TcpStream, m: SubMsg) -> io::Result<()> {
        let sent = match &m {
            SubMsg::Subscribe { channel, .. } => {
                let name = self.shared.keys.pubsub(channel);
                resp::write_command(stream, &[b"SUBSCRIBE", name.as_bytes()])
            }
            SubMsg::Unsubscribe { channel, .. } => {
                let name = self.shared.keys.pubsub(channel);
                resp::write_command(stream, &[b"UNSUBSCRIBE", name.as_bytes()])
            }
            _ => return Ok(()),
        };
        if let Some(channel) = m.channel() {
            self.inflight.insert(channel.to_string(), m);
        }
        sent
    }
}

/// Dials the nodes in turn from `first` (any Cluster node carries every
/// PUBLISH), authenticates and checks the server answers a PING, each within
/// the connect and response timeouts. The index that answered, and its
/// stream.
fn connect(shared: &Shared, first: usize) -> io::Result<(usize, TcpStream)> {
    let n = shared.infos.len();
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for i in (0..n).map(|k| (first + k) % n) {
        match connect_to(shared, &shared.infos[i]) {
            Ok(stream) => return Ok((i, stream)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_to(shared: &Shared, info: &redis::ConnectionInfo) -> io::Result<TcpStream> {
    let cfg = &shared.config;
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for addr in (host.as_str(), *port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, cfg.connect_timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(cfg.response_timeout))?;
                stream.set_read_timeout(Some(cfg.response_timeout))?;
                handshake(info, &stream)?;
                // The reader blocks until data or shutdown; liveness is the
                // probe's job, not a read timeout's.
                stream.set_read_timeout(None)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn handshake(info: &redis::ConnectionInfo, mut stream: &TcpStream) -> io::Result<()> {
    let redis = info.redis_settings();
    let mut reader = BufReader::new(stream);
    if let Some(pw) = redis.password() {
        match redis.username() {
            Some(user) => {
                resp::write_command(&mut stream, &[b"AUTH", user.as_bytes(), pw.as_bytes()])?
            }
            None => resp::write_command(&mut stream, &[b"AUTH", pw.as_bytes()])?,
        }
        if !matches!(resp::read(&mut reader)?, Resp::Simple(_)) {
            // The server's text is not passed on: nothing here names the password.
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "Redis refused AUTH",
            ));
        }
    }
    resp::write_command(&mut stream, &[b"PING"])?;
    match resp::read(&mut reader)? {
        Resp::Simple(_) => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "Redis did not answer PING",
        )),
    }
}

fn read_loop(shared: &Shared, stream: TcpStream, probe: &Probe, tx: &Sender<SubMsg>, gen: u64) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut batch = Vec::new();
    while let Ok(value) = resp::read(&mut reader) {
        if shared.stopping() {
            break;
        }
        if let Some(input) = handle(shared, value, &probe.pongs) {
            batch.push(input);
        }
        // Never hold inputs across a read that may block.
        if reader.buffer().is_empty() || batch.len() >= shared.config.max_batch {
            probe.busy.store(true, Relaxed);
            match batch.len() {
                0 => {}
                1 => shared.deliver(batch.pop().expect("one")),
                _ => shared.deliver(BrokerInput::Batch(std::mem::take(&mut batch))),
            }
            probe.busy.store(false, Relaxed);
        }
    }
    let _ = tx.send(SubMsg::ReaderDone(gen));
}

/// What one pushed value means for the hub, if anything.
fn handle(shared: &Shared, value: Resp, pongs: &AtomicU64) -> Option<BrokerInput> {
    let bad = || {
        shared.counters.bad_envelopes.fetch_add(1, Relaxed);
        None
    };
    let Resp::Array(parts) = value else {
        if matches!(value, Resp::Simple(ref s) if s.eq_ignore_ascii_case("PONG")) {
            pongs.fetch_add(1, Relaxed);
        }
        return None;
    };
    let kind = match parts.first() {
        Some(Resp::Bulk(k)) => k.as_slice(),
        _ => return None,
    };
    match (kind, parts.get(1), parts.get(2)) {
        (b"message", Some(Resp::Bulk(name)), Some(payload))
            if name.as_slice() == shared.keys.everyone().as_bytes() =>
        {
            let Resp::Bulk(payload) = payload else {
                return bad();
            };
            let Some((to, json)) = envelope::decode_send(payload) else {
                return bad();
            };
            Some(BrokerInput::Delivery { to, json })
        }
        (b"message", Some(Resp::Bulk(name)), Some(payload)) => {
            let Some(channel) = shared.keys.channel_of(name) else {
                return bad();
            };
            let Resp::Bulk(payload) = payload else {
                return bad();
            };
            let Some(e) = envelope::decode(payload) else {
                return bad();
            };
            shared.counters.publications_in.fetch_add(1, Relaxed);
            Some(BrokerInput::Publication {
                channel: channel.to_string(),
                json: e.json,
                position: e.position,
            })
        }
        (b"subscribe", Some(Resp::Bulk(name)), _) => {
            let channel = shared.keys.channel_of(name)?;
            Some(BrokerInput::Subscribed {
                channel: channel.to_string(),
            })
        }
        (b"pong", _, _) => {
            pongs.fetch_add(1, Relaxed);
            None
        }
        _ => None,
    }
}
