//! What every driver's application side of a [`Client`] does the same way:
//! the handle's methods and the builder's, written once.
//!
//! A driver's `ClientHandle` carries [`Command`]s to the task or thread that
//! owns the client and reads the state the driver publishes there; its
//! `ClientBuilder` collects a [`ClientSetup`]. The methods an application
//! calls on them are the same for every runtime (only `send` is `async` on
//! an async runtime), so they are written here as
//! [`client_command_methods!`](crate::client_command_methods) and
//! [`client_builder_methods!`](crate::client_builder_methods), over the few
//! items each driver supplies: how a command reaches its driver, and how a
//! send's answer comes back.
//!
//! [`Client`]: super::Client
//! [`ClientSetup`]: super::ClientSetup

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::{ClientState, Command};

/// The client's state as its driver last published it, shared between the
/// driver (which [sets](SharedState::set) it before it hands out each event,
/// so that an application that sees an event sees the state that goes with
/// it) and the application's handles (which [get](SharedState::get) it).
/// Cheap to clone: the clones share one state.
#[derive(Clone, Debug)]
pub struct SharedState(Arc<Mutex<ClientState>>);

impl SharedState {
    /// Starts at `state` (the client's state when the driver starts).
    pub fn new(state: ClientState) -> Self {
        SharedState(Arc::new(Mutex::new(state)))
    }

    /// The state last set.
    pub fn get(&self) -> ClientState {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `state` to every clone.
    pub fn set(&self, state: ClientState) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

/// What the clones of a driver's `ClientHandle` share: the way to the
/// driver and the [`SharedState`] it publishes. Dropping it (with the last
/// clone) closes the client, as `ClientHandle::close` does.
///
/// `R` is the driver's reply sender for a send ([`Command::Send`]).
///
/// [`Command::Send`]: super::Command::Send
pub struct SharedHandle<R> {
    tell: Box<dyn Fn(Command<R>) -> bool + Send + Sync>,
    state: SharedState,
}

impl<R> SharedHandle<R> {
    /// Commands go through `tell`, which queues one for the driver and
    /// returns false if the driver has gone.
    pub fn new(
        state: SharedState,
        tell: impl Fn(Command<R>) -> bool + Send + Sync + 'static,
    ) -> Self {
        SharedHandle {
            tell: Box::new(tell),
            state,
        }
    }

    /// Queues `command` for the driver; false if the driver has gone.
    pub fn tell(&self, command: Command<R>) -> bool {
        (self.tell)(command)
    }

    /// The state the driver publishes.
    pub fn state(&self) -> &SharedState {
        &self.state
    }
}

impl<R> Drop for SharedHandle<R> {
    fn drop(&mut self) {
        (self.tell)(Command::Close);
    }
}

/// Shown as the handle it belongs to: its state.
impl<R> fmt::Debug for SharedHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("state", &self.state.get())
            .finish()
    }
}

