//! `wshub pub URL CHANNEL DATA`: publishes one message and reports whether
//! the server took it.
//!
//! Two ways, both without an async runtime:
//!
//! - **as a client** (the default): connects with the reconnecting client
//!   ([`wshub_blocking::client`]), sends
//!   `{"type":"publish","channel":..,"data":..,"id":..}` and waits for the
//!   hub's `ack` (exit 0) or `error` reply (exit 1, with its code, such as
//!   `forbidden` when the server's `--publish` patterns do not cover the
//!   channel);
//! - **through the HTTP API** with `--admin-key KEY` (or the environment
//!   variable `WSHUB_ADMIN_KEY`): `POST /api/publish` on the URL's host and
//!   port, the key as a bearer token, over ureq.
//!
//! DATA is sent as JSON if it parses as JSON, else as a JSON string.

use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wshub_blocking::client::{self, ClientEvent};
use wshub_core::backoff::BackoffPolicy;
use wshub_core::Secret;

use crate::cli::{parse_duration, CliError};
use crate::connect::{parse_data, ClientArgs, Target, TOKEN_ENV};

/// The environment variable read for the admin key.
pub const ADMIN_KEY_ENV: &str = "WSHUB_ADMIN_KEY";

/// `wshub pub`'s arguments.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Publishes DATA (JSON if it parses, else a string) to CHANNEL. By default as a \
             client (the server must allow it with --publish PATTERN); with an admin key \
             through the server's HTTP API (POST /api/publish on URL's host).",
    after_help = "exit status: 0 when the server accepted it, 1 when it refused or could not \
                  be reached (the reason on stderr), 2 on bad arguments"
)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Publish through the HTTP API with this admin key [default: the
    /// WSHUB_ADMIN_KEY environment variable].
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    admin_key: Option<String>,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// The server's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(value_name = "URL")]
    url: String,
    /// The channel.
    #[arg(value_name = "CHANNEL")]
    channel: String,
    /// The message data; it may start with a dash (`-1`).
    #[arg(value_name = "DATA", allow_hyphen_values = true)]
    data: String,
}

/// Options of `wshub pub`.
#[derive(Debug, PartialEq)]
pub struct PubOptions {
    /// Server and client credential.
    pub target: Target,
    /// The channel.
    pub channel: String,
    /// The message data.
    pub data: Value,
    /// Publish through the HTTP API with this key (`Debug` redacts it).
    pub admin_key: Option<Secret>,
    /// Overall time limit.
    pub timeout: Duration,
}

/// The admin key from the flag, else from [`ADMIN_KEY_ENV`]; checked to be
/// sendable as a header without ever echoing it.
pub(crate) fn admin_key(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, CliError> {
    flag.or_else(|| env(ADMIN_KEY_ENV).filter(|k| !k.is_empty()))
        .map(|k| {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
                Err(CliError(
                    "--admin-key: must be visible ASCII without spaces".into(),
                ))
            } else {
                Ok(Secret::new(k))
            }
        })
        .transpose()
}

