//! The history flags of `wshub serve`: which channels keep a bounded history
//! for clients that resume (`recover` on subscribe), and its limits.

use std::time::Duration;

use clap::Args;
use wshub_core::history::{HistoryConfig, HistoryRule};

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

impl HistoryFlags {
    /// Writes the given values into `config`: the rules given go before the
    /// config's own (the default `*` rule stays the fallback), a rule without
    /// TTL takes the default rule's.
    pub fn apply(&self, config: &mut HistoryConfig) {
        let default_ttl = HistoryConfig::default()
            .rules
            .first()
            .map_or(Duration::from_secs(300), |r| r.ttl);
        let given = self.rules.iter().map(|r| HistoryRule {
            pattern: r.pattern.clone(),
            size: r.size,
            ttl: r.ttl.unwrap_or(default_ttl),
        });
        config.rules = given.chain(config.rules.drain(..)).collect();
        if let Some(n) = self.history_max_bytes {
            config.max_bytes = n;
        }
        if let Some(d) = self.history_meta_ttl {
            config.meta_ttl = d;
        }
        if let Some(n) = self.history_max_replay {
            config.max_replay = n;
        }
    }
}

/// The flag behind a [`wshub_core::HubConfig`] history field, for its
/// validation errors.
pub(crate) fn flag_of(field: &str) -> Option<&'static str> {
    match field {
        "history.rules" => Some("history"),
        "history.max_bytes" => Some("history-max-bytes"),
        "history.meta_ttl" => Some("history-meta-ttl"),
        "history.max_replay" => Some("history-max-replay"),
        _ => None,
    }
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

    #[test]
    fn given_rules_go_first_and_the_default_stays_last() {
        let flags = HistoryFlags {
            rules: vec![
                parse_rule("process:*=5000,1h").unwrap(),
                parse_rule("chat:*=0").unwrap(),
            ],
            history_max_bytes: Some(1 << 20),
            history_meta_ttl: Some(Duration::from_secs(60)),
            history_max_replay: Some(10),
        };
        let mut config = HistoryConfig::default();
        flags.apply(&mut config);
        let size = |c: &str| config.rule_for(c).map(|r| (r.size, r.ttl.as_secs()));
        assert_eq!(size("process:1"), Some((5000, 3600)));
        assert_eq!(size("chat:1"), None, "size 0 keeps none");
        assert_eq!(
            size("news"),
            Some((100, 300)),
            "the default rule still holds"
        );
        assert_eq!(
            (
                config.max_bytes,
                config.meta_ttl.as_secs(),
                config.max_replay
            ),
            (1 << 20, 60, 10)
        );
        let mut config = HistoryConfig::default();
        HistoryFlags {
            rules: vec![parse_rule("*=0").unwrap()],
            ..HistoryFlags::default()
        }
        .apply(&mut config);
        assert_eq!(config.rule_for("anything"), None, "'*=0' turns it all off");
        let ttl = parse_rule("a=5").unwrap();
        let mut config = HistoryConfig::default();
        HistoryFlags {
            rules: vec![ttl],
            ..HistoryFlags::default()
        }
        .apply(&mut config);
        assert_eq!(config.rule_for("a").map(|r| r.ttl.as_secs()), Some(300));
    }
}
