//! Command-line parsing for the `wshub` binary, on clap (derive).
//!
//! Bad values give an error that names the flag, or the config file and key
//! (see [`crate::config_file`]); the binary exits with code 2. Errors never
//! show the value at fault: it may be a key or a secret.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use wshub_core::{HubConfig, Secret};

pub use crate::logging::LogFormat;
pub use history::HistoryFlags;

mod history;

#[derive(Parser)]
#[command(
    name = "wshub",
    about = "A WebSocket pub/sub hub: the server, its clients, and process streaming",
    after_help = "Tokens for sub and pub also come from the WSHUB_TOKEN and WSHUB_ADMIN_KEY \
                  environment variables."
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Serve a hub: WebSocket at /ws, the live page and the HTTP API on the same port.
    Serve(Box<ServeOptions>),
    /// Subscribe and print every message as one JSON line.
    Sub(crate::sub::SubArgs),
    /// Publish one message, as a client or through the HTTP API.
    Pub(crate::publish::PubArgs),
    /// Run a command and stream its output lines and exit status to a hub.
    Exec(crate::exec::ExecArgs),
    /// List the runtimes this build can serve on.
    Runtimes,
}

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// `wshub serve`.
    Serve(Box<ServeOptions>),
    /// `wshub runtimes`: list the runtimes this build can serve on.
    Runtimes,
    /// `wshub sub URL CHANNEL...`.
    Sub(Box<crate::sub::SubOptions>),
    /// `wshub pub URL CHANNEL DATA`.
    Pub(Box<crate::publish::PubOptions>),
    /// `wshub exec [options] -- CMD ARGS...`.
    Exec(Box<crate::exec::ExecOptions>),
    /// `--help` and friends: print this on stdout and exit 0.
    Print(String),
}

/// Which adapter serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Runtime {
    /// std threads (wshub-blocking).
    Blocking,
    /// smol / async-io (wshub-smol).
    Smol,
    /// tokio (wshub-tokio). The default for the standalone server: the
    /// fastest in the e2e benchmark and the least memory per connection,
    /// where the blocking adapter needs a thread per connection.
    #[default]
    Tokio,
}

impl Runtime {
    /// Every runtime, by name.
    pub const ALL: [(&'static str, Runtime); 3] = [
        ("blocking", Runtime::Blocking),
        ("smol", Runtime::Smol),
        ("tokio", Runtime::Tokio),
    ];

    /// Its name, as `--runtime` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Blocking => "blocking",
            Runtime::Smol => "smol",
            Runtime::Tokio => "tokio",
        }
    }
}

// What a value should be, for errors; the config file's type errors use
// them too, by the flag's value name (see `what`).
const DURATION: &str = "a duration like 30s or 500ms";
const SIZE: &str = "a size like 64KiB";
const COUNT: &str = "a positive number";
const RATE: &str = "a number of messages per second (0: no limit)";
const RUNTIME: &str = "a runtime: blocking, smol or tokio";
const LOG_FORMAT: &str = "a log format: human or json";

