//! Reconnect backoff: when the reconnecting client should try again, and when it
//! should stop.
//!
//! Two layers:
//!
//! - [`BackoffPolicy`] is pure arithmetic: the delay before retry number `n`, capped,
//!   with jitter drawn from a random `u64` the caller supplies.
//! - [`Backoff`] is the schedule of one client: it counts failures, hands out the
//!   instant of the next retry, resets after a connection that stayed up long enough,
//!   and gives up when the retry budget is spent.
//!
//! Like the rest of the core it reads neither a clock nor an RNG: time arrives as a
//! `now: Instant` argument and randomness as a `random: u64` argument. A simulation
//! can therefore replay a whole reconnect storm bit for bit from one seed
//! ([`SplitMix64`] is provided for that).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wshub_core::backoff::{Backoff, BackoffPolicy, Jitter, SplitMix64};
//!
//! # let start = Instant::now(); // the adapter reads the clock, never the core
//! let policy = BackoffPolicy { jitter: Jitter::None, ..BackoffPolicy::default() };
//! policy.validate().unwrap();
//! let mut backoff = Backoff::new(policy);
//! let mut rng = SplitMix64::new(7);
//!
//! // The connect attempt failed: when do we try again?
//! let retry_at = backoff.on_failure(start, rng.next_u64(), None).unwrap();
//! assert_eq!(retry_at - start, Duration::from_secs(1));
//!
//! // The driver sleeps until `next_trigger()`, then asks whether the retry is due.
//! assert_eq!(backoff.next_trigger(), Some(retry_at));
//! assert!(backoff.handle_timeout(retry_at));
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// The longest delay a caller-supplied floor (a `Retry-After` header) can impose.
///
/// A server can ask for any delay; a client that obeyed "Retry-After: 1000000000"
/// would never come back. One hour is long enough for any honest maintenance window
/// and short enough that a typo on the server does not strand its clients.
pub const MAX_FLOOR: Duration = Duration::from_secs(60 * 60);

/// How the delay is randomised so that clients disconnected together do not all
/// come back at the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: every client follows the same schedule.
    None,
    /// Uniform in `[0, delay]` (AWS "full jitter").
    Full,
    /// Uniform in `[delay/2, delay]` (AWS "equal jitter").
    Equal,
}

/// An exponential backoff policy: delays of `initial * multiplier^attempt`, capped at
/// `max`, optionally jittered, for at most `max_retries` retries.
///
/// The defaults follow go-ws's `ReconnectConfig` (initial 1 s, max 30 s, multiplier
/// 2.0, unlimited retries) with one deliberate difference: **jitter defaults to
/// [`Jitter::Full`]**, where go-ws has none. A hub restart drops every client at the
/// same instant; without jitter they all reconnect in lockstep at +1 s, +3 s, +7 s...,
/// and each wave lands on a hub that is busiest exactly then. Full jitter spreads
/// each wave evenly over its whole window, which AWS's analysis ("Exponential Backoff
/// And Jitter") found to do the least total work and to finish soonest. The price is
/// that one client may retry sooner than the base delay; the cap on the average rate
/// still holds. Set `jitter: Jitter::None` for go-ws's exact schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The largest delay the policy computes. A `Retry-After` floor may exceed it
    /// (see [`Backoff::on_failure`]).
    pub max: Duration,
    /// Growth factor per failed attempt; at least 1.0.
    pub multiplier: f64,
    /// How many retries before giving up; `None` = unlimited.
    pub max_retries: Option<u32>,
    /// How the delay is randomised.
    pub jitter: Jitter,
    /// After a connection stays up this long, the attempt count resets, so the next
    /// outage starts again from `initial`. Shorter-lived connections keep counting:
    /// a server that accepts and then drops at once must not be hammered every
    /// `initial`. Zero resets on every connection, as go-ws does.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            max_retries: None,
            jitter: Jitter::Full,
            // A connection that outlived the longest wait we would impose was a real
            // recovery, not a flap.
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Why a [`BackoffPolicy`] cannot work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BackoffError {
    /// `initial` is zero: the client would retry in a tight loop.
    ZeroInitial,
    /// `max` is below `initial`.
    MaxBelowInitial {
        /// The configured `initial`.
        initial: Duration,
        /// The configured `max`.
        max: Duration,
    },
    /// `multiplier` is below 1.0: delays would shrink.
    MultiplierBelowOne(f64),
    /// `multiplier` is NaN or infinite.
    MultiplierNotFinite(f64),
}

impl fmt::Display for BackoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroInitial => write!(f, "invalid backoff policy: initial delay is zero"),
            Self::MaxBelowInitial { initial, max } => write!(
                f,
                "invalid backoff policy: max delay {max:?} is below initial delay {initial:?}"
            ),
            Self::MultiplierBelowOne(m) => {
                write!(f, "invalid backoff policy: multiplier {m} is below 1.0")
            }
            Self::MultiplierNotFinite(m) => {
                write!(f, "invalid backoff policy: multiplier {m} is not finite")
            }
        }
    }
}

