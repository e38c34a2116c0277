//! Command-line parsing for the `wshub` binary. Bad values give an error that
//! names the flag; the binary exits with code 2.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use wshub_core::{HubConfig, Secret};

pub use crate::logging::LogFormat;

/// The usage text.
pub const USAGE: &str = "usage: wshub serve [options]

options:
  --config FILE              read these options from a TOML file: keys are the flag
                             names without --, e.g. ping-interval = \"30s\"; repeatable
                             flags take arrays; flags given here override the file
  --listen ADDR              listen address (default 127.0.0.1:8080); WebSocket at /ws
  --api-key KEY=USER         accept this key (bearer or ?token=) as USER; repeatable
  --api-keys-env VAR         read KEY=USER[,KEY=USER...] from environment variable VAR
  --jwt-secret SECRET        accept HS256 JWTs (bearer or ?token=); user = `sub` claim
  --jwt-secret-env VAR       read the HS256 secret from environment variable VAR
  --jwt-public-key FILE      accept RS256 or ES256 JWTs signed for this PEM public key
  --jwt-audience AUD         accept only JWTs whose `aud` (string or array) holds AUD;
                             repeatable, any one matches; `aud` is then required.
                             Without it, a JWT carrying `aud` is refused
  --jwt-issuer ISS           accept only JWTs whose `iss` is ISS; repeatable, any one
                             matches; `iss` is then required (else it is ignored)
  --no-auth                  accept everyone (says so in the log)
  --admin-key KEY            key for POST /api/publish and /api/broadcast
                             (default: the generated token; --admin-key-env VAR reads it)
  --allow-origin ORIGIN      allowed Origin; repeatable (default: any)
  --require-header NAME      header every upgrade must carry; repeatable
  --publish PATTERN          channels clients may publish to (* globs); repeatable
  --echo                     echo mode (conformance testing)
  --runtime NAME             tokio (default), smol or blocking
  --ping-interval DURATION   server ping interval (default 30s)
  --pong-timeout DURATION    drop after this long without a frame (default 60s)
  --write-timeout DURATION   cut a stalled writer after this (default 10s)
  --handshake-timeout DURATION  (default 10s)
  --max-message-size SIZE    largest client message (default 64KiB)
  --max-queued-messages N    outbound queue per connection (default 256)
  --max-queued-bytes SIZE    outbound queue per connection (default 1MiB)
  --max-subscriptions N      per connection (default 1024)
  --max-connections N        (default 100000)
  --max-messages-per-second N  frames a client may send per second; 1008 past
                             it (default 1000; 0 = no limit)
  --log-format FORMAT        human (default) or json lines, on stderr
  --log-level LEVEL          error, warn, info (default), debug, trace, or a RUST_LOG
                             filter; without it RUST_LOG is used

With no auth option a random token is generated and the URL to use is printed.
API keys and JWTs may be combined: either is accepted.

clients (see `wshub sub --help`, `wshub pub --help`):
  wshub sub [--token TOKEN] [--bearer] URL CHANNEL...
  wshub pub [--token TOKEN] [--bearer] [--admin-key KEY] URL CHANNEL DATA
  tokens also from the WSHUB_TOKEN and WSHUB_ADMIN_KEY environment variables

process streaming (see `wshub exec --help`):
  wshub exec (--url URL --admin-key KEY | --serve ADDR) [--id ID] -- CMD ARGS...";

