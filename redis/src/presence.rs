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
            let mut pexpire = redis::cmd("PEXPIRE");
            pexpire.arg(&key).arg(ms(shared.config.presence_ttl));
            ops.extend([zadd, pexpire]);
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
        }
    }

    /// The heartbeat's pipelines: node entry, connection count, and every
    /// presence entry, each with a new expiry.
    pub fn refresh(&self, shared: &Shared) -> Vec<redis::Pipeline> {
        let ttl = ms(shared.config.presence_ttl);
        let now = unix_ms();
        let expiry = now + ttl;
        let (nodes, conns) = (shared.keys.nodes(), shared.keys.node_conns());
        let mut first = redis::pipe();
        first
            .cmd("ZADD")
            .arg(&nodes)
            .arg(expiry)
            .arg(&shared.node_id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&nodes)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&nodes)
            .arg(ttl)
            .ignore()
            .cmd("HSET")
            .arg(&conns)
            .arg(&shared.node_id)
            .arg(shared.connections.load(Relaxed))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&conns)
            .arg(ttl)
            .ignore();
        let mut pipes = vec![first];
        let mut current = redis::pipe();
        let mut n = 0;
        for (channel, users) in &self.channels {
            let key = shared.keys.presence(channel);
            let zadd = current.cmd("ZADD").arg(&key);
            for user in users {
                zadd.arg(expiry).arg(member(shared, user));
            }
            current.ignore().cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            n += 2;
            if n >= REFRESH_CHUNK {
                pipes.push(std::mem::replace(&mut current, redis::pipe()));
                n = 0;
            }
        }
        if n > 0 {
            pipes.push(current);
        }
        pipes
    }

    /// Removes every entry of this node (a clean stop).
    pub fn cleanup(&self, shared: &Shared) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for (channel, users) in &self.channels {
            let zrem = pipe.cmd("ZREM").arg(shared.keys.presence(channel));
            for user in users {
                zrem.arg(member(shared, user));
            }
            pipe.ignore();
        }
        pipe.cmd("ZREM")
            .arg(shared.keys.nodes())
            .arg(&shared.node_id)
            .ignore()
            .cmd("HDEL")
            .arg(shared.keys.node_conns())
            .arg(&shared.node_id)
            .ignore();
        pipe
    }
}
