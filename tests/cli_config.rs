//! `wshub serve --config FILE` and the JWT flags, end to end: the real binary
//! on loopback, real WebSocket upgrades.

mod proc_log;

use proc_log::{lines, run_serve, serve_command};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{HandshakeError, Message as WsMessage, WebSocket};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_wshub");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A running `wshub serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = serve_command()
            .args(args)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        let stderr = lines(child.stderr.take().unwrap());
        let mut log = Vec::new();
        let addr = proc_log::wait_listening(&stderr, &mut log, WAIT);
        Serve {
            child,
            addr,
            stderr,
            log,
        }
    }

    /// Waits for a log line containing `what`.
    fn wait_log(&mut self, what: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {what:?}; saw {:#?}", self.log),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upgrades at `target` (e.g. `/ws?token=T`), with a bearer if given: the
/// socket, or the refusal's HTTP status.
fn upgrade(addr: &str, target: &str, bearer: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let mut req = format!("ws://{addr}{target}")
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        let value = format!("Bearer {t}").parse().unwrap();
        req.headers_mut().insert("Authorization", value);
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade to {target}: {e}"),
    }
}

/// The next text message as JSON, or the close code.
fn next(ws: &mut WebSocket<TcpStream>) -> Result<Value, Option<u16>> {
    loop {
        match ws.read() {
            Ok(WsMessage::Text(t)) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Ok(WsMessage::Close(f)) => return Err(f.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Sends a `ping` padded to about `size` bytes; the pong or the close code.
fn padded_ping(ws: &mut WebSocket<TcpStream>, size: usize) -> Result<Value, Option<u16>> {
    let m = json!({"type": "ping", "pad": "x".repeat(size)});
    ws.send(WsMessage::text(m.to_string())).unwrap();
    next(ws)
}

#[test]
fn every_bad_config_file_exits_2_naming_the_file_and_key() {
    for (test, text, says) in [
        (
            "syntax",
            "listen = \"127.0.0.1:0\"\nping-interval = 30s\n",
            ":2:17: key `ping-interval`",
        ),
        (
            "unknown",
            "listen = \"127.0.0.1:0\"\npong-timout = \"60s\"\n",
            "unknown key `pong-timout`",
        ),
        (
            "duration",
            "ping-interval = \"soon\"\n",
            "key `ping-interval`: `soon` is not a duration",
        ),
        (
            "size",
            "max-message-size = \"12parsecs\"\n",
            "key `max-message-size`: `12parsecs` is not a size",
        ),
        (
            "type",
            "max-connections = true\n",
            "key `max-connections`: expected a positive number (a string), found a boolean",
        ),
        (
            "list",
            "api-key = \"k=u\"\n",
            "key `api-key`: expected an array of strings",
        ),
        (
            "count",
            "max-connections = -1\n",
            "key `max-connections`: `-1` is not a positive number",
        ),
        (
            "runtime",
            "runtime = \"async-std\"\n",
            "key `runtime`: `async-std` is not a runtime",
        ),
        (
            "env",
            "jwt-secret-env = \"WSHUB_TEST_UNSET_VAR\"\n",
            "key `jwt-secret-env`: environment variable WSHUB_TEST_UNSET_VAR is not set",
        ),
        (
            "pem",
            "jwt-public-key = \"nope.pem\"\n",
            "key `jwt-public-key`: cannot read",
        ),
        (
            "audience",
            "jwt-audience = [\"hub\"]\n",
            "key `jwt-audience`: needs a JWT key",
        ),
        (
            "cross",
            "ping-interval = \"90s\"\n",
            "--pong-timeout: must be longer than ping_interval (set by",
        ),
    ] {
        let path = proc_log::config_file("cli-config", test, text);
        let (code, err) = run_serve(&["--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{test}: {err}");
        assert!(err.starts_with("wshub: "), "{test}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{test}: names the file: {err}"
        );
        assert!(err.contains(says), "{test}: wanted {says:?} in {err}");
    }
    let (code, err) = run_serve(&["--config", "/no/such/dir/wshub.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("wshub: --config: cannot read /no/such/dir/wshub.toml"),
        "{err}"
    );
    let (code, err) = run_serve(&["--config"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--config needs a value"), "{err}");
}

#[test]
fn a_syntax_error_never_shows_the_line_it_is_on() {
    let path = proc_log::config_file("cli-config", "quote", "admin-key = s3cr3t-unquoted-admin\n");
    let (code, err) = run_serve(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("key `admin-key`"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn config_values_take_effect() {
    let path = proc_log::config_file(
        "cli-config",
        "effect",
        r#"
# Everything here could be a flag.
listen = "127.0.0.1:0"
runtime = "blocking"
api-key = ["filek3y=fileuser"]
max-message-size = "1KiB"
ping-interval = 5
"#,
    );
    let mut serve = Serve::start(&["--config", path.to_str().unwrap()], &[]);
    assert!(serve.log[0].contains("runtime=blocking"), "{:?}", serve.log);
    // The key from the file authenticates, as its user.
    let mut ws = upgrade(&serve.addr, "/ws?token=filek3y", None).expect("file key accepted");
    assert!(serve.wait_log("connected").contains("user=fileuser"));
    assert_eq!(
        upgrade(&serve.addr, "/ws?token=other", None).err(),
        Some(401)
    );
    // The file's message size limit applies: small passes, 2 KiB is 1009.
    assert_eq!(padded_ping(&mut ws, 100).unwrap()["type"], "pong");
    assert_eq!(padded_ping(&mut ws, 2048).err(), Some(Some(1009)));
}

#[test]
fn flags_override_the_file() {
    let path = proc_log::config_file(
        "cli-config",
        "override",
        "listen = \"127.0.0.1:0\"\napi-key = [\"filek3y=fileuser\"]\nmax-message-size = \"1KiB\"\nruntime = \"smol\"\n",
    );
    let serve = Serve::start(
        &[
            "--config",
            path.to_str().unwrap(),
            "--api-key",
            "clik3y=cliuser",
            "--max-message-size",
            "64KiB",
        ],
        &[],
    );
    // What the flags leave alone still comes from the file.
    assert!(serve.log[0].contains("runtime=smol"), "{:?}", serve.log);
    // --api-key replaces the file's keys rather than adding to them.
    assert_eq!(
        upgrade(&serve.addr, "/ws?token=filek3y", None).err(),
        Some(401)
    );
    let mut ws = upgrade(&serve.addr, "/ws?token=clik3y", None).expect("flag key accepted");
    assert_eq!(padded_ping(&mut ws, 2048).unwrap()["type"], "pong");
}

fn hs256(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn exp_in(secs: i64) -> i64 {
    jsonwebtoken::get_current_timestamp() as i64 + secs
}

#[test]
fn jwt_secret_end_to_end_alongside_an_api_key() {
    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    let mut serve = Serve::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret-env",
            "WSHUB_TEST_JWT",
            "--api-key",
            "k3y=keyuser",
        ],
        &[("WSHUB_TEST_JWT", secret)],
    );
    let good = hs256(secret, &json!({"sub": "jwtuser", "exp": exp_in(600)}));
    let mut ws = upgrade(&serve.addr, "/ws", Some(&good)).expect("bearer JWT accepted");
    assert!(serve.wait_log("connected").contains("user=jwtuser"));
    assert_eq!(padded_ping(&mut ws, 1).unwrap()["type"], "pong");
    upgrade(&serve.addr, &format!("/ws?token={good}"), None).expect("query JWT accepted");
    upgrade(&serve.addr, "/ws?token=k3y", None).expect("the API key still works");

    for (what, token) in [
        (
            "wrong secret",
            hs256(
                "another-secret-entirely-32-bytes!!",
                &json!({"sub": "x", "exp": exp_in(600)}),
            ),
        ),
        (
            "expired",
            hs256(secret, &json!({"sub": "x", "exp": exp_in(-3600)})),
        ),
        ("no sub", hs256(secret, &json!({"exp": exp_in(600)}))),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        assert_eq!(
            upgrade(&serve.addr, "/ws", Some(&token)).err(),
            Some(401),
            "{what}"
        );
        assert_eq!(
            upgrade(&serve.addr, &format!("/ws?token={token}"), None).err(),
            Some(401),
            "{what}"
        );
    }
    assert!(serve.wait_log("jwt: expired").contains("auth failed"));
}

#[test]
fn jwt_public_key_from_the_config_file() {
    // A relative key path in the file is relative to the file.
    let path = proc_log::config_file(
        "cli-config",
        "pubkey",
        "listen = \"127.0.0.1:0\"\njwt-public-key = \"key.pem\"\n",
    );
    std::fs::copy(
        format!("{FIXTURES}/jwt-rs256-public.pem"),
        path.with_file_name("key.pem"),
    )
    .unwrap();
    let mut serve = Serve::start(&["--config", path.to_str().unwrap()], &[]);
    serve.wait_log("algorithm=RS256");
    let private = std::fs::read(format!("{FIXTURES}/jwt-rs256-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let claims = json!({"sub": "rsauser", "exp": exp_in(600)});
    let token = encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
    upgrade(&serve.addr, &format!("/ws?token={token}"), None).expect("RS256 accepted");
    assert!(serve.wait_log("connected").contains("user=rsauser"));
    // HS256 keyed with the public key (key confusion) is refused.
    let public = std::fs::read_to_string(format!("{FIXTURES}/jwt-rs256-public.pem")).unwrap();
    let forged = hs256(&public, &claims);
    assert_eq!(upgrade(&serve.addr, "/ws", Some(&forged)).err(), Some(401));
    // No generated token without any other auth option: nothing else gets in.
    assert_eq!(upgrade(&serve.addr, "/ws", None).err(), Some(401));
    drop(serve);

    // ES256 the same way, from the flag.
    let mut serve = Serve::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-public-key",
            &format!("{FIXTURES}/jwt-es256-public.pem"),
        ],
        &[],
    );
    let private = std::fs::read(format!("{FIXTURES}/jwt-es256-private.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&private).unwrap();
    let claims = json!({"sub": "ecuser", "exp": exp_in(600)});
    let token = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    upgrade(&serve.addr, "/ws", Some(&token)).expect("ES256 accepted");
    assert!(serve.wait_log("connected").contains("user=ecuser"));
}

#[test]
fn jwt_audience_and_issuer_end_to_end() {
    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    let mut serve = Serve::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret-env",
            "WSHUB_TEST_JWT",
            "--jwt-audience",
            "wshub",
            "--jwt-audience",
            "wshub-staging",
            "--jwt-issuer",
            "https://idp.example",
        ],
        &[("WSHUB_TEST_JWT", secret)],
    );
    let token = |aud: Value, iss: Value| {
        let mut c = json!({"sub": "auduser", "exp": exp_in(600)});
        if !aud.is_null() {
            c["aud"] = aud;
        }
        if !iss.is_null() {
            c["iss"] = iss;
        }
        hs256(secret, &c)
    };
    let idp = json!("https://idp.example");
    let good = token(json!("wshub"), idp.clone());
    let mut ws = upgrade(&serve.addr, "/ws", Some(&good)).expect("right aud and iss accepted");
    assert!(serve.wait_log("connected").contains("user=auduser"));
    assert_eq!(padded_ping(&mut ws, 1).unwrap()["type"], "pong");
    // Any one of the audiences, in an array too.
    let array = token(json!(["elsewhere", "wshub-staging"]), idp.clone());
    upgrade(&serve.addr, &format!("/ws?token={array}"), None).expect("aud array accepted");

    let wrong_aud = token(json!("elsewhere-s3cr3t"), idp.clone());
    let wrong_iss = token(json!("wshub"), json!("https://evil.example/s3cr3t"));
    for (what, t) in [
        ("wrong aud", &wrong_aud),
        ("wrong iss", &wrong_iss),
        ("no aud", &token(Value::Null, idp.clone())),
        ("no iss", &token(json!("wshub"), Value::Null)),
    ] {
        assert_eq!(
            upgrade(&serve.addr, "/ws", Some(t)).err(),
            Some(401),
            "{what}"
        );
    }
    for (reason, t) in [
        ("jwt: wrong audience", &wrong_aud),
        ("jwt: wrong issuer", &wrong_iss),
    ] {
        let line = serve.wait_log(reason);
        assert!(line.contains("auth failed"), "{line}");
        assert!(
            !line.contains("s3cr3t") && !line.contains(t.as_str()),
            "{line}"
        );
    }
    drop(serve);

    // Without a JWT key the flags would do nothing: exit 2, naming the flag.
    let (code, err) = run_serve(&["--listen", "127.0.0.1:0", "--jwt-issuer", "idp"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("wshub: --jwt-issuer: needs a JWT key"),
        "{err}"
    );
}

#[test]
fn a_bad_flag_value_exits_2_naming_the_flag_and_never_the_secret() {
    for (args, says) in [
        (
            &["--ping-interval", "soon"][..],
            "wshub: --ping-interval: `soon` is not a duration",
        ),
        (
            &["--max-connections", "-3"],
            "wshub: --max-connections: `-3` is not a positive number",
        ),
        (
            &["--max-queued-bytes", "lots"],
            "wshub: --max-queued-bytes: `lots` is not a size",
        ),
        (
            &["--runtime", "async-std"],
            "wshub: --runtime: `async-std` is not a runtime",
        ),
        (&["--listen"], "wshub: --listen needs a value"),
        (
            &["--api-key", "s3cr3t-api-key"],
            "wshub: --api-key: expected KEY=USER",
        ),
        (
            &["--jwt-secret", "s3cr3t-jwt", "--no-auth"],
            "wshub: --jwt-secret cannot be combined with --no-auth",
        ),
        (
            &["--admin-key", "s3cr3t-admin", "--admin-key", ""],
            "wshub: --admin-key: the key is empty",
        ),
    ] {
        let (code, err) = run_serve(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.starts_with(says), "{args:?}: wanted {says:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{args:?}: {err}");
    }
    // The clients' keys and tokens the same way.
    for args in [
        &[
            "pub",
            "--admin-key",
            "s3cr3t with space",
            "ws://127.0.0.1:1/ws",
            "c",
            "d",
        ][..],
        &[
            "pub",
            "--token",
            "s3cr3t",
            "--timeout",
            "soon",
            "ws://127.0.0.1:1/ws",
            "c",
            "d",
        ],
        &[
            "exec",
            "--admin-key",
            "s3cr3t\tkey",
            "--url",
            "ws://127.0.0.1:1/ws",
            "true",
        ],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("WSHUB_ADMIN_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("wshub: --"), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{args:?}: {err}");
    }
}

#[test]
fn serve_help_lists_every_flag_of_the_readme() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let shown: Vec<&str> = help.split_whitespace().collect();
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Configuration (`wshub serve`)")
        .nth(1)
        .and_then(|s| s.split("### Configuration file").next())
        .expect("the README's configuration section");
    let mut flags: Vec<String> = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `--")) {
        let first_cell = row.split(" | ").next().unwrap();
        for word in first_cell.split(['`', ',', ' ']) {
            if let Some(name) = word.strip_prefix("--") {
                flags.push(format!("--{name}"));
            }
        }
    }
    assert!(flags.len() >= 25, "{flags:?}");
    for f in &flags {
        assert!(
            shown.contains(&f.as_str()),
            "{f} not in serve --help:\n{help}"
        );
    }
    // And every key of the README's example file is one of those flags.
    let example = readme
        .split("# wshub.toml:")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    for line in example.lines().map(|l| l.trim_start_matches("# ")) {
        if let Some((key, _)) = line.split_once(" = ") {
            let flag = format!("--{}", key.trim());
            assert!(shown.contains(&flag.as_str()), "{flag} not in serve --help");
        }
    }
}
