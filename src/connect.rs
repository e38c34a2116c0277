//! What `wshub sub` and `wshub pub` share: the server URL, the token and
//! where it goes, and the client configuration built from them.
//!
//! The token comes from `--token TOKEN` or the environment variable
//! `WSHUB_TOKEN` (which keeps it out of shell history and `ps`), and goes in
//! the upgrade request as `?token=` (what `wshub serve` and browsers use) or,
//! with `--bearer`, as `Authorization: Bearer`. It is never printed: errors
//! and logs name the server by `host:port` only, since the URL itself may
//! carry a credential in its query.

use std::path::PathBuf;
use std::time::Duration;

use wshub_core::client::{ClientConfig, Endpoint, EndpointError, TokenPlacement};
use wshub_core::Secret;

use crate::cli::CliError;

/// The environment variable read for the client token.
pub const TOKEN_ENV: &str = "WSHUB_TOKEN";

/// Where to connect and with which credential.
#[derive(Debug, PartialEq)]
pub struct Target {
    /// The server's WebSocket endpoint (`ws://`; `Debug` redacts its query).
    pub endpoint: Endpoint,
    /// The client token, if any (`Debug` prints `<redacted>`).
    pub token: Option<Secret>,
    /// `--bearer`: send it as `Authorization: Bearer` instead of `?token=`.
    pub bearer: bool,
    /// `--ca-file`: the CAs a `wss://` server's certificate must chain to
    /// (checked readable at parse time); else the webpki roots.
    pub ca_file: Option<PathBuf>,
}

impl Target {
    /// `host:port` for messages (never the URL: its query may hold a token).
    pub fn server(&self) -> String {
        let host = if self.endpoint.host.contains(':') {
            format!("[{}]", self.endpoint.host)
        } else {
            self.endpoint.host.clone()
        };
        format!("{host}:{}", self.endpoint.port)
    }

    /// A client configuration for this target: the token in place, a short
    /// close timeout (a command line tool should not linger).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(vec![self.endpoint.clone()]);
        cfg.token = self.token.clone().map(|t| {
            let placement = if self.bearer {
                TokenPlacement::Bearer
            } else {
                TokenPlacement::Query("token".into())
            };
            (t, placement)
        });
        cfg.close_timeout = Duration::from_secs(2);
        cfg.ca_file = self.ca_file.clone();
        cfg
    }
}

/// Parses the server URL argument: `ws://host[:port]/path[?query]` or
/// `wss://...` (TLS).
pub fn parse_url(url: &str) -> Result<Endpoint, CliError> {
    match Endpoint::parse(url) {
        Ok(e) => Ok(e),
        // The messages never include the URL (it may hold a token).
        Err(EndpointError::Scheme) => Err(CliError(
            "URL: expected ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH (for `wshub serve`: \
             ws://ADDR/ws)"
                .into(),
        )),
        Err(e) => Err(CliError(format!("URL: {e}"))),
    }
}

/// The flags `sub` and `pub` share.
#[derive(clap::Args, Debug)]
pub(crate) struct ClientArgs {
    /// Client token [default: the WSHUB_TOKEN environment variable].
    #[arg(long, value_name = "TOKEN", value_parser = non_empty_token, allow_hyphen_values = true)]
    token: Option<String>,
    /// Send the token as Authorization: Bearer (default: ?token=).
    #[arg(long)]
    bearer: bool,
    /// For wss:// URLs: trust the CA certificates in this PEM file (a
    /// private CA) instead of the built-in web roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// Checks `--ca-file` (readable, with a certificate): a bad one is a bad
/// argument naming the flag.
pub(crate) fn check_ca_file(ca_file: Option<PathBuf>) -> Result<Option<PathBuf>, CliError> {
    if let Some(path) = &ca_file {
        wshub_tls::Connector::new(Some(path)).map_err(|e| CliError(format!("--ca-file: {e}")))?;
    }
    Ok(ca_file)
}

/// The error never shows the value: it is a credential.
fn non_empty_token(t: &str) -> Result<String, String> {
    if t.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(t.to_owned())
    }
}