/// A parsed command line.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `wshub serve`.
    Serve(Box<ServeOptions>),
    /// `--help`.
    Help,
    /// `wshub runtimes`: list the runtimes this build can serve on.
    Runtimes,
    /// `wshub sub URL CHANNEL...`.
    Sub(Box<crate::sub::SubOptions>),
    /// `wshub pub URL CHANNEL DATA`.
    Pub(Box<crate::publish::PubOptions>),
    /// `wshub sub --help` / `wshub pub --help`: print this usage text.
    Usage(&'static str),
    /// `wshub exec [options] -- CMD ARGS...`.
    Exec(Box<crate::exec::ExecOptions>),
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

/// Options of `wshub serve`.
///
/// `Debug` is written by hand: it shows users, never keys or secrets.
#[derive(PartialEq, Default)]
pub struct ServeOptions {
    /// Listen address.
    pub listen: String,
    /// (key, user) pairs.
    pub api_keys: Vec<(String, String)>,
    /// Auth off.
    pub no_auth: bool,
    /// The key that may use the publish API (default: the generated token).
    pub admin_key: Option<String>,
    /// HS256 secret for JWTs.
    pub jwt_secret: Option<Secret>,
    /// RS256/ES256 public key for JWTs: its path (for the log) and its PEM,
    /// checked to be usable while parsing.
    pub jwt_public_key: Option<(PathBuf, Vec<u8>)>,
    /// `--jwt-audience`: accepted `aud` values (none: a JWT with `aud` is
    /// refused).
    pub jwt_audiences: Vec<String>,
    /// `--jwt-issuer`: accepted `iss` values (none: `iss` is ignored).
    pub jwt_issuers: Vec<String>,
    /// Allowed origins.
    pub allow_origins: Vec<String>,
    /// Required headers.
    pub require_headers: Vec<String>,
    /// Client publish patterns.
    pub publish: Vec<String>,
    /// Echo mode.
    pub echo: bool,
    /// The adapter that serves.
    pub runtime: Runtime,
    /// Limits and timers.
    pub limits: Limits,
    /// Log line format.
    pub log_format: LogFormat,
    /// `--log-level` (else `RUST_LOG`, else `info`).
    pub log_level: Option<String>,
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
            .field(
                "jwt_public_key",
                &self.jwt_public_key.as_ref().map(|(p, _)| p),
            )
            .field("jwt_audiences", &self.jwt_audiences)
            .field("jwt_issuers", &self.jwt_issuers)
            .field("allow_origins", &self.allow_origins)
            .field("require_headers", &self.require_headers)
            .field("publish", &self.publish)
            .field("echo", &self.echo)
            .field("runtime", &self.runtime)
            .field("limits", &self.limits)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// Limit and timer flags; `None` keeps the default.
#[derive(Debug, PartialEq, Default)]
pub struct Limits {
    /// `--ping-interval`.
    pub ping_interval: Option<Duration>,
    /// `--pong-timeout`.
    pub pong_timeout: Option<Duration>,
    /// `--write-timeout`.
    pub write_timeout: Option<Duration>,
    /// `--handshake-timeout`.
    pub handshake_timeout: Option<Duration>,
    /// `--max-message-size`.
    pub max_message_size: Option<usize>,
    /// `--max-queued-messages`.
    pub max_queued_messages: Option<usize>,
    /// `--max-queued-bytes`.
    pub max_queued_bytes: Option<usize>,
    /// `--max-subscriptions`.
    pub max_subscriptions: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--max-messages-per-second` (0: no limit).
    pub max_messages_per_second: Option<u32>,
}

impl Limits {
    /// Writes the given values into `config`.
    pub fn apply(&self, config: &mut HubConfig) {
        let set_d = |dst: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        let set_n = |dst: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set_d(&mut config.ping_interval, self.ping_interval);
        set_d(&mut config.pong_timeout, self.pong_timeout);
        set_d(&mut config.write_timeout, self.write_timeout);
        set_d(&mut config.handshake_timeout, self.handshake_timeout);
        set_n(&mut config.max_message_size, self.max_message_size);
        set_n(&mut config.max_queued_messages, self.max_queued_messages);
        set_n(&mut config.max_queued_bytes, self.max_queued_bytes);
        set_n(&mut config.max_subscriptions, self.max_subscriptions);
        set_n(&mut config.max_connections, self.max_connections);
        if let Some(n) = self.max_messages_per_second {
            config.max_messages_per_second = n;
        }
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

/// Parses `30s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// Parses `64KiB`, `1MiB`, `512`, `2kb` (k = 1024 either way).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    match args.first().map(String::as_str) {
        Some("serve") => {}
        Some("-h" | "--help" | "help") | None => return Ok(Command::Help),
        Some("runtimes") => return Ok(Command::Runtimes),
        Some(cmd @ ("sub" | "pub")) => {
            let rest = &args[1..];
            let help = rest.iter().any(|a| a == "-h" || a == "--help");
            return match (cmd, help) {
                ("sub", true) => Ok(Command::Usage(crate::sub::USAGE)),
                ("pub", true) => Ok(Command::Usage(crate::publish::USAGE)),
                ("sub", false) => crate::sub::parse(rest).map(|o| Command::Sub(Box::new(o))),
                _ => crate::publish::parse(rest).map(|o| Command::Pub(Box::new(o))),
            };
        }
        Some("exec") => return crate::exec::command(&args[1..]),
        Some(other) => return Err(CliError(format!("unknown command `{other}`"))),
    }
    parse_serve(&args[1..])
}

/// How a serve option takes its value, on the command line and in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One string.
    Text,
    /// A duration, size or count: a string, or in the file also a number.
    Number,
    /// A flag without a value; `true`/`false` in the file.
    Switch,
    /// A repeatable flag; an array of strings in the file.
    List,
}