/// Options of `wshub serve`, as clap parses them from the command line and
/// the config file; [`ServeOptions::resolve`] then reads what the `*-env`
/// and key file flags point at. Flags taking a credential take the next
/// argument even if it starts with a dash: clap's "unexpected argument"
/// error would show it. Every long name is also a config file key,
/// so names and value names here are part of the file format.
///
/// `Debug` is written by hand: it shows users, never keys or secrets.
#[derive(Args, PartialEq)]
#[command(
    // A flag given twice: the last one counts.
    args_override_self = true,
    // `--max-connections -3` is a bad count, not an unknown flag `-3`.
    allow_negative_numbers = true,
    after_help = "With no auth option a random token is generated and the URL to use is \
                  printed. API keys and JWTs may be combined: either is accepted.\n\n\
                  Every option but --config can also come from the --config file: its keys \
                  are the flag names without --, repeatable flags take arrays, switches \
                  true/false. Flags override the file; a repeatable flag replaces the \
                  file's whole list; an auth mode given here replaces the file's."
)]
pub struct ServeOptions {
    /// Read these options from a TOML file (keys: the flag names without --,
    /// e.g. ping-interval = "30s"); flags given here override the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address; WebSocket at /ws.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Accept this key (bearer or ?token=) as USER; repeatable. Holds the
    /// `--api-keys-env` ones too once resolved.
    #[arg(long = "api-key", value_name = "KEY=USER", value_parser = parse_api_key,
          allow_hyphen_values = true)]
    pub api_keys: Vec<(String, String)>,
    /// Read KEY=USER[,KEY=USER...] from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    api_keys_env: Option<String>,
    /// Accept everyone (says so in the log).
    #[arg(long, conflicts_with_all = ["api_keys", "api_keys_env", "jwt_secret", "jwt_secret_env", "jwt_public_key"])]
    pub no_auth: bool,
    /// Key for POST /api/publish and /api/broadcast [default: the generated token].
    #[arg(long, value_name = "KEY", value_parser = not_empty("the key is empty"),
          overrides_with = "admin_key_env", allow_hyphen_values = true)]
    pub admin_key: Option<String>,
    /// Read the admin key from environment variable VAR.
    #[arg(long, value_name = "VAR", overrides_with = "admin_key")]
    admin_key_env: Option<String>,
    /// Accept HS256 JWTs (bearer or ?token=); user = the `sub` claim.
    #[arg(long, value_name = "SECRET", value_parser = parse_secret,
          overrides_with = "jwt_secret_env", allow_hyphen_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Read the HS256 secret from environment variable VAR.
    #[arg(long, value_name = "VAR", overrides_with = "jwt_secret")]
    jwt_secret_env: Option<String>,
    /// Accept RS256 or ES256 JWTs signed for this PEM public key (a path in
    /// the config file is relative to the file).
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// The PEM read from `jwt_public_key`, checked to be usable.
    #[arg(skip)]
    pub jwt_public_key_pem: Vec<u8>,
    /// Accept only JWTs whose `aud` (string or array) holds AUD; repeatable,
    /// any one matches; `aud` is then required. Without it, a JWT carrying
    /// `aud` is refused.
    #[arg(long = "jwt-audience", value_name = "AUD", value_parser = not_empty("the audience is empty"))]
    pub jwt_audiences: Vec<String>,
    /// Accept only JWTs whose `iss` is ISS; repeatable, any one matches;
    /// `iss` is then required (else it is ignored).
    #[arg(long = "jwt-issuer", value_name = "ISS", value_parser = not_empty("the issuer is empty"))]
    pub jwt_issuers: Vec<String>,
    /// The JWT claim naming the user [default: sub; Keycloak:
    /// preferred_username]; it must be a non-empty string.
    #[arg(long, value_name = "CLAIM", value_parser = not_empty("the claim name is empty"))]
    pub jwt_user_claim: Option<String>,
    /// Accept only JWTs whose claim NAME is VALUE (a string equal to it, or
    /// an array holding it); repeatable, all must hold (azp=web-app).
    #[arg(long = "jwt-require-claim", value_name = "NAME=VALUE", value_parser = parse_claim)]
    pub jwt_required_claims: Vec<(String, String)>,
    /// Allowed Origin; repeatable [default: any].
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Header every upgrade must carry; repeatable.
    #[arg(long = "require-header", value_name = "NAME")]
    pub require_headers: Vec<String>,
    /// Channels clients may publish to (* globs); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub publish: Vec<String>,
    /// Echo mode (conformance testing).
    #[arg(long)]
    pub echo: bool,
    /// The adapter that serves: tokio, smol or blocking.
    #[arg(long, value_name = "RUNTIME", default_value = "tokio", value_parser = parse_runtime)]
    pub runtime: Runtime,
    /// Be one node of many: share channels, history and presence through
    /// this Redis, redis://[:password@]host[:port][/db] [default: one node,
    /// in-memory history].
    #[arg(long, value_name = "URL", value_parser = parse_broker_url)]
    pub broker: Option<Secret>,
    /// This node's id at the broker, 1-64 of A-Za-z0-9._- [default: random
    /// per start].
    #[arg(long, value_name = "ID", value_parser = not_empty("the node id is empty"))]
    pub node_id: Option<String>,
    /// With --broker: how long this node's presence and node entries
    /// outlive it if it dies without cleaning up (refreshed every third of
    /// it) [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub presence_ttl: Option<Duration>,
    /// Limits and timers.
    #[command(flatten)]
    pub limits: Limits,
    /// History and recovery.
    #[command(flatten)]
    pub history: HistoryFlags,
    /// Log lines on stderr: human or json.
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// error, warn, info (default), debug, trace, or a RUST_LOG filter;
    /// without it RUST_LOG is used.
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,
}

