//! `wshub`: a standalone hub server.
//!
//! `wshub serve` listens on 127.0.0.1:8080 with the WebSocket endpoint at `/ws`
//! and an HTTP API on the same port (`/`, `/healthz`, `/api/stats`,
//! `/metrics`, `POST /api/publish`, `POST /api/broadcast`,
//! `GET /api/history`). With no auth option it generates a token at start
//! and prints the page URL with it, as Jupyter does; `--no-auth` turns auth
//! off.
//!
//! Command-line errors go to stderr as `wshub: ...` with exit code 2; once
//! serving, everything goes through `tracing` (see [`logging`]).
#![forbid(unsafe_code)]

mod api;
mod cli;
mod cluster;
mod config_file;
mod connect;
mod exec;
mod jwt;
mod logging;
mod publish;
// `Running::next_event_timeout` lost its last caller when these modules
// stopped being library API; running.rs is being rewritten (issue 10 step 3).
#[allow(dead_code)]
mod running;
mod sub;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cli::{parse, Command, Runtime, ServeOptions};
use jwt::{JwtAuth, KeysOrJwt};
use running::Running;
use tracing::{debug, error, info, warn};
use wshub_core::auth::{AllowAll, ApiKeyAuth, TokenSource};
use wshub_core::command::HubCommands;
use wshub_core::config::PublishPatterns;
use wshub_core::{AuthDecision, Authenticator, Event, HubConfig, Mode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Print(text)) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Ok(Command::Runtimes) => {
            for (name, _) in Runtime::ALL {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Ok(Command::Sub(opts)) => sub::run(*opts),
        Ok(Command::Pub(opts)) => publish::run(*opts),
        Ok(Command::Exec(opts)) => exec::run(*opts),
        Ok(Command::Serve(opts)) => serve(*opts),
        Err(e) => {
            eprintln!("wshub: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(opts: ServeOptions) -> ExitCode {
    logging::init(opts.log_format, opts.log_level.as_deref());
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("cannot serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The authenticator the options ask for; `generated` is the token made up
/// when no auth option was given.
fn authenticator(
    opts: &ServeOptions,
    generated: Option<&str>,
) -> std::io::Result<Arc<dyn Authenticator>> {
    if opts.no_auth {
        return Ok(Arc::new(AllowAll));
    }
    let source = TokenSource::BearerOrQuery("token".into());
    let mut keys = opts.api_keys.clone();
    if let Some(token) = generated {
        keys.push((token.to_owned(), "user".to_owned()));
    }
    let keys = (!keys.is_empty()).then(|| ApiKeyAuth::new(keys).source(source));
    let mut jwts = Vec::new();
    let scoped = |auth: JwtAuth| {
        auth.audiences(&opts.jwt_audiences)
            .issuers(&opts.jwt_issuers)
            .user_claim(opts.jwt_user_claim.as_deref().unwrap_or("sub"))
            .require(&opts.jwt_required_claims)
    };
    if let Some(secret) = &opts.jwt_secret {
        if secret.expose().len() < 32 {
            // RFC 7518 3.2: an HS256 key shorter than the hash is guessable offline.
            warn!("the JWT secret is shorter than 32 bytes: easy to brute-force from any token");
        }
        info!(algorithm = %"HS256", "accepting JWTs");
        jwts.push(scoped(JwtAuth::hs256(secret)));
    }
    if let Some(path) = &opts.jwt_public_key {
        // Already checked while parsing the options; never serve without it.
        let auth = JwtAuth::from_public_key_pem(&opts.jwt_public_key_pem)
            .map_err(|e| std::io::Error::other(format!("{} {e}", path.display())))?;
        info!(key = %path.display(), algorithm = ?auth.algorithm(), "accepting JWTs");
        jwts.push(scoped(auth));
    }
    if !jwts.is_empty() && !opts.jwt_audiences.is_empty() {
        info!(audiences = ?opts.jwt_audiences, "JWTs must carry one of these audiences");
    }
    if !jwts.is_empty() && !opts.jwt_issuers.is_empty() {
        info!(issuers = ?opts.jwt_issuers, "JWTs must come from one of these issuers");
    }
    Ok(match keys {
        Some(keys) if jwts.is_empty() => Arc::new(keys),
        keys => Arc::new(KeysOrJwt::new(keys, jwts)),
    })
}

fn run(opts: ServeOptions) -> std::io::Result<()> {
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
        config.max_messages_per_second = 0;
    }
    opts.limits.apply(&mut config);
    opts.history.apply(&mut config.history);
    config.seed = cli::random_seed()?;
    let history_max_replay = config.history.max_replay;
    let generated = if opts.no_auth || opts.has_auth() {
        None
    } else {
        Some(cli::random_token()?)
    };
    let admin_key = opts.admin_key.clone().or_else(|| generated.clone());
    config.authenticator = authenticator(&opts, generated.as_deref())?;
    let authenticator = config.authenticator.clone();
    let (link, outputs) = match opts.broker {
        Some(_) => {
            let (link, outputs) = cluster::link();
            (Some(link), Some(outputs))
        }
        None => (None, None),
    };
    // A batch from the broker may queue no more per client than a round.
    let max_batch = config.commands_per_round();
    let running = Arc::new(Running::start_with(
        opts.runtime,
        config,
        &opts.listen,
        link,
    )?);
    let cluster = match (&opts.broker, outputs) {
        (Some(_), Some(outputs)) => {
            // The URL was checked at parse time.
            let mut redis = opts.redis_config();
            redis.max_batch = max_batch;
            Some(cluster::Cluster::start(redis, outputs, &running)?)
        }
        _ => None,
    };
    let addr = running.local_addr();
    // Tests and scripts read the address from this message: keep its wording.
    info!(runtime = %opts.runtime.name(), "listening on ws://{addr}/ws");
    if opts.no_auth {
        warn!("authentication is OFF (--no-auth): anyone who can reach {addr} can connect");
    }
    if admin_key.is_none() {
        info!("the admin API (publish, history) is off (no --admin-key)");
    }
    if let Some(token) = &generated {
        // Printed once, on purpose, like Jupyter: the operator needs it. The
        // only place a token is ever written; stdout, never the log.
        println!("http://{addr}/?token={token}");
        info!("no auth option given: generated a token; the URL to open is on stdout");
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
                    &api::Settings {
                        admin_key: admin_key.as_deref(),
                        check_token: &check_token,
                        history_max_replay,
                        cluster: cluster.as_deref(),
                    },
                    &*running,
                );
                // The path only: the query may carry ?token=.
                debug!(%method, path = %request.path(), status = r.status, %conn, "http");
                let headers = r.headers();
                let _ = running.http_respond(conn, r.status, headers, r.body);
            }
            Event::Connected { conn, identity, .. } => {
                info!(user = %identity.user_id, %conn, "connected")
            }
            Event::Closed {
                conn,
                reason,
                code,
                was_connected: true,
                user_id,
                ..
            } => {
                // `reason` first: tests look for "disconnected reason=...".
                info!(
                    ?reason,
                    ?code,
                    user = %user_id.as_deref().unwrap_or(""),
                    %conn,
                    "disconnected"
                )
            }
            Event::AuthFailed {
                conn,
                status,
                failure,
                peer,
            } => {
                // `failure` never holds the credential (AuthFailure's contract).
                warn!(
                    status,
                    reason = %failure,
                    peer = ?peer.addr,
                    %conn,
                    "auth failed"
                )
            }
            Event::SlowConsumer {
                conn,
                queued_messages,
                ..
            } => {
                warn!(queued_messages, %conn, "slow consumer cut")
            }
            Event::EventsDropped { count } => {
                // This loop fell behind the hub (an HTTP API request is slow to
                // answer, say): the dropped HTTP requests time out with 408.
                warn!(count, "events dropped: the event loop fell behind")
            }
            Event::ShutdownComplete => {
                info!("shutdown complete");
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
                info!(signal = sig, "shutting down");
                if !running.shutdown(Duration::from_secs(10)) {
                    warn!("shutdown deadline passed; remaining connections cut");
                    std::process::exit(0);
                }
            }
        })?;
    Ok(())
}
