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

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    /// The only clock read in these tests: every other instant is derived from it.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            jitter: Jitter::None,
            ..BackoffPolicy::default()
        }
    }

    /// A valid policy built from arbitrary numbers, covering tiny and huge delays and
    /// multipliers from exactly 1.0 through barely-above-1 to enormous.
    fn arb_policy(initial_ns: u64, extra_ns: u64, mult: u32, jitter: u8) -> BackoffPolicy {
        let initial = Duration::from_nanos(initial_ns.max(1));
        let max = initial.saturating_add(Duration::from_nanos(extra_ns));
        let multiplier = match mult % 5 {
            0 => 1.0,
            1 => 1.0 + f64::from(mult) * 1e-12,
            2 => 1.0 + f64::from(mult % 10_000) / 1000.0,
            3 => 2.0,
            _ => 1.0 + f64::from(mult) * 1e290,
        };
        let jitter = match jitter % 3 {
            0 => Jitter::None,
            1 => Jitter::Full,
            _ => Jitter::Equal,
        };
        let policy = BackoffPolicy {
            initial,
            max,
            multiplier,
            max_retries: None,
            jitter,
            reset_after: secs(30),
        };
        assert_eq!(
            policy.validate(),
            Ok(()),
            "generator must build valid policies"
        );
        policy
    }

    // --- BackoffPolicy -------------------------------------------------------

    #[test]
    fn defaults_match_go_ws_except_jitter() {
        let p = BackoffPolicy::default();
        assert_eq!(p.initial, secs(1));
        assert_eq!(p.max, secs(30));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.max_retries, None);
        assert_eq!(p.jitter, Jitter::Full);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn default_schedule_without_jitter_is_exact() {
        let p = no_jitter();
        let want = [1, 2, 4, 8, 16, 30, 30, 30].map(secs);
        let got: Vec<_> = (0..8).map(|a| p.base_delay(a)).collect();
        assert_eq!(got, want);
        // Jitter None ignores the random input entirely.
        for (a, want) in (0..8).zip(want) {
            assert_eq!(p.delay(a, 0), want);
            assert_eq!(p.delay(a, u64::MAX), want);
        }
    }

    #[test]
    fn stateful_default_schedule_without_jitter_is_exact() {
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        let mut now = start;
        let mut got = Vec::new();
        for _ in 0..7 {
            let at = b.on_failure(now, 12345, None).expect("unlimited retries");
            got.push(at - now);
            assert!(b.handle_timeout(at));
            now = at;
        }
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30].map(secs));
        assert_eq!(b.attempt(), 7);
        assert_eq!(now - start, secs(1 + 2 + 4 + 8 + 16 + 30 + 30));
    }

    #[test]
    fn custom_multiplier_and_initial_are_exact() {
        let p = BackoffPolicy {
            initial: ms(100),
            max: secs(1),
            multiplier: 1.5,
            jitter: Jitter::None,
            ..BackoffPolicy::default()
        };
        let got: Vec<_> = (0..8).map(|a| p.base_delay(a)).collect();
        let want = [
            100_000_000,
            150_000_000,
            225_000_000,
            337_500_000,
            506_250_000,
            759_375_000,
            1_000_000_000,
            1_000_000_000,
        ]
        .map(Duration::from_nanos);
        assert_eq!(got, want);
    }

    #[test]
    fn multiplier_one_is_constant() {
        let p = BackoffPolicy {
            initial: ms(250),
            multiplier: 1.0,
            jitter: Jitter::None,
            ..BackoffPolicy::default()
        };
        for a in [0, 1, 2, 1000, u32::MAX] {
            assert_eq!(p.base_delay(a), ms(250), "attempt {a}");
        }
    }

    #[test]
    fn huge_values_saturate_without_panicking() {
        let huge = BackoffPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: f64::MAX,
            jitter: Jitter::Full,
            ..BackoffPolicy::default()
        };
        assert_eq!(huge.validate(), Ok(()));
        for a in [0, 1, 2, 64, u32::MAX] {
            assert_eq!(huge.base_delay(a), Duration::MAX, "attempt {a}");
            assert!(huge.delay(a, u64::MAX) > secs(1_000_000));
            assert_eq!(huge.delay(a, 0), Duration::ZERO);
        }

        let steep = BackoffPolicy {
            initial: Duration::from_nanos(1),
            max: secs(1),
            multiplier: 1e300,
            jitter: Jitter::None,
            ..BackoffPolicy::default()
        };
        assert_eq!(steep.base_delay(0), Duration::from_nanos(1));
        // 1e300 ns, then inf: both clamp to max.
        assert_eq!(steep.base_delay(1), secs(1));
        assert_eq!(steep.base_delay(2), secs(1));
        assert_eq!(steep.base_delay(u32::MAX), secs(1));

        // A schedule whose delay overflows `Instant` lands as late as representable.
        let start = t0();
        let mut b = Backoff::new(BackoffPolicy {
            jitter: Jitter::None,
            ..huge
        });
        let at = b.on_failure(start, 0, None).expect("unlimited retries");
        assert!(at > start);
        assert_eq!(b.next_trigger(), Some(at));
        assert!(!b.handle_timeout(start));
    }

    #[test]
    fn invalid_policies_never_panic() {
        let bad = [
            BackoffPolicy {
                initial: Duration::ZERO,
                multiplier: f64::INFINITY,
                ..BackoffPolicy::default()
            },
            BackoffPolicy {
                multiplier: f64::NAN,
                ..BackoffPolicy::default()
            },
            BackoffPolicy {
                multiplier: -3.0,
                ..BackoffPolicy::default()
            },
            BackoffPolicy {
                initial: secs(60),
                max: secs(1),
                ..BackoffPolicy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
            for a in [0, 1, 2, 3, u32::MAX] {
                for r in [0, 1 << 63, u64::MAX] {
                    assert!(p.delay(a, r) <= p.max, "{p:?} attempt {a}");
                }
            }
        }
    }

    #[test]
    fn validate_accepts_edges() {
        let p = BackoffPolicy {
            initial: Duration::from_nanos(1),
            max: Duration::from_nanos(1),
            multiplier: 1.0,
            ..BackoffPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_policies() {
        let d = BackoffPolicy::default;
        let zero = BackoffPolicy {
            initial: Duration::ZERO,
            ..d()
        };
        assert_eq!(zero.validate(), Err(BackoffError::ZeroInitial));

        let inverted = BackoffPolicy {
            initial: secs(5),
            max: secs(4),
            ..d()
        };
        assert_eq!(
            inverted.validate(),
            Err(BackoffError::MaxBelowInitial {
                initial: secs(5),
                max: secs(4)
            })
        );

        for m in [0.999, 0.0, -1.0] {
            let p = BackoffPolicy {
                multiplier: m,
                ..d()
            };
            assert_eq!(p.validate(), Err(BackoffError::MultiplierBelowOne(m)));
        }
        for m in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let p = BackoffPolicy {
                multiplier: m,
                ..d()
            };
            assert!(
                matches!(p.validate(), Err(BackoffError::MultiplierNotFinite(x)) if x.to_bits() == m.to_bits()),
                "{m}"
            );
        }
    }

    #[test]
    fn errors_display_the_culprit() {
        let cases = [
            (BackoffError::ZeroInitial, "initial delay is zero"),
            (
                BackoffError::MaxBelowInitial {
                    initial: secs(5),
                    max: secs(4),
                },
                "max delay 4s is below initial delay 5s",
            ),
            (
                BackoffError::MultiplierBelowOne(0.5),
                "multiplier 0.5 is below 1.0",
            ),
            (
                BackoffError::MultiplierNotFinite(f64::NAN),
                "multiplier NaN is not finite",
            ),
        ];
        for (err, want) in cases {
            let text = err.to_string();
            assert!(text.starts_with("invalid backoff policy: "), "{text}");
            assert!(text.ends_with(want), "{text}");
        }
    }

    #[test]
    fn jitter_reaches_both_ends_of_its_window() {
        let full = BackoffPolicy {
            jitter: Jitter::Full,
            ..BackoffPolicy::default()
        };
        assert_eq!(full.delay(2, 0), Duration::ZERO);
        assert_eq!(full.delay(2, u64::MAX), secs(4));
        assert_eq!(full.delay(2, 1 << 63), secs(2));

        let equal = BackoffPolicy {
            jitter: Jitter::Equal,
            ..BackoffPolicy::default()
        };
        assert_eq!(equal.delay(2, 0), secs(2));
        assert_eq!(equal.delay(2, u64::MAX), secs(4));
        assert_eq!(equal.delay(2, 1 << 63), secs(3));
        // Odd nanoseconds: the lower end rounds up, never below the exact half.
        let odd = BackoffPolicy {
            initial: Duration::from_nanos(3),
            max: Duration::from_nanos(3),
            jitter: Jitter::Equal,
            ..BackoffPolicy::default()
        };
        assert_eq!(odd.delay(0, 0), Duration::from_nanos(2));
        assert_eq!(odd.delay(0, u64::MAX), Duration::from_nanos(3));
    }

    quickcheck! {
        fn base_delay_is_monotone_and_capped(
            initial_ns: u64, extra_ns: u64, mult: u32, attempt: u32
        ) -> bool {
            let p = arb_policy(initial_ns, extra_ns, mult, 0);
            let here = p.base_delay(attempt);
            let next = p.base_delay(attempt.saturating_add(1));
            let far = p.base_delay(u32::MAX);
            here >= p.initial.min(p.max)
                && here <= next
                && next <= far
                && far <= p.max
                && (attempt != 0 || here == p.initial)
        }

        fn base_delay_is_monotone_over_a_sweep(
            initial_ns: u64, extra_ns: u64, mult: u32
        ) -> bool {
            let p = arb_policy(initial_ns, extra_ns, mult, 0);
            let attempts = (0..80).chain([1 << 20, 1 << 31, u32::MAX - 1, u32::MAX]);
            let delays: Vec<_> = attempts.map(|a| p.base_delay(a)).collect();
            delays.windows(2).all(|w| w[0] <= w[1]) && delays.iter().all(|&d| d <= p.max)
        }

        fn full_jitter_stays_in_zero_to_base(
            initial_ns: u64, extra_ns: u64, mult: u32, attempt: u32, random: u64
        ) -> bool {
            let p = arb_policy(initial_ns, extra_ns, mult, 1);
            p.delay(attempt, random) <= p.base_delay(attempt)
        }

        fn equal_jitter_stays_in_half_to_base(
            initial_ns: u64, extra_ns: u64, mult: u32, attempt: u32, random: u64
        ) -> bool {
            let p = arb_policy(initial_ns, extra_ns, mult, 2);
            let base = p.base_delay(attempt);
            let d = p.delay(attempt, random);
            base / 2 <= d && d <= base
        }

        fn jitter_is_monotone_in_random(
            initial_ns: u64, extra_ns: u64, mult: u32, jitter: u8, attempt: u32, a: u64, b: u64
        ) -> bool {
            // Scaling, not modulo: a larger draw never gives a shorter delay, so the
            // distribution has no holes or wrap-arounds.
            let p = arb_policy(initial_ns, extra_ns, mult, jitter);
            let (lo, hi) = (a.min(b), a.max(b));
            p.delay(attempt, lo) <= p.delay(attempt, hi)
        }

        fn on_failure_stays_within_bounds(
            mult: u32, jitter: u8, seed: u64, floors: Vec<Option<u32>>
        ) -> TestResult {
            if floors.len() > 200 {
                return TestResult::discard();
            }
            let mut p = arb_policy(1_000_000, 5_000_000_000, mult, jitter);
            p.max_retries = None;
            let mut b = Backoff::new(p.clone());
            let mut rng = SplitMix64::new(seed);
            let mut now = t0();
            for (i, floor) in floors.into_iter().enumerate() {
                // Floors from 0 to ~50 days, so some hit the MAX_FLOOR cap.
                let floor = floor.map(|f| Duration::from_millis(u64::from(f) >> 10));
                let random = rng.next_u64();
                let Some(at) = b.on_failure(now, random, floor) else {
                    return TestResult::error("unlimited retries gave up");
                };
                let d = at - now;
                let attempt = u32::try_from(i).unwrap();
                let lower = floor.map_or(Duration::ZERO, |f| f.min(MAX_FLOOR));
                let upper = p.max.max(lower);
                let computed = p.delay(attempt, random);
                if d != computed.max(lower) || d > upper || b.attempt() != attempt + 1 {
                    return TestResult::failed();
                }
                now = at;
            }
            TestResult::passed()
        }
    }

    // --- Backoff -------------------------------------------------------------

    #[test]
    fn same_seed_gives_same_schedule() {
        fn schedule(seed: u64) -> Vec<Duration> {
            let start = t0();
            let mut b = Backoff::new(BackoffPolicy::default());
            let mut rng = SplitMix64::new(seed);
            let mut now = start;
            (0..20)
                .map(|_| {
                    let at = b.on_failure(now, rng.next_u64(), None).unwrap();
                    let d = at - now;
                    now = at;
                    d
                })
                .collect()
        }
        assert_eq!(schedule(42), schedule(42));
        // Guards against jitter silently ignoring its input.
        assert_ne!(schedule(42), schedule(43));
    }

    #[test]
    fn retry_limit_gives_up_on_the_failure_after_the_budget() {
        let start = t0();
        let mut b = Backoff::new(BackoffPolicy {
            max_retries: Some(3),
            ..no_jitter()
        });
        let mut now = start;
        for n in 1..=3 {
            let at = b.on_failure(now, 0, None);
            assert!(at.is_some(), "failure {n} must still retry");
            assert!(!b.is_given_up());
            now = at.unwrap();
        }
        assert_eq!(b.on_failure(now, 0, None), None);
        assert!(b.is_given_up());
        assert_eq!(b.next_trigger(), None);
        assert!(!b.handle_timeout(now + secs(3600)));
        // Stays given up, without counting further.
        let attempts = b.attempt();
        assert_eq!(b.on_failure(now, 0, None), None);
        assert_eq!(b.attempt(), attempts);

        b.reset();
        assert!(!b.is_given_up());
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.on_failure(now, 0, None), Some(now + secs(1)));
    }

    #[test]
    fn zero_retries_gives_up_at_once() {
        let mut b = Backoff::new(BackoffPolicy {
            max_retries: Some(0),
            ..no_jitter()
        });
        assert_eq!(b.on_failure(t0(), 0, None), None);
        assert!(b.is_given_up());
    }

    /// Three failures, then a connection that lasts `up`, then the next failure's
    /// delay.
    fn delay_after_connection_lasting(up: Duration) -> (u32, Duration) {
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        let mut now = start;
        for _ in 0..3 {
            now = b.on_failure(now, 0, None).unwrap();
        }
        b.on_connected(now);
        assert_eq!(
            b.next_trigger(),
            None,
            "connecting cancels the pending retry"
        );
        now += up;
        b.on_disconnected(now);
        let attempt = b.attempt();
        let at = b.on_failure(now, 0, None).unwrap();
        (attempt, at - now)
    }

    #[test]
    fn stable_connection_resets_the_schedule() {
        assert_eq!(delay_after_connection_lasting(secs(30)), (0, secs(1)));
        assert_eq!(delay_after_connection_lasting(secs(3600)), (0, secs(1)));
    }

    #[test]
    fn short_connection_keeps_backing_off() {
        assert_eq!(delay_after_connection_lasting(secs(29)), (3, secs(8)));
        assert_eq!(delay_after_connection_lasting(Duration::ZERO), (3, secs(8)));
    }

    #[test]
    fn stable_connection_restores_a_spent_budget() {
        let start = t0();
        let mut b = Backoff::new(BackoffPolicy {
            max_retries: Some(1),
            ..no_jitter()
        });
        let now = b.on_failure(start, 0, None).unwrap();
        assert_eq!(b.on_failure(now, 0, None), None);
        assert!(b.is_given_up());
        // The user reconnected by hand, and it held.
        b.on_connected(now);
        b.on_disconnected(now + secs(30));
        assert!(!b.is_given_up());
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn disconnect_without_connect_or_with_backwards_clock_does_not_reset() {
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        let now = b.on_failure(start, 0, None).unwrap();
        b.on_disconnected(now + secs(3600));
        assert_eq!(b.attempt(), 1);

        b.on_connected(now + secs(100));
        b.on_disconnected(now);
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn failure_forgets_a_stale_connection() {
        // connected, then a failure (without a disconnect report), then a late
        // disconnect: the failure proves the connection was gone, so no reset.
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        b.on_connected(start);
        let _ = b.on_failure(start + secs(1), 0, None);
        b.on_disconnected(start + secs(3600));
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn reset_after_zero_resets_on_every_connection() {
        let start = t0();
        let mut b = Backoff::new(BackoffPolicy {
            reset_after: Duration::ZERO,
            ..no_jitter()
        });
        let now = b.on_failure(start, 0, None).unwrap();
        let now = b.on_failure(now, 0, None).unwrap();
        b.on_connected(now);
        b.on_disconnected(now);
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn floor_stretches_the_delay() {
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        // 1013 Try Again Later: a floor within max.
        assert_eq!(
            b.on_failure(start, 0, Some(secs(10))),
            Some(start + secs(10))
        );
        // A floor below the computed delay (2 s) changes nothing.
        assert_eq!(b.on_failure(start, 0, Some(ms(500))), Some(start + secs(2)));
        // Retry-After beyond max is honoured...
        assert_eq!(
            b.on_failure(start, 0, Some(secs(120))),
            Some(start + secs(120))
        );
        // ...up to MAX_FLOOR.
        assert_eq!(
            b.on_failure(start, 0, Some(secs(86_400))),
            Some(start + MAX_FLOOR)
        );
        // A floored failure still counts, and the next one is back on schedule.
        assert_eq!(b.attempt(), 4);
        assert_eq!(b.on_failure(start, 0, None), Some(start + secs(16)));
    }

    #[test]
    fn handle_timeout_fires_once_and_not_early() {
        let start = t0();
        let mut b = Backoff::new(no_jitter());
        assert!(!b.handle_timeout(start), "nothing scheduled");
        let at = b.on_failure(start, 0, None).unwrap();
        assert!(!b.handle_timeout(at - Duration::from_nanos(1)));
        assert_eq!(b.next_trigger(), Some(at), "an early call changes nothing");
        assert!(b.handle_timeout(at + secs(5)), "late is still due");
        assert_eq!(b.next_trigger(), None);
        assert!(!b.handle_timeout(at + secs(5)));
    }

    #[test]
    fn reset_keeps_the_policy() {
        let policy = BackoffPolicy {
            initial: ms(7),
            ..no_jitter()
        };
        let mut b = Backoff::new(policy.clone());
        let start = t0();
        let _ = b.on_failure(start, 0, None);
        b.reset();
        assert_eq!(b.policy(), &policy);
        assert_eq!(b.next_trigger(), None);
        assert_eq!(b.on_failure(start, 0, None), Some(start + ms(7)));
    }

    // --- SplitMix64 ----------------------------------------------------------

    #[test]
    fn splitmix64_matches_reference_vectors() {
        // Rosetta Code "Pseudo-random numbers/Splitmix64", seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
        // splitmix64.c seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }
}