/// The command for `wshub serve` alone, as the config file is checked
/// against it.
pub(crate) fn serve_command() -> clap::Command {
    ServeOptions::augment_args(clap::Command::new("serve"))
}

/// What a value of the flag with this value name should be, for the config
/// file's type errors.
pub(crate) fn what(value_name: &str) -> &'static str {
    match value_name {
        "ADDR" => "an address like 127.0.0.1:8080",
        "KEY=USER" => "KEY=USER",
        "VAR" => "an environment variable name",
        "KEY" => "a key",
        "SECRET" => "a secret",
        "FILE" => "a PEM public key file",
        "AUD" => "an accepted JWT `aud` value",
        "ISS" => "an accepted JWT `iss` value",
        "ORIGIN" => "an origin",
        "NAME" => "a header name",
        "PATTERN" => "a channel pattern",
        "RUNTIME" => RUNTIME,
        "DURATION" => DURATION,
        "SIZE" => SIZE,
        "N" => COUNT,
        "RATE" => RATE,
        "FORMAT" => LOG_FORMAT,
        "LEVEL" => "a level like info or debug, or a RUST_LOG filter",
        "URL" => "a broker URL like redis://127.0.0.1:6379",
        "CLAIM" => "a JWT claim name",
        "NAME=VALUE" => "a claim NAME=VALUE",
        "ID" => "a node id (1-64 of A-Za-z0-9._-)",
        history::RULE => history::RULE_WHAT,
        _ => "a string",
    }
}

