//! `wshub exec`: runs a process and streams its output to a hub.
//!
//! Each line of the child's stdout and stderr (read on two threads into one
//! queue, so in the order the lines arrived, lossy UTF-8) is published as a go-ws `process_output` message on
//! channel `process:ID`, and its exit as `process_status`
//! (`{"status":"exited","exitCode":N}`). Delivery is either
//!
//! - **through a running server's HTTP API** (`--url`, with `--admin-key` or
//!   `WSHUB_ADMIN_KEY`): one ureq agent, each `POST /api/publish` carrying
//!   every line queued since the previous one finished (up to 256 lines), or
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
use crate::cli::{parse_duration, CliError, Runtime};
use crate::connect::parse_url;
use crate::publish::{HttpApi, ADMIN_KEY_ENV};
use crate::running::Running;
use wshub_core::command::HubCommands;

/// `wshub exec`'s arguments.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Runs CMD and streams each stdout/stderr line as process_output, then its exit \
             as process_status ({\"status\":\"exited\",\"exitCode\":N}), on channel process:ID.",
    after_help = "exit status: the command's (128 + signal if killed by one), 127 when it \
                  cannot be started, 2 on bad arguments",
    group(clap::ArgGroup::new("target").required(true).args(["url", "serve"]))
)]
pub(crate) struct ExecArgs {
    /// A running server (ws://HOST:PORT/ws or http://HOST:PORT; wss:// or
    /// https:// over TLS); publishes through its HTTP API.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With a wss:// or https:// URL: trust the CA certificates in this PEM
    /// file instead of the built-in web roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// The server's admin key [default: the WSHUB_ADMIN_KEY environment variable].
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    admin_key: Option<String>,
    /// Serve a hub of its own on ADDR instead (prints the page URL).
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
    /// With --serve, keep serving this long after the exit.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    linger: Duration,
    /// Process id [default: the child's pid].
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    id: Option<String>,
    /// The command to run and its arguments (everything from CMD on is
    /// the command's).
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

fn parse_id(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
        Err("must be 1..=200 printable characters".into())
    } else {
        Ok(v.to_owned())
    }
}

/// Where the messages go.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// `POST /api/publish` on a running server.
    Http {
        /// Host and port of the server.
        endpoint: Endpoint,
        /// The admin key (`Debug` redacts it).
        admin_key: Secret,
        /// `--ca-file`, for https.
        ca_file: Option<std::path::PathBuf>,
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

impl ExecArgs {
    /// The checked options, `WSHUB_ADMIN_KEY` read from `env` when needed.
    pub(crate) fn options(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ExecOptions, CliError> {
        let delivery = match (self.url, self.serve) {
            (Some(url), None) => {
                // http://host:port is the same server as ws://host:port.
                let ws = if let Some(rest) = url.strip_prefix("http://") {
                    format!("ws://{rest}")
                } else if let Some(rest) = url.strip_prefix("https://") {
                    format!("wss://{rest}")
                } else {
                    url
                };
                let endpoint = parse_url(&ws)?;
                let admin_key =
                    crate::publish::admin_key(self.admin_key, env)?.ok_or_else(|| {
                        CliError(format!(
                        "exec: --url needs the server's admin key (--admin-key or {ADMIN_KEY_ENV})"
                    ))
                    })?;
                Delivery::Http {
                    endpoint,
                    admin_key,
                    ca_file: crate::connect::check_ca_file(self.ca_file)?,
                }
            }
            (_, Some(listen)) => Delivery::Serve {
                listen,
                linger: self.linger,
            },
            // The `target` group asks for one of them.
            (None, None) => unreachable!("clap requires --url or --serve"),
        };
        Ok(ExecOptions {
            delivery,
            id: self.id,
            command: self.command,
        })
    }
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
        seed: crate::cli::random_seed()?,
        ..HubConfig::default()
    };
    let history_max_replay = config.history.max_replay;
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
            let settings = api::Settings {
                admin_key: Some(&admin),
                check_token: &check,
                history_max_replay,
                cluster: None,
            };
            serve_events(&r, &settings);
        })?;
    Ok(Served {
        running,
        token,
        events,
    })
}

