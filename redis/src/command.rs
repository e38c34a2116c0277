//! The command connection's thread: batches the hub's publishes and reads
//! into one pipeline per round trip, keeps the node's presence and heartbeat,
//! and answers every publish and read exactly once, with an error when Redis
//! is out of reach.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{RedisResult, Value};
use wshub_core::broker::{BrokerError, BrokerInput, BrokerOutput};

use crate::answer::{self, Job};
use crate::backoff::Backoff;
use crate::conn::RedisConn;
use crate::envelope;
use crate::presence::PresenceTable;
use crate::pubsub::SubMsg;
use crate::scripts;
use crate::shared::{Conn, Shared};

/// What the command thread takes: the hub's outputs, or the stop signal.
pub(crate) enum Msg {
    Out(BrokerOutput),
    /// The pub/sub link was lost: check this one too, so that a Redis that
    /// went away while no command was running is not reported `Up` again
    /// through a dead command connection.
    Check,
    /// The dialer's result: a new link, or `None` (try again later).
    Dialed(Option<Box<Link>>),
    Stop,
}

/// Most outputs taken into one pipeline.
const MAX_BATCH: usize = 256;

/// A live command connection and how it calls the scripts.
pub(crate) struct Link {
    conn: RedisConn,
    scripts: Scripts,
}

/// How a job names its script.
pub(crate) enum Scripts {
    /// EVALSHA with these SHA1s (loaded on connect, again on NOSCRIPT).
    Sha { publish: String, read: String },
    /// EVAL with the text: a Cluster would need the scripts loaded on every
    /// primary, including one promoted later; Redis caches them anyway.
    Text,
}

impl Scripts {
    pub fn publish_sha(&self) -> Option<&str> {
        match self {
            Scripts::Sha { publish, .. } => Some(publish),
            Scripts::Text => None,
        }
    }

    pub fn read_sha(&self) -> Option<&str> {
        match self {
            Scripts::Sha { read, .. } => Some(read),
            Scripts::Text => None,
        }
    }
}

impl Link {
    fn open(shared: &Shared) -> RedisResult<Link> {
        let mut conn = RedisConn::open(shared)?;
        let scripts = if conn.is_cluster() {
            Scripts::Text
        } else {
            load_scripts(&mut conn)?
        };
        Ok(Link { conn, scripts })
    }
}

fn load_scripts(conn: &mut RedisConn) -> RedisResult<Scripts> {
    let mut load = |text: &str| -> RedisResult<String> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(text);
        match conn.run(&[cmd])?.pop() {
            Some(Ok(Value::BulkString(sha))) => String::from_utf8(sha).map_err(|_| bad_reply()),
            Some(Err(e)) => Err(e),
            _ => Err(bad_reply()),
        }
    };
    Ok(Scripts::Sha {
        publish: load(scripts::PUBLISH)?,
        read: load(scripts::READ)?,
    })
}

fn bad_reply() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "unexpected reply to SCRIPT LOAD",
    ))
}

/// Dials on request, off the command thread, so publishes and reads are
/// answered at once while a connect waits out its timeouts.
pub(crate) fn dialer(shared: Arc<Shared>, requests: Receiver<()>, cmd_tx: Sender<Msg>) {
    for () in requests {
        if shared.stopping() {
            return;
        }
        let link = Link::open(&shared).ok().map(Box::new);
        if cmd_tx.send(Msg::Dialed(link)).is_err() {
            return;
        }
    }
}

pub(crate) struct CommandThread {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    sub_tx: Sender<SubMsg>,
    /// Ends the dialer when the thread ends (the sender drops).
    dial_tx: Sender<()>,
    /// A dial is under way.
    dialing: bool,
    link: Option<Link>,
    backoff: Backoff,
    next_attempt: Instant,
    next_refresh: Instant,
    /// A connection was up before: the next one is a reconnect.
    was_up: bool,
    presence: PresenceTable,
    /// Channels this node holds that keep history, with their meta TTL:
    /// the heartbeat keeps their positions alive while the node holds
    /// them, so a quiet channel with subscribers keeps its epoch.
    held_meta: std::collections::BTreeMap<String, std::time::Duration>,
}

