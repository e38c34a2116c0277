//! `wshub`: a standalone hub server.
//!
//! `wshub serve` listens on 127.0.0.1:8080 with the WebSocket endpoint at `/ws`
//! and an HTTP API on the same port (`/`, `/healthz`, `/api/stats`,
//! `/metrics`, `POST /api/publish`, `POST /api/broadcast`). With no auth
//! option it generates a token at start and prints the page URL with it, as
//! Jupyter does; `--no-auth` turns auth off.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use wshub::api;
use wshub::cli::{parse, Command, Runtime, ServeOptions, USAGE};
use wshub::running::Running;
use wshub_core::auth::{AllowAll, ApiKeyAuth, TokenSource};
use wshub_core::config::PublishPatterns;
use wshub_core::{AuthDecision, Event, HubConfig, Mode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Runtimes) => {
            for (name, _) in Runtime::ALL {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Usage(usage)) => {
            println!("{usage}");
            ExitCode::SUCCESS
        }
        Ok(Command::Sub(opts)) => wshub::sub::run(*opts),
        Ok(Command::Pub(opts)) => wshub::publish::run(*opts),
        Ok(Command::Exec(opts)) => wshub::exec::run(*opts),
        Ok(Command::Serve(opts)) => match serve(*opts) {
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

fn serve(opts: ServeOptions) -> std::io::Result<()> {
    let mut config = HubConfig {
        mode: if opts.echo { Mode::Echo } else { Mode::Hub },
        allowed_origins: opts.allow_origins.clone(),
        required_headers: opts.require_headers.clone(),
        policy: Arc::new(PublishPatterns::new(opts.publish.clone())),
        http_fallback: !opts.echo,
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
    let admin_key = opts.admin_key.clone().or_else(|| generated.clone());
    if opts.no_auth {
        config.authenticator = Arc::new(AllowAll);
    } else {
        let source = TokenSource::BearerOrQuery("token".into());
        config.authenticator = Arc::new(ApiKeyAuth::new(keys).source(source));
    }
    let authenticator = config.authenticator.clone();
    let running = Arc::new(Running::start(opts.runtime, config, &opts.listen)?);
    let addr = running.local_addr();
    eprintln!(
        "wshub: listening on ws://{addr}/ws ({:?} runtime)",
        opts.runtime
    );
    if opts.no_auth {
        eprintln!(
            "wshub: authentication is OFF (--no-auth): anyone who can reach {addr} can connect"
        );
    }
    if admin_key.is_none() {
        eprintln!("wshub: the publish API is off (no --admin-key)");
    }
    if let Some(token) = &generated {
        // Printed once, on purpose, like Jupyter: the operator needs it.
        println!("http://{addr}/?token={token}");
    }
    watch_signals(running.clone())?;

    let check_token = |r: &wshub_core::UpgradeRequest| {
        matches!(authenticator.authenticate(r), AuthDecision::Accept(_))
    };
    while let Some(event) = running.next_event() {
        match event {
            Event::HttpRequest {
                conn,
                method,
                request,
                body,
            } => {
                let r = api::route(
                    &method,
                    &request,
                    &body,
                    admin_key.as_deref(),
                    &check_token,
                    &*running,
                );
                let headers = r.headers();
                let _ = running.http_respond(conn, r.status, headers, r.body);
            }
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
            Event::ShutdownComplete => {
                eprintln!("wshub: shutdown complete");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM start a graceful shutdown: 1001 to every client, flush,
/// then the event loop ends and the process exits 0.
fn watch_signals(running: Arc<Running>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("wshub-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("wshub: signal {sig}: shutting down");
                if !running.shutdown(Duration::from_secs(10)) {
                    eprintln!("wshub: shutdown deadline passed; remaining connections cut");
                    std::process::exit(0);
                }
            }
        })?;
    Ok(())
}
