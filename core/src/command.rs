//! Application commands as values, for drivers that carry them to the task or
//! thread owning the [`Hub`] and apply them there.
//!
//! Every adapter's handle does the same thing: package a call (publish,
//! close, stats...), send it over a channel, apply it to the hub, send the
//! result back. Defining the package and its application here means the
//! adapters only move values; the meaning of each command lives in one place.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::command::{Command, Reply};
//! use wshub_core::{Hub, HubConfig, Message};
//!
//! let now = Instant::now(); // the driver reads the clock; the core never does
//! let mut hub = Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap();
//! let reply = hub.apply(now, Command::process_output("build-1", "compiling"));
//! assert_eq!(reply, Reply::Count(0)); // nobody subscribed yet
//! assert!(matches!(hub.apply(now, Command::Stats), Reply::Stats(s) if s.connections == 0));
//! ```

use std::time::Instant;

use serde_json::Value;

use crate::{AuthDecision, ConnId, Hub, Identity, Message, Rejection, Stats, UsageError};

/// One application command to a hub.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// [`Hub::publish`]; replies [`Reply::Count`].
    Publish {
        /// The channel.
        channel: String,
        /// The message (its channel field is set to `channel`).
        message: Message,
    },
    /// [`Hub::broadcast`]; replies [`Reply::Count`].
    Broadcast(Message),
    /// [`Hub::send`] to one connection.
    Send(ConnId, Message),
    /// [`Hub::send_to_user`]; replies [`Reply::Count`].
    SendToUser {
        /// The user id.
        user: String,
        /// The message.
        message: Message,
    },
    /// [`Hub::subscribe`] on a connection's behalf; replies [`Reply::Changed`].
    Subscribe(ConnId, String),
    /// [`Hub::unsubscribe`]; replies [`Reply::Changed`].
    Unsubscribe(ConnId, String),
    /// [`Hub::close`] with a code and reason.
    Close(ConnId, u16, String),
    /// [`Hub::accept`] a deferred authentication.
    Accept(ConnId, Identity),
    /// [`Hub::reject`] a deferred authentication.
    Reject(ConnId, Rejection),
    /// [`Hub::answer`] a deferred authentication with a decision.
    Answer(ConnId, AuthDecision),
    /// [`Hub::http_respond`] to a plain HTTP request.
    HttpRespond {
        /// The connection that sent the request.
        conn: ConnId,
        /// The status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// [`Hub::stats`]; replies [`Reply::Stats`].
    Stats,
    /// [`Hub::subscriber_count`]; replies [`Reply::Count`].
    SubscriberCount(String),
    /// [`Hub::channels`]; replies [`Reply::Channels`].
    Channels,
}

impl Command {
    /// Publishes `message` to `channel`.
    pub fn publish(channel: &str, message: Message) -> Command {
        Command::Publish {
            channel: channel.to_owned(),
            message,
        }
    }

    /// go-ws `SendProcessOutput`: a line to channel `process:<id>`.
    pub fn process_output(process_id: &str, line: &str) -> Command {
        let message = Message::process_output(process_id, line);
        let channel = message.channel.clone();
        Command::Publish { channel, message }
    }

    /// go-ws `SendProcessStatus` to channel `process:<id>`.
    pub fn process_status(process_id: &str, status: &str, exit_code: i32) -> Command {
        let message = Message::process_status(process_id, status, exit_code);
        let channel = message.channel.clone();
        Command::Publish { channel, message }
    }

    /// go-ws `SendEvent`: `{"event":name,"data":data}` to every connection.
    pub fn send_event(name: &str, data: Value) -> Command {
        Command::Broadcast(Message::event(name, data))
    }

    /// go-ws `SendError` to every connection.
    pub fn send_error(text: &str) -> Command {
        Command::Broadcast(Message::error(text))
    }
}

/// What applying a [`Command`] came to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// Done.
    Done,
    /// Connections reached, or subscribers counted.
    Count(usize),
    /// Whether a subscription changed (false: already so).
    Changed(bool),
    /// The hub's counters.
    Stats(Stats),
    /// Channels with their subscriber counts.
    Channels(Vec<(String, usize)>),
    /// The command named a closed connection or did not fit its state.
    Refused(UsageError),
}

impl Reply {
    /// The count of a [`Reply::Count`]; 0 for any other reply.
    pub fn count(&self) -> usize {
        match self {
            Reply::Count(n) => *n,
            _ => 0,
        }
    }
}

impl From<Result<(), UsageError>> for Reply {
    fn from(r: Result<(), UsageError>) -> Reply {
        r.map_or_else(Reply::Refused, |()| Reply::Done)
    }
}

impl From<Result<bool, UsageError>> for Reply {
    fn from(r: Result<bool, UsageError>) -> Reply {
        r.map_or_else(Reply::Refused, Reply::Changed)
    }
}

impl Hub {
    /// Applies an application command.
    pub fn apply(&mut self, now: Instant, command: Command) -> Reply {
        match command {
            Command::Publish { channel, message } => {
                Reply::Count(self.publish(now, &channel, message))
            }
            Command::Broadcast(message) => Reply::Count(self.broadcast(now, &message)),
            Command::Send(id, message) => self.send(now, id, &message).into(),
            Command::SendToUser { user, message } => {
                Reply::Count(self.send_to_user(now, &user, &message))
            }
            Command::Subscribe(id, channel) => self.subscribe(now, id, &channel).into(),
            Command::Unsubscribe(id, channel) => self.unsubscribe(now, id, &channel).into(),
            Command::Close(id, code, reason) => self.close(now, id, code, &reason).into(),
            Command::Accept(id, identity) => self.accept(now, id, identity).into(),
            Command::Reject(id, rejection) => self.reject(now, id, rejection).into(),
            Command::Answer(id, decision) => self.answer(now, id, decision).into(),
            Command::HttpRespond {
                conn,
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                self.http_respond(now, conn, status, &headers, &body).into()
            }
            Command::Stats => Reply::Stats(self.stats()),
            Command::SubscriberCount(channel) => Reply::Count(self.subscriber_count(&channel)),
            Command::Channels => Reply::Channels(self.channels()),
        }
    }
}
