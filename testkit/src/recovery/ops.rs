//! The operations of a recovery program and how they are read.

/// Clients a program addresses.
pub(super) const CLIENTS: u8 = 3;
/// Channels a program addresses (`c0`, `c1`).
pub(super) const CHANNELS: u8 = 2;

/// One step of a recovery program.
#[derive(Clone, Debug)]
pub enum RecoveryOp {
    /// Publish `n` messages to a channel: (channel, n).
    Publish(u8, u8),
    /// Cut a client's connection (it keeps its positions).
    Cut(u8),
    /// Subscribe (connecting first if cut): with `recover` when the client
    /// holds a position, else `history` or `positions` chosen by the third
    /// byte: (client, channel, pick).
    Subscribe(u8, u8, u8),
    /// Unsubscribe: (client, channel).
    Unsubscribe(u8, u8),
    /// The client's socket stops taking bytes.
    Stall(u8),
    /// The client's socket writes what it held and takes bytes again.
    Release(u8),
    /// Advance the clock by this many seconds.
    Advance(u8),
    /// A new hub (a restart: a new epoch, no history, every client cut).
    Restart,
}

impl RecoveryOp {
    /// Reads one operation from a source of bytes (a fuzz input, or a
    /// quickcheck generator): client, channel and kind, then an argument
    /// byte for the kinds that take one.
    pub fn decode(mut next: impl FnMut() -> u8) -> RecoveryOp {
        let c = next() % CLIENTS;
        let ch = next() % CHANNELS;
        match next() % 20 {
            0..=6 => RecoveryOp::Publish(ch, 1 + next() % 6),
            7..=8 => RecoveryOp::Cut(c),
            9..=12 => RecoveryOp::Subscribe(c, ch, next()),
            13 => RecoveryOp::Unsubscribe(c, ch),
            14..=15 => RecoveryOp::Stall(c),
            16..=17 => RecoveryOp::Release(c),
            18 => RecoveryOp::Advance(next() % 8),
            _ => RecoveryOp::Restart,
        }
    }
}
