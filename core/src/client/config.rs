//! The client's configuration and its validation.

use std::fmt;
use std::time::Duration;

use super::Endpoint;
#[cfg(doc)]
use super::{Client, ClientEvent, SendError};
use crate::backoff::BackoffPolicy;
use crate::handshake::http::{is_token, reserved_header};
use crate::request::Secret;

/// Where the token goes in the upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `?<param>=<token>` appended to the request target (percent-encoded),
    /// as browsers must do.
    Query(String),
}

/// Everything a [`Client`] can be told. Build with [`ClientConfig::new`] and
/// adjust fields; [`Client::new`] validates.
///
/// `Debug` shows header names but not their values, and never the token.
#[derive(Clone)]
pub struct ClientConfig {
    /// Servers, in order of preference; at least one.
    pub endpoints: Vec<Endpoint>,
    /// The reconnect schedule (go-ws defaults, full jitter).
    pub backoff: BackoffPolicy,
    /// A credential and where to put it.
    pub token: Option<(Secret, TokenPlacement)>,
    /// Extra request headers (`Origin`, a tenant id). Names the handshake
    /// owns (`Host`, `Upgrade`, `Connection`, `Sec-WebSocket-*`, framing
    /// headers) are refused; so is `Authorization` with a bearer token.
    pub headers: Vec<(String, String)>,
    /// Subprotocols offered, in preference order.
    pub subprotocols: Vec<String>,
    /// How often to send an application-level `{"type":"ping"}` while
    /// connected, so that a quiet connection still hears from the server.
    /// Zero disables it. Default 30 s.
    pub ping_interval: Duration,
    /// Nothing at all received for this long: the server is presumed dead,
    /// the socket dropped and a reconnect scheduled. Zero disables it.
    /// Default 75 s (two missed pings and some slack).
    pub dead_timeout: Duration,
    /// From [`ClientEvent::Connect`] to a valid 101 (TCP, TLS and the
    /// upgrade). Default 10 s, the hub's handshake timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the replies to re-sent subscriptions before
    /// reporting them as unconfirmed. Default 10 s.
    pub ack_timeout: Duration,
    /// After [`Client::close`], how long to wait for the server's close
    /// reply before dropping the socket. Default 5 s.
    pub close_timeout: Duration,
    /// Largest message accepted from the server (close 1009 past it) and
    /// sent to it ([`SendError::TooLarge`]). Default 64 KiB, go-ws's limit.
    pub max_message_size: usize,
    /// Largest handshake response head (status line and headers). Default 16 KiB.
    pub max_response_bytes: usize,
    /// Messages kept while disconnected: 0 (default) refuses them with
    /// [`SendError::NotConnected`] as go-ws does; more keeps that many,
    /// sent in order after the next connect.
    pub offline_queue: usize,
    /// Resume subscriptions where they left off (on by default): the first
    /// subscribe of a channel asks for stream positions
    /// (`"positions":true`), every resubscribe after a reconnect or a
    /// failover asks to `recover` from the last position, and live gaps and
    /// duplicates are repaired (see [`ClientEvent::Recovered`] and
    /// [`ClientEvent::RecoveryFailed`]). Off, subscribes are exactly the
    /// plain level-1 ones and messages are handed on as they come.
    pub recovery: bool,
    /// For `wss://` endpoints: a PEM file of the certificate authorities to
    /// trust instead of the built-in web roots (a private CA). The drivers
    /// read it when the client starts; an unreadable file or one without a
    /// certificate fails the start. `None` (default): the webpki roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl ClientConfig {
    /// Defaults for everything but the endpoints.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        ClientConfig {
            endpoints,
            backoff: BackoffPolicy::default(),
            token: None,
            headers: Vec::new(),
            subprotocols: Vec::new(),
            ping_interval: Duration::from_secs(30),
            dead_timeout: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_message_size: 64 * 1024,
            max_response_bytes: 16 * 1024,
            offline_queue: 0,
            recovery: true,
            ca_file: None,
        }
    }

    /// Checks that the configuration can work; [`Client::new`] refuses one
    /// that does not.
    pub fn validate(&self) -> Result<(), ClientConfigError> {
        let err = |field, problem| Err(ClientConfigError { field, problem });
        if self.endpoints.is_empty() {
            return err("endpoints", "must not be empty");
        }
        if self.endpoints.iter().any(|e| e.validate().is_err()) {
            return err(
                "endpoints",
                "holds an invalid endpoint (see Endpoint::validate)",
            );
        }
        if self.backoff.validate().is_err() {
            return err(
                "backoff",
                "is not a valid policy (see BackoffPolicy::validate)",
            );
        }
        if self.connect_timeout.is_zero() {
            return err("connect_timeout", "must be positive");
        }
        if self.ack_timeout.is_zero() {
            return err("ack_timeout", "must be positive");
        }
        if self.close_timeout.is_zero() {
            return err("close_timeout", "must be positive");
        }
        if !self.ping_interval.is_zero()
            && !self.dead_timeout.is_zero()
            && self.dead_timeout <= self.ping_interval
        {
            // A quiet but healthy server answers our ping only after it
            // arrives: a dead timeout within one ping interval would kill it.
            return err("dead_timeout", "must exceed ping_interval");
        }
        if self.max_message_size == 0 {
            return err("max_message_size", "must be positive");
        }
        if self.max_response_bytes < 256 {
            return err("max_response_bytes", "must be at least 256");
        }
        if self.subprotocols.iter().any(|p| !is_token(p.as_bytes())) {
            return err("subprotocols", "must be HTTP tokens");
        }
        let bearer = matches!(self.token, Some((_, TokenPlacement::Bearer)));
        for (name, value) in &self.headers {
            if !is_token(name.as_bytes()) {
                return err("headers", "a header name is not an HTTP token");
            }
            if value.bytes().any(|b| b != b'\t' && b.is_ascii_control()) {
                // A CR or LF would let a value forge headers of its own.
                return err("headers", "a header value has a control character");
            }
            if reserved_header(name, Some("host")) {
                return err("headers", "a header the handshake sets itself was given");
            }
            if bearer && name.eq_ignore_ascii_case("authorization") {
                return err("headers", "Authorization given with a bearer token");
            }
        }
        match &self.token {
            None => {}
            Some((secret, TokenPlacement::Bearer)) => {
                let t = secret.expose();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return err(
                        "token",
                        "a bearer token must be visible ASCII without spaces",
                    );
                }
            }
            Some((secret, TokenPlacement::Query(param))) => {
                if secret.expose().is_empty() {
                    return err("token", "must not be empty");
                }
                if param.is_empty() || !param.bytes().all(is_unreserved) {
                    return err(
                        "token",
                        "the query parameter name must be unreserved characters",
                    );
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials (a cookie, an API key): names only.
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        let token = self.token.as_ref().map(|(s, p)| (s, p));
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("backoff", &self.backoff)
            .field("token", &token)
            .field("headers", &header_names)
            .field("subprotocols", &self.subprotocols)
            .field("ping_interval", &self.ping_interval)
            .field("dead_timeout", &self.dead_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("offline_queue", &self.offline_queue)
            .field("recovery", &self.recovery)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A configuration value that cannot work. The message never includes the
/// token or a header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid client config: {} {}", self.field, self.problem)
    }
}

impl std::error::Error for ClientConfigError {}

pub(super) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_refuses_header_injection_and_conflicts() {
        let base = || ClientConfig::new(vec![Endpoint::parse("ws://h/ws").unwrap()]);
        assert_eq!(base().validate(), Ok(()));
        let field = |c: ClientConfig| c.validate().unwrap_err().field;

        let mut c = base();
        c.headers = vec![("X-A".into(), "ok\r\nEvil: 1".into())];
        assert_eq!(field(c), "headers");
        let mut c = base();
        c.headers = vec![("Sec-WebSocket-Key".into(), "x".into())];
        assert_eq!(field(c), "headers");
        let mut c = base();
        c.headers = vec![("Authorization".into(), "Basic x".into())];
        c.token = Some((Secret::new("t"), TokenPlacement::Bearer));
        assert_eq!(field(c), "headers");
        let mut c = base();
        c.token = Some((Secret::new("has space"), TokenPlacement::Bearer));
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "token");
        assert!(!e.to_string().contains("has space"));
        let mut c = base();
        c.token = Some((Secret::new("t"), TokenPlacement::Query("a b".into())));
        assert_eq!(field(c), "token");
        let mut c = base();
        c.endpoints.clear();
        assert_eq!(field(c), "endpoints");
        let mut c = base();
        c.endpoints[0].path_and_query = "/x y".into();
        assert_eq!(field(c), "endpoints");
        let mut c = base();
        c.dead_timeout = c.ping_interval;
        assert_eq!(field(c), "dead_timeout");
        let mut c = base();
        c.subprotocols = vec!["a,b".into()];
        assert_eq!(field(c), "subprotocols");
        let mut c = base();
        c.backoff.initial = Duration::ZERO;
        assert_eq!(field(c), "backoff");
    }
}
