//! What the driver needs to reach Redis, and the check that runs before any
//! thread starts.

use core::fmt;
use std::time::Duration;

/// How to reach Redis and how patiently.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host[:port][/db]`, or
    /// `redis+cluster://[:password@]host:port,host:port,...` for Redis
    /// Cluster. May hold a password: never shown by `Debug` or any error.
    pub url: String,
    /// This node's id; `None`: 16 random hex chars, new per process start.
    pub node_id: Option<String>,
    /// Prefix of every key and pub/sub channel (`wshub`).
    pub prefix: String,
    /// Longest wait for a TCP connection (1 s).
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer (1 s).
    pub response_timeout: Duration,
    /// The pub/sub link is PINGed this often (2 s); one that answers no PING
    /// within one more interval is rebuilt.
    pub probe_interval: Duration,
    /// First reconnect delay (100 ms); it doubles, with jitter, per failure.
    pub reconnect_min: Duration,
    /// Longest reconnect delay (2 s).
    pub reconnect_max: Duration,
    /// A presence or node entry lives this long past its last refresh (15 s),
    /// so a crashed node leaves no ghost for longer.
    pub presence_ttl: Duration,
    /// Live presence and node entries are refreshed this often (5 s).
    pub presence_refresh: Duration,
    /// Publications read together are handed to the hub as one batch of at
    /// most this many (64): set it to the hub's
    /// `HubConfig::commands_per_round()`, so a batch never queues more per
    /// connection than a round may.
    pub max_batch: usize,
}

impl RedisConfig {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            node_id: None,
            prefix: "wshub".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(15),
            presence_refresh: Duration::from_secs(5),
            max_batch: 64,
        }
    }

    /// Checks the URL and the settings without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connection_infos().map(|_| ())?;
        if let Some(id) = &self.node_id {
            if !valid_node_id(id) {
                return Err(ConfigError::NodeId);
            }
        }
        // A brace would change the keys' hash tags (and so their Cluster slots).
        let fits = |b: u8| b.is_ascii_graphic() && b != b'{' && b != b'}';
        if self.prefix.is_empty() || !self.prefix.bytes().all(fits) {
            return Err(ConfigError::Prefix);
        }
        let zero = [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("probe_interval", self.probe_interval),
            ("reconnect_min", self.reconnect_min),
            ("presence_refresh", self.presence_refresh),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Duration(name));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::Batch);
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(ConfigError::Duration("reconnect_max"));
        }
        if self.presence_ttl <= self.presence_refresh {
            return Err(ConfigError::Duration("presence_ttl"));
        }
        Ok(())
    }

    /// The parsed URL: one node for `redis://`, the seed nodes and `true`
    /// for `redis+cluster://[auth@]host:port,host:port,...`.
    pub(crate) fn connection_infos(
        &self,
    ) -> Result<(Vec<redis::ConnectionInfo>, bool), ConfigError> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or(ConfigError::Scheme("none of redis://, redis+cluster://"))?;
        match scheme {
            "redis" => Ok((vec![parse_node(&self.url)?], false)),
            "redis+cluster" => {
                // The credentials, written once before the first node, hold for all.
                let (auth, hosts) = match rest.rfind('@') {
                    Some(at) => (&rest[..=at], &rest[at + 1..]),
                    None => ("", rest),
                };
                let infos = hosts
                    .split(',')
                    .map(|h| parse_node(&format!("redis://{auth}{h}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((infos, true))
            }
            "rediss" => Err(ConfigError::Scheme("rediss (TLS is not built in yet)")),
            _ => Err(ConfigError::Scheme("none of redis://, redis+cluster://")),
        }
    }
}

fn parse_node(url: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    // The parser's own error text may quote the URL: never show it.
    let info =
        redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| ConfigError::Url)?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) if !host.is_empty() => Ok(info),
        _ => Err(ConfigError::Url),
    }
}

/// `url` with anything before its last `@` (user and password) shown as
/// `***`: safe to log even when the password holds a `/` unencoded.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("probe_interval", &self.probe_interval)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("presence_ttl", &self.presence_ttl)
            .field("presence_refresh", &self.presence_refresh)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

/// Node ids go into envelopes and presence members split on spaces and
/// colons, so neither may appear.
pub(crate) fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Why a [`RedisConfig`] cannot be used. Never carries the URL's password.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL's scheme is not `redis://` or `redis+cluster://`.
    Scheme(&'static str),
    /// The URL does not parse as `redis://host[:port][/db]`.
    Url,
    /// The node id is not 1..=64 of `[A-Za-z0-9._-]`.
    NodeId,
    /// The prefix is empty or holds spaces, braces or control characters.
    Prefix,
    /// This duration is zero or out of order with another.
    Duration(&'static str),
    /// `max_batch` is zero.
    Batch,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Scheme(what) => {
                write!(f, "broker URL scheme is {what}: expected redis://host:port")
            }
            ConfigError::Url => f.write_str(
                "broker URL is not redis://[:password@]host[:port][/db] or redis+cluster://[:password@]host:port,host:port",
            ),
            ConfigError::NodeId => f.write_str("node id must be 1..=64 of [A-Za-z0-9._-]"),
            ConfigError::Prefix => f.write_str("key prefix must be non-empty printable ASCII without braces"),
            ConfigError::Duration(name) => write!(
                f,
                "{name} must be non-zero (reconnect_max >= reconnect_min, presence_ttl > presence_refresh)"
            ),
            ConfigError::Batch => f.write_str("max_batch must be at least 1"),
        }
    }
}

impl std::error::Error for ConfigError {}
