//! The backoff policy and schedule: bounds, jitter, reset, retry limits.

use quickcheck::{quickcheck, TestResult};
use std::time::{Duration, Instant};
use wshub_core::backoff::*;

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
