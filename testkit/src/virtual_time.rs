//! Virtual time for in-memory hub drivers: jump straight to each deadline
//! instead of sleeping or ticking, which is what exposes timers that fire late
//! or output that waits on a timer (quinn's `Pair::step`, str0m's `progress`).

use std::time::{Duration, Instant};

use wshub_core::Hub;

/// An in-memory driver of one [`Hub`]: its fake clock and a `pump` that
/// delivers everything the hub has to deliver. [`VirtualTime::advance`] is
/// written once here for every such driver (core's tests and testkit's).
pub trait VirtualTime {
    /// The hub driven.
    fn hub(&mut self) -> &mut Hub;
    /// The driver's clock.
    fn clock(&mut self) -> &mut Instant;
    /// Drains the hub's events and output (and whatever they cause) at the
    /// current time.
    fn pump(&mut self);

    /// Advances the clock by `d`, firing every deadline on the way in order,
    /// pumping after each.
    fn advance(&mut self, d: Duration) {
        let end = *self.clock() + d;
        loop {
            self.pump();
            match self.hub().poll_timeout() {
                Some(t) if t <= end => {
                    if t > *self.clock() {
                        *self.clock() = t;
                    }
                    let now = *self.clock();
                    self.hub().handle_timeout(now);
                    // A deadline equal to now that fires nothing would loop forever.
                    if self.hub().poll_timeout() == Some(t) && t == now {
                        self.pump();
                        if self.hub().poll_timeout() == Some(t) {
                            break;
                        }
                    }
                }
                _ => break,
            }
        }
        *self.clock() = end;
        self.hub().handle_timeout(end);
        self.pump();
    }
}
