//! `wshub exec`: runs a process and streams its output to a hub.
//!
//! Each line of the child's stdout and stderr (read on two threads, as it
//! arrives, lossy UTF-8) is published as a go-ws `process_output` message on
//! channel `process:ID`, and its exit as `process_status`
//! (`{"status":"exited","exitCode":N}`). Delivery is either
//!
//! - **through a running server's HTTP API** (`--url`, with `--admin-key` or
//!   `WSHUB_ADMIN_KEY`): one `POST /api/publish` per message, or
//! - **in process** (`--serve ADDR`): a hub of its own with the same auth
//!   defaults as `wshub serve` (a generated token, printed as the page URL),
//!   kept up for `--linger` after the exit so late viewers see the status.
//!
//! The exit code mirrors the child's (128 + signal when killed by one); 127
//! when the command cannot be started; 2 on bad arguments.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wshub_core::auth::{ApiKeyAuth, TokenSource};
use wshub_core::client::Endpoint;
use wshub_core::config::PublishPatterns;
use wshub_core::{AuthDecision, Event, HubConfig, Message, Secret, UpgradeRequest};

use crate::api;
use crate::cli::{parse_duration, CliError, Command, Runtime};
use crate::connect::parse_url;
use crate::publish::ADMIN_KEY_ENV;
use crate::running::Running;
use wshub_core::command::HubCommands;

/// Usage of `wshub exec`.
pub const USAGE: &str = "usage: wshub exec [options] -- CMD ARGS...

Runs CMD and streams each stdout/stderr line as process_output, then its exit
as process_status ({\"status\":\"exited\",\"exitCode\":N}), on channel process:ID.

options:
  --url URL            a running server (ws://HOST:PORT/ws or http://HOST:PORT);
                       publishes through its HTTP API
  --admin-key KEY      the server's admin key (default: WSHUB_ADMIN_KEY)
  --serve ADDR         serve a hub of its own on ADDR instead (prints the page URL)
  --linger DURATION    with --serve, keep serving this long after the exit (default 2s)
  --id ID              process id (default: the child's pid)

exit status: the command's (128 + signal if killed by one), 127 when it cannot
be started, 2 on bad arguments";

/// Where the messages go.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// `POST /api/publish` on a running server.
    Http {
        /// Host and port of the server.
        endpoint: Endpoint,
        /// The admin key (`Debug` redacts it).
        admin_key: Secret,
    },
    /// A hub of our own on this address.
    Serve {
        /// Listen address.
        listen: String,
        /// How long to keep serving after the exit.
        linger: Duration,
    },
}

/// Options of `wshub exec`.
#[derive(Debug, PartialEq)]
pub struct ExecOptions {
    /// Where the messages go.
    pub delivery: Delivery,
    /// The process id (default: the child's pid).
    pub id: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Parses the arguments after `exec` into a [`Command`] (`--help` included).
pub fn command(args: &[String]) -> Result<Command, CliError> {
    let before_cmd = args.iter().take_while(|a| *a != "--");
    if before_cmd.into_iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Usage(USAGE));
    }
    parse(args).map(|o| Command::Exec(Box::new(o)))
}

/// Parses the arguments after `exec`, reading `WSHUB_ADMIN_KEY` when needed.
pub fn parse(args: &[String]) -> Result<ExecOptions, CliError> {
    parse_with(args, &|k| std::env::var(k).ok())
}

/// [`parse`] with the environment given.
pub fn parse_with(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExecOptions, CliError> {
    let mut url = None;
    let mut admin_key = None;
    let mut serve = None;
    let mut linger = Duration::from_secs(2);
    let mut id = None;
    let mut command = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| CliError(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--url" => url = Some(value()?),
            "--admin-key" => admin_key = Some(value()?),
            "--serve" => serve = Some(value()?),
            "--id" => {
                let v = value()?;
                if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                    return Err(CliError(
                        "--id: must be 1..=200 printable characters".into(),
                    ));
                }
                id = Some(v);
            }
            "--linger" => {
                let v = value()?;
                linger = parse_duration(&v).ok_or_else(|| {
                    CliError(format!("--linger: `{v}` is not a duration like 2s"))
                })?;
            }
            "--" => {
                command.extend(it.by_ref().cloned());
                break;
            }
            a if a.starts_with('-') => {
                return Err(CliError(format!("exec: unknown option `{a}`")));
            }
            _ => {
                command.push(arg.clone());
                command.extend(it.by_ref().cloned());
                break;
            }
        }
    }
    if command.is_empty() {
        return Err(CliError("exec: expected -- CMD ARGS...".into()));
    }
    let delivery = match (url, serve) {
        (Some(_), Some(_)) => {
            return Err(CliError("exec: give --url or --serve, not both".into()));
        }
        (None, None) => {
            return Err(CliError(
                "exec: give --url URL (a running server) or --serve ADDR".into(),
            ));
        }
        (None, Some(listen)) => Delivery::Serve { listen, linger },
        (Some(url), None) => {
            // http://host:port is the same server as ws://host:port.
            let ws = match url.strip_prefix("http://") {
                Some(rest) => format!("ws://{rest}"),
                None => url,
            };
            let endpoint = parse_url(&ws)?;
            let key = admin_key
                .or_else(|| env(ADMIN_KEY_ENV).filter(|k| !k.is_empty()))
                .ok_or_else(|| {
                    CliError(format!(
                        "exec: --url needs the server's admin key (--admin-key or {ADMIN_KEY_ENV})"
                    ))
                })?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                // Never echo the key.
                return Err(CliError(
                    "--admin-key: must be visible ASCII without spaces".into(),
                ));
            }
            Delivery::Http {
                endpoint,
                admin_key: Secret::new(key),
            }
        }
    };
    Ok(ExecOptions {
        delivery,
        id,
        command,
    })
}

