//! One publish or read: the command it becomes in the pipeline, and the
//! hub's answer made from Redis's reply, checked for shape (a reply that is
//! not what the scripts return is an error answer, never a panic).

use bytes::Bytes;
use redis::{RedisResult, Value};
use wshub_core::broker::{BrokerError, BrokerInput, ChannelHistory, PublishId};
use wshub_core::event::HistoryReadId;
use wshub_core::history::{valid_epoch, HistoryError, HistoryPage, Publication, StreamPosition};
use wshub_core::message::positioned_json;

use std::sync::atomic::Ordering::Relaxed;

use crate::backoff::random_alnum;
use crate::command::{ms, Scripts};
use crate::envelope;
use crate::scripts;
use crate::shared::Shared;

/// A read that Redis did not answer: the hub refuses the subscribe with
/// `unavailable` (never a plain subscription, which `NoHistory` would be).
pub(crate) const READ_FAILED: HistoryError = HistoryError::Unavailable;

/// Length of the epochs this driver makes.
const EPOCH_LEN: usize = 12;

/// A publish or read waiting for its reply.
pub(crate) enum Job {
    Publish {
        id: PublishId,
        channel: String,
        json: Bytes,
        history: Option<ChannelHistory>,
    },
    Read {
        read: HistoryReadId,
        channel: String,
        since: Option<u64>,
        limit: usize,
        history: ChannelHistory,
    },
    /// A broadcast or send-to-user: its envelope, for the node-wide channel.
    Send { id: PublishId, envelope: Vec<u8> },
}

impl Job {
    /// The job's one command.
    pub fn command(&self, shared: &Shared, scripts: &Scripts) -> redis::Cmd {
        let keys = &shared.keys;
        let script = |sha: fn(&Scripts) -> Option<&str>, text: &str| {
            let mut cmd = match sha(scripts) {
                Some(sha) => {
                    let mut c = redis::cmd("EVALSHA");
                    c.arg(sha);
                    c
                }
                None => {
                    let mut c = redis::cmd("EVAL");
                    c.arg(text);
                    c
                }
            };
            cmd.arg(2);
            cmd
        };
        match self {
            Job::Publish {
                channel,
                json,
                history: Some(h),
                ..
            } if h.size > 0 => {
                let mut cmd = script(Scripts::publish_sha, scripts::PUBLISH);
                cmd.arg(keys.meta(channel))
                    .arg(keys.stream(channel))
                    .arg(keys.pubsub(channel))
                    .arg(random_alnum(EPOCH_LEN))
                    .arg(h.size)
                    .arg(ms(h.ttl))
                    .arg(ms(h.meta_ttl.max(h.ttl)))
                    .arg(&shared.node_id)
                    .arg(&json[..]);
                cmd
            }
            Job::Publish { channel, json, .. } => {
                let mut cmd = match scripts {
                    Scripts::Sha { .. } => redis::cmd("PUBLISH"),
                    Scripts::Text => {
                        let mut c = redis::cmd("EVAL");
                        c.arg(scripts::PUBLISH_PLAIN).arg(1).arg(keys.meta(channel));
                        c
                    }
                };
                cmd.arg(keys.pubsub(channel))
                    .arg(envelope::encode_plain(&shared.node_id, json));
                cmd
            }
            Job::Send { envelope, .. } => {
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(keys.everyone()).arg(&envelope[..]);
                cmd
            }
            Job::Read {
                channel,
                since,
                limit,
                history,
                ..
            } => {
                // Past u64::MAX nothing can follow: ask for nothing.
                let (first, limit) = match since {
                    None => (String::new(), *limit),
                    Some(s) => match s.checked_add(1) {
                        Some(f) => (f.to_string(), *limit),
                        None => (String::new(), 0),
                    },
                };
                let mut cmd = script(Scripts::read_sha, scripts::READ);
                cmd.arg(keys.meta(channel))
                    .arg(keys.stream(channel))
                    .arg(random_alnum(EPOCH_LEN))
                    .arg(ms(history.meta_ttl.max(history.ttl)))
                    .arg(first)
                    .arg(limit);
                cmd
            }
        }
    }
}

/// Whether a reply says the script is not loaded.
pub(crate) fn is_noscript(reply: &RedisResult<Value>) -> bool {
    match reply {
        Err(e) => e.code() == Some("NOSCRIPT"),
        Ok(Value::ServerError(e)) => e.code() == "NOSCRIPT",
        Ok(_) => false,
    }
}

