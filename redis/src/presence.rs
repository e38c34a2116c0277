//! The node's presence entries and heartbeat. Redis 7.0 has no per-field
//! hash TTL, so each entry is a sorted-set member scored by its expiry (unix
//! ms): live nodes push the score forward every refresh, a dead node's
//! entries fall behind `now` and readers skip (and remove) them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;

use crate::command::ms;
use crate::shared::{unix_ms, Shared};

/// Most commands sent in one refresh pipeline.
const REFRESH_CHUNK: usize = 512;

/// Who is present on this node, per channel.
#[derive(Default)]
pub(crate) struct PresenceTable {
    channels: BTreeMap<String, BTreeSet<String>>,
    /// Removals not yet known to have reached Redis (the link was down or
    /// failed): sent again with each refresh until one succeeds, so a user
    /// who left while Redis was away does not linger for a whole ttl.
    removals: BTreeSet<(String, String)>,
}

fn member(shared: &Shared, user: &str) -> String {
    format!("{}:{user}", shared.node_id)
}

impl PresenceTable {
    /// Applies one change and appends its write to `ops` (sent with the next
    /// batch; a lost write is repaired by the next refresh, or by expiry
    /// for a removal).
    pub fn change(
        &mut self,
        shared: &Shared,
        ops: &mut Vec<redis::Cmd>,
        channel: String,
        user: String,
        present: bool,
    ) {
        let key = shared.keys.presence(&channel);
        let m = member(shared, &user);
        if present {
            let expiry = unix_ms() + ms(shared.config.presence_ttl);
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key).arg(expiry).arg(m);
            ops.extend([zadd, pexpire(&key, ms(shared.config.presence_ttl))]);
            self.removals.remove(&(channel.clone(), user.clone()));
            self.channels.entry(channel).or_default().insert(user);
        } else {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&key).arg(m);
            ops.push(zrem);
            if let Some(users) = self.channels.get_mut(&channel) {
                users.remove(&user);
                if users.is_empty() {
                    self.channels.remove(&channel);
                }
            }
            self.removals.insert((channel, user));
        }
    }

    /// The removals went through (a batch or a refresh succeeded).
    pub fn removals_sent(&mut self) {
        self.removals.clear();
    }

    /// The heartbeat's commands, in chunks of at most [`REFRESH_CHUNK`]
    /// (one round trip each): node entry, connection count, and every
    /// presence entry, each with a new expiry.
    pub fn refresh(&self, shared: &Shared) -> Vec<Vec<redis::Cmd>> {
        let ttl = ms(shared.config.presence_ttl);
        let now = unix_ms();
        let expiry = now + ttl;
        let (nodes, conns) = (shared.keys.nodes(), shared.keys.node_conns());
        let mut first = Vec::new();
        let mut c = redis::cmd("ZADD");
        c.arg(&nodes).arg(expiry).arg(&shared.node_id);
        first.push(c);
        let mut c = redis::cmd("ZREMRANGEBYSCORE");
        c.arg(&nodes).arg("-inf").arg(now);
        first.push(c);
        first.push(pexpire(&nodes, ttl));
        let mut c = redis::cmd("HSET");
        c.arg(&conns)
            .arg(&shared.node_id)
            .arg(shared.connections.load(Relaxed));
        first.push(c);
        first.push(pexpire(&conns, ttl));
        let mut chunks = vec![first];
        let mut current = Vec::new();
        for (channel, user) in &self.removals {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(shared.keys.presence(channel))
                .arg(member(shared, user));
            current.push(zrem);
            if current.len() >= REFRESH_CHUNK {
                chunks.push(std::mem::take(&mut current));
            }
        }
        for (channel, users) in &self.channels {
            let key = shared.keys.presence(channel);
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key);
            for user in users {
                zadd.arg(expiry).arg(member(shared, user));
            }
            current.push(zadd);
            current.push(pexpire(&key, ttl));
            if current.len() >= REFRESH_CHUNK {
                chunks.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// Removes every entry of this node (a clean stop).
    pub fn cleanup(&self, shared: &Shared) -> Vec<redis::Cmd> {
        let mut cmds = Vec::new();
        for (channel, users) in &self.channels {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(shared.keys.presence(channel));
            for user in users {
                zrem.arg(member(shared, user));
            }
            cmds.push(zrem);
        }
        let mut c = redis::cmd("ZREM");
        c.arg(shared.keys.nodes()).arg(&shared.node_id);
        cmds.push(c);
        let mut c = redis::cmd("HDEL");
        c.arg(shared.keys.node_conns()).arg(&shared.node_id);
        cmds.push(c);
        cmds
    }
}

fn pexpire(key: &str, ttl_ms: u64) -> redis::Cmd {
    let mut c = redis::cmd("PEXPIRE");
    c.arg(key).arg(ttl_ms);
    c
}