impl CommandThread {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        sub_tx: Sender<SubMsg>,
        dial_tx: Sender<()>,
    ) -> CommandThread {
        let now = Instant::now();
        CommandThread {
            dial_tx,
            dialing: false,
            backoff: Backoff::new(shared.config.reconnect_min, shared.config.reconnect_max),
            shared,
            rx,
            sub_tx,
            link: None,
            next_attempt: now,
            next_refresh: now,
            was_up: false,
            presence: PresenceTable::default(),
            held_meta: std::collections::BTreeMap::new(),
        }
    }

    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while !self.shared.stopping() {
            let now = Instant::now();
            if self.link.is_none() && !self.dialing && now >= self.next_attempt {
                self.dialing = self.dial_tx.send(()).is_ok();
            }
            if self.link.is_some() && Instant::now() >= self.next_refresh {
                self.refresh();
            }
            let wake = match (&self.link, self.dialing) {
                (Some(_), _) => self.next_refresh,
                // The dialer's answer wakes the thread.
                (None, true) => Instant::now() + Duration::from_secs(1),
                (None, false) => self.next_attempt,
            };
            let wait = wake.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Out(o)) => batch.push(o),
                Ok(Msg::Check) => self.check(),
                Ok(Msg::Dialed(link)) => self.dialed(link),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => continue,
            }
            let mut stop = false;
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Msg::Out(o)) => batch.push(o),
                    Ok(Msg::Check) => self.check(),
                    Ok(Msg::Dialed(link)) => self.dialed(link),
                    Ok(Msg::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.handle(&mut batch);
            if stop {
                break;
            }
        }
        self.finish();
    }

    fn dialed(&mut self, link: Option<Box<Link>>) {
        self.dialing = false;
        match link {
            Some(link) => {
                self.link = Some(*link);
                self.backoff.reset();
                if self.was_up {
                    self.shared.counters.reconnects.fetch_add(1, Relaxed);
                }
                self.was_up = true;
                // Redis may have restarted empty: rewrite presence at once.
                self.next_refresh = Instant::now();
                self.shared.conn_up(Conn::Command);
            }
            None => self.lost(),
        }
    }

    fn check(&mut self) {
        if let Some(link) = self.link.as_mut() {
            if link.conn.run(&[redis::cmd("PING")]).is_err() {
                self.lost();
            }
        }
    }

    /// The connection failed (or could not be made): Down, retry later.
    fn lost(&mut self) {
        self.link = None;
        self.next_attempt = Instant::now() + self.backoff.next_delay();
        self.shared.conn_down(Conn::Command);
    }

    fn handle(&mut self, batch: &mut Vec<BrokerOutput>) {
        let mut jobs = Vec::new();
        let mut presence_ops: Vec<redis::Cmd> = Vec::new();
        for o in batch.drain(..) {
            match o {
                BrokerOutput::Subscribe { channel, history } => {
                    if let Some(h) = history {
                        // As the scripts do: the position outlives the items.
                        self.held_meta
                            .insert(channel.clone(), h.meta_ttl.max(h.ttl));
                    }
                    let stamp = self.shared.downs();
                    let _ = self.sub_tx.send(SubMsg::Subscribe { channel, stamp });
                }
                BrokerOutput::Unsubscribe { channel } => {
                    self.held_meta.remove(&channel);
                    let stamp = self.shared.downs();
                    let _ = self.sub_tx.send(SubMsg::Unsubscribe { channel, stamp });
                }
                BrokerOutput::Presence {
                    channel,
                    user,
                    present,
                } => self
                    .presence
                    .change(&self.shared, &mut presence_ops, channel, user, present),
                BrokerOutput::Publish {
                    id,
                    channel,
                    json,
                    history,
                } => jobs.push(Job::Publish {
                    id,
                    channel,
                    json,
                    history,
                }),
                BrokerOutput::Send { id, to, json } => {
                    let envelope = envelope::encode_send(&self.shared.node_id, &to, &json);
                    jobs.push(Job::Send { id, envelope });
                }
                BrokerOutput::Read {
                    read,
                    channel,
                    since,
                    limit,
                    history,
                } => jobs.push(Job::Read {
                    read,
                    channel,
                    since,
                    limit,
                    history,
                }),
                _ => {}
            }
        }
        let Some(link) = self.link.as_mut() else {
            self.fail_all(jobs);
            return;
        };
        let shared = &self.shared;
        if jobs.is_empty() && presence_ops.is_empty() {
            return;
        }
        let mut cmds: Vec<redis::Cmd> = jobs
            .iter()
            .map(|j| j.command(shared, &link.scripts))
            .collect();
        // Presence writes ride along; their replies are not needed.
        cmds.extend(presence_ops);
        match link.conn.run(&cmds) {
            Ok(mut replies) => {
                replies.truncate(jobs.len());
                if replies.len() < jobs.len() {
                    self.fail_all(jobs);
                    self.lost();
                    return;
                }
                if replies.iter().any(answer::is_noscript) {
                    // SCRIPT FLUSH, or a failover to a replica without the
                    // scripts: a script that was not found did not run, so
                    // running it again cannot apply it twice.
                    if retry_noscript(shared, link, &jobs, &mut replies).is_err() {
                        self.fail_all(jobs);
                        self.lost();
                        return;
                    }
                }
                for (job, reply) in jobs.into_iter().zip(replies) {
                    shared.deliver_final(answer::answer(shared, job, reply));
                }
                self.presence.removals_sent();
            }
            Err(_) => {
                self.fail_all(jobs);
                self.lost();
            }
        }
    }

    fn fail_all(&self, jobs: Vec<Job>) {
        for job in jobs {
            self.shared
                .deliver_final(answer::failure(&self.shared, job));
        }
    }

    /// The heartbeat: the node's entry, its connection count and every
    /// presence entry it holds, with a new expiry.
    fn refresh(&mut self) {
        self.next_refresh = Instant::now() + self.shared.config.presence_refresh;
        let Some(link) = self.link.as_mut() else {
            return;
        };
        for cmds in self.presence.refresh(&self.shared) {
            if link.conn.run(&cmds).is_err() {
                self.lost();
                return;
            }
        }
        let metas: Vec<redis::Cmd> = self
            .held_meta
            .iter()
            .map(|(channel, ttl)| {
                let mut c = redis::cmd("PEXPIRE");
                c.arg(self.shared.keys.meta(channel)).arg(ms(*ttl));
                c
            })
            .collect();
        for chunk in metas.chunks(256) {
            if link.conn.run(chunk).is_err() {
                self.lost();
                return;
            }
        }
        self.presence.removals_sent();
    }

    /// On stop (not on a crash): the node's entries go at once instead of
    /// expiring.
    fn finish(mut self) {
        // Outputs still queued are answered: the contract holds to the end.
        while let Ok(m) = self.rx.try_recv() {
            let Msg::Out(o) = m else { continue };
            match o {
                BrokerOutput::Publish { id, .. } | BrokerOutput::Send { id, .. } => {
                    self.shared.deliver_final(BrokerInput::Published {
                        id,
                        result: Err(BrokerError::Unavailable),
                    })
                }
                BrokerOutput::Read { read, .. } => {
                    self.shared.deliver_final(BrokerInput::HistoryRead {
                        read,
                        result: Err(answer::READ_FAILED),
                    })
                }
                _ => {}
            }
        }
        if self.shared.crashed.load(Relaxed) {
            return;
        }
        if let Some(link) = self.link.as_mut() {
            let _ = link.conn.run(&self.presence.cleanup(&self.shared));
        }
    }
}

/// Loads the scripts again and reruns the jobs that met NOSCRIPT.
fn retry_noscript(
    shared: &Shared,
    link: &mut Link,
    jobs: &[Job],
    replies: &mut [RedisResult<Value>],
) -> RedisResult<()> {
    link.scripts = load_scripts(&mut link.conn)?;
    let again: Vec<usize> = (0..jobs.len())
        .filter(|&i| replies.get(i).is_some_and(answer::is_noscript))
        .collect();
    let cmds: Vec<redis::Cmd> = again
        .iter()
        .map(|&i| jobs[i].command(shared, &link.scripts))
        .collect();
    let fresh = link.conn.run(&cmds)?;
    for (i, reply) in again.into_iter().zip(fresh) {
        replies[i] = reply;
    }
    Ok(())
}

/// Milliseconds for PEXPIRE: at least 1 (0 would be refused).
pub(crate) fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
