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
//!   port, the key as a bearer token, over a small HTTP/1.1 exchange on a
//!   plain `TcpStream`.
//!
//! DATA is sent as JSON if it parses as JSON, else as a JSON string.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wshub_blocking::client::{self, ClientEvent};
use wshub_core::backoff::BackoffPolicy;
use wshub_core::Secret;

use crate::cli::{parse_duration, CliError};
use crate::connect::{common_flag, parse_data, parse_url, token_or_env, Target, TOKEN_ENV};

/// The environment variable read for the admin key.
pub const ADMIN_KEY_ENV: &str = "WSHUB_ADMIN_KEY";

/// Usage of `wshub pub`.
pub const USAGE: &str = "usage: wshub pub [options] URL CHANNEL DATA

Publishes DATA (JSON if it parses, else a string) to CHANNEL. By default as a
client (the server must allow it with --publish PATTERN); with an admin key
through the server's HTTP API (POST /api/publish on URL's host).

options:
  --token TOKEN        client token (default: the WSHUB_TOKEN environment variable)
  --bearer             send the token as Authorization: Bearer (default: ?token=)
  --admin-key KEY      publish through the HTTP API with this admin key
                       (default: the WSHUB_ADMIN_KEY environment variable)
  --timeout DURATION   give up after this long (default 10s)

exit status: 0 when the server accepted it, 1 when it refused or could not be
reached (the reason on stderr), 2 on bad arguments";

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

/// Parses the arguments after `pub`, reading `WSHUB_TOKEN` and
/// `WSHUB_ADMIN_KEY` from the environment when the flags are not given.
pub fn parse(args: &[String]) -> Result<PubOptions, CliError> {
    parse_with(args, &|k| std::env::var(k).ok())
}

/// [`parse`] with the environment given.
pub fn parse_with(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PubOptions, CliError> {
    let mut token = None;
    let mut bearer = false;
    let mut admin_key = None;
    let mut timeout = Duration::from_secs(10);
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| CliError(format!("{arg} needs a value")))
        };
        if let Some(r) = common_flag(arg, &mut value, &mut token, &mut bearer) {
            r?;
            continue;
        }
        match arg.as_str() {
            "--admin-key" => admin_key = Some(value()?),
            "--timeout" => {
                let v = value()?;
                timeout = parse_duration(&v).ok_or_else(|| {
                    CliError(format!("--timeout: `{v}` is not a duration like 10s"))
                })?;
            }
            "--" => positional.extend(it.by_ref().cloned()),
            // DATA may well start with a dash (`-1`): only `--x` is an option.
            a if a.starts_with("--") => {
                return Err(CliError(format!("pub: unknown option `{a}`")));
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [url, channel, data]: [String; 3] = positional.try_into().map_err(|p: Vec<String>| {
        CliError(format!(
            "pub: expected URL CHANNEL DATA, got {} argument(s)",
            p.len()
        ))
    })?;
    let endpoint = parse_url(&url)?;
    if channel.is_empty() {
        return Err(CliError("pub: CHANNEL is empty".into()));
    }
    let admin_key = admin_key
        .or_else(|| env(ADMIN_KEY_ENV).filter(|k| !k.is_empty()))
        .map(|k| {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
                // Never echo the key.
                Err(CliError(
                    "--admin-key: must be visible ASCII without spaces".into(),
                ))
            } else {
                Ok(Secret::new(k))
            }
        })
        .transpose()?;
    Ok(PubOptions {
        target: Target {
            endpoint,
            token: token_or_env(token, env),
            bearer,
        },
        channel,
        data: parse_data(&data),
        admin_key,
        timeout,
    })
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
    let (status, reply) = http_post(
        &o.target.endpoint,
        o.timeout,
        "/api/publish",
        key,
        body.as_bytes(),
    )
    .map_err(|e| format!("HTTP API at {server}: {e}"))?;
    let reply: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
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

/// One `POST` to the HTTP API with the admin key and `Connection: close`;
/// returns the status and the body. Shared with `wshub exec`.
pub(crate) fn http_post(
    ep: &wshub_core::client::Endpoint,
    timeout: std::time::Duration,
    path: &str,
    key: &Secret,
    body: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    let mut stream = None;
    for addr in (ep.host.as_str(), ep.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ep.host_header(),
        key.expose(),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    // Up to the end of the head, then Content-Length bytes (or EOF).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("non-UTF-8 head"))?;
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| bad("not an HTTP response"))?;
            let length = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            let start = end + 4;
            loop {
                let have = buf.len() - start;
                if length.is_some_and(|l| have >= l) {
                    break;
                }
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let end = length.map_or(buf.len(), |l| (start + l).min(buf.len()));
            return Ok((status, buf[start..end].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("response head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_both_modes() {
        let no_env = |_: &str| None;
        let o = parse_with(&args("ws://h:1/ws c1 {\"x\":1}"), &no_env).unwrap();
        assert_eq!(o.channel, "c1");
        assert_eq!(o.data, json!({"x": 1}));
        assert_eq!(o.admin_key, None);
        let o = parse_with(&args("--admin-key adm ws://h:1/ws c1 hello"), &no_env).unwrap();
        assert_eq!(o.data, json!("hello"));
        assert_eq!(o.admin_key, Some(Secret::new("adm")));
        let env = |k: &str| (k == ADMIN_KEY_ENV).then(|| "from-env".to_string());
        let o = parse_with(&args("ws://h:1/ws c1 -5 --timeout 2s"), &env).unwrap();
        assert_eq!(o.data, json!(-5));
        assert_eq!(o.admin_key, Some(Secret::new("from-env")));
        assert_eq!(o.timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_arguments_never_echo_secrets() {
        let no_env = |_: &str| None;
        for (line, needle) in [
            ("ws://h:1/ws c1", "expected URL CHANNEL DATA"),
            ("ws://h:1/ws c1 d extra", "expected URL CHANNEL DATA"),
            ("wss://h/ws c1 d", "wss://"),
            ("--timeout soon ws://h:1/ws c d", "--timeout"),
            ("--admin-key", "--admin-key"),
            ("--nope ws://h:1/ws c d", "--nope"),
        ] {
            let e = parse_with(&args(line), &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
        let e = parse_with(
            &[
                "--admin-key".into(),
                "s3cr3t\r\nX: y".into(),
                "ws://h:1/ws".into(),
                "c".into(),
                "d".into(),
            ],
            &no_env,
        )
        .unwrap_err();
        assert!(!e.0.contains("s3cr3t"), "{e}");
        let shown = format!(
            "{:?}",
            parse_with(
                &args("--admin-key k3y --token t0k ws://h:1/ws c d"),
                &no_env
            )
            .unwrap()
        );
        assert!(!shown.contains("k3y") && !shown.contains("t0k"), "{shown}");
    }
}