impl std::error::Error for BackoffError {}

impl BackoffPolicy {
    /// Checks that the policy is usable: `initial > 0`, `max >= initial`, and a finite
    /// `multiplier >= 1.0`.
    ///
    /// An invalid policy never makes the other methods panic, but its schedule is
    /// meaningless; callers should validate once when they build it.
    pub fn validate(&self) -> Result<(), BackoffError> {
        if self.initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if self.max < self.initial {
            return Err(BackoffError::MaxBelowInitial {
                initial: self.initial,
                max: self.max,
            });
        }
        // Finiteness first: NaN compares false with everything and would slip past
        // the `< 1.0` check.
        if !self.multiplier.is_finite() {
            return Err(BackoffError::MultiplierNotFinite(self.multiplier));
        }
        if self.multiplier < 1.0 {
            return Err(BackoffError::MultiplierBelowOne(self.multiplier));
        }
        Ok(())
    }

    /// The un-jittered delay before retry number `attempt` (0-based):
    /// `min(initial * multiplier^attempt, max)`.
    ///
    /// Saturates instead of overflowing: any attempt number, up to `u32::MAX`, and any
    /// multiplier give at most `max`. Non-decreasing in `attempt` for a valid policy.
    #[must_use]
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powf(f64::from(attempt));
        // f64 cannot hold every nanosecond count, so the first delay (and every delay
        // at multiplier 1) bypasses it and stays exactly `initial`.
        if factor == 1.0 {
            return self.initial.min(self.max);
        }
        let initial_ns = self.initial.as_nanos();
        let max_ns = self.max.as_nanos();
        // Work in f64 nanoseconds: the product may be astronomically large (or
        // infinite) and only needs to be compared with `max`. Integer-valued results
        // such as 100 ms * 1.5^3 come out exact, so schedules are predictable.
        let ns = initial_ns as f64 * factor;
        if ns.is_nan() || ns >= max_ns as f64 {
            return self.max;
        }
        // `as` saturates (a negative value, possible only for an invalid policy,
        // becomes 0). Raising to `initial` keeps "never shorter than retry 0" from
        // resting on an error analysis of f64 rounding; `min` last, so `max` wins
        // even for an invalid policy with `max < initial`.
        let ns = (ns.round() as u128).max(initial_ns).min(max_ns);
        duration_from_nanos(ns)
    }

    /// The delay before retry number `attempt` with jitter applied, given a
    /// caller-supplied random `u64` (the core has no RNG). Never exceeds `max`.
    ///
    /// `random` is mapped onto the jitter window by scaling, so every bit counts and
    /// `0` / `u64::MAX` give the two ends of the window.
    #[must_use]
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let base = self.base_delay(attempt);
        let base_ns = base.as_nanos();
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => duration_from_nanos(scale(random, base_ns + 1)),
            Jitter::Equal => {
                let half = base_ns / 2;
                // `base_ns - half` rounds the lower end up, so the result is never
                // below the exact half.
                duration_from_nanos(base_ns - half + scale(random, half + 1))
            }
        }
    }
}

/// `floor(random * n / 2^64)`: a value in `[0, n)` for any `n`, without overflowing
/// u128 even when `n` is `Duration::MAX` in nanoseconds (about 2^94).
fn scale(random: u64, n: u128) -> u128 {
    let r = u128::from(random);
    let hi = n >> 64;
    let lo = n & u128::from(u64::MAX);
    r * hi + ((r * lo) >> 64)
}

fn duration_from_nanos(ns: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

/// `now + delay`, or the latest instant this platform can represent on the way there.
///
/// `Instant + Duration` panics on overflow; a policy with a `max` of centuries is
/// valid and must not crash the client.
fn instant_after(now: Instant, delay: Duration) -> Instant {
    let mut d = delay;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        // Terminates: `now + 0` always fits.
        d /= 2;
    }
}

/// The retry schedule of one reconnecting client.
///
/// Shaped after firezone's snownet backoff: the schedule only moves when told what
/// happened (`on_*`) or what time it is (`handle_timeout`), and it publishes its next
/// deadline through [`next_trigger`](Self::next_trigger). Typical driving:
///
/// 1. A connect attempt (or a walk over all endpoints) fails: call
///    [`on_failure`](Self::on_failure); sleep until the returned instant, or stop if it
///    is `None` (given up).
/// 2. At that instant [`handle_timeout`](Self::handle_timeout) returns `true`: connect.
/// 3. The connection comes up: [`on_connected`](Self::on_connected).
/// 4. It goes down: [`on_disconnected`](Self::on_disconnected), then `on_failure` to
///    schedule the reconnect. A connection that lasted `reset_after` starts the
///    schedule afresh; a flapping one keeps backing off.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Failures since the last reset; retry number `attempt - 1` is scheduled.
    attempt: u32,
    next_trigger: Option<Instant>,
    connected_at: Option<Instant>,
    given_up: bool,
}

