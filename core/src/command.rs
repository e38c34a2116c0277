//! Application commands as values, for drivers that carry them to the task or
//! thread owning the [`Hub`] and apply them there.
//!
//! Every adapter's handle does the same thing: package a call (publish,
//! close, stats...), send it over a channel, apply it to the hub, send the
//! result back. Defining the package and its application here means the
//! adapters only move values; the meaning of each command lives in one place.
//! The methods an application calls (publish, close, stats...) are written
//! once too: [`HubCommands`] for handles that block, and
//! [`hub_command_methods!`](crate::hub_command_methods) for async ones, both
//! over [`Command`], failing with [`Stopped`] once the hub is gone.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::command::{Command, Reply};
//! use wshub_core::{Hub, HubConfig, Message};
//!
//! let now = Instant::now(); // the driver reads the clock; the core never does
//! let mut hub = Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap();
//! let line = Message::process_output("build-1", "compiling");
//! let reply = hub.apply(now, Command::publish("process:build-1", line));
//! assert_eq!(reply, Reply::Count(0)); // nobody subscribed yet
//! assert!(matches!(hub.apply(now, Command::Stats), Reply::Stats(s) if s.connections == 0));
//! ```

use std::fmt;
use std::time::Instant;

use crate::broker::{Audience, BrokerError, BrokerInput};
use crate::history::{HistoryError, HistoryPage, StreamPosition};
use crate::HistoryReadId;
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
    /// [`Hub::history`]; replies [`Reply::History`].
    History {
        /// The channel.
        channel: String,
        /// Publications after this offset; `None`: the newest `limit`.
        since: Option<u64>,
        /// At most this many (1..=max_replay).
        limit: usize,
    },
    /// [`Hub::publish_positioned`] (an external history store); replies
    /// [`Reply::Count`].
    PublishPositioned {
        /// The channel.
        channel: String,
        /// The message (boxed: `Command` stays the size it was).
        message: Box<Message>,
        /// Its position, assigned by the store.
        position: StreamPosition,
    },
    /// [`Hub::answer_history_read`]: the answer to an
    /// [`crate::Event::HistoryRead`].
    AnswerHistoryRead {
        /// The read answered.
        read: HistoryReadId,
        /// What the store returned.
        result: Result<HistoryPage, HistoryError>,
    },
    /// [`Hub::publish`], answered with [`Reply::Published`] once the
    /// publication is stored and on its way: at once without a broker, when
    /// the broker answered with one (through [`Hub::apply_then`]; plain
    /// [`Hub::apply`] answers [`Reply::Done`] and drops the outcome).
    PublishAcked {
        /// The channel.
        channel: String,
        /// The message (boxed: `Command` stays the size it was).
        message: Box<Message>,
    },
    /// [`Hub::handle_broker`]: what the broker driver reports.
    Broker(BrokerInput),
}

/// Where a deferred [`Reply`] goes ([`Hub::apply_then`]).
pub type ReplyTo = Box<dyn FnOnce(Reply) + Send>;

impl Command {
    /// What the command counts for in a driver's round
    /// ([`Hub::commands_per_round`]): the inputs of a broker batch (each can
    /// queue a frame per subscriber), 1 for anything else.
    pub fn weight(&self) -> usize {
        match self {
            Command::Broker(BrokerInput::Batch(inputs)) => inputs.len().max(1),
            _ => 1,
        }
    }

    /// Publishes `message` to `channel`.
    pub fn publish(channel: &str, message: Message) -> Command {
        Command::Publish {
            channel: channel.to_owned(),
            message,
        }
    }
}