impl ServeOptions {
    /// Whether any authentication option was given (then no token is
    /// generated).
    pub fn has_auth(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.api_keys.iter().map(|(_, u)| u.as_str()).collect();
        let set = |b: bool| if b { "<redacted>" } else { "<none>" };
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("api_key_users", &users)
            .field("no_auth", &self.no_auth)
            .field("admin_key", &set(self.admin_key.is_some()))
            .field("jwt_secret", &set(self.jwt_secret.is_some()))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_audiences", &self.jwt_audiences)
            .field("jwt_issuers", &self.jwt_issuers)
            .field("jwt_user_claim", &self.jwt_user_claim)
            .field("jwt_required_claims", &self.jwt_required_claims)
            .field("allow_origins", &self.allow_origins)
            .field("require_headers", &self.require_headers)
            .field("publish", &self.publish)
            .field("echo", &self.echo)
            .field("runtime", &self.runtime)
            .field("limits", &self.limits)
            .field("history", &self.history)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// Limit and timer flags; `None` keeps the default.
#[derive(Args, Debug, PartialEq, Default)]
pub struct Limits {
    /// Server ping interval [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Drop after this long without a frame [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pong_timeout: Option<Duration>,
    /// Cut a stalled writer after this [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub write_timeout: Option<Duration>,
    /// Time a client has to finish its upgrade [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Largest client message [default: 64KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,
    /// Outbound queue per connection, in messages [default: 256].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_queued_messages: Option<usize>,
    /// Outbound queue per connection, in bytes [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_queued_bytes: Option<usize>,
    /// Subscriptions per connection [default: 1024].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_subscriptions: Option<usize>,
    /// Connections at once [default: 100000].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_connections: Option<usize>,
    /// Frames a client may send per second; 1008 past it (0 = no limit) [default: 1000].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_messages_per_second: Option<u32>,
    /// With --broker: publishes waiting for Redis's answer; past it a publish
    /// is refused (`unavailable`) [default: 10000].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_broker_publishes: Option<usize>,
}

impl Limits {
    /// Writes the given values into `config`.
    pub fn apply(&self, config: &mut HubConfig) {
        fn set<T: Copy>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        set(&mut config.ping_interval, self.ping_interval);
        set(&mut config.pong_timeout, self.pong_timeout);
        set(&mut config.write_timeout, self.write_timeout);
        set(&mut config.handshake_timeout, self.handshake_timeout);
        set(&mut config.max_message_size, self.max_message_size);
        set(&mut config.max_queued_messages, self.max_queued_messages);
        set(&mut config.max_queued_bytes, self.max_queued_bytes);
        set(&mut config.max_subscriptions, self.max_subscriptions);
        set(&mut config.max_connections, self.max_connections);
        set(&mut config.max_broker_publishes, self.max_broker_publishes);
        set(
            &mut config.max_messages_per_second,
            self.max_messages_per_second,
        );
    }
}

/// A command-line error naming the flag at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// A duration: humantime's `500ms`, `30s`, `2m`, `1h` (and `1h 30m`), or a
/// plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => {
            Some(Duration::from_secs_f64(secs))
        }
        Ok(_) => None,
        Err(_) => humantime::parse_duration(s).ok(),
    };
    d.filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not {DURATION}"))
}