/// One `wshub serve` option. The config file's keys are these names.
#[derive(Debug)]
pub(crate) struct Flag {
    /// The long flag without `--`, and the config file key.
    pub name: &'static str,
    pub kind: Kind,
    /// What the value should be, for errors.
    pub what: &'static str,
    /// Flags that set the same thing share a group: a command-line flag of a
    /// group drops the file's settings of that group.
    group: &'static str,
}

const fn flag(name: &'static str, kind: Kind, what: &'static str) -> Flag {
    Flag {
        name,
        kind,
        what,
        group: name,
    }
}

const fn grouped(name: &'static str, kind: Kind, what: &'static str, group: &'static str) -> Flag {
    Flag {
        name,
        kind,
        what,
        group,
    }
}

const DURATION: &str = "a duration like 30s or 500ms";
const SIZE: &str = "a size like 64KiB";
const COUNT: &str = "a positive number";
const RATE: &str = "a number of messages per second (0: no limit)";
const VAR: &str = "an environment variable name";

/// Every `wshub serve` option but `--config` and `--help`.
pub(crate) const FLAGS: &[Flag] = &[
    flag("listen", Kind::Text, "an address like 127.0.0.1:8080"),
    grouped("api-key", Kind::List, "KEY=USER", "api-keys"),
    grouped("api-keys-env", Kind::Text, VAR, "api-keys"),
    flag("no-auth", Kind::Switch, "true or false"),
    grouped("admin-key", Kind::Text, "a key", "admin-key"),
    grouped("admin-key-env", Kind::Text, VAR, "admin-key"),
    grouped("jwt-secret", Kind::Text, "a secret", "jwt-secret"),
    grouped("jwt-secret-env", Kind::Text, VAR, "jwt-secret"),
    flag("jwt-public-key", Kind::Text, "a PEM public key file"),
    flag("jwt-audience", Kind::List, "an accepted JWT `aud` value"),
    flag("jwt-issuer", Kind::List, "an accepted JWT `iss` value"),
    flag("allow-origin", Kind::List, "an origin"),
    flag("require-header", Kind::List, "a header name"),
    flag("publish", Kind::List, "a channel pattern"),
    flag("echo", Kind::Switch, "true or false"),
    flag("runtime", Kind::Text, "a runtime: blocking, smol or tokio"),
    flag("ping-interval", Kind::Number, DURATION),
    flag("pong-timeout", Kind::Number, DURATION),
    flag("write-timeout", Kind::Number, DURATION),
    flag("handshake-timeout", Kind::Number, DURATION),
    flag("max-message-size", Kind::Number, SIZE),
    flag("max-queued-bytes", Kind::Number, SIZE),
    flag("max-queued-messages", Kind::Number, COUNT),
    flag("max-subscriptions", Kind::Number, COUNT),
    flag("max-connections", Kind::Number, COUNT),
    flag("max-messages-per-second", Kind::Number, RATE),
    flag("log-format", Kind::Text, "a log format: human or json"),
    flag(
        "log-level",
        Kind::Text,
        "a level like info or debug, or a RUST_LOG filter",
    ),
];