/// What applying a [`Command`] came to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// Carried out; nothing to report.
    Done,
    /// Connections reached, or subscribers counted.
    Count(usize),
    /// Whether a subscription changed (false: already so).
    Changed(bool),
    /// The hub's counters.
    Stats(Stats),
    /// Channels with their subscriber counts.
    Channels(Vec<(String, usize)>),
    /// A history read.
    History(Result<HistoryPage, HistoryError>),
    /// A [`Command::PublishAcked`]: the publication's position (`None` on a
    /// channel without history), or why nothing was published.
    Published(Result<Option<StreamPosition>, BrokerError>),
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
            Command::History {
                channel,
                since,
                limit,
            } => Reply::History(self.history(now, &channel, since, limit)),
            Command::PublishPositioned {
                channel,
                message,
                position,
            } => Reply::Count(self.publish_positioned(now, &channel, *message, position)),
            Command::AnswerHistoryRead { read, result } => {
                self.answer_history_read(now, read, result).into()
            }
            Command::PublishAcked { channel, message } => {
                if self.has_broker() {
                    self.publish(now, &channel, *message);
                    return Reply::Done;
                }
                self.publish(now, &channel, *message);
                Reply::Published(Ok(self.position(&channel)))
            }
            Command::Broker(input) => {
                self.handle_broker(now, input);
                Reply::Done
            }
        }
    }

    /// Applies a command and hands its reply to `reply`: at once, or (a
    /// [`Command::PublishAcked`], [`Command::Broadcast`],
    /// [`Command::SendToUser`] or [`Command::History`] through a broker) when
    /// the broker answered, with [`Reply::Published`] for the sends.
    /// Every command gets exactly one reply, also if the broker link fails.
    pub fn apply_then(&mut self, now: Instant, command: Command, reply: ReplyTo) {
        match command {
            Command::PublishAcked { channel, message } if self.has_broker() => {
                self.publish_deferred(now, &channel, *message, reply);
            }
            Command::Broadcast(message) if self.has_broker() => {
                self.touch_and_send(now, Audience::Everyone, &message, reply)
            }
            Command::SendToUser { user, message } if self.has_broker() => {
                self.touch_and_send(now, Audience::User(user), &message, reply)
            }
            // The history is in the broker: read there, answered later.
            Command::History {
                channel,
                since,
                limit,
            } if self.has_broker() => self.broker_history(now, &channel, since, limit, reply),
            command => reply(self.apply(now, command)),
        }
    }
}

/// The task or thread that owns the hub is gone (after shutdown, or with its
/// runtime): a command could not be delivered or its reply never came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hub has stopped")
    }
}

impl std::error::Error for Stopped {}

/// The hub's commands for code that does not own the [`Hub`]: a handle that
/// carries each [`Command`] to the hub's thread or task implements
/// [`command`](HubCommands::command) (and [`tell`](HubCommands::tell) when it
/// can skip the reply); every other method is written once, here.
///
/// Methods that return a count or a value wait for the hub's reply; the
/// others go through `tell` and return once the command is queued. Commands
/// are applied in the order they were sent.
///
/// ```
/// use std::cell::RefCell;
/// use std::time::{Duration, Instant};
/// use wshub_core::command::{Command, HubCommands, Reply, Stopped};
/// use wshub_core::{Hub, HubConfig, Message};
///
/// /// Owns the hub itself: the simplest "handle" there is.
/// struct Local(RefCell<Hub>, Instant);
///
/// impl HubCommands for Local {
///     fn command(&self, command: Command) -> Result<Reply, Stopped> {
///         Ok(self.0.borrow_mut().apply(self.1, command))
///     }
/// }
///
/// let now = Instant::now();
/// let hub = Local(RefCell::new(Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap()), now);
/// assert_eq!(hub.publish("process:7", Message::process_output("7", "line")), Ok(0));
/// assert_eq!(hub.stats().unwrap().connections, 0);
/// ```
pub trait HubCommands {
    /// Applies any [`Command`] and waits for the hub's [`Reply`].
    fn command(&self, command: Command) -> Result<Reply, Stopped>;

    /// Queues a command without waiting for its reply. By default it waits
    /// anyway (through [`command`](HubCommands::command)).
    fn tell(&self, command: Command) -> Result<(), Stopped> {
        self.command(command).map(drop)
    }

    crate::hub_command_methods!(@list [] []);
}