/// One line of the child's output.
enum Line {
    Out(String),
    Err(String),
}

/// Runs `wshub exec`; returns the process exit code.
pub fn run(opts: ExecOptions) -> ExitCode {
    match run_inner(opts) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("wshub exec: {e}");
            ExitCode::from(code)
        }
    }
}

/// A hub of our own: the server and its event loop thread.
struct Served {
    running: Arc<Running>,
    token: String,
    events: std::thread::JoinHandle<()>,
}

fn start_server(listen: &str) -> io::Result<Served> {
    let token = crate::cli::random_token()?;
    // As `wshub serve` with no options: HTTP API on, no client publishes.
    let mut config = HubConfig {
        http_fallback: true,
        policy: Arc::new(PublishPatterns::new(Vec::<String>::new())),
        ..HubConfig::default()
    };
    let source = TokenSource::BearerOrQuery("token".into());
    config.authenticator =
        Arc::new(ApiKeyAuth::new([(token.clone(), "user".to_owned())]).source(source));
    let authenticator = config.authenticator.clone();
    let running = Arc::new(Running::start(Runtime::Tokio, config, listen)?);
    eprintln!("wshub exec: listening on ws://{}/ws", running.local_addr());
    let r = running.clone();
    let admin = token.clone();
    let events = std::thread::Builder::new()
        .name("wshub-exec-events".into())
        .spawn(move || {
            let check = |req: &UpgradeRequest| {
                matches!(authenticator.authenticate(req), AuthDecision::Accept(_))
            };
            serve_events(&r, Some(&admin), &check);
        })?;
    Ok(Served {
        running,
        token,
        events,
    })
}

/// The event loop of a hub served in process: answers HTTP requests with
/// [`api::route`] (the page, health, stats, the publish API for
/// `admin_key`) until the hub has shut down.
pub fn serve_events(
    running: &Running,
    admin_key: Option<&str>,
    check_token: &dyn Fn(&UpgradeRequest) -> bool,
) {
    while let Some(event) = running.next_event() {
        match event {
            Event::HttpRequest {
                conn,
                method,
                request,
                body,
            } => {
                let r = api::route(&method, &request, &body, admin_key, check_token, running);
                let headers = r.headers();
                let _ = running.http_respond(conn, r.status, headers, r.body);
            }
            Event::ShutdownComplete => break,
            _ => {}
        }
    }
}

fn run_inner(opts: ExecOptions) -> Result<u8, (u8, String)> {
    let served = match &opts.delivery {
        Delivery::Serve { listen, .. } => {
            Some(start_server(listen).map_err(|e| (1, format!("cannot serve on {listen}: {e}")))?)
        }
        Delivery::Http { .. } => None,
    };
    let stop = |served: Option<Served>| {
        if let Some(s) = served {
            s.running.shutdown(Duration::from_secs(2));
            let _ = s.events.join();
        }
    };
    let mut child = match std::process::Command::new(&opts.command[0])
        .args(&opts.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            stop(served);
            return Err((127, format!("cannot run `{}`: {e}", opts.command[0])));
        }
    };
    let id = opts.id.clone().unwrap_or_else(|| child.id().to_string());
    let channel = wshub_core::message::process_channel(&id);
    eprintln!("wshub exec: channel {channel}");
    if let Some(s) = &served {
        println!(
            "http://{}/?token={}&channel={channel}",
            s.running.local_addr(),
            s.token
        );
        let _ = io::stdout().flush();
    }

    let rx = read_lines(&mut child);
    let mut sink = Sink {
        delivery: &opts.delivery,
        running: served.as_ref().map(|s| &*s.running),
        warned: false,
    };
    for line in rx {
        // Tee to our own streams so the terminal still shows the output.
        let text = match line {
            Line::Out(t) => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{t}");
                let _ = out.flush();
                t
            }
            Line::Err(t) => {
                eprintln!("{t}");
                t
            }
        };
        sink.send(&channel, Message::process_output(&id, &text));
    }
    let status = child.wait();
    let code = match &status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    sink.send(
        &channel,
        Message::process_status(&id, "exited", i32::from(code)),
    );
    if let Delivery::Serve { linger, .. } = &opts.delivery {
        std::thread::sleep(*linger);
    }
    stop(served);
    match status {
        Ok(_) => Ok(code),
        Err(e) => Err((1, format!("waiting for the process: {e}"))),
    }
}