/// The event loop of a hub served in process: answers HTTP requests with
/// [`api::route`] (the page, health, stats, the publish API for
/// the admin key) until the hub has shut down.
pub fn serve_events(running: &Running, settings: &api::Settings<'_>) {
    while let Some(event) = running.next_event() {
        match event {
            Event::HttpRequest {
                conn,
                method,
                request,
                body,
            } => {
                let r = api::route(&method, &request, &body, settings, running);
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
    // Before the child starts: a CA file that went away since the arguments
    // were checked stops nothing half-way.
    let api = match &opts.delivery {
        Delivery::Http {
            endpoint,
            admin_key,
            ca_file,
        } => Some(
            HttpApi::new(
                endpoint,
                admin_key,
                Duration::from_secs(5),
                ca_file.as_deref(),
            )
            .map_err(|e| (2, e))?,
        ),
        Delivery::Serve { .. } => None,
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
        api,
        warned: false,
    };
    // A batch is the first line waited for plus everything queued by then:
    // while a request is out, lines pile up for the next one.
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(line) = next {
            let text = tee(line);
            bytes += encoded_len(&id, &channel, &text);
            batch.push(Message::process_output(&id, &text));
            next = if batch.len() < MAX_BATCH_LINES && bytes < MAX_BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        sink.send(&channel, batch);
    }
    let status = child.wait();
    let code = match &status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    sink.send(
        &channel,
        vec![Message::process_status(&id, "exited", i32::from(code))],
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

/// Most lines in one request.
const MAX_BATCH_LINES: usize = 256;
/// Most bytes of JSON in one request: under the server's 64 KiB body limit
/// (a single longer line is sent alone, and refused as it always was).
const MAX_BATCH_BYTES: usize = 48 * 1024;

/// How long `text` is as one message of [`post`]'s body, with the comma
/// after it: escaping can make a line of control characters six times
/// longer than its text.
fn encoded_len(id: &str, channel: &str, text: &str) -> usize {
    let quoted = |s: &str| serde_json::Value::from(s).to_string().len();
    // {"type":"process_output","channel":..,"processId":..,"data":..},
    58 + quoted(channel) + quoted(id) + quoted(text)
}

/// Echoes a line to our own stream of the same kind, so the terminal still
/// shows the output; returns its text.
fn tee(line: Line) -> String {
    match line {
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
    }
}

/// Publishes messages, in process or through the HTTP API; a failure is
/// reported once and the process keeps running.
struct Sink<'a> {
    delivery: &'a Delivery,
    running: Option<&'a Running>,
    /// For [`Delivery::Http`]: one agent for the whole run.
    api: Option<HttpApi>,
    warned: bool,
}

impl Sink<'_> {
    /// Publishes `batch` in order: in process one by one, over HTTP as one
    /// request.
    fn send(&mut self, channel: &str, batch: Vec<Message>) {
        let result = match (self.running, &self.api) {
            (Some(running), _) => batch.into_iter().try_for_each(|m| {
                running
                    .publish(channel, m)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            (None, Some(api)) => match self.delivery {
                Delivery::Http { endpoint, .. } => post(api, endpoint, channel, &batch),
                Delivery::Serve { .. } => Ok(()),
            },
            (None, None) => Ok(()),
        };
        if let Err(e) = result {
            if !self.warned {
                eprintln!("wshub exec: cannot publish (the process keeps running): {e}");
                self.warned = true;
            }
        }
    }
}

/// One `POST /api/publish` with the batch as a JSON array of go-ws typed
/// messages, published by the server in order.
fn post(api: &HttpApi, ep: &Endpoint, channel: &str, batch: &[Message]) -> Result<(), String> {
    let body: Vec<_> = batch
        .iter()
        .map(|m| {
            json!({
                "type": m.kind,
                "channel": channel,
                "processId": m.process_id,
                "data": m.data,
            })
        })
        .collect();
    let server = format!("{}:{}", ep.host, ep.port);
    let (status, _) = api
        .post("/api/publish", &serde_json::Value::from(body).to_string())
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

    fn parse_with(
        line: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ExecOptions, CliError> {
        crate::cli::parse_args::<ExecArgs>("exec", line)?.options(env)
    }
    #[test]
    fn parses_modes_and_errors() {
        let no_env = |_: &str| None;
        let o = parse_with("--serve 127.0.0.1:0 --id b -- cargo build", &no_env).unwrap();
        assert_eq!(o.command, args("cargo build"));
        assert_eq!(o.id.as_deref(), Some("b"));
        assert!(
            matches!(o.delivery, Delivery::Serve { linger, .. } if linger == Duration::from_secs(2))
        );
        let env = |k: &str| (k == ADMIN_KEY_ENV).then(|| "adm".to_string());
        let o = parse_with("--url http://h:9 ls -l", &env).unwrap();
        assert_eq!(o.command, args("ls -l"));
        assert!(
            matches!(&o.delivery, Delivery::Http { endpoint, admin_key, .. } if endpoint.port == 9 && admin_key.expose() == "adm")
        );
        for (line, needle) in [
            ("--serve a:1", "CMD"),
            ("--url ws://h:1/ws -- x", "admin key"),
            ("--url ws://h:1/ws --serve a:1 -- x", "cannot be combined"),
            ("-- x", "--url"),
            ("--linger soon --serve a:1 -- x", "--linger"),
            ("--nope -- x", "--nope"),
            ("--id", "--id"),
        ] {
            let e = parse_with(line, &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn a_batch_is_measured_as_the_json_it_becomes() {
        let m = Message::process_output("7", "a\u{1}\"b");
        let body = json!({
            "type": m.kind,
            "channel": "process:7",
            "processId": m.process_id,
            "data": m.data,
        })
        .to_string();
        let estimate = encoded_len("7", "process:7", "a\u{1}\"b");
        // Exact, with the comma between two messages.
        assert!(estimate == body.len() + 1, "{estimate} for {body}");
    }
}
