//! Hub configuration: limits, timers and pluggable decisions.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use crate::auth::{AllowAll, Authenticator};
use crate::history::HistoryConfig;
use crate::request::Identity;

/// Decides who may subscribe and publish to which channel.
///
/// The default allows every subscribe and refuses every client publish
/// (PROTOCOL.md level 1).
pub trait ChannelPolicy: Send + Sync {
    /// May `who` subscribe to `channel`?
    fn can_subscribe(&self, who: &Identity, channel: &str) -> bool {
        let _ = (who, channel);
        true
    }
    /// May `who` publish to `channel` from the client side?
    fn can_publish(&self, who: &Identity, channel: &str) -> bool {
        let _ = (who, channel);
        false
    }
}

/// Allows every subscribe, refuses every client publish.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPolicy;

impl ChannelPolicy for DefaultPolicy {}

/// Allows every subscribe, and client publishes to channels matching any of a
/// list of `*` glob patterns (`chat:*`, `*`).
#[derive(Clone, Debug, Default)]
pub struct PublishPatterns {
    patterns: Vec<String>,
}

impl PublishPatterns {
    /// Channels matching any pattern accept client publishes.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        PublishPatterns {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }
}

impl ChannelPolicy for PublishPatterns {
    fn can_publish(&self, _who: &Identity, channel: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, channel))
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What the hub does with client messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The pub/sub protocol of PROTOCOL.md.
    #[default]
    Hub,
    /// Echo every text and binary message back (conformance testing).
    Echo,
}

/// Everything a hub can be told; every limit has PROTOCOL.md's default.
#[derive(Clone)]
pub struct HubConfig {
    /// Paths served; empty serves every path. Default `["/ws"]`.
    pub paths: Vec<String>,
    /// Subprotocols we speak, in preference order.
    pub subprotocols: Vec<String>,
    /// Headers that must be present and non-empty (else 400).
    pub required_headers: Vec<String>,
    /// Allowed `Origin` values; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// Decides on each upgrade request.
    pub authenticator: Arc<dyn Authenticator>,
    /// Decides subscribe and client publish per identity and channel.
    pub policy: Arc<dyn ChannelPolicy>,
    /// Hub protocol or echo.
    pub mode: Mode,
    /// Client message types handed to the application as
    /// [`crate::Event::Message`] (`"*"` = every type the hub does not handle).
    pub app_types: Vec<String>,
    /// Handshake request size cap (431 past it).
    pub max_request_bytes: usize,
    /// Header count cap (400 past it).
    pub max_headers: usize,
    /// Connect to 101, deferred auth included; for a plain HTTP request,
    /// connect (or the last kept-alive answer) to the answer.
    pub handshake_timeout: Duration,
    /// Largest message after reassembly (close 1009 past it).
    pub max_message_size: usize,
    /// Outbound queue cap in messages (close 1013 past it).
    pub max_queued_messages: usize,
    /// Outbound queue cap in bytes (close 1013 past it).
    pub max_queued_bytes: usize,
    /// Output pending with no write progress this long: close 1013.
    pub write_timeout: Duration,
    /// Server ping interval.
    pub ping_interval: Duration,
    /// Nothing received for this long: the connection is dropped.
    pub pong_timeout: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Longest channel name in bytes.
    pub max_channel_name: usize,
    /// Open and pending connections (503 past it).
    pub max_connections: usize,
    /// Invalid messages (bad JSON, unknown types) tolerated before close 1008.
    pub max_invalid_messages: u32,
    /// Frames a client may send in any one-second window (messages, pings,
    /// pongs; fragments count once per message): close 1008 past it. 0 turns
    /// the limit off (echo mode for conformance suites does). Without it a
    /// client that reads its pongs could keep the hub busy answering pings
    /// and cost every other connection latency.
    pub max_messages_per_second: u32,
    /// Largest number of frames one `poll_transmit` hands out for a connection.
    pub max_frames_per_transmit: usize,
    /// Hand plain HTTP requests to the application as
    /// [`crate::Event::HttpRequest`] instead of refusing them (an HTTP API on
    /// the WebSocket port). Off by default.
    ///
    /// Connections persist (HTTP/1.1 keep-alive): an answer to a request
    /// without `Connection: close` leaves the connection open for the next
    /// request, which may also be a WebSocket upgrade. It is read once the
    /// answer is written; pipelined requests wait (at most
    /// `max_request_bytes` of them: more while an answer is queued is
    /// refused with 400, more while the application is still answering
    /// makes that answer close) and are answered in order. The next request
    /// has `handshake_timeout` to arrive and be answered, counted from when
    /// the last answer was written (an idle connection is then closed
    /// silently); the head and body limits apply to every request.
    /// Refusals, the last of `max_http_requests_per_connection` answers and
    /// answers during shutdown say `Connection: close` and end it. HTTP/1.0
    /// requests are refused (400) as before.
    pub http_fallback: bool,
    /// Largest plain-HTTP request body (413 past it).
    pub max_http_body: usize,
    /// Plain HTTP requests answered on one connection: the answer to the
    /// last says `Connection: close` and ends it, so that no client holds
    /// one connection forever. 1 closes after every answer. Default 100.
    pub max_http_requests_per_connection: u32,
    /// Which channels keep a history of recent publications, and the caps.
    /// On by default (every channel, 100 publications, 5 minutes, 64 MiB in
    /// all), so a reconnecting client loses nothing with no setting;
    /// [`HistoryConfig::off`] turns it off.
    pub history: HistoryConfig,
    /// Randomness for channel epochs. Drivers fill it from the OS; the hub
    /// also mixes in the `unix_now` given to [`crate::Hub::new`], so two hubs
    /// started at different times never share an epoch even with seed 0.
    pub seed: u64,
    /// Positions and history come from an external store (a broker shared
    /// by several hubs) instead of the in-memory one: publications with
    /// their positions arrive through [`crate::Hub::publish_positioned`],
    /// and a subscribe with `recover` / `history` / `positions` asks the
    /// driver with [`crate::Event::HistoryRead`]. `Hub::publish` then reaches
    /// plain subscribers only, and `Hub::history` answers `NoHistory` (read
    /// the store). Off by default.
    pub external_history: bool,
    /// Many nodes share a broker ([`crate::broker`]): every publish goes to
    /// it and comes back from it, numbered, to every node holding the
    /// channel; positions and history come from it (as with
    /// `external_history`, which this implies). The adapter needs a
    /// [`crate::broker::BrokerLink`]. Off by default.
    pub broker: bool,
    /// With `broker`: publishes waiting for the broker's answer, at most;
    /// past it a publish is refused (`unavailable`), never queued without
    /// bound.
    pub max_broker_publishes: usize,
}

