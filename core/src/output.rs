//! [`Hub::poll_output`]: the one drain step every driver loops on.

use bytes::Bytes;

use crate::broker::BrokerOutput;
use crate::{ConnId, Event, Hub};

/// The next thing a driver must do: [`Hub::poll_output`].
#[derive(Debug, PartialEq)]
#[must_use]
pub enum Output {
    /// Carry out or hand on this event ([`Hub::poll_event`]).
    Event(Event),
    /// Hand this to the broker driver ([`Hub::poll_broker`]; only with
    /// [`crate::HubConfig::broker`]).
    Broker(BrokerOutput),
    /// Write the frames just appended to the caller's buffer to this
    /// connection's socket, then report with [`Hub::handle_written`]
    /// ([`Hub::poll_transmit`]).
    Transmit(ConnId),
}

impl Hub {
    /// The next output, events before frames: [`Hub::poll_event`], then
    /// [`Hub::poll_broker`], else [`Hub::poll_transmit`] (which appends to `frames`). A driver loops on
    /// this until `None` after every input; carrying out an output may queue
    /// more (a failed write closes its connection), and the loop picks it up.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use wshub_core::{output::Output, Hub, HubConfig, PeerInfo};
    /// # let now = Instant::now();
    /// # let mut hub = Hub::new(HubConfig::default(), now, Duration::ZERO).unwrap();
    /// # let conn = hub.open(now, PeerInfo::default()).unwrap();
    /// # hub.handle_eof(now, conn).unwrap();
    /// let mut frames = Vec::new();
    /// while let Some(output) = hub.poll_output(&mut frames) {
    ///     match output {
    ///         Output::Event(event) => println!("{event:?}"), // on `Closed`, drop the socket
    ///         Output::Broker(output) => println!("to the broker driver: {output:?}"),
    ///         Output::Transmit(id) => {
    ///             // `write_vectored` the frames to `id`'s socket, then:
    ///             let n: usize = frames.drain(..).map(|f| f.len()).sum();
    ///             hub.handle_written(now, id, n).unwrap();
    ///         }
    ///     }
    /// }
    /// ```
    #[must_use]
    pub fn poll_output(&mut self, frames: &mut Vec<Bytes>) -> Option<Output> {
        if let Some(event) = self.poll_event() {
            return Some(Output::Event(event));
        }
        if let Some(output) = self.poll_broker() {
            return Some(Output::Broker(output));
        }
        self.poll_transmit(frames).map(Output::Transmit)
    }
}
