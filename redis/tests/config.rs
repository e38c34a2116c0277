//! Configuration checks, and the password kept out of every message.

mod common;

use common::{fast, Node};
use wshub_core::broker::BrokerInput;
use wshub_redis::testing::RedisServer;
use wshub_redis::{redact_url, ConfigError, RedisBroker, RedisConfig};

#[test]
fn the_password_is_redacted() {
    let cfg = RedisConfig::new("redis://user:s3cret@127.0.0.1:6379/2");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert_eq!(redact_url(&cfg.url), "redis://***@127.0.0.1:6379/2");
    assert_eq!(redact_url("redis://:pa/ss@h:1"), "redis://***@h:1");
    for url in [
        "http://:s3cret@host",
        "rediss://:s3cret@host",
        "redis://:s3cret@",
        "s3cret",
    ] {
        let err = RedisConfig::new(url).validate().unwrap_err();
        assert!(
            !err.to_string().contains("s3cret") && !format!("{err:?}").contains("s3cret"),
            "{err}"
        );
    }
    let (_link, outputs) = wshub_redis::link();
    let broker = RedisBroker::start(cfg, outputs, |_| true).unwrap();
    assert!(!format!("{broker:?}").contains("s3cret"));
}

#[test]
fn bad_settings_are_refused() {
    let bad = |f: fn(&mut RedisConfig)| {
        let mut c = RedisConfig::new("redis://127.0.0.1");
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert_eq!(
        bad(|c| c.url = "http://x".into()),
        ConfigError::Scheme("none of redis://, redis+cluster://")
    );
    assert_eq!(bad(|c| c.node_id = Some("a b".into())), ConfigError::NodeId);
    assert_eq!(bad(|c| c.node_id = Some("a:b".into())), ConfigError::NodeId);
    assert_eq!(bad(|c| c.prefix = "{x}".into()), ConfigError::Prefix);
    assert_eq!(
        bad(|c| c.probe_interval = Default::default()),
        ConfigError::Duration("probe_interval")
    );
    assert_eq!(
        bad(|c| c.presence_ttl = c.presence_refresh),
        ConfigError::Duration("presence_ttl")
    );
    assert!(RedisConfig::new("redis://127.0.0.1:6379/3")
        .validate()
        .is_ok());
}

#[test]
fn a_password_protected_redis() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let mut a = Node::up(&redis.url(), fast);
    a.subscribe("news");
    assert_eq!(a.publish("news", "{}", None), Ok(None));
    a.publication("news");
    let wrong = redis.url().replace("s3cret", "wrong");
    let b = Node::with(&wrong, fast);
    b.wait("Down", |i| *i == BrokerInput::Down);
}
