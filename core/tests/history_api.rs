//! The history API's shape: defaults, rules, the command and its reply.

use std::time::{Duration, Instant};

use wshub_core::command::{Command, Reply};
use wshub_core::{HistoryConfig, HistoryError, HistoryRule, Hub, HubConfig};

#[test]
fn history_is_on_by_default_for_every_channel() {
    let cfg = HubConfig::default();
    let rule = cfg.history.rule_for("any:channel").expect("a default rule");
    assert_eq!(rule.size, 100);
    assert_eq!(rule.ttl, Duration::from_secs(300));
    assert_eq!(cfg.history.max_bytes, 64 * 1024 * 1024);
    assert_eq!(cfg.history.meta_ttl, Duration::from_secs(3600));
    assert_eq!(cfg.history.max_replay, 300);
    assert!(HistoryConfig::off().rule_for("x").is_none());
}

#[test]
fn the_first_matching_rule_wins_and_size_zero_keeps_nothing() {
    let h = HistoryConfig {
        rules: vec![
            HistoryRule {
                pattern: "quiet:*".into(),
                size: 0,
                ttl: Duration::from_secs(1),
            },
            HistoryRule {
                pattern: "*".into(),
                size: 7,
                ttl: Duration::from_secs(1),
            },
        ],
        ..HistoryConfig::default()
    };
    assert!(h.rule_for("quiet:1").is_none());
    assert_eq!(h.rule_for("loud").map(|r| r.size), Some(7));
}

#[test]
fn a_rule_that_keeps_history_needs_a_ttl() {
    let mut cfg = HubConfig::default();
    cfg.history.rules[0].ttl = Duration::ZERO;
    assert_eq!(cfg.validate().unwrap_err().field, "history.rules");
}

#[test]
fn the_history_command_checks_its_limit() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap();
    let ask = |limit| Command::History {
        channel: "c".into(),
        since: None,
        limit,
    };
    assert_eq!(
        hub.apply(now, ask(0)),
        Reply::History(Err(HistoryError::TooMany))
    );
    assert_eq!(
        hub.apply(now, ask(301)),
        Reply::History(Err(HistoryError::TooMany))
    );
    assert!(matches!(hub.apply(now, ask(5)), Reply::History(Ok(_))));
    let cfg = HubConfig {
        history: HistoryConfig::off(),
        ..HubConfig::default()
    };
    let mut hub = Hub::new(cfg, now, Duration::ZERO).unwrap();
    assert_eq!(
        hub.apply(now, ask(5)),
        Reply::History(Err(HistoryError::NoHistory))
    );
    assert_eq!(hub.position("c"), None);
}