/// The hub's answer to `job` from its reply.
pub(crate) fn answer(shared: &Shared, job: Job, reply: RedisResult<Value>) -> BrokerInput {
    let reply = match reply {
        Ok(Value::ServerError(_)) | Err(_) => return failure(shared, job),
        Ok(v) => v,
    };
    match job {
        Job::Publish { id, history, .. } => {
            let result = match history {
                Some(h) if h.size > 0 => position(&reply).map(Some),
                _ => matches!(reply, Value::Int(_)).then_some(None),
            };
            match result {
                Some(position) => {
                    shared.counters.publishes.fetch_add(1, Relaxed);
                    BrokerInput::Published {
                        id,
                        result: Ok(position),
                    }
                }
                None => {
                    shared.counters.publish_failures.fetch_add(1, Relaxed);
                    BrokerInput::Published {
                        id,
                        result: Err(BrokerError::Unavailable),
                    }
                }
            }
        }
        Job::Read { read, limit, .. } => BrokerInput::HistoryRead {
            read,
            result: page(&reply, limit).ok_or(READ_FAILED),
        },
        Job::Send { id, .. } if matches!(reply, Value::Int(_)) => {
            shared.counters.publishes.fetch_add(1, Relaxed);
            BrokerInput::Published {
                id,
                result: Ok(None),
            }
        }
        job @ Job::Send { .. } => failure(shared, job),
    }
}

/// The error answer to `job`.
pub(crate) fn failure(shared: &Shared, job: Job) -> BrokerInput {
    match job {
        Job::Publish { id, .. } | Job::Send { id, .. } => {
            shared.counters.publish_failures.fetch_add(1, Relaxed);
            BrokerInput::Published {
                id,
                result: Err(BrokerError::Unavailable),
            }
        }
        Job::Read { read, .. } => BrokerInput::HistoryRead {
            read,
            result: Err(READ_FAILED),
        },
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => core::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => core::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// `{top, epoch}` as the scripts return it.
fn stream_position(top: &Value, epoch: &Value) -> Option<StreamPosition> {
    let epoch = text(epoch).filter(|e| valid_epoch(e))?;
    Some(StreamPosition {
        offset: int(top)?,
        epoch: epoch.to_string(),
    })
}

fn position(reply: &Value) -> Option<StreamPosition> {
    match reply {
        Value::Array(v) if v.len() == 2 => stream_position(&v[0], &v[1]),
        _ => None,
    }
}

/// `{top, epoch, id1, json1, ...}` as the read script returns it; each JSON
/// positioned as the hub's in-memory store keeps it.
fn page(reply: &Value, limit: usize) -> Option<HistoryPage> {
    let Value::Array(v) = reply else {
        return None;
    };
    if v.len() < 2 || v.len() % 2 != 0 || (v.len() - 2) / 2 > limit {
        return None;
    }
    let position = stream_position(&v[0], &v[1])?;
    let mut publications = Vec::with_capacity((v.len() - 2) / 2);
    for pair in v[2..].chunks_exact(2) {
        let id = text(&pair[0])?;
        let offset: u64 = id.strip_suffix("-0")?.parse().ok()?;
        let Value::BulkString(json) = &pair[1] else {
            return None;
        };
        let json = positioned_json(json, offset, None)?;
        publications.push(Publication {
            offset,
            json: json.into(),
        });
    }
    Some(HistoryPage {
        position,
        publications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn page_is_positioned() {
        let reply = Value::Array(vec![
            Value::Int(3),
            bulk("Ep0ch1"),
            bulk("3-0"),
            bulk(r#"{"a":1}"#),
        ]);
        let p = page(&reply, 10).unwrap();
        assert_eq!(
            p.position,
            StreamPosition {
                offset: 3,
                epoch: "Ep0ch1".into()
            }
        );
        assert_eq!(&p.publications[0].json[..], br#"{"a":1,"offset":3}"#);
    }

    #[test]
    fn wrong_shapes_are_none() {
        for reply in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![Value::Int(-1), bulk("e")]),
            Value::Array(vec![Value::Int(3), bulk("bad epoch!")]),
            Value::Array(vec![Value::Int(3), bulk("e"), bulk("x-0"), bulk("{}")]),
            Value::Array(vec![Value::Int(3), bulk("e"), bulk("3-0"), bulk("[]")]),
            Value::Array(vec![Value::Int(3), bulk("e"), bulk("3-0"), Value::Nil]),
            Value::Array(vec![Value::Int(3), bulk("e"), bulk("3-0")]),
        ] {
            assert_eq!(page(&reply, 10), None, "{reply:?}");
        }
        assert_eq!(
            page(
                &Value::Array(vec![Value::Int(3), bulk("e"), bulk("3-0"), bulk("{}")]),
                0
            ),
            None
        );
        assert_eq!(position(&Value::Array(vec![bulk("x"), bulk("e")])), None);
    }
}
