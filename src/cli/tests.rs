//! Unit tests of [`super`]: flags, the config file under them, errors.

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
    let d = |s: &str| parse_duration(s).ok();
    assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(d("2"), Some(Duration::from_secs(2)));
    assert_eq!(d("2m"), Some(Duration::from_secs(120)));
    assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(d("0.5"), Some(Duration::from_millis(500)));
    assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(d("1h 30m"), Some(Duration::from_secs(5400)));
    assert_eq!(d("0s"), None);
    assert_eq!(d("0"), None);
    assert_eq!(d("-1"), None);
    assert_eq!(d("1parsec"), None);
    assert_eq!(parse_size("64KiB"), Ok(65536));
    assert!(parse_size("0").is_err());
    assert!(parse_size("99999999999999999999").is_err());
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
    let Command::Serve(o) = parse(&args(&format!("serve --jwt-public-key {key}"))).unwrap() else {
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
    let e = parse(&args("serve --jwt-user-claim preferred_username")).unwrap_err();
    assert!(e.0.starts_with("--jwt-user-claim: needs a JWT key"), "{e}");
    let e = parse(&args("serve --jwt-secret s --jwt-require-claim azp")).unwrap_err();
    assert_eq!(
        e.0,
        "--jwt-require-claim: expected NAME=VALUE, both non-empty"
    );
    let ok = "serve --jwt-secret s --jwt-user-claim email --jwt-require-claim azp=web";
    assert!(parse(&args(ok)).is_ok());
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
fn every_option_takes_a_value_of_its_kind() {
    // Each flag with a sample value of its value name, as the file would
    // give it too.
    std::env::set_var("WSHUB_TEST_ENV_VALUE", "k=u");
    let cmd = serve_command();
    for a in cmd.get_arguments() {
        let name = a.get_long().unwrap();
        let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
        let value_name = a
            .get_value_names()
            .filter(|_| !switch)
            .map(|v| v[0].as_str());
        let value = match (name, value_name) {
            ("config" | "jwt-public-key", _) => continue,
            (_, None) => None,
            ("runtime", _) => Some("smol"),
            ("log-format", _) => Some("json"),
            ("log-level", _) => Some("info"),
            (n, _) if n.ends_with("-env") => Some("WSHUB_TEST_ENV_VALUE"),
            (_, Some("KEY=USER")) => Some("k=u"),
            (_, Some("URL")) => Some("redis://127.0.0.1:6379"),
            (_, Some("NAME=VALUE")) => Some("azp=web"),
            (_, Some("ID")) => Some("node-1"),
            (_, Some(history::RULE)) => Some("a*=5,1m"),
            (_, Some("SIZE")) => Some("1KiB"),
            (_, Some("DURATION")) => Some(if name == "pong-timeout" { "60s" } else { "5s" }),
            _ => Some("7"),
        };
        let mut line = vec!["serve".to_owned(), format!("--{name}")];
        line.extend(value.map(String::from));
        if name.starts_with("jwt-audience")
            || name.starts_with("jwt-issuer")
            || name.starts_with("jwt-user-claim")
            || name.starts_with("jwt-require-claim")
        {
            line.extend(["--jwt-secret".into(), "s".into()]);
        }
        if name == "node-id" || name == "presence-ttl" {
            line.extend(["--broker".into(), "redis://127.0.0.1:6379".into()]);
        }
        let r = parse(&line);
        assert!(r.is_ok(), "{line:?}: {r:?}");
        assert!(
            what(value_name.unwrap_or("")) != "a string" || value_name.is_none(),
            "{name}: no description for its value name"
        );
    }
}

#[test]
fn errors_never_echo_a_secret() {
    // What our parsers say is shown, never clap's copy of the value.
    for line in [
        "serve --api-key s3cr3t",
        "serve --api-key =s3cr3t",
        "serve --admin-key s3cr3t --admin-key-env WSHUB_NO_SUCH_VAR_X",
        "serve --jwt-secret s3cr3t --jwt-audience",
        "serve --jwt-secret s3cr3t --no-auth",
        "serve --jwt-secret s3cr3t --jwt-public-key /no/such.pem",
        "pub --admin-key s3cr3t --timeout soon ws://h:1/ws c d",
        "sub --token s3cr3t --ca-file /no/such.pem wss://h:1/ws c",
        // A credential starting with a dash is a value, not an unknown flag.
        "serve --jwt-secret -s3cr3t --bogus",
        "serve --api-key -s3cr3t",
        "serve --admin-key -s3cr3t --listen",
        "sub --token -s3cr3t https://h:1/ws c",
        "pub --admin-key -s3cr3t ws://h:1/ws c",
        "exec --admin-key -s3cr3t --url ws://h:1/ws",
    ] {
        let e = parse(&args(line)).unwrap_err();
        assert!(!e.0.contains("s3cr3t"), "{line}: {e}");
    }
}

#[test]
fn a_credential_may_start_with_a_dash() {
    let Command::Serve(o) = parse(&args("serve --jwt-secret -s3cr3t --admin-key -adm")).unwrap()
    else {
        panic!()
    };
    assert_eq!(o.jwt_secret.as_ref().map(Secret::expose), Some("-s3cr3t"));
    assert_eq!(o.admin_key.as_deref(), Some("-adm"));
}

#[test]
fn help_and_other_subcommands() {
    for line in ["", "--help", "help", "serve --help", "exec --help"] {
        assert!(
            matches!(parse(&args(line)), Ok(Command::Print(_))),
            "{line}"
        );
    }
    assert!(matches!(parse(&args("runtimes")), Ok(Command::Runtimes)));
    let e = parse(&args("frobnicate")).unwrap_err();
    assert!(e.0.contains("frobnicate"), "{e}");
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

#[test]
fn history_flags_and_keys() {
    let Command::Serve(o) = parse(&args("serve")).unwrap() else {
        panic!()
    };
    assert_eq!(
        o.history,
        HistoryFlags::default(),
        "nothing given: the core's default"
    );
    let Command::Serve(o) = parse(&args(
        "serve --history process:*=5000,1h --history *=0 --history-max-bytes 8MiB \
         --history-meta-ttl 2h --history-max-replay 50",
    ))
    .unwrap() else {
        panic!()
    };
    let rules: Vec<(&str, usize, Option<Duration>)> = o
        .history
        .rules
        .iter()
        .map(|r| (r.pattern.as_str(), r.size, r.ttl))
        .collect();
    assert_eq!(
        rules,
        [
            ("process:*", 5000, Some(Duration::from_secs(3600))),
            ("*", 0, None)
        ],
        "in the order given"
    );
    assert_eq!(o.history.history_max_bytes, Some(8 << 20));
    assert_eq!(o.history.history_meta_ttl, Some(Duration::from_secs(7200)));
    assert_eq!(o.history.history_max_replay, Some(50));

    let file = "history = [\"a:*=10,30s\", \"b=0\"]\nhistory-max-bytes = 4096\n\
                history-meta-ttl = \"10m\"\nhistory-max-replay = 20\n";
    let o = with_file("history.toml", file, "").unwrap();
    assert_eq!(o.history.rules.len(), 2);
    assert_eq!(o.history.rules[1].pattern, "b");
    assert_eq!(o.history.history_max_bytes, Some(4096));
    assert_eq!(o.history.history_meta_ttl, Some(Duration::from_secs(600)));
    // The command line's list replaces the file's.
    let o = with_file("history.toml", file, "--history c=1 --history-max-replay 7").unwrap();
    assert_eq!(o.history.rules.len(), 1);
    assert_eq!(o.history.rules[0].pattern, "c");
    assert_eq!(o.history.history_max_replay, Some(7));
    assert_eq!(o.history.history_max_bytes, Some(4096));

    for (line, flag) in [
        ("serve --history process", "--history: "),
        ("serve --history *=lots", "--history: "),
        ("serve --history *=5,soon", "--history: "),
        ("serve --history-max-bytes 0", "--history-max-bytes: "),
        ("serve --history-meta-ttl never", "--history-meta-ttl: "),
        ("serve --history-max-replay 0", "--history-max-replay: "),
    ] {
        let e = parse(&args(line)).unwrap_err();
        assert!(e.0.starts_with(flag), "{line}: {e}");
    }
    let e = with_file("badhistory.toml", "history = [\"x\"]", "").unwrap_err();
    assert!(e.0.contains("badhistory.toml: key `history`: "), "{e}");
    let e = with_file("badhistory2.toml", "history = \"x=1\"", "").unwrap_err();
    assert!(
        e.0.contains("key `history`: expected an array of strings (a history rule"),
        "{e}"
    );
}
