//! `wshub`: a standalone hub server.
//!
//! `wshub serve` listens on 127.0.0.1:8080 with the WebSocket endpoint at `/ws`.
//! With no auth option it generates a token at start and prints the URL to use,
//! as Jupyter does; `--no-auth` turns auth off.

use std::process::ExitCode;
use std::sync::Arc;

use wshub::cli::{parse, Command, Runtime, ServeOptions, USAGE};
use wshub_blocking::Server;
use wshub_core::auth::{AllowAll, ApiKeyAuth, TokenSource};
use wshub_core::config::PublishPatterns;
use wshub_core::{Event, HubConfig, Mode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Runtimes) => {
            for (name, rt) in Runtime::ALL {
                if available(rt) {
                    println!("{name}");
                }
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(opts)) => match serve(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wshub: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("wshub: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve(opts: Box<ServeOptions>) -> std::io::Result<()> {
    let mut config = HubConfig {
        mode: if opts.echo { Mode::Echo } else { Mode::Hub },
        allowed_origins: opts.allow_origins.clone(),
        required_headers: opts.require_headers.clone(),
        policy: Arc::new(PublishPatterns::new(opts.publish.clone())),
        ..HubConfig::default()
    };
    if opts.echo {
        // Conformance suites send messages up to 16 MiB and bursts of
        // thousands; echo mode gets room for them unless flags say otherwise.
        config.max_message_size = 64 * 1024 * 1024;
        config.max_queued_messages = 1 << 20;
        config.max_queued_bytes = 256 * 1024 * 1024;
    }
    opts.limits.apply(&mut config);
    let mut keys = opts.api_keys.clone();
    let generated = if opts.no_auth || !keys.is_empty() {
        None
    } else {
        let token = wshub::cli::random_token()?;
        keys.push((token.clone(), "user".to_owned()));
        Some(token)
    };
    if opts.no_auth {
        config.authenticator = Arc::new(AllowAll);
    } else {
        let source = TokenSource::BearerOrQuery("token".into());
        config.authenticator = Arc::new(ApiKeyAuth::new(keys).source(source));
    }
    if !available(opts.runtime) {
        return Err(std::io::Error::other(format!(
            "runtime {:?} is not available in this build",
            opts.runtime
        )));
    }
    let server = Server::builder(config).bind(&opts.listen)?;
    let addr = server
        .local_addr()
        .map_or(opts.listen.clone(), |a| a.to_string());
    eprintln!("wshub: listening on ws://{addr}/ws");
    if opts.no_auth {
        eprintln!(
            "wshub: authentication is OFF (--no-auth): anyone who can reach {addr} can connect"
        );
    }
    if let Some(token) = generated {
        // Printed once, on purpose, like Jupyter: the operator needs it.
        println!("ws://{addr}/ws?token={token}");
    }
    for event in server.events() {
        match event {
            Event::Connected { conn, identity, .. } => {
                eprintln!("wshub: {conn} connected user={:?}", identity.user_id)
            }
            Event::Closed {
                conn,
                reason,
                code,
                was_connected: true,
                ..
            } => {
                eprintln!("wshub: {conn} disconnected reason={reason:?} code={code:?}")
            }
            Event::AuthFailed {
                conn,
                status,
                failure,
                peer,
            } => {
                eprintln!(
                    "wshub: {conn} auth failed status={status} reason={failure} peer={:?}",
                    peer.addr
                )
            }
            Event::SlowConsumer {
                conn,
                queued_messages,
                ..
            } => {
                eprintln!("wshub: {conn} slow consumer cut with {queued_messages} messages queued")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runtimes this build can serve on.
fn available(rt: Runtime) -> bool {
    matches!(rt, Runtime::Blocking)
}