/// The option named `name` (without `--`).
pub(crate) fn find_flag(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

/// One option with its value, from the command line or the config file.
#[derive(Debug)]
pub(crate) struct Setting {
    pub flag: &'static Flag,
    /// `None` for a switch.
    pub value: Option<String>,
    /// How errors name it: `--flag` or `FILE: key `flag``.
    pub label: String,
    /// The config file's directory, against which relative paths resolve;
    /// `None` for the command line (the working directory).
    pub base: Option<PathBuf>,
}

/// Whether a file setting of `group` yields to the command line's `groups`.
/// Auth modes exclude each other, so choosing one on the command line drops
/// the file's other.
fn overridden(group: &str, cli: &[&str]) -> bool {
    let given = |g: &str| cli.contains(&g);
    given(group)
        || match group {
            "no-auth" => given("api-keys") || given("jwt-secret") || given("jwt-public-key"),
            // The audience and issuer go with the JWT keys they refine.
            "api-keys" | "jwt-secret" | "jwt-public-key" | "jwt-audience" | "jwt-issuer" => {
                given("no-auth")
            }
            _ => false,
        }
}

/// `wshub serve`'s arguments: the config file (if any) first, then the
/// command line's flags over it.
fn parse_serve(args: &[String]) -> Result<Command, CliError> {
    let mut cli = Vec::new();
    let mut config: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if arg == "--config" {
            let path = it
                .next()
                .ok_or_else(|| CliError("--config needs a value (a TOML file)".into()))?;
            if config.replace(path.clone()).is_some() {
                return Err(CliError("--config: given twice".into()));
            }
            continue;
        }
        let f = arg
            .strip_prefix("--")
            .and_then(find_flag)
            .ok_or_else(|| CliError(format!("unknown option `{arg}`")))?;
        let value = match f.kind {
            Kind::Switch => None,
            _ => Some(
                it.next()
                    .cloned()
                    .ok_or_else(|| CliError(format!("{arg} needs a value ({})", f.what)))?,
            ),
        };
        cli.push(Setting {
            flag: f,
            value,
            label: arg.clone(),
            base: None,
        });
    }
    let mut settings = match &config {
        Some(path) => crate::config_file::load(std::path::Path::new(path))?,
        None => Vec::new(),
    };
    let cli_groups: Vec<&str> = cli.iter().map(|s| s.flag.group).collect();
    settings.retain(|s| !overridden(s.flag.group, &cli_groups));
    settings.extend(cli);

    let mut o = ServeOptions {
        listen: "127.0.0.1:8080".into(),
        ..ServeOptions::default()
    };
    // Where each group's value came from, for the checks across options.
    let mut origin: Vec<(&str, String)> = Vec::new();
    for s in &settings {
        apply(&mut o, s)?;
        origin.retain(|(g, _)| *g != s.flag.group);
        origin.push((s.flag.group, s.label.clone()));
    }
    let label = |group: &str| {
        origin
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| format!("--{group}"))
    };
    if o.no_auth {
        for (given, group) in [
            (!o.api_keys.is_empty(), "api-keys"),
            (o.jwt_secret.is_some(), "jwt-secret"),
            (o.jwt_public_key.is_some(), "jwt-public-key"),
        ] {
            if given {
                return Err(CliError(format!(
                    "{} cannot be combined with {}",
                    label("no-auth"),
                    label(group)
                )));
            }
        }
    }
    // An audience or issuer only refines JWT checking: alone it would
    // silently do nothing.
    if o.jwt_secret.is_none() && o.jwt_public_key.is_none() {
        for (given, group) in [
            (!o.jwt_audiences.is_empty(), "jwt-audience"),
            (!o.jwt_issuers.is_empty(), "jwt-issuer"),
        ] {
            if given {
                return Err(CliError(format!(
                    "{}: needs a JWT key (--jwt-secret, --jwt-secret-env or --jwt-public-key)",
                    label(group)
                )));
            }
        }
    }
    let mut cfg = HubConfig::default();
    o.limits.apply(&mut cfg);
    cfg.validate().map_err(|e| {
        let mut msg = format!("{}: {}", label(&e.field.replace('_', "-")), e.problem);
        // "must be longer than ping_interval": say where that one was set.
        for (group, from) in &origin {
            if e.problem.contains(&group.replace('-', "_")) {
                msg.push_str(&format!(" (set by {from})"));
            }
        }
        CliError(msg)
    })?;
    Ok(Command::Serve(Box::new(o)))
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