/// The child's exit code, 128 + signal when a signal ended it.
fn exit_code(s: &ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// Reads the child's stdout and stderr on two threads; the receiver ends
/// once both have reached EOF.
fn read_lines(child: &mut Child) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel();
    fn pump(stream: impl Read + Send + 'static, tx: mpsc::Sender<Line>, wrap: fn(String) -> Line) {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                            if buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                        }
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(wrap(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        pump(out, tx.clone(), Line::Out);
    }
    if let Some(err) = child.stderr.take() {
        pump(err, tx, Line::Err);
    }
    rx
}

/// Publishes messages, in process or through the HTTP API; a failure is
/// reported once and the process keeps running.
struct Sink<'a> {
    delivery: &'a Delivery,
    running: Option<&'a Running>,
    warned: bool,
}

impl Sink<'_> {
    fn send(&mut self, channel: &str, m: Message) {
        let result = match (self.delivery, self.running) {
            (_, Some(running)) => running
                .publish(channel, m)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (
                Delivery::Http {
                    endpoint,
                    admin_key,
                },
                None,
            ) => post(endpoint, admin_key, channel, &m),
            (Delivery::Serve { .. }, None) => Ok(()),
        };
        if let Err(e) = result {
            if !self.warned {
                eprintln!("wshub exec: cannot publish (the process keeps running): {e}");
                self.warned = true;
            }
        }
    }
}

/// `POST /api/publish` with the message as a go-ws typed body.
fn post(ep: &Endpoint, key: &Secret, channel: &str, m: &Message) -> Result<(), String> {
    let body = json!({
        "type": m.kind,
        "channel": channel,
        "processId": m.process_id,
        "data": m.data,
    })
    .to_string();
    let server = format!("{}:{}", ep.host, ep.port);
    let (status, _) = crate::publish::http_post(
        ep,
        Duration::from_secs(5),
        "/api/publish",
        key,
        body.as_bytes(),
    )
    .map_err(|e| format!("{server}: {e}"))?;
    match status {
        200 => Ok(()),
        401 => Err(format!(
            "the admin key was refused (HTTP 401): check --admin-key or {ADMIN_KEY_ENV}"
        )),
        s => Err(format!("the HTTP API at {server} answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_modes_and_errors() {
        let no_env = |_: &str| None;
        let o = parse_with(&args("--serve 127.0.0.1:0 --id b -- cargo build"), &no_env).unwrap();
        assert_eq!(o.command, args("cargo build"));
        assert_eq!(o.id.as_deref(), Some("b"));
        assert!(
            matches!(o.delivery, Delivery::Serve { linger, .. } if linger == Duration::from_secs(2))
        );
        let env = |k: &str| (k == ADMIN_KEY_ENV).then(|| "adm".to_string());
        let o = parse_with(&args("--url http://h:9 ls -l"), &env).unwrap();
        assert_eq!(o.command, args("ls -l"));
        assert!(
            matches!(&o.delivery, Delivery::Http { endpoint, admin_key } if endpoint.port == 9 && admin_key.expose() == "adm")
        );
        for (line, needle) in [
            ("--serve a:1", "CMD"),
            ("--url ws://h:1/ws -- x", "admin key"),
            ("--url ws://h:1/ws --serve a:1 -- x", "not both"),
            ("-- x", "--url"),
            ("--linger soon --serve a:1 -- x", "--linger"),
            ("--nope -- x", "--nope"),
            ("--id", "--id"),
        ] {
            let e = parse_with(&args(line), &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
        assert_eq!(command(&args("--help")).unwrap(), Command::Usage(USAGE));
    }
}
