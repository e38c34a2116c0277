//! `wshub sub URL CHANNEL...`: subscribes and prints every message as one
//! line of JSON on stdout, until interrupted.
//!
//! Built on the reconnecting client ([`wshub_blocking::client`], no async
//! runtime): it reconnects with backoff and restores its subscriptions after
//! every outage, logging state changes on stderr. SIGINT or SIGTERM closes the
//! connection cleanly (a 1000 close) and exits 0. An authentication failure
//! exits 1 at once (the same token would fail again); bad arguments exit 2.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::Value;
use wshub_blocking::client::{ClientBuilder, ClientEvent, ClientHandle, ClientState};

use crate::cli::CliError;
use crate::connect::{common_flag, message_line, parse_url, token_or_env, Target};

/// Usage of `wshub sub`.
pub const USAGE: &str = "usage: wshub sub [options] URL CHANNEL...

Prints every message on CHANNEL(s) as one JSON line on stdout until SIGINT or
SIGTERM; reconnects with backoff and resubscribes; logs to stderr.
URL is the server's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.

options:
  --token TOKEN   client token (default: the WSHUB_TOKEN environment variable)
  --bearer        send the token as Authorization: Bearer (default: ?token=)

exit status: 0 after SIGINT/SIGTERM, 1 on authentication failure, 2 on bad arguments";

/// Options of `wshub sub`.
#[derive(Debug, PartialEq)]
pub struct SubOptions {
    /// Server and credential.
    pub target: Target,
    /// Channels, in the order given.
    pub channels: Vec<String>,
}

/// Parses the arguments after `sub`, reading `WSHUB_TOKEN` from the
/// environment when no `--token` is given.
pub fn parse(args: &[String]) -> Result<SubOptions, CliError> {
    parse_with(args, &|k| std::env::var(k).ok())
}

/// [`parse`] with the environment given.
pub fn parse_with(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SubOptions, CliError> {
    let mut token = None;
    let mut bearer = false;
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
        } else if arg == "--" {
            positional.extend(it.by_ref().cloned());
        } else if arg.starts_with("--") {
            return Err(CliError(format!("sub: unknown option `{arg}`")));
        } else {
            positional.push(arg.clone());
        }
    }
    let mut positional = positional.into_iter();
    let url = positional
        .next()
        .ok_or_else(|| CliError("sub: missing URL (ws://HOST:PORT/ws)".into()))?;
    let endpoint = parse_url(&url)?;
    let channels: Vec<String> = positional.collect();
    if channels.is_empty() {
        return Err(CliError("sub: give at least one CHANNEL".into()));
    }
    if channels.iter().any(String::is_empty) {
        return Err(CliError("sub: a CHANNEL is empty".into()));
    }
    Ok(SubOptions {
        target: Target {
            endpoint,
            token: token_or_env(token, env),
            bearer,
        },
        channels,
    })
}

