//! [`EventOverflow`]: the bookkeeping of an adapter's bounded event channel.

use crate::Event;

/// How many events an adapter's channel to the application holds by default
/// before it drops events (about a second of connects and closes at a busy
/// server's rate; a few MB at most).
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Counts the events a bounded channel to the application had no room for,
/// and reports them as one [`Event::EventsDropped`] once there is room again,
/// before any newer event.
///
/// Adapters feed events with `try_send`, never a waiting send: an application
/// that reads events slowly (or never) must not stall the hub, nor make it
/// hold every connect, close and failed authentication a peer causes.
///
/// ```
/// use std::sync::mpsc::sync_channel;
/// use wshub_core::overflow::EventOverflow;
/// use wshub_core::Event;
///
/// let (tx, events) = sync_channel(1);
/// let try_send = |e| tx.try_send(e).is_ok();
/// let mut overflow = EventOverflow::default();
/// overflow.offer(Event::ShutdownComplete, try_send);
/// overflow.offer(Event::ShutdownComplete, try_send); // full: counted
/// assert_eq!(overflow.dropped(), 1);
/// assert_eq!(events.try_recv(), Ok(Event::ShutdownComplete)); // the application reads
/// assert!(overflow.flush(try_send));
/// assert_eq!(events.try_recv(), Ok(Event::EventsDropped { count: 1 }));
/// ```
#[derive(Debug, Default)]
pub struct EventOverflow {
    dropped: u64,
}

impl EventOverflow {
    /// Hands `event` to `try_send` (true: it was taken), after the pending
    /// drop notice if any; an event that finds no room is counted instead.
    pub fn offer(&mut self, event: Event, mut try_send: impl FnMut(Event) -> bool) {
        if !self.flush(&mut try_send) || !try_send(event) {
            self.dropped += 1;
        }
    }

    /// Sends the pending drop notice if there is room (call it after every
    /// drain, so the notice does not wait for the next event). True when no
    /// notice is pending any more.
    pub fn flush(&mut self, mut try_send: impl FnMut(Event) -> bool) -> bool {
        if self.dropped == 0 {
            return true;
        }
        if try_send(Event::EventsDropped {
            count: self.dropped,
        }) {
            self.dropped = 0;
            return true;
        }
        false
    }

    /// Events dropped since the last notice was delivered.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel of `cap` events.
    struct Chan {
        cap: usize,
        held: Vec<Event>,
    }

    impl Chan {
        fn try_send(&mut self) -> impl FnMut(Event) -> bool + '_ {
            |e| {
                if self.held.len() < self.cap {
                    self.held.push(e);
                    true
                } else {
                    false
                }
            }
        }
    }

    #[test]
    fn the_notice_comes_first_with_the_exact_count_and_the_channel_never_grows() {
        let mut chan = Chan {
            cap: 3,
            held: Vec::new(),
        };
        let mut overflow = EventOverflow::default();
        for _ in 0..10 {
            overflow.offer(Event::ShutdownComplete, chan.try_send());
            assert!(chan.held.len() <= 3);
        }
        assert_eq!(overflow.dropped(), 7);
        assert!(!overflow.flush(chan.try_send()), "still full");
        chan.held.clear();
        overflow.offer(Event::EventsDropped { count: 99 }, chan.try_send());
        assert_eq!(
            chan.held,
            [
                Event::EventsDropped { count: 7 },
                Event::EventsDropped { count: 99 }
            ]
        );
        assert_eq!(overflow.dropped(), 0);
        assert!(overflow.flush(chan.try_send()), "nothing pending");
    }

    #[test]
    fn an_event_that_finds_no_room_behind_the_notice_is_counted() {
        let mut chan = Chan {
            cap: 1,
            held: Vec::new(),
        };
        let mut overflow = EventOverflow::default();
        overflow.offer(Event::ShutdownComplete, chan.try_send());
        overflow.offer(Event::ShutdownComplete, chan.try_send());
        chan.held.clear();
        // Room for the notice only: the new event is dropped and counted.
        overflow.offer(Event::ShutdownComplete, chan.try_send());
        assert_eq!(chan.held, [Event::EventsDropped { count: 1 }]);
        assert_eq!(overflow.dropped(), 1);
    }
}