impl PubArgs {
    /// The checked options, `WSHUB_TOKEN` and `WSHUB_ADMIN_KEY` read from
    /// `env` when the flags are not given.
    pub(crate) fn options(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PubOptions, CliError> {
        let target = self.client.target(&self.url, env)?;
        if self.channel.is_empty() {
            return Err(CliError("pub: CHANNEL is empty".into()));
        }
        Ok(PubOptions {
            target,
            channel: self.channel,
            data: parse_data(&self.data),
            admin_key: admin_key(self.admin_key, env)?,
            timeout: self.timeout,
        })
    }
}

/// Runs `wshub pub`; returns the process exit code.
pub fn run(opts: PubOptions) -> ExitCode {
    let outcome = match &opts.admin_key {
        Some(key) => publish_http(&opts, key),
        None => publish_as_client(&opts),
    };
    match outcome {
        Ok(note) => {
            eprintln!("wshub pub: {note}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wshub pub: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The request id of our publish (a string, so it cannot be mistaken for
/// the client's own `sub-N` ids).
const PUBLISH_ID: &str = "wshub-pub";

fn publish_as_client(o: &PubOptions) -> Result<String, String> {
    let server = o.target.server();
    let mut cfg = o.target.client_config();
    // A one-shot command: a few quick retries within the time limit, not
    // the long-running schedule.
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        max_retries: Some(3),
        ..BackoffPolicy::default()
    };
    cfg.connect_timeout = cfg.connect_timeout.min(o.timeout);
    let (client, events) = client::spawn(cfg).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + o.timeout;
    let message = json!({
        "type": "publish",
        "channel": o.channel,
        "data": o.data,
        "id": PUBLISH_ID,
    });
    let mut sent = false;
    let mut attempts = 0;
    let mut last_failure = String::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match events.recv_timeout(left) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                break Err(format!("no answer from {server} within {:?}", o.timeout))
            }
            Err(RecvTimeoutError::Disconnected) => break Err("the client stopped".into()),
        };
        match event {
            ClientEvent::Connected { .. } | ClientEvent::Reconnected { .. } if !sent => {
                if let Err(e) = client.send(message.clone()) {
                    break Err(format!("cannot send: {e}"));
                }
                sent = true;
            }
            ClientEvent::Message(m)
                if m.id.as_ref().and_then(Value::as_str) == Some(PUBLISH_ID) =>
            {
                if m.kind == "ack" {
                    break Ok(format!("published to {}", o.channel));
                }
                let field = |k: &str| m.data.get(k).and_then(Value::as_str).unwrap_or("");
                break Err(format!(
                    "the server refused the publish: {} ({})",
                    field("code"),
                    field("message")
                ));
            }
            ClientEvent::Disconnected { reason } if sent => {
                break Err(format!(
                    "connection lost before the server answered: {reason}"
                ))
            }
            ClientEvent::ConnectFailed { reason, .. } => {
                attempts += 1;
                last_failure = reason.to_string();
            }
            ClientEvent::AuthFailed { status, .. } => {
                break Err(format!(
                    "authentication failed (HTTP {status}): check --token or {TOKEN_ENV}"
                ))
            }
            ClientEvent::GaveUp => {
                break Err(format!(
                    "cannot connect to {server}: {last_failure} ({attempts} attempts)"
                ))
            }
            _ => {}
        }
    };
    // Close cleanly (a 1000 close), but do not wait long for it.
    client.close();
    let close_by = Instant::now() + Duration::from_secs(3);
    while let Ok(e) = events.recv_timeout(close_by.saturating_duration_since(Instant::now())) {
        if e == ClientEvent::Closed {
            break;
        }
    }
    outcome
}

fn publish_http(o: &PubOptions, key: &Secret) -> Result<String, String> {
    let server = o.target.server();
    let body = json!({ "channel": o.channel, "data": o.data }).to_string();
    let api = HttpApi::new(
        &o.target.endpoint,
        key,
        o.timeout,
        o.target.ca_file.as_deref(),
    )?;
    let (status, reply) = api
        .post("/api/publish", &body)
        .map_err(|e| format!("HTTP API at {server}: {e}"))?;
    let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
    let error = reply.get("error").and_then(Value::as_str).unwrap_or("");
    match status {
        200 => {
            let n = reply.get("delivered").and_then(Value::as_u64).unwrap_or(0);
            Ok(format!(
                "published to {} through the HTTP API ({n} subscriber(s))",
                o.channel
            ))
        }
        401 => Err(format!(
            "the admin key was refused (HTTP 401): check --admin-key or {ADMIN_KEY_ENV}"
        )),
        _ => Err(format!("the HTTP API answered {status}: {error}")),
    }
}

/// A running server's HTTP API, with the admin key: one ureq agent, whose
/// connections are reused where the server keeps them open. Shared with
/// `wshub exec`. `https://` for a `wss://` endpoint (rustls with ring, the
/// webpki roots or the CAs of `--ca-file`).
pub(crate) struct HttpApi {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

impl HttpApi {
    /// The API on `ep`'s host and port; each request gives up after `timeout`.
    /// Fails only on a CA file that cannot be read (already checked at
    /// parse time).
    pub(crate) fn new(
        ep: &wshub_core::client::Endpoint,
        key: &Secret,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let roots = match ca_file {
            None => ureq::tls::RootCerts::WebPki,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(timeout))
            // Statuses are answers to report, not transport errors.
            .http_status_as_error(false)
            // A loopback server is never behind the environment's proxy.
            .proxy(None)
            // The server closes a kept-alive connection idle for its
            // handshake timeout (10 s by default): reuse one only well before.
            .max_idle_age(Duration::from_secs(5))
            .build()
            .new_agent();
        let scheme = if ep.tls { "https" } else { "http" };
        Ok(HttpApi {
            agent,
            base: format!("{scheme}://{}", ep.host_header()),
            authorization: format!("Bearer {}", key.expose()),
        })
    }

    /// `POST path` with a JSON body: the status and the reply's body.
    pub(crate) fn post(&self, path: &str, body: &str) -> Result<(u16, String), ureq::Error> {
        let mut reply = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .content_type("application/json")
            .send(body)?;
        let status = reply.status().as_u16();
        let text = reply.body_mut().read_to_string()?;
        Ok((status, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(
        line: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PubOptions, CliError> {
        crate::cli::parse_args::<PubArgs>("pub", line)?.options(env)
    }

    #[test]
    fn parses_both_modes() {
        let no_env = |_: &str| None;
        let o = parse_with("ws://h:1/ws c1 {\"x\":1}", &no_env).unwrap();
        assert_eq!(o.channel, "c1");
        assert_eq!(o.data, json!({"x": 1}));
        assert_eq!(o.admin_key, None);
        let o = parse_with("--admin-key adm ws://h:1/ws c1 hello", &no_env).unwrap();
        assert_eq!(o.data, json!("hello"));
        assert_eq!(o.admin_key, Some(Secret::new("adm")));
        let env = |k: &str| (k == ADMIN_KEY_ENV).then(|| "from-env".to_string());
        let o = parse_with("ws://h:1/ws c1 -5 --timeout 2s", &env).unwrap();
        assert_eq!(o.data, json!(-5));
        assert_eq!(o.admin_key, Some(Secret::new("from-env")));
        assert_eq!(o.timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_arguments_never_echo_secrets() {
        let no_env = |_: &str| None;
        for (line, needle) in [
            ("ws://h:1/ws c1", "<DATA>"),
            ("ws://h:1/ws c1 d extra", "extra"),
            ("--ca-file /no/such.pem wss://h/ws c1 d", "--ca-file"),
            ("--timeout soon ws://h:1/ws c d", "--timeout"),
            ("--admin-key", "--admin-key"),
            ("--nope ws://h:1/ws c d", "--nope"),
        ] {
            let e = parse_with(line, &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
        let argv = ["--admin-key", "s3cr3t\r\nX: y", "ws://h:1/ws", "c", "d"];
        let e = crate::cli::parse_argv::<PubArgs>("pub", &argv)
            .unwrap()
            .options(&no_env)
            .unwrap_err();
        assert!(!e.0.contains("s3cr3t"), "{e}");
        let shown = format!(
            "{:?}",
            parse_with("--admin-key k3y --token t0k ws://h:1/ws c d", &no_env).unwrap()
        );
        assert!(!shown.contains("k3y") && !shown.contains("t0k"), "{shown}");
    }
}
