//! `wshub serve` logs through `tracing`: human-readable lines on stderr by
//! default, JSON lines with `--log-format json`.
//!
//! What is never logged: tokens, keys and secrets (identities are logged by
//! user id), and request query strings (a browser's `?token=` rides there).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2025-01-01T00:00:00.000000Z  INFO listening on ws://...` lines.
    #[default]
    Human,
    /// One JSON object per line (`timestamp`, `level`, `message`, fields).
    Json,
}

impl LogFormat {
    /// Every format, by name.
    pub const ALL: [(&'static str, LogFormat); 2] =
        [("human", LogFormat::Human), ("json", LogFormat::Json)];
}

/// Checks a `--log-level` value: a level (`info`, `debug`...) or an
/// `EnvFilter` directive list (`wshub=debug,warn`).
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber. The level comes from `level`, else from
/// `RUST_LOG`, else `info`.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A later init (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => builder
            // Colour codes would split `key=value` in piped output.
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
