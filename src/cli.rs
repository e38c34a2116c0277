//! Command-line parsing for the `wshub` binary. Bad values give an error that
//! names the flag; the binary exits with code 2.

use std::fmt;
use std::time::Duration;

use wshub_core::HubConfig;

/// The usage text.
pub const USAGE: &str = "usage: wshub serve [options]

options:
  --listen ADDR              listen address (default 127.0.0.1:8080); WebSocket at /ws
  --api-key KEY=USER         accept this key (bearer or ?token=) as USER; repeatable
  --api-keys-env VAR         read KEY=USER[,KEY=USER...] from environment variable VAR
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

With no auth option a random token is generated and the URL to use is printed.

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
    /// tokio (wshub-tokio). The default for the standalone server: its
    /// work-stealing scheduler uses every core for tens of thousands of
    /// connections, where the blocking adapter needs two threads each.
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
}

/// Options of `wshub serve`.
#[derive(Debug, PartialEq, Default)]
pub struct ServeOptions {
    /// Listen address.
    pub listen: String,
    /// (key, user) pairs. `Debug` of the options shows keys: never log it.
    pub api_keys: Vec<(String, String)>,
    /// Auth off.
    pub no_auth: bool,
    /// The key that may use the publish API (default: the generated token).
    pub admin_key: Option<String>,
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
    let mut it = args.iter();
    match it.next().map(String::as_str) {
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
    let mut o = ServeOptions {
        listen: "127.0.0.1:8080".into(),
        ..ServeOptions::default()
    };
    while let Some(flag) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| CliError(format!("{flag} needs a value ({what})")))
        };
        let bad = |v: &str, what: &str| CliError(format!("{flag}: `{v}` is not {what}"));
        let _ = &bad;
        match flag.as_str() {
            "--listen" => o.listen = value("an address like 127.0.0.1:8080")?,
            "--api-key" => {
                let v = value("KEY=USER")?;
                o.api_keys.push(parse_key(&v).ok_or_else(|| {
                    CliError(format!("{flag}: expected KEY=USER with both non-empty"))
                })?);
            }
            "--api-keys-env" => {
                let var = value("a variable name")?;
                let raw = std::env::var(&var).map_err(|_| {
                    CliError(format!("{flag}: environment variable {var} is not set"))
                })?;
                for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
                    o.api_keys.push(parse_key(part.trim()).ok_or_else(|| {
                        CliError(format!("{flag}: {var} must hold KEY=USER[,KEY=USER...]"))
                    })?);
                }
            }
            "--no-auth" => o.no_auth = true,
            "--admin-key" => o.admin_key = Some(value("a key")?),
            "--admin-key-env" => {
                let var = value("a variable name")?;
                let key = std::env::var(&var).map_err(|_| {
                    CliError(format!("{flag}: environment variable {var} is not set"))
                })?;
                if key.is_empty() {
                    return Err(CliError(format!("{flag}: {var} is empty")));
                }
                o.admin_key = Some(key);
            }
            "--echo" => o.echo = true,
            "--runtime" => {
                let v = value("blocking, smol or tokio")?;
                o.runtime = Runtime::ALL
                    .iter()
                    .find(|(n, _)| *n == v)
                    .map(|(_, r)| *r)
                    .ok_or_else(|| bad(&v, "a runtime: blocking, smol or tokio"))?;
            }
            "--allow-origin" => o.allow_origins.push(value("an origin")?),
            "--require-header" => o.require_headers.push(value("a header name")?),
            "--publish" => o.publish.push(value("a channel pattern")?),
            "--ping-interval" | "--pong-timeout" | "--write-timeout" | "--handshake-timeout" => {
                let v = value("a duration like 30s")?;
                let d =
                    parse_duration(&v).ok_or_else(|| bad(&v, "a duration like 30s or 500ms"))?;
                let slot = match flag.as_str() {
                    "--ping-interval" => &mut o.limits.ping_interval,
                    "--pong-timeout" => &mut o.limits.pong_timeout,
                    "--write-timeout" => &mut o.limits.write_timeout,
                    _ => &mut o.limits.handshake_timeout,
                };
                *slot = Some(d);
            }
            "--max-message-size" | "--max-queued-bytes" => {
                let v = value("a size like 64KiB")?;
                let n = parse_size(&v).ok_or_else(|| bad(&v, "a size like 64KiB"))?;
                if flag == "--max-message-size" {
                    o.limits.max_message_size = Some(n);
                } else {
                    o.limits.max_queued_bytes = Some(n);
                }
            }
            "--max-queued-messages" | "--max-subscriptions" | "--max-connections" => {
                let v = value("a number")?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(&v, "a positive number"))?;
                let slot = match flag.as_str() {
                    "--max-queued-messages" => &mut o.limits.max_queued_messages,
                    "--max-subscriptions" => &mut o.limits.max_subscriptions,
                    _ => &mut o.limits.max_connections,
                };
                *slot = Some(n);
            }
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(CliError(format!("unknown option `{other}`"))),
        }
    }
    if o.no_auth && !o.api_keys.is_empty() {
        return Err(CliError(
            "--no-auth cannot be combined with --api-key".into(),
        ));
    }
    let mut cfg = HubConfig::default();
    o.limits.apply(&mut cfg);
    cfg.validate()
        .map_err(|e| CliError(format!("--{}: {}", e.field.replace('_', "-"), e.problem)))?;
    Ok(Command::Serve(Box::new(o)))
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
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (line, flag) in [
            ("serve --ping-interval soon", "--ping-interval"),
            ("serve --max-message-size 12parsecs", "--max-message-size"),
            ("serve --api-key nokey", "--api-key"),
            ("serve --max-connections -3", "--max-connections"),
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
}
