//! The history flags of `wshub serve`: which channels keep a bounded history
//! for clients that resume (`recover` on subscribe), and its limits.

use std::time::Duration;

use clap::Args;

use super::{parse_count, parse_duration, parse_size};

/// The value name of `--history`; also how the config file's type errors
/// describe it (see [`super::what`]).
pub(crate) const RULE: &str = "PATTERN=SIZE[,TTL]";
/// What a `--history` value should be, for errors.
pub(crate) const RULE_WHAT: &str = "a history rule like process:*=5000,1h";

/// One `--history PATTERN=SIZE[,TTL]`, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRuleFlag {
    /// Channel pattern, `*` globs.
    pub pattern: String,
    /// Newest messages kept per channel; 0 keeps none.
    pub size: usize,
    /// How long a message is kept; `None`: the default rule's.
    pub ttl: Option<Duration>,
}

/// History flags; `None` keeps the core's default.
#[derive(Args, Debug, PartialEq, Default)]
pub struct HistoryFlags {
    /// Keep the newest SIZE messages, each at most TTL old, of channels
    /// matching PATTERN (* globs) for clients that resume; repeatable, the
    /// first match wins, the built-in rule *=100,5m comes after the given
    /// ones; SIZE 0 keeps none; '*=0' turns history off.
    #[arg(long = "history", value_name = RULE, value_parser = parse_rule)]
    pub rules: Vec<HistoryRuleFlag>,
    /// Bytes of history over all channels; the oldest go first [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub history_max_bytes: Option<usize>,
    /// How long a channel's position outlives its last stored message [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub history_meta_ttl: Option<Duration>,
    /// Most messages one resume replays, and the most GET /api/history returns [default: 300].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub history_max_replay: Option<usize>,
}

/// `PATTERN=SIZE[,TTL]`. The pattern may itself hold `=`: the last one splits.
fn parse_rule(s: &str) -> Result<HistoryRuleFlag, String> {
    let bad = |why: &str| format!("`{s}` is not {RULE_WHAT}: {why}");
    let (pattern, rest) = s
        .rsplit_once('=')
        .ok_or_else(|| bad("expected PATTERN=SIZE[,TTL]"))?;
    if pattern.is_empty() {
        return Err(bad("the pattern is empty"));
    }
    let (size, ttl) = match rest.split_once(',') {
        Some((size, ttl)) => (size, Some(ttl)),
        None => (rest, None),
    };
    let size = size
        .trim()
        .parse::<usize>()
        .map_err(|_| bad("SIZE must be a number of messages (0: none)"))?;
    let ttl = ttl
        .map(|t| parse_duration(t).map_err(|_| bad("TTL must be a duration like 5m or 1h")))
        .transpose()?;
    Ok(HistoryRuleFlag {
        pattern: pattern.to_owned(),
        size,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rule("process:*=5000,1h"),
            Ok(HistoryRuleFlag {
                pattern: "process:*".into(),
                size: 5000,
                ttl: Some(Duration::from_secs(3600)),
            })
        );
        assert_eq!(
            parse_rule("*=0"),
            Ok(HistoryRuleFlag {
                pattern: "*".into(),
                size: 0,
                ttl: None,
            })
        );
        assert_eq!(parse_rule("a=b=3").map(|r| r.pattern), Ok("a=b".into()));
        for bad in [
            "*", "=5", "*=", "*=-1", "*=lots", "*=5,", "*=5,soon", "*=5,0s",
        ] {
            let e = parse_rule(bad).unwrap_err();
            assert!(e.contains(RULE_WHAT), "{bad}: {e}");
        }
    }
}
