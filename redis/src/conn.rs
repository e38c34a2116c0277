//! One command connection, to a single Redis or to a Cluster, behind one
//! `run`: a list of commands in, one result each out, or an error for the
//! link itself (then nothing can be said of any command in the list).

use redis::cluster::{ClusterClientBuilder, ClusterConnection};
use redis::{Cmd, RedisError, RedisResult, Value};

use crate::shared::Shared;

pub(crate) enum RedisConn {
    /// One round trip per `run` (a pipeline).
    Single(redis::Connection),
    /// Commands routed one by one: a pipeline's commands may live in
    /// different slots, on different nodes.
    Cluster(Box<ClusterConnection>),
}

impl RedisConn {
    /// Connects within the configured timeouts (the handshake included).
    pub fn open(shared: &Shared) -> RedisResult<RedisConn> {
        let cfg = &shared.config;
        if shared.cluster {
            let conn = ClusterClientBuilder::new(shared.infos.clone())
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.response_timeout)
                // Enough to follow a MOVED after a resharding; more would
                // hold a failed batch well past the response timeout.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100)
                .build()?
                .get_connection()?;
            return Ok(RedisConn::Cluster(Box::new(conn)));
        }
        let info = shared.infos.first().cloned().ok_or_else(no_node)?;
        let conn = redis::Client::open(info)?.get_connection_with_timeout(cfg.connect_timeout)?;
        conn.set_read_timeout(Some(cfg.response_timeout))?;
        conn.set_write_timeout(Some(cfg.response_timeout))?;
        Ok(RedisConn::Single(conn))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Runs `cmds`; a server error answers its command only.
    pub fn run(&mut self, cmds: &[Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            RedisConn::Single(conn) => {
                let mut pipe = redis::pipe();
                for c in cmds {
                    pipe.add_command(c.clone());
                }
                pipe.ignore_errors().query(conn)
            }
            RedisConn::Cluster(conn) => cmds
                .iter()
                .map(|c| match c.query::<Value>(conn.as_mut()) {
                    Err(e) if link_error(&e) => Err(e),
                    other => Ok(other),
                })
                .collect(),
        }
    }
}

/// Whether `e` is about the link rather than the one command.
fn link_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.code().is_none()
}

fn no_node() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no Redis node configured",
    ))
}