/// Writes a driver's `ClientHandle` methods (`send`, `subscribe`,
/// `unsubscribe`, `state`, `close`) inside its `impl` block: `(sync)` for a
/// handle whose `send` blocks, `(async)` for one whose `send` is an
/// `async fn`. The handle supplies, in the same block:
///
/// - `fn shared(&self) -> &SharedHandle<R>`: what its clones share (`R` is
///   the driver's reply sender).
/// - `fn ask(&self, message: serde_json::Value) -> Result<(), SendError>`
///   (an `async fn` with `(async)`): queues a
///   [`Command::Send`](crate::client::Command::Send) with a reply sender and
///   waits for the driver's answer,
///   [`SendError::Closed`](crate::client::SendError) if the driver has gone.
///
/// The handle's crate depends on `serde_json` (the message type).
///
/// ```
/// use wshub_core::client::{ClientState, Command, SendError, SharedHandle, SharedState};
///
/// struct Handle(SharedHandle<()>);
///
/// impl Handle {
///     fn shared(&self) -> &SharedHandle<()> {
///         &self.0
///     }
///     fn ask(&self, message: serde_json::Value) -> Result<(), SendError> {
///         // A real handle waits for the reply it sent along.
///         if self.0.tell(Command::Send(message, ())) { Ok(()) } else { Err(SendError::Closed) }
///     }
///     wshub_core::client_command_methods!(sync);
/// }
///
/// // A "driver" that is already gone.
/// let handle = Handle(SharedHandle::new(SharedState::new(ClientState::GivenUp), |_| false));
/// handle.subscribe("process:7");
/// assert_eq!(handle.send(serde_json::json!({"hi": 1})), Err(SendError::Closed));
/// assert_eq!(handle.state(), ClientState::GivenUp);
/// ```
///
/// A macro and not a trait for the same reason as
/// [`hub_command_methods!`](crate::hub_command_methods): an async `send`
/// must be a future whose `Send`-ness callers can see; and the methods stay
/// inherent, so that calling them needs no trait in scope.
#[macro_export]
macro_rules! client_command_methods {
    (sync) => {
        /// Sends a JSON message (one text frame) and waits for the driver's
        /// answer: [`SendError::NotConnected`] while no connection is up
        /// (unless the config has an `offline_queue`),
        /// [`SendError::Closed`] after [`ClientHandle::close`], auth failure
        /// or giving up.
        pub fn send(
            &self,
            message: ::serde_json::Value,
        ) -> ::core::result::Result<(), $crate::client::SendError> {
            self.ask(message)
        }

        $crate::client_command_methods!(@rest);
    };
    (async) => {
        /// Sends a JSON message (one text frame) and waits for the driver's
        /// answer: [`SendError::NotConnected`] while no connection is up
        /// (unless the config has an `offline_queue`),
        /// [`SendError::Closed`] after [`ClientHandle::close`], auth failure
        /// or giving up.
        pub async fn send(
            &self,
            message: ::serde_json::Value,
        ) -> ::core::result::Result<(), $crate::client::SendError> {
            self.ask(message).await
        }

        $crate::client_command_methods!(@rest);
    };
    (@rest) => {
        /// Subscribes to a channel, now if connected and again after every
        /// reconnect. A refusal arrives as [`ClientEvent::SubscribeRefused`]
        /// (or in [`ClientEvent::SubscriptionsRestored`]). Does not wait.
        pub fn subscribe(&self, channel: &str) {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            self.shared().tell($crate::client::Command::Subscribe(channel));
        }

        /// Forgets a subscription (and unsubscribes now if connected).
        pub fn unsubscribe(&self, channel: &str) {
            let channel = ::std::borrow::ToOwned::to_owned(channel);
            self.shared().tell($crate::client::Command::Unsubscribe(channel));
        }

        /// The client's state as of the driver's last step.
        pub fn state(&self) -> $crate::client::ClientState {
            self.shared().state().get()
        }

        /// Closes for good: a 1000 close to the server (waiting up to the
        /// config's `close_timeout` for its reply), no more reconnects. The
        /// event channel ends after [`ClientEvent::Closed`].
        pub fn close(&self) {
            self.shared().tell($crate::client::Command::Close);
        }
    };
}

/// Writes a driver's `ClientBuilder` methods `new`, `subscribe` and `seed`
/// inside its `impl` block, over its one field `setup: ClientSetup`
/// ([`ClientSetup`](crate::client::ClientSetup) does the work); the builder
/// adds its own `spawn`. The
/// `seed` docs name the driver's `os_seed`.
///
/// ```
/// use wshub_core::client::ClientSetup;
///
/// struct ClientBuilder {
///     setup: ClientSetup,
/// }
///
/// impl ClientBuilder {
///     wshub_core::client_builder_methods!();
/// }
/// # use wshub_core::client::{ClientConfig, Endpoint};
/// let config = ClientConfig::new(vec![Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap()]);
/// let builder = ClientBuilder::new(config).subscribe("process:7").seed(7);
/// assert_eq!(builder.setup.config().endpoints.len(), 1);
/// ```
#[macro_export]
macro_rules! client_builder_methods {
    () => {
        /// A client on `config.endpoints`.
        pub fn new(config: $crate::client::ClientConfig) -> Self {
            let setup = $crate::client::ClientSetup::new(config);
            Self { setup }
        }

        /// Subscribes before the first connect: the subscription goes out
        /// with the first connection and is reported in its
        /// [`ClientEvent::SubscriptionsRestored`].
        pub fn subscribe(self, channel: impl ::core::convert::Into<::std::string::String>) -> Self {
            let setup = self.setup.subscribe(channel);
            Self { setup }
        }

        /// Seeds the WebSocket keys, masks and backoff jitter (reproducible
        /// runs in tests); by default the seed comes from the operating
        /// system ([`os_seed`]).
        pub fn seed(self, seed: u64) -> Self {
            let setup = self.setup.seed(seed);
            Self { setup }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_shared_handle_closes_the_client() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let log = told.clone();
        let shared = SharedHandle::<()>::new(SharedState::new(ClientState::GivenUp), move |c| {
            log.lock().unwrap().push(format!("{c:?}"));
            true
        });
        assert!(shared.tell(Command::Subscribe("a".into())));
        assert_eq!(format!("{shared:?}"), "ClientHandle { state: GivenUp }");
        drop(shared);
        assert_eq!(*told.lock().unwrap(), ["Subscribe(\"a\")", "Close"]);
    }

    #[test]
    fn clones_share_the_state() {
        let driver = SharedState::new(ClientState::GivenUp);
        let handle = driver.clone();
        assert_eq!(handle.get(), ClientState::GivenUp);
        driver.set(ClientState::Connected { endpoint: 1 });
        assert_eq!(handle.get(), ClientState::Connected { endpoint: 1 });
    }
}