/// Runs `wshub sub`; returns the process exit code.
pub fn run(opts: SubOptions) -> ExitCode {
    let server = opts.target.server();
    let mut builder = ClientBuilder::new(opts.target.client_config());
    for channel in &opts.channels {
        builder = builder.subscribe(channel.as_str());
    }
    let (client, events) = match builder.spawn() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("wshub sub: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = watch_signals(client.clone()) {
        eprintln!("wshub sub: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("wshub sub: connecting to {server}");
    let mut stdout = std::io::stdout().lock();
    let mut code = ExitCode::SUCCESS;
    for event in events {
        match event {
            ClientEvent::Message(m) => {
                if print_line(&mut stdout, &message_line(&m)).is_err() {
                    // stdout is gone (a closed pipe): nothing more to do.
                    client.close();
                }
            }
            ClientEvent::Text(text) => {
                if print_line(&mut stdout, &Value::String(text).to_string()).is_err() {
                    client.close();
                }
            }
            ClientEvent::Binary(b) => {
                eprintln!("wshub sub: ignored a binary message of {} bytes", b.len())
            }
            ClientEvent::Connected { .. } => eprintln!("wshub sub: connected to {server}"),
            ClientEvent::Reconnected { attempt, .. } => {
                eprintln!("wshub sub: reconnected to {server} (attempt {attempt})")
            }
            ClientEvent::ConnectFailed { reason, .. } => {
                eprintln!("wshub sub: {server}: {reason}{}", retry_note(&client))
            }
            ClientEvent::Disconnected { reason } => {
                if client.state() != ClientState::Closed {
                    eprintln!("wshub sub: disconnected: {reason}{}", retry_note(&client))
                }
            }
            ClientEvent::SubscriptionsRestored {
                restored,
                refused,
                unconfirmed,
            } => {
                if !restored.is_empty() {
                    eprintln!("wshub sub: subscribed to {}", restored.join(", "));
                }
                if !unconfirmed.is_empty() {
                    eprintln!(
                        "wshub sub: no answer yet for {} (assuming subscribed)",
                        unconfirmed.join(", ")
                    );
                }
                if !refused.is_empty() {
                    eprintln!("wshub sub: the server refused {}", refused.join(", "));
                    if restored.is_empty() && unconfirmed.is_empty() {
                        eprintln!("wshub sub: every subscription was refused");
                        code = ExitCode::FAILURE;
                        client.close();
                    }
                }
            }
            ClientEvent::SubscribeRefused { channel, code: why } => {
                eprintln!("wshub sub: the server refused {channel} ({why})")
            }
            ClientEvent::AuthFailed { status, .. } => {
                eprintln!(
                    "wshub sub: authentication failed (HTTP {status}): check --token or {}",
                    crate::connect::TOKEN_ENV
                );
                code = ExitCode::FAILURE;
                client.close();
            }
            ClientEvent::GaveUp => {
                eprintln!("wshub sub: giving up on {server}");
                code = ExitCode::FAILURE;
                client.close();
            }
            ClientEvent::Closed => break,
            // Driver-level requests never reach the application.
            ClientEvent::Connect { .. } | ClientEvent::CloseSocket => {}
        }
    }
    code
}

fn print_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// `"; retrying in 1.2s"` while waiting for the backoff delay.
fn retry_note(client: &ClientHandle) -> String {
    match client.state() {
        ClientState::Disconnected {
            next_attempt: Some(at),
        } => {
            let wait = at.saturating_duration_since(Instant::now());
            format!("; retrying in {:.1}s", wait.as_secs_f64())
        }
        _ => String::new(),
    }
}

/// SIGINT and SIGTERM close the connection cleanly (the event loop then ends
/// and the process exits 0); a second one exits at once.
fn watch_signals(client: ClientHandle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("wshub-sub-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    std::process::exit(0);
                }
                eprintln!("wshub sub: signal {sig}: closing");
                client.close();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_url_channels_and_token() {
        let no_env = |_: &str| None;
        let o = parse_with(&args("--token t ws://127.0.0.1:9/ws a b"), &no_env).unwrap();
        assert_eq!(o.channels, ["a", "b"]);
        assert_eq!(o.target.token.as_ref().map(|t| t.expose()), Some("t"));
        assert!(!o.target.bearer);
        let env = |k: &str| (k == "WSHUB_TOKEN").then(|| "e".to_string());
        let o = parse_with(&args("ws://h:1/ws --bearer c"), &env).unwrap();
        assert_eq!(o.target.token.as_ref().map(|t| t.expose()), Some("e"));
        assert!(o.target.bearer);
    }

    #[test]
    fn bad_arguments() {
        let no_env = |_: &str| None;
        for (line, needle) in [
            ("", "missing URL"),
            ("ws://h:1/ws", "CHANNEL"),
            ("wss://h/ws c", "wss://"),
            ("http://h/ c", "ws://"),
            ("--token", "--token"),
            ("--frobnicate ws://h/ws c", "--frobnicate"),
        ] {
            let e = parse_with(&args(line), &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
    }
}