/// A size: `64KiB`, `1MiB`, `512`, `2kb` (k = 1024 either way).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "k" | "kb" | "kib" => Some(1024),
        "m" | "mb" | "mib" => Some(1024 * 1024),
        "g" | "gb" | "gib" => Some(1024 * 1024 * 1024),
        _ => None,
    };
    num.parse::<usize>()
        .ok()
        .zip(mult)
        .and_then(|(n, m)| n.checked_mul(m))
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` is not {SIZE}"))
}

pub(crate) fn parse_count(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not {COUNT}"))
}

fn parse_rate(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("`{s}` is not {RATE}"))
}

fn parse_runtime(s: &str) -> Result<Runtime, String> {
    Runtime::ALL
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, r)| *r)
        .ok_or_else(|| format!("`{s}` is not {RUNTIME}"))
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::ALL
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("`{s}` is not {LOG_FORMAT}"))
}

fn parse_log_level(s: &str) -> Result<String, String> {
    crate::logging::check_level(s)
        .map(|()| s.to_owned())
        .map_err(|e| format!("`{s}`: {e}"))
}

/// `KEY=USER`. The error never shows the value: it holds a key.
fn parse_api_key(s: &str) -> Result<(String, String), String> {
    split_key(s).ok_or_else(|| "expected KEY=USER with both non-empty".to_owned())
}

fn split_key(s: &str) -> Option<(String, String)> {
    let (k, u) = s.split_once('=')?;
    (!k.is_empty() && !u.is_empty()).then(|| (k.to_owned(), u.to_owned()))
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err("expected NAME=VALUE, both non-empty".into()),
    }
}

fn parse_broker_url(s: &str) -> Result<Secret, String> {
    // The URL may hold a password: errors say what is wrong, never the URL.
    wshub_redis::RedisConfig::new(s)
        .validate()
        .map_err(|e| e.to_string())?;
    Ok(Secret::new(s))
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    not_empty("the secret is empty")(s).map(Secret::new)
}

/// A parser refusing the empty string with `problem` (never the value: it
/// may be a secret).
fn not_empty(problem: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s: &str| {
        if s.is_empty() {
            Err(problem.to_owned())
        } else {
            Ok(s.to_owned())
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    if args.is_empty() {
        return Ok(Command::Print(Cli::command().render_help().to_string()));
    }
    let argv = std::iter::once("wshub").chain(args.iter().map(String::as_str));
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return clap_failure(&e, &|flag| flag.to_owned()),
    };
    if let Some(("serve", m)) = matches.subcommand() {
        // The subcommand is the first argument: no global options.
        return parse_serve(m, &args[1..]).map(|o| Command::Serve(Box::new(o)));
    }
    let cli = Cli::from_arg_matches(&matches).map_err(|e| CliError(render(&e, &|f| f.into())))?;
    let env = |k: &str| std::env::var(k).ok();
    Ok(match cli.command {
        Verb::Serve(_) => unreachable!("handled above"),
        Verb::Runtimes => Command::Runtimes,
        Verb::Sub(a) => Command::Sub(Box::new(a.options(&env)?)),
        Verb::Pub(a) => Command::Pub(Box::new(a.options(&env)?)),
        Verb::Exec(a) => Command::Exec(Box::new(a.options(&env)?)),
    })
}

/// Help and version requests become output; anything else an error.
fn clap_failure(e: &clap::Error, label: &dyn Fn(&str) -> String) -> Result<Command, CliError> {
    if e.use_stderr() {
        Err(CliError(render(e, label)))
    } else {
        Ok(Command::Print(e.to_string()))
    }
}

/// clap's error in wshub's words: `--flag: problem`, with `label` naming a
/// flag (`--x`, or the config file's key). A bad value's text is never
/// shown; only what our parsers say about it.
pub(crate) fn render(e: &clap::Error, label: &dyn Fn(&str) -> String) -> String {
    let name = |v: Option<&ContextValue>| match v {
        // "--listen <ADDR>": the flag alone.
        Some(ContextValue::String(s)) => s.split(' ').next().unwrap_or(s).to_owned(),
        Some(ContextValue::Strings(v)) => v
            .first()
            .map(|s| s.split(' ').next().unwrap_or(s).to_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let arg = name(e.get(ContextKind::InvalidArg));
    let empty_value = matches!(e.get(ContextKind::InvalidValue),
        Some(ContextValue::String(v)) if v.is_empty());
    match e.kind() {
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map_or(String::new(), |s| s.to_string());
            format!("{}: {why}", label(&arg))
        }
        ErrorKind::InvalidValue if empty_value => format!("{} needs a value", label(&arg)),
        ErrorKind::ArgumentConflict => format!(
            "{} cannot be combined with {}",
            label(&arg),
            label(&name(e.get(ContextKind::PriorArg)))
        ),
        _ => {
            let text = e.to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            text.trim_end().to_owned()
        }
    }
}

/// The long names of `cmd`'s flags that `m` got from the command line
/// (not from a default).
fn given_on_the_command_line(cmd: &clap::Command, m: &clap::ArgMatches) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// Flags that set the same thing: one of them on the command line drops the
/// file's others.
fn group(key: &str) -> &str {
    match key {
        "api-key" | "api-keys-env" => "api-keys",
        "admin-key" | "admin-key-env" => "admin-key",
        "jwt-secret" | "jwt-secret-env" => "jwt-secret",
        k => k,
    }
}

/// Whether the file's `key` yields to the command line's flags `cli`. Auth
/// modes exclude each other, so choosing one on the command line drops the
/// file's other.
fn overridden(key: &str, cli: &[String]) -> bool {
    let given = |g: &str| cli.iter().any(|c| group(c) == g);
    given(group(key))
        || match group(key) {
            "no-auth" => given("api-keys") || given("jwt-secret") || given("jwt-public-key"),
            // The audience and issuer go with the JWT keys they refine.
            "api-keys" | "jwt-secret" | "jwt-public-key" | "jwt-audience" | "jwt-issuer" => {
                given("no-auth")
            }
            _ => false,
        }
}

/// `wshub serve`: the config file (if any), minus what the command line
/// overrides, then the command line over it. `m` holds the command line's
/// matches, `args` the arguments after `serve`.
fn parse_serve(m: &clap::ArgMatches, args: &[String]) -> Result<ServeOptions, CliError> {
    let cmd = serve_command();
    let cli = given_on_the_command_line(&cmd, m);
    let file = match m.get_one::<PathBuf>("config") {
        Some(path) => {
            let mut f = crate::config_file::load(path, &cmd)?;
            f.settings.retain(|s| !overridden(&s.key, &cli));
            Some(f)
        }
        None => None,
    };
    let from_file = |key: &str| {
        file.as_ref()
            .filter(|f| f.settings.iter().any(|s| s.key == key))
    };
    let label = |flag: &str| {
        let key = flag.trim_start_matches('-');
        match from_file(key) {
            Some(f) => format!("{}: key `{key}`", f.path.display()),
            None => format!("--{key}"),
        }
    };
    let file_args: Vec<String> = file
        .iter()
        .flat_map(|f| f.settings.iter().flat_map(|s| s.args.iter().cloned()))
        .collect();
    if let Some(f) = &file {
        // The file alone first, so that its errors name its keys.
        let file_label = |flag: &str| {
            format!(
                "{}: key `{}`",
                f.path.display(),
                flag.trim_start_matches('-')
            )
        };
        let argv = std::iter::once("serve").chain(file_args.iter().map(String::as_str));
        cmd.clone()
            .try_get_matches_from(argv)
            .map_err(|e| CliError(render(&e, &file_label)))?;
    }
    // No key is in both any more, so the lists cannot mix.
    let argv = std::iter::once("serve")
        .chain(file_args.iter().map(String::as_str))
        .chain(args.iter().map(String::as_str));
    let mut o = cmd
        .try_get_matches_from(argv)
        .and_then(|m| ServeOptions::from_arg_matches(&m))
        .map_err(|e| CliError(render(&e, &label)))?;
    let key_base = from_file("jwt-public-key").map(|f| f.base.as_path());
    let set = |key: &str| cli.iter().any(|c| c == key) || from_file(key).is_some();
    o.resolve(&label, &set, key_base)?;
    Ok(o)
}

/// Reads an environment variable named by a `*-env` option.
fn env_value(label: &str, var: &str) -> Result<String, CliError> {
    let v = std::env::var(var)
        .map_err(|_| CliError(format!("{label}: environment variable {var} is not set")))?;
    if v.is_empty() {
        return Err(CliError(format!("{label}: {var} is empty")));
    }
    Ok(v)
}

impl ServeOptions {
    /// The broker driver's settings for `--broker` (its URL checked at
    /// parse time) with `node_id`.
    pub fn redis_config(&self) -> wshub_redis::RedisConfig {
        let url = self.broker.as_ref().map_or("", |u| u.expose());
        let mut c = wshub_redis::RedisConfig::new(url);
        c.node_id = self.node_id.clone();
        if let Some(ttl) = self.presence_ttl {
            c.presence_ttl = ttl;
            c.presence_refresh = ttl / 3;
        }
        c
    }

    /// Reads what the `*-env` and `--jwt-public-key` flags point at, then
    /// checks across flags. `label` names a flag as errors should, `set`
    /// says whether a flag was given (either way), `key_base` is the
    /// directory the key path is relative to (the file's, when it came from
    /// there).
    fn resolve(
        &mut self,
        label: &dyn Fn(&str) -> String,
        set: &dyn Fn(&str) -> bool,
        key_base: Option<&Path>,
    ) -> Result<(), CliError> {
        let err = |flag: &str, msg: &str| CliError(format!("{}: {msg}", label(flag)));
        if let Some(var) = &self.api_keys_env {
            let raw = env_value(&label("api-keys-env"), var)?;
            for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
                self.api_keys.push(split_key(part.trim()).ok_or_else(|| {
                    err(
                        "api-keys-env",
                        &format!("{var} must hold KEY=USER[,KEY=USER...]"),
                    )
                })?);
            }
        }
        if let (None, Some(var)) = (&self.admin_key, &self.admin_key_env) {
            self.admin_key = Some(env_value(&label("admin-key-env"), var)?);
        }
        if let (None, Some(var)) = (&self.jwt_secret, &self.jwt_secret_env) {
            self.jwt_secret = Some(Secret::new(env_value(&label("jwt-secret-env"), var)?));
        }
        if let Some(p) = &mut self.jwt_public_key {
            if let Some(dir) = key_base {
                *p = dir.join(&*p);
            }
            let shown = p.display();
            self.jwt_public_key_pem = std::fs::read(&*p)
                .map_err(|e| err("jwt-public-key", &format!("cannot read {shown}: {e}")))?;
            crate::jwt::JwtAuth::from_public_key_pem(&self.jwt_public_key_pem)
                .map_err(|e| err("jwt-public-key", &format!("{shown} {e}")))?;
        }
        // An audience or issuer only refines JWT checking: alone it would
        // silently do nothing.
        if self.jwt_secret.is_none() && self.jwt_public_key.is_none() {
            for (given, flag) in [
                (!self.jwt_audiences.is_empty(), "jwt-audience"),
                (!self.jwt_issuers.is_empty(), "jwt-issuer"),
                (self.jwt_user_claim.is_some(), "jwt-user-claim"),
                (!self.jwt_required_claims.is_empty(), "jwt-require-claim"),
            ] {
                if given {
                    return Err(err(
                        flag,
                        "needs a JWT key (--jwt-secret, --jwt-secret-env or --jwt-public-key)",
                    ));
                }
            }
        }
        for (given, flag) in [
            (self.node_id.is_some(), "node-id"),
            (self.presence_ttl.is_some(), "presence-ttl"),
        ] {
            if given && self.broker.is_none() {
                return Err(err(flag, "needs --broker"));
            }
        }
        if self.broker.is_some() {
            match self.redis_config().validate() {
                Err(wshub_redis::ConfigError::NodeId) => {
                    let e = "must be 1-64 of A-Za-z0-9._-";
                    return Err(err("node-id", e));
                }
                Err(e) => return Err(err("presence-ttl", &e.to_string())),
                Ok(()) => {}
            }
        }
        let mut cfg = HubConfig::default();
        self.limits.apply(&mut cfg);
        self.history.apply(&mut cfg.history);
        cfg.validate().map_err(|e| {
            let field =
                history::flag_of(e.field).map_or_else(|| e.field.replace('_', "-"), str::to_owned);
            let mut msg = format!("{}: {}", label(&field), e.problem);
            // "must be longer than ping_interval": say where that one was set.
            let other = e.problem.rsplit(' ').next().unwrap_or("").replace('_', "-");
            if other != field && set(&other) {
                msg.push_str(&format!(" (set by {})", label(&other)));
            }
            CliError(msg)
        })
    }
}

/// A random seed for the hub's channel epochs, from the operating system.
pub fn random_seed() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(std::io::Error::other)?;
    Ok(u64::from_le_bytes(b))
}

/// A random 128-bit token, hex, from the operating system.
pub fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(std::io::Error::other)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// One subcommand's arguments parsed alone, errors rendered as the binary
/// does: for the subcommands' unit tests.
#[cfg(test)]
pub(crate) fn parse_argv<A: Args + FromArgMatches>(
    name: &'static str,
    args: &[&str],
) -> Result<A, CliError> {
    A::augment_args(clap::Command::new(name))
        .try_get_matches_from(std::iter::once(name).chain(args.iter().copied()))
        .and_then(|m| A::from_arg_matches(&m))
        .map_err(|e| CliError(render(&e, &|f| f.to_owned())))
}

/// [`parse_argv`] with the arguments split at whitespace.
#[cfg(test)]
pub(crate) fn parse_args<A: Args + FromArgMatches>(
    name: &'static str,
    line: &str,
) -> Result<A, CliError> {
    parse_argv(name, &line.split_whitespace().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests;