impl Backoff {
    /// A fresh schedule: no failures yet, nothing scheduled.
    ///
    /// The policy is not validated here (see [`BackoffPolicy::validate`]).
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            attempt: 0,
            next_trigger: None,
            connected_at: None,
            given_up: false,
        }
    }

    /// The policy this schedule follows.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// A connect attempt (or a whole endpoint walk) failed at `now`.
    ///
    /// Returns the instant to retry at, or `None` once more than `max_retries` failures
    /// have been counted (the schedule has given up and stays so until a reset).
    /// `random` feeds the jitter.
    ///
    /// `floor` is a minimum delay imposed by the server: a `Retry-After` header, or a
    /// 1013 "Try Again Later" close. The delay is `max(computed, floor)`. The computed
    /// part never exceeds `max`, but the floor is honoured as given, up to
    /// [`MAX_FLOOR`]: a server that says "come back in five minutes" knows better than
    /// our cap. Only `Retry-After` carries such a duration; a 1013 close does not, so
    /// for it the caller should pass a floor within `max` (for example `policy().max`).
    /// The floor is not jittered: spreading clients that were all told the same
    /// `Retry-After` is the server's job (it can tell each one a different value).
    #[must_use = "the returned instant is when to retry; None means give up"]
    pub fn on_failure(
        &mut self,
        now: Instant,
        random: u64,
        floor: Option<Duration>,
    ) -> Option<Instant> {
        if self.given_up {
            return None;
        }
        // A failure means no connection is up; a stale `connected_at` would make a
        // later disconnect look like the end of a long, stable session.
        self.connected_at = None;
        self.attempt = self.attempt.saturating_add(1);
        if self
            .policy
            .max_retries
            .is_some_and(|limit| self.attempt > limit)
        {
            self.given_up = true;
            self.next_trigger = None;
            return None;
        }
        let computed = self.policy.delay(self.attempt - 1, random);
        let delay = match floor {
            Some(floor) => computed.max(floor.min(MAX_FLOOR)),
            None => computed,
        };
        let at = instant_after(now, delay);
        self.next_trigger = Some(at);
        Some(at)
    }

    /// A connection came up at `now`. Cancels any pending retry.
    ///
    /// The attempt count is kept: only a connection that stays up for `reset_after`
    /// resets it (see [`on_disconnected`](Self::on_disconnected)).
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.next_trigger = None;
    }

    /// The connection went down at `now`. If it had stayed up for at least
    /// `reset_after`, the attempt count resets to 0 (and a spent retry budget is
    /// restored). A disconnect without a matching `on_connected` is ignored.
    pub fn on_disconnected(&mut self, now: Instant) {
        let Some(since) = self.connected_at.take() else {
            return;
        };
        // Saturating: a caller whose clock went backwards gets "short", never a panic.
        if now.saturating_duration_since(since) >= self.policy.reset_after {
            self.attempt = 0;
            self.given_up = false;
        }
    }

    /// Time has advanced to `now`. Returns `true` when the scheduled retry is due, and
    /// clears it so that it fires once; the caller should then connect.
    ///
    /// Early or repeated calls are no-ops that return `false`.
    #[must_use = "true means: connect now"]
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.next_trigger {
            Some(at) if at <= now => {
                self.next_trigger = None;
                true
            }
            _ => false,
        }
    }

    /// Failures since the last reset.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the next retry is due, if one is scheduled.
    #[must_use]
    pub fn next_trigger(&self) -> Option<Instant> {
        self.next_trigger
    }

    /// Whether the retry budget is spent (snownet's `is_expired`).
    #[must_use]
    pub fn is_given_up(&self) -> bool {
        self.given_up
    }

    /// Forgets all history, as if freshly built: for a user-initiated reconnect after
    /// giving up, or a change of server.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.next_trigger = None;
        self.connected_at = None;
        self.given_up = false;
    }
}

/// A small deterministic PRNG (SplitMix64) for tests and simulations that need the
/// `random` argument of [`BackoffPolicy::delay`] and [`Backoff::on_failure`].
///
/// The core never seeds it from anything ambient (time, addresses, the OS): the seed
/// is always the caller's, so a run is reproducible from its seed. It is not
/// cryptographic; an adapter may feed the backoff from any RNG it likes instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator that starts from `seed`. Every seed, including 0, is fine.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // Sebastiano Vigna's splitmix64.c.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
