//! The recovery contract of issue 11 under random programs: publishes across
//! channels, cuts, resubscribes with and without positions, stalled readers
//! (paced replays), trims, TTL expiry and restarts (a new hub, a new epoch).
//!
//! The model clients (`model.rs`) behave as the contract asks a client to:
//! each tracks its position per channel, resumes with `recover`, treats an
//! offset jump as a gap (drops what follows and re-syncs with `recover`) and
//! a repeated offset as a duplicate. The properties, checked on every
//! message and at the end: no duplicate ever; every gap is of publications
//! the hub no longer stores; after every resumed subscribe the client has
//! every publication exactly once in offset order, or got `recovered: false`
//! with the channel's current position; and what it got is what was
//! published at that offset. The operations are in `ops.rs`, the in-memory
//! driver in `sim.rs`.

use std::time::Instant;

mod model;
mod ops;
pub(crate) mod sim;

pub use ops::RecoveryOp;

use crate::input::ByteCursor;

/// Operations one fuzz input runs at most (the model is slow per step).
const MAX_OPS: usize = 400;

/// What a recovery program reached, so callers can check that their cases
/// exercise both outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryTally {
    /// Subscribes with `recover` that recovered (the hub's `Stats`).
    pub recovered: u64,
    /// Subscribes with `recover` answered `recovered: false`.
    pub failed: u64,
    /// Offset jumps the clients saw (each over publications no longer stored).
    pub gaps: u64,
    /// Repeated offsets after a re-sync that the clients dropped.
    pub dups: u64,
}

/// Runs `ops` against a fresh hub whose epochs come from `seed`, then
/// settles (releases stalled sockets, publishes once more to every channel)
/// and checks that every live subscription is at its channel's head.
/// `Err` describes the first violation of the contract.
pub fn run_recovery(now: Instant, seed: u64, ops: &[RecoveryOp]) -> Result<RecoveryTally, String> {
    let mut w = model::World::new(seed, now);
    for (i, op) in ops.iter().enumerate() {
        w.apply(op)
            .map_err(|e| format!("after op {i} {op:?}: {e}\n{ops:?}"))?;
    }
    w.settle()
        .map_err(|e| format!("at the end: {e}\n{ops:?}"))?;
    let s = w.sim.hub.stats();
    Ok(RecoveryTally {
        recovered: s.recoveries,
        failed: s.recoveries_failed,
        gaps: w.gaps,
        dups: w.dups,
    })
}

/// The fuzz entry: the first eight bytes are the epoch seed, the rest a
/// program of [`RecoveryOp`]s (at most 400); panics when the recovery
/// contract (see [`run_recovery`]) is violated.
pub fn check_recovery_bytes(now: Instant, data: &[u8]) {
    let mut input = ByteCursor::new(data);
    let seed = input.u64();
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        ops.push(RecoveryOp::decode(|| input.byte()));
    }
    if let Err(e) = run_recovery(now, seed, &ops) {
        panic!("recovery contract: {e}");
    }
}