impl HubConfig {
    /// [`crate::Hub::commands_per_round`] for this configuration: also the
    /// largest batch a broker driver should hand on at once
    /// ([`crate::broker::BrokerInput::Batch`]), so one batch can never fill
    /// a connection's queue past its cap before a byte is written.
    pub fn commands_per_round(&self) -> usize {
        (self.max_queued_messages / 4).clamp(1, crate::write_queue::MAX_SLICES)
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            paths: vec!["/ws".to_owned()],
            subprotocols: Vec::new(),
            required_headers: Vec::new(),
            allowed_origins: Vec::new(),
            authenticator: Arc::new(AllowAll),
            policy: Arc::new(DefaultPolicy),
            mode: Mode::Hub,
            app_types: Vec::new(),
            max_request_bytes: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_queued_messages: 256,
            max_queued_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
            max_subscriptions: 1024,
            max_channel_name: 256,
            max_connections: 100_000,
            max_invalid_messages: 100,
            max_messages_per_second: 1000,
            max_frames_per_transmit: 64,
            http_fallback: false,
            max_http_body: 64 * 1024,
            max_http_requests_per_connection: 100,
            history: HistoryConfig::default(),
            seed: 0,
            external_history: false,
            broker: false,
            max_broker_publishes: 10_000,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid hub config: {} {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl HubConfig {
    /// Checks that limits are usable; the hub refuses a config that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem| Err(ConfigError { field, problem });
        if self.max_request_bytes < 64 {
            return err("max_request_bytes", "must be at least 64");
        }
        if self.max_headers == 0 || self.max_headers > 1024 {
            return err("max_headers", "must be in 1..=1024");
        }
        if self.broker && self.max_broker_publishes == 0 {
            return err("max_broker_publishes", "must be positive with a broker");
        }
        if self.max_message_size == 0 {
            return err("max_message_size", "must be positive");
        }
        if self.max_queued_messages == 0 {
            return err("max_queued_messages", "must be positive");
        }
        if self.max_queued_bytes < 256 {
            return err("max_queued_bytes", "must be at least 256");
        }
        if self.max_channel_name == 0 {
            return err("max_channel_name", "must be positive");
        }
        if self.max_frames_per_transmit == 0 {
            return err("max_frames_per_transmit", "must be positive");
        }
        if self.max_http_requests_per_connection == 0 {
            return err("max_http_requests_per_connection", "must be positive");
        }
        for (field, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("write_timeout", self.write_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("close_timeout", self.close_timeout),
        ] {
            if d.is_zero() {
                return err(field, "must be positive");
            }
        }
        if self.history.max_replay == 0 {
            return err("history.max_replay", "must be positive");
        }
        if self
            .history
            .rules
            .iter()
            .any(|r| r.size > 0 && r.ttl.is_zero())
        {
            return err(
                "history.rules",
                "a rule that keeps history needs a positive ttl",
            );
        }
        if self.pong_timeout <= self.ping_interval {
            return err("pong_timeout", "must be longer than ping_interval");
        }
        Ok(())
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("paths", &self.paths)
            .field("subprotocols", &self.subprotocols)
            .field("required_headers", &self.required_headers)
            .field("allowed_origins", &self.allowed_origins)
            .field("mode", &self.mode)
            .field("app_types", &self.app_types)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_headers", &self.max_headers)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("write_timeout", &self.write_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("max_subscriptions", &self.max_subscriptions)
            .field("max_channel_name", &self.max_channel_name)
            .field("max_connections", &self.max_connections)
            .field("max_invalid_messages", &self.max_invalid_messages)
            .field("max_messages_per_second", &self.max_messages_per_second)
            .field("http_fallback", &self.http_fallback)
            .field("max_http_body", &self.max_http_body)
            .field(
                "max_http_requests_per_connection",
                &self.max_http_requests_per_connection,
            )
            .field("history", &self.history)
            .field("external_history", &self.external_history)
            .field("broker", &self.broker)
            .field("max_broker_publishes", &self.max_broker_publishes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("chat:*", "chat:room"));
        assert!(!glob_match("chat:*", "chatroom"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn policy_defaults_and_patterns() {
        let who = Identity::user("u");
        assert!(DefaultPolicy.can_subscribe(&who, "x"));
        assert!(!DefaultPolicy.can_publish(&who, "x"));
        let p = PublishPatterns::new(["chat:*"]);
        assert!(p.can_publish(&who, "chat:1"));
        assert!(!p.can_publish(&who, "news"));
    }

    #[test]
    fn validate_rejects_unusable_values() {
        assert_eq!(HubConfig::default().validate(), Ok(()));
        let c = HubConfig {
            pong_timeout: Duration::from_secs(1),
            ..HubConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "pong_timeout");
        let c = HubConfig {
            max_message_size: 0,
            ..HubConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_message_size");
    }
}