/// Applies one setting. Errors name the flag or the file's key, and never
/// echo a key or secret.
fn apply(o: &mut ServeOptions, s: &Setting) -> Result<(), CliError> {
    let label = s.label.as_str();
    let v = s.value.as_deref().unwrap_or("");
    let bad = |what: &str| CliError(format!("{label}: `{v}` is not {what}"));
    let err = |msg: &str| CliError(format!("{label}: {msg}"));
    match s.flag.name {
        "listen" => o.listen = v.to_owned(),
        "api-key" => o
            .api_keys
            .push(parse_key(v).ok_or_else(|| err("expected KEY=USER with both non-empty"))?),
        "api-keys-env" => {
            let raw = env_value(label, v)?;
            for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
                o.api_keys.push(
                    parse_key(part.trim())
                        .ok_or_else(|| err(&format!("{v} must hold KEY=USER[,KEY=USER...]")))?,
                );
            }
        }
        "no-auth" => o.no_auth = s.value.as_deref() != Some("false"),
        "echo" => o.echo = s.value.as_deref() != Some("false"),
        "admin-key" if v.is_empty() => return Err(err("the key is empty")),
        "admin-key" => o.admin_key = Some(v.to_owned()),
        "admin-key-env" => o.admin_key = Some(env_value(label, v)?),
        "jwt-secret" if v.is_empty() => return Err(err("the secret is empty")),
        "jwt-secret" => o.jwt_secret = Some(Secret::new(v)),
        "jwt-secret-env" => o.jwt_secret = Some(Secret::new(env_value(label, v)?)),
        "jwt-public-key" => {
            let path = match &s.base {
                Some(dir) => dir.join(v),
                None => PathBuf::from(v),
            };
            let pem = std::fs::read(&path)
                .map_err(|e| err(&format!("cannot read {}: {e}", path.display())))?;
            crate::jwt::JwtAuth::from_public_key_pem(&pem)
                .map_err(|e| err(&format!("{} {e}", path.display())))?;
            o.jwt_public_key = Some((path, pem));
        }
        "runtime" => {
            o.runtime = Runtime::ALL
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, r)| *r)
                .ok_or_else(|| bad(s.flag.what))?;
        }
        "log-format" => {
            o.log_format = LogFormat::ALL
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, f)| *f)
                .ok_or_else(|| bad(s.flag.what))?;
        }
        "log-level" => {
            crate::logging::check_level(v).map_err(|e| err(&format!("`{v}`: {e}")))?;
            o.log_level = Some(v.to_owned());
        }
        "jwt-audience" if v.is_empty() => return Err(err("the audience is empty")),
        "jwt-audience" => o.jwt_audiences.push(v.to_owned()),
        "jwt-issuer" if v.is_empty() => return Err(err("the issuer is empty")),
        "jwt-issuer" => o.jwt_issuers.push(v.to_owned()),
        "allow-origin" => o.allow_origins.push(v.to_owned()),
        "require-header" => o.require_headers.push(v.to_owned()),
        "publish" => o.publish.push(v.to_owned()),
        name @ ("ping-interval" | "pong-timeout" | "write-timeout" | "handshake-timeout") => {
            let d = parse_duration(v).ok_or_else(|| bad(DURATION))?;
            let slot = match name {
                "ping-interval" => &mut o.limits.ping_interval,
                "pong-timeout" => &mut o.limits.pong_timeout,
                "write-timeout" => &mut o.limits.write_timeout,
                _ => &mut o.limits.handshake_timeout,
            };
            *slot = Some(d);
        }
        "max-messages-per-second" => {
            let n: u32 = v.parse().map_err(|_| bad(RATE))?;
            o.limits.max_messages_per_second = Some(n);
        }
        name @ ("max-message-size" | "max-queued-bytes") => {
            let n = parse_size(v).ok_or_else(|| bad(SIZE))?;
            if name == "max-message-size" {
                o.limits.max_message_size = Some(n);
            } else {
                o.limits.max_queued_bytes = Some(n);
            }
        }
        name => {
            let n: usize = v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(COUNT))?;
            let slot = match name {
                "max-queued-messages" => &mut o.limits.max_queued_messages,
                "max-subscriptions" => &mut o.limits.max_subscriptions,
                "max-connections" => &mut o.limits.max_connections,
                // Every name in FLAGS has an arm above.
                other => unreachable!("unhandled serve option {other}"),
            };
            *slot = Some(n);
        }
    }
    Ok(())
}

