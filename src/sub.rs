//! `wshub sub URL CHANNEL...`: subscribes and prints every message as one
//! line of JSON on stdout, until interrupted.
//!
//! Built on the reconnecting client ([`wshub_blocking::client`], no async
//! runtime): it reconnects with backoff and restores its subscriptions after
//! every outage, resuming each from the last message it printed (the hub
//! replays what was missed, so nothing is printed twice or lost), logging
//! state changes on stderr, and a line when a resume could not recover. SIGINT or SIGTERM closes the
//! connection cleanly (a 1000 close) and exits 0. An authentication failure
//! exits 1 at once (the same token would fail again); bad arguments exit 2.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::Value;
use wshub_blocking::client::{ClientBuilder, ClientEvent, ClientHandle, ClientState};

use crate::cli::CliError;
use crate::connect::{message_line, ClientArgs, Target};

/// `wshub sub`'s arguments.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Prints every message on CHANNEL(s) as one JSON line on stdout until SIGINT or \
             SIGTERM; reconnects with backoff and resumes each channel where it left off \
             (the hub replays what was missed; a line on stderr says when it could not); logs \
             to stderr.",
    after_help = "exit status: 0 after SIGINT/SIGTERM, 1 on authentication failure, 2 on bad \
                  arguments"
)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The server's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(value_name = "URL")]
    url: String,
    /// Channels, in the order given.
    #[arg(value_name = "CHANNEL", required = true)]
    channels: Vec<String>,
}

/// Options of `wshub sub`.
#[derive(Debug, PartialEq)]
pub struct SubOptions {
    /// Server and credential.
    pub target: Target,
    /// Channels, in the order given.
    pub channels: Vec<String>,
}

impl SubArgs {
    /// The checked options, the token from `env` when no `--token` is given.
    pub(crate) fn options(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SubOptions, CliError> {
        let target = self.client.target(&self.url, env)?;
        if self.channels.iter().any(String::is_empty) {
            return Err(CliError("sub: a CHANNEL is empty".into()));
        }
        Ok(SubOptions {
            target,
            channels: self.channels,
        })
    }
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
            ClientEvent::Recovered { channel, replayed } => {
                eprintln!("wshub sub: resumed {channel}: {replayed} missed message(s) replayed")
            }
            ClientEvent::RecoveryFailed { channel, position } => eprintln!(
                "wshub sub: could not recover {channel}: messages published while disconnected \
                 may be missing (continuing after offset {} of epoch {})",
                position.offset, position.epoch
            ),
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

    fn parse_with(
        line: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SubOptions, CliError> {
        crate::cli::parse_args::<SubArgs>("sub", line)?.options(env)
    }

    #[test]
    fn parses_url_channels_and_token() {
        let no_env = |_: &str| None;
        let o = parse_with("--token t ws://127.0.0.1:9/ws a b", &no_env).unwrap();
        assert_eq!(o.channels, ["a", "b"]);
        assert_eq!(o.target.token.as_ref().map(|t| t.expose()), Some("t"));
        assert!(!o.target.bearer);
        let env = |k: &str| (k == "WSHUB_TOKEN").then(|| "e".to_string());
        let o = parse_with("ws://h:1/ws --bearer c", &env).unwrap();
        assert_eq!(o.target.token.as_ref().map(|t| t.expose()), Some("e"));
        assert!(o.target.bearer);
    }

    #[test]
    fn bad_arguments() {
        let no_env = |_: &str| None;
        for (line, needle) in [
            ("", "<URL>"),
            ("ws://h:1/ws", "CHANNEL"),
            ("--ca-file /no/such.pem wss://h/ws c", "--ca-file"),
            ("https://h/ws c", "wss://"),
            ("http://h/ c", "ws://"),
            ("--token", "--token"),
            ("--frobnicate ws://h/ws c", "--frobnicate"),
        ] {
            let e = parse_with(line, &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
    }
}