/// Writes the [`HubCommands`] methods as `pub async fn`s inside an async
/// handle's `impl` block, over its own `async fn command(&self, Command) ->
/// Result<Reply, Stopped>` and `async fn tell(&self, Command) -> Result<(),
/// Stopped>`, so the method list exists once for sync and async handles.
///
/// ```
/// use wshub_core::command::{Command, Reply, Stopped};
///
/// struct AsyncHandle;
///
/// impl AsyncHandle {
///     async fn command(&self, _: Command) -> Result<Reply, Stopped> {
///         Err(Stopped) // a real handle sends it to the hub task and awaits the reply
///     }
///     async fn tell(&self, _: Command) -> Result<(), Stopped> {
///         Err(Stopped)
///     }
///     wshub_core::hub_command_methods!(async);
/// }
/// ```
///
/// Why a macro and not `async fn` in [`HubCommands`]: callers spawn these
/// futures on multi-threaded executors, so they must be `Send`, and a trait's
/// `async fn` cannot promise that to generic callers (it needs return-type
/// notation, not stable), nor can such a trait be used as `dyn`. Written into
/// each handle's `impl`, every future is a concrete type whose `Send`-ness
/// the compiler sees.
#[macro_export]
macro_rules! hub_command_methods {
    (async) => {
        $crate::hub_command_methods!(@list [pub async] [.await]);
    };
    // The one list: `$head` is the methods' qualifiers, `$wait` what follows
    // a call to `command` or `tell`.
    (@list [$($head:tt)*] [$($wait:tt)*]) => {
        /// Publishes to a channel's subscribers; returns how many got it.
        /// (go-ws `SendProcessOutput`: `publish(&process_channel(id),
        /// Message::process_output(id, line))`.)
        $($head)* fn publish(
            &self,
            channel: &str,
            message: $crate::Message,
        ) -> ::core::result::Result<usize, $crate::command::Stopped> {
            let command = $crate::command::Command::publish(channel, message);
            ::core::result::Result::Ok(self.command(command)$($wait)*?.count())
        }

        /// Sends to every connection; returns how many got it. (go-ws
        /// `SendEvent`: `broadcast(Message::event(name, data))`.)
        $($head)* fn broadcast(
            &self,
            message: $crate::Message,
        ) -> ::core::result::Result<usize, $crate::command::Stopped> {
            let command = $crate::command::Command::Broadcast(message);
            ::core::result::Result::Ok(self.command(command)$($wait)*?.count())
        }

        /// Sends to one connection.
        $($head)* fn send(
            &self,
            conn: $crate::ConnId,
            message: $crate::Message,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            self.tell($crate::command::Command::Send(conn, message))$($wait)*
        }

        /// Sends to every connection of a user; returns how many.
        $($head)* fn send_to_user(
            &self,
            user_id: &str,
            message: $crate::Message,
        ) -> ::core::result::Result<usize, $crate::command::Stopped> {
            let user = ::std::borrow::ToOwned::to_owned(user_id);
            let command = $crate::command::Command::SendToUser { user, message };
            ::core::result::Result::Ok(self.command(command)$($wait)*?.count())
        }

        /// Subscribes a connection on its behalf.
        $($head)* fn subscribe(
            &self,
            conn: $crate::ConnId,
            channel: &str,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            self.tell($crate::command::Command::Subscribe(conn, channel))$($wait)*
        }

        /// Unsubscribes a connection.
        $($head)* fn unsubscribe(
            &self,
            conn: $crate::ConnId,
            channel: &str,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            self.tell($crate::command::Command::Unsubscribe(conn, channel))$($wait)*
        }

        /// Closes a connection with a code (1000 or 3000-4999) and a reason.
        $($head)* fn close(
            &self,
            conn: $crate::ConnId,
            code: u16,
            reason: &str,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            let reason = ::std::borrow::ToOwned::to_owned(reason);
            self.tell($crate::command::Command::Close(conn, code, reason))$($wait)*
        }

        /// Accepts a deferred authentication (an `Event::AuthPending`).
        $($head)* fn accept(
            &self,
            conn: $crate::ConnId,
            identity: $crate::Identity,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            self.tell($crate::command::Command::Accept(conn, identity))$($wait)*
        }

        /// Rejects a deferred authentication (an `Event::AuthPending`).
        $($head)* fn reject(
            &self,
            conn: $crate::ConnId,
            rejection: $crate::Rejection,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            self.tell($crate::command::Command::Reject(conn, rejection))$($wait)*
        }

        /// Answers a deferred authentication with a decision.
        $($head)* fn answer(
            &self,
            conn: $crate::ConnId,
            decision: $crate::AuthDecision,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            self.tell($crate::command::Command::Answer(conn, decision))$($wait)*
        }

        /// Answers a plain HTTP request (`Event::HttpRequest`, with
        /// `HubConfig::http_fallback` on); the connection ends once it is
        /// written.
        $($head)* fn http_respond(
            &self,
            conn: $crate::ConnId,
            status: u16,
            headers: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            body: ::std::vec::Vec<u8>,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            let command = $crate::command::Command::HttpRespond { conn, status, headers, body };
            self.tell(command)$($wait)*
        }

        /// Publishes and waits until the publication is stored and on its
        /// way to every subscriber: its position (`None` on a channel
        /// without history), or, with a broker, why nothing was published.
        /// ([`publish`](Self::publish) returns as soon as the hub took it.)
        $($head)* fn publish_acked(
            &self,
            channel: &str,
            message: $crate::Message,
        ) -> ::core::result::Result<
            ::core::result::Result<
                ::core::option::Option<$crate::history::StreamPosition>,
                $crate::broker::BrokerError,
            >,
            $crate::command::Stopped,
        > {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            let message = ::std::boxed::Box::new(message);
            let command = $crate::command::Command::PublishAcked { channel, message };
            match self.command(command)$($wait)*? {
                $crate::command::Reply::Published(outcome) => ::core::result::Result::Ok(outcome),
                // A hub that cannot defer (`Hub::apply` with a broker) took it.
                _ => ::core::result::Result::Ok(::core::result::Result::Ok(::core::option::Option::None)),
            }
        }

        /// Counters and sizes.
        $($head)* fn stats(&self) -> ::core::result::Result<$crate::Stats, $crate::command::Stopped> {
            match self.command($crate::command::Command::Stats)$($wait)*? {
                $crate::command::Reply::Stats(stats) => ::core::result::Result::Ok(stats),
                _ => ::core::unreachable!("Stats answers Stats"),
            }
        }

        /// Subscribers of a channel.
        $($head)* fn subscriber_count(
            &self,
            channel: &str,
        ) -> ::core::result::Result<usize, $crate::command::Stopped> {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            let command = $crate::command::Command::SubscriberCount(channel);
            ::core::result::Result::Ok(self.command(command)$($wait)*?.count())
        }

        /// Every channel with its subscriber count, sorted by name.
        $($head)* fn channels(
            &self,
        ) -> ::core::result::Result<
            ::std::vec::Vec<(::std::string::String, usize)>,
            $crate::command::Stopped,
        > {
            match self.command($crate::command::Command::Channels)$($wait)*? {
                $crate::command::Reply::Channels(channels) => ::core::result::Result::Ok(channels),
                _ => ::core::unreachable!("Channels answers Channels"),
            }
        }

        /// Publishes with a position assigned by an external history store
        /// (`HubConfig::external_history`); returns how many got it live.
        $($head)* fn publish_positioned(
            &self,
            channel: &str,
            message: $crate::Message,
            position: $crate::history::StreamPosition,
        ) -> ::core::result::Result<usize, $crate::command::Stopped> {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            let message = ::std::boxed::Box::new(message);
            let command = $crate::command::Command::PublishPositioned { channel, message, position };
            ::core::result::Result::Ok(self.command(command)$($wait)*?.count())
        }

        /// Answers an `Event::HistoryRead` with what the external store
        /// returned.
        $($head)* fn answer_history_read(
            &self,
            read: $crate::HistoryReadId,
            result: ::core::result::Result<
                $crate::history::HistoryPage,
                $crate::history::HistoryError,
            >,
        ) -> ::core::result::Result<(), $crate::command::Stopped> {
            self.tell($crate::command::Command::AnswerHistoryRead { read, result })$($wait)*
        }

        /// A channel's stored publications after `since` (or the newest
        /// `limit` when `None`), at most `limit`, with its position.
        $($head)* fn history(
            &self,
            channel: &str,
            since: ::core::option::Option<u64>,
            limit: usize,
        ) -> ::core::result::Result<
            ::core::result::Result<$crate::history::HistoryPage, $crate::history::HistoryError>,
            $crate::command::Stopped,
        > {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            let command = $crate::command::Command::History { channel, since, limit };
            match self.command(command)$($wait)*? {
                $crate::command::Reply::History(page) => ::core::result::Result::Ok(page),
                _ => ::core::unreachable!("History answers History"),
            }
        }
    };
}