fn parse_key(s: &str) -> Option<(String, String)> {
    let (k, u) = s.split_once('=')?;
    (!k.is_empty() && !u.is_empty()).then(|| (k.to_owned(), u.to_owned()))
}

/// A random 128-bit token, hex, from the operating system.
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let Command::Serve(o) = parse(&args("serve")).unwrap() else {
            panic!()
        };
        assert_eq!(o.listen, "127.0.0.1:8080");
        let Command::Serve(o) = parse(&args("serve --listen 127.0.0.1:0 --api-key k=u --ping-interval 5s --pong-timeout 1m --max-message-size 1MiB")).unwrap() else { panic!() };
        assert_eq!(o.api_keys, vec![("k".to_string(), "u".to_string())]);
        assert_eq!(o.limits.ping_interval, Some(Duration::from_secs(5)));
        assert_eq!(o.limits.pong_timeout, Some(Duration::from_secs(60)));
        assert_eq!(o.limits.max_message_size, Some(1 << 20));
        let Command::Serve(o) = parse(&args("serve --max-messages-per-second 0")).unwrap() else {
            panic!()
        };
        assert_eq!(o.limits.max_messages_per_second, Some(0));
        let mut config = HubConfig::default();
        o.limits.apply(&mut config);
        assert_eq!(config.max_messages_per_second, 0, "0 turns the limit off");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (line, flag) in [
            ("serve --ping-interval soon", "--ping-interval"),
            ("serve --max-message-size 12parsecs", "--max-message-size"),
            ("serve --api-key nokey", "--api-key"),
            ("serve --max-connections -3", "--max-connections"),
            (
                "serve --max-messages-per-second lots",
                "--max-messages-per-second",
            ),
            ("serve --listen", "--listen"),
            ("serve --ping-interval 90s", "--pong-timeout"),
            ("serve --bogus", "--bogus"),
            ("serve --runtime async-std", "--runtime"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.0.contains(flag), "{line}: {e}");
        }
    }

    #[test]
    fn errors_never_echo_a_key() {
        let e = parse(&args("serve --api-key s3cr3t")).unwrap_err();
        assert!(!e.0.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }

    /// `serve --config FILE ARGS` with `text` as the file.
    fn with_file(name: &str, text: &str, rest: &str) -> Result<ServeOptions, CliError> {
        let dir = std::env::temp_dir().join(format!("wshub-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let mut a = args("serve --config");
        a.push(path.display().to_string());
        a.extend(args(rest));
        match parse(&a)? {
            Command::Serve(o) => Ok(*o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_sets_and_flags_override() {
        let file = r#"
            listen = "127.0.0.1:0"
            api-key = ["fk=fileuser"]
            ping-interval = "5s"
            pong-timeout = 20
            max-message-size = "1KiB"
            publish = ["a*", "b*"]
            runtime = "smol"
            log-format = "json"
        "#;
        let o = with_file("set.toml", file, "").unwrap();
        assert_eq!(o.listen, "127.0.0.1:0");
        assert_eq!(o.api_keys, [("fk".into(), "fileuser".into())]);
        assert_eq!(o.limits.ping_interval, Some(Duration::from_secs(5)));
        assert_eq!(o.limits.pong_timeout, Some(Duration::from_secs(20)));
        assert_eq!(o.limits.max_message_size, Some(1024));
        assert_eq!(o.publish, ["a*", "b*"]);
        assert_eq!(o.runtime, Runtime::Smol);
        assert_eq!(o.log_format, LogFormat::Json);

        // Flags win wherever they appear; a repeated flag replaces the
        // file's whole list; what the flags leave alone stays.
        let o = with_file(
            "set.toml",
            file,
            "--runtime blocking --publish c --max-message-size 2KiB --api-key ck=cliuser",
        )
        .unwrap();
        assert_eq!(o.runtime, Runtime::Blocking);
        assert_eq!(o.publish, ["c"]);
        assert_eq!(o.limits.max_message_size, Some(2048));
        assert_eq!(o.api_keys, [("ck".into(), "cliuser".into())]);
        assert_eq!(o.limits.ping_interval, Some(Duration::from_secs(5)));
        assert_eq!(o.log_format, LogFormat::Json);
    }

    #[test]
    fn an_auth_mode_on_the_command_line_replaces_the_files() {
        let o = with_file("noauth.toml", "no-auth = true", "--api-key k=u").unwrap();
        assert!(!o.no_auth);
        assert_eq!(o.api_keys.len(), 1);
        let o = with_file(
            "keys.toml",
            "api-key = [\"k=u\"]\njwt-secret = \"s\"",
            "--no-auth",
        )
        .unwrap();
        assert!(o.no_auth && !o.has_auth());
        // Within one source the conflict is an error naming both.
        let e = with_file("both.toml", "no-auth = true\njwt-secret = \"s\"", "").unwrap_err();
        assert!(
            e.0.contains("key `no-auth`") && e.0.contains("key `jwt-secret`"),
            "{e}"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let e = with_file("late.toml", "ping-interval = \"90s\"", "").unwrap_err();
        assert!(e.0.starts_with("--pong-timeout: "), "{e}");
        assert!(e.0.contains("late.toml: key `ping-interval`"), "{e}");
        let e = with_file("bad.toml", "max-connections = 0", "").unwrap_err();
        assert!(
            e.0.contains("bad.toml: key `max-connections`: `0` is not"),
            "{e}"
        );
        let e = with_file("env.toml", "admin-key-env = \"WSHUB_NO_SUCH_VAR_X\"", "").unwrap_err();
        assert!(
            e.0.contains("key `admin-key-env`") && e.0.contains("WSHUB_NO_SUCH_VAR_X"),
            "{e}"
        );
        // The file's jwt-public-key is relative to the file.
        let e = with_file("key.toml", "jwt-public-key = \"missing.pem\"", "").unwrap_err();
        let dir = std::env::temp_dir().join(format!("wshub-cli-{}", std::process::id()));
        assert!(
            e.0.contains(&dir.join("missing.pem").display().to_string()),
            "{e}"
        );
        assert!(parse(&args("serve --config"))
            .unwrap_err()
            .0
            .contains("--config"));
    }

    #[test]
    fn jwt_and_log_flags() {
        let Command::Serve(o) = parse(&args(
            "serve --jwt-secret sekrit --log-format json --log-level debug",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(o.jwt_secret.as_ref().map(Secret::expose), Some("sekrit"));
        assert!(o.has_auth());
        assert_eq!(o.log_format, LogFormat::Json);
        assert_eq!(o.log_level.as_deref(), Some("debug"));
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-es256-public.pem"
        );
        let Command::Serve(o) = parse(&args(&format!("serve --jwt-public-key {key}"))).unwrap()
        else {
            panic!()
        };
        assert!(o.jwt_public_key.is_some() && o.has_auth());
        for (line, says) in [
            ("serve --log-format xml", "--log-format: `xml`"),
            ("serve --log-level a=b=c", "--log-level"),
            (
                "serve --jwt-secret-env WSHUB_NO_SUCH_VAR_X",
                "WSHUB_NO_SUCH_VAR_X is not set",
            ),
            (
                "serve --jwt-public-key /no/such.pem",
                "--jwt-public-key: cannot read",
            ),
            (
                "serve --no-auth --jwt-secret s",
                "--no-auth cannot be combined with --jwt-secret",
            ),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.0.contains(says), "{line}: {e}");
        }
    }

    #[test]
    fn jwt_audience_and_issuer_flags_repeat() {
        let Command::Serve(o) = parse(&args(
            "serve --jwt-secret s --jwt-audience hub --jwt-issuer idp --jwt-audience hub2",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(o.jwt_audiences, ["hub", "hub2"]);
        assert_eq!(o.jwt_issuers, ["idp"]);
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-rs256-public.pem"
        );
        let line = format!("serve --jwt-public-key {key} --jwt-issuer idp");
        let Command::Serve(o) = parse(&args(&line)).unwrap() else {
            panic!()
        };
        assert!(o.jwt_audiences.is_empty());
        assert_eq!(o.jwt_issuers, ["idp"]);
    }

    #[test]
    fn jwt_audience_and_issuer_from_the_file_and_overridden() {
        let file = "jwt-secret = \"s\"\njwt-audience = [\"a\", \"b\"]\njwt-issuer = [\"i\"]\n";
        let o = with_file("aud.toml", file, "").unwrap();
        assert_eq!(o.jwt_audiences, ["a", "b"]);
        assert_eq!(o.jwt_issuers, ["i"]);
        // The flag replaces the file's whole list; the other one stays.
        let o = with_file("aud.toml", file, "--jwt-audience c").unwrap();
        assert_eq!(o.jwt_audiences, ["c"]);
        assert_eq!(o.jwt_issuers, ["i"]);
        // --no-auth drops the file's JWT settings, audience and issuer too.
        let o = with_file("aud.toml", file, "--no-auth").unwrap();
        assert!(o.no_auth && o.jwt_audiences.is_empty() && o.jwt_issuers.is_empty());
        // A single string is not an array.
        let e = with_file(
            "aud-str.toml",
            "jwt-secret = \"s\"\njwt-audience = \"a\"",
            "",
        )
        .unwrap_err();
        assert!(
            e.0.contains("key `jwt-audience`: expected an array of strings"),
            "{e}"
        );
    }

    #[test]
    fn jwt_audience_or_issuer_without_a_jwt_key_is_an_error_naming_it() {
        for line in [
            "serve --jwt-audience hub",
            "serve --api-key k=u --jwt-audience hub",
            "serve --no-auth --jwt-audience hub",
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(
                e.0.starts_with("--jwt-audience: needs a JWT key"),
                "{line}: {e}"
            );
        }
        let e = parse(&args("serve --jwt-issuer idp")).unwrap_err();
        assert!(e.0.starts_with("--jwt-issuer: needs a JWT key"), "{e}");
        // From the file, the error names the file's key.
        let e = with_file("iss-only.toml", "jwt-issuer = [\"idp\"]", "").unwrap_err();
        assert!(
            e.0.contains("iss-only.toml: key `jwt-issuer`: needs a JWT key"),
            "{e}"
        );
        for (line, says) in [
            (
                "serve --jwt-secret s --jwt-audience",
                "--jwt-audience needs a value",
            ),
            (
                "serve --jwt-secret s --jwt-issuer",
                "--jwt-issuer needs a value",
            ),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.0.contains(says), "{line}: {e}");
        }
        let empty = ["serve", "--jwt-secret", "s", "--jwt-audience", ""].map(String::from);
        let e = parse(&empty).unwrap_err();
        assert_eq!(e.0, "--jwt-audience: the audience is empty");
        let empty = ["serve", "--jwt-secret", "s", "--jwt-issuer", ""].map(String::from);
        let e = parse(&empty).unwrap_err();
        assert_eq!(e.0, "--jwt-issuer: the issuer is empty");
    }

    #[test]
    fn every_option_has_a_parser() {
        // apply()'s last arm is unreachable only if each FLAGS name has an arm.
        std::env::set_var("WSHUB_TEST_ENV_VALUE", "k=u");
        for f in FLAGS {
            let value = match f.name {
                "runtime" => "smol",
                "log-format" => "json",
                "log-level" => "info",
                "api-key" => "k=u",
                "jwt-public-key" => "/no/such.pem",
                n if n.ends_with("-env") => "WSHUB_TEST_ENV_VALUE",
                n if n.contains("size") || n.contains("bytes") => "1KiB",
                n if n.contains("interval") || n.contains("timeout") => "5s",
                _ => "7",
            };
            let s = Setting {
                flag: f,
                value: (f.kind != Kind::Switch).then(|| value.to_owned()),
                label: format!("--{}", f.name),
                base: None,
            };
            let r = apply(&mut ServeOptions::default(), &s);
            assert!(r.is_ok() || f.name == "jwt-public-key", "{}: {r:?}", f.name);
        }
    }

    #[test]
    fn debug_never_shows_keys_or_secrets() {
        let Command::Serve(o) = parse(&args(
            "serve --api-key apik3y=alice --admin-key adm1nk3y --jwt-secret jwts3cr3t",
        ))
        .unwrap() else {
            panic!()
        };
        let shown = format!("{o:?}");
        for secret in ["apik3y", "adm1nk3y", "jwts3cr3t"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
    }
}