impl ClientArgs {
    /// The target at `url`, the token from the flag or else from `env`.
    pub(crate) fn target(
        self,
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Target, CliError> {
        Ok(Target {
            endpoint: parse_url(url)?,
            token: token_or_env(self.token.map(Secret::new), env),
            bearer: self.bearer,
            ca_file: check_ca_file(self.ca_file)?,
        })
    }
}

/// The token from the flag, else from [`TOKEN_ENV`] (ignored when empty).
pub(crate) fn token_or_env(
    token: Option<Secret>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Secret> {
    token.or_else(|| env(TOKEN_ENV).filter(|t| !t.is_empty()).map(Secret::new))
}

/// Parses DATA: JSON if it parses, else the text as a JSON string.
pub fn parse_data(data: &str) -> serde_json::Value {
    serde_json::from_str(data).unwrap_or_else(|_| serde_json::Value::String(data.to_owned()))
}

/// A message the server sent, as one line of JSON in the protocol's field
/// order: `type`, `channel`, `processId`, `data`, `timestamp`, `id` (the
/// fields the client reads; absent ones are left out, `data` is always
/// there).
pub fn message_line(m: &wshub_core::client::ServerMessage) -> String {
    // `Value`'s `Display` is compact JSON, strings quoted and escaped.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = format!("{{\"type\":{}", q(&m.kind));
    if let Some(c) = &m.channel {
        out.push_str(&format!(",\"channel\":{}", q(c)));
    }
    if let Some(p) = &m.process_id {
        out.push_str(&format!(",\"processId\":{}", q(p)));
    }
    out.push_str(&format!(",\"data\":{}", m.data));
    if let Some(t) = &m.timestamp {
        out.push_str(&format!(",\"timestamp\":{}", q(t)));
    }
    if let Some(id) = &m.id {
        out.push_str(&format!(",\"id\":{id}"));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = parse_url("ws://127.0.0.1:9/ws?token=abc").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 9));
        let e = parse_url("wss://h/ws").unwrap();
        assert!(e.tls && e.port == 443, "{e:?}");
        let err = parse_url("https://h/ws").unwrap_err();
        assert!(err.0.contains("wss://"), "{err}");
        let err = parse_url("http://h:1/?token=s3cret").unwrap_err();
        assert!(!err.0.contains("s3cret"), "{err}");
        assert!(parse_url("ws://h:0/ws").is_err());
    }

    #[test]
    fn data_is_json_when_it_parses() {
        assert_eq!(parse_data(r#"{"x":1}"#), serde_json::json!({"x": 1}));
        assert_eq!(parse_data("42"), serde_json::json!(42));
        assert_eq!(parse_data("hello"), serde_json::json!("hello"));
        assert_eq!(parse_data("{oops"), serde_json::json!("{oops"));
    }

    #[test]
    fn token_from_flag_then_env() {
        let env = |k: &str| (k == TOKEN_ENV).then(|| "from-env".to_string());
        let flag = Some(Secret::new("from-flag"));
        assert_eq!(token_or_env(flag.clone(), &env), flag);
        assert_eq!(token_or_env(None, &env), Some(Secret::new("from-env")));
        assert_eq!(token_or_env(None, &|_| Some(String::new())), None);
    }

    #[test]
    fn message_lines_keep_the_protocol_order() {
        let m = wshub_core::client::ServerMessage {
            kind: "process_output".into(),
            channel: Some("process:1".into()),
            process_id: Some("1".into()),
            data: serde_json::json!({"b": 1, "a": "x\ny"}),
            timestamp: Some("2026-01-01T00:00:00Z".into()),
            id: None,
        };
        let line = message_line(&m);
        assert_eq!(
            line,
            r#"{"type":"process_output","channel":"process:1","processId":"1","data":{"a":"x\ny","b":1},"timestamp":"2026-01-01T00:00:00Z"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["data"]["a"], "x\ny");
    }

    #[test]
    fn target_debug_hides_the_token() {
        let t = Target {
            endpoint: parse_url("ws://h:1/ws?token=inurl").unwrap(),
            token: Some(Secret::new("s3cret")),
            bearer: false,
            ca_file: None,
        };
        let shown = format!("{t:?} {}", t.server());
        assert!(
            !shown.contains("s3cret") && !shown.contains("inurl"),
            "{shown}"
        );
        assert_eq!(t.server(), "h:1");
    }
}
