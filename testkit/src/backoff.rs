//! Backoff policies (valid or not) and failure schedules.

use std::time::{Duration, Instant};

use wshub_core::backoff::{Backoff, BackoffPolicy, Jitter, MAX_FLOOR};

use crate::input::ByteCursor;

/// A duration from a kind byte: zero, nanoseconds to hours, or enormous.
fn fuzz_duration(input: &mut ByteCursor<'_>) -> Duration {
    match input.byte() % 8 {
        0 => Duration::ZERO,
        1 => Duration::from_nanos(u64::from(input.u16())),
        2 => Duration::from_millis(u64::from(input.u16())),
        3 => Duration::from_secs(u64::from(input.u16())),
        4 => Duration::from_secs(u64::from(input.u32())),
        5 => Duration::MAX,
        6 => Duration::new(input.u64(), input.u32() % 1_000_000_000),
        _ => Duration::from_millis(u64::from(input.byte()) * 100),
    }
}

/// Backoff policies (valid or not) and failure schedules.
///
/// For any policy: `base_delay` and `delay` never exceed `max`, and the
/// jitter stays in its window. For a valid policy: delays never decrease with
/// the attempt, the first is `initial`. A [`Backoff`] driven by failures,
/// connects, disconnects, time, resets and `Retry-After` floors follows a
/// model of its attempt count and retry budget, returns exactly
/// `now + max(delay, min(floor, MAX_FLOOR))` (never more than the larger of
/// `max` and the capped floor), and with `Jitter::None` its schedule never
/// goes down between resets.
///
/// # Panics
///
/// On any violation; that is its purpose.
pub fn check_backoff(base: Instant, data: &[u8]) {
    let mut input = ByteCursor::new(data);
    let multiplier = match input.byte() % 8 {
        0 => 1.0,
        1 => 1.5,
        2 => 2.0,
        3 => 10.0,
        4 => 0.5,
        5 => f64::from_bits(input.u64()),
        6 => f64::INFINITY,
        _ => 1.0 + f64::from(input.u16()) / 1000.0,
    };
    let jitter = [Jitter::None, Jitter::Full, Jitter::Equal][usize::from(input.byte() % 3)];
    let max_retries = match input.byte() % 4 {
        0 => None,
        1 => Some(0),
        _ => Some(u32::from(input.byte() % 16)),
    };
    let policy = BackoffPolicy {
        initial: fuzz_duration(&mut input),
        max: fuzz_duration(&mut input),
        multiplier,
        max_retries,
        jitter,
        reset_after: fuzz_duration(&mut input),
    };
    let valid = policy.validate().is_ok();

    // The pure arithmetic.
    for _ in 0..4 {
        let attempt = match input.byte() % 4 {
            0 => u32::from(input.byte()),
            1 => input.u32(),
            2 => u32::MAX - 1,
            _ => u32::from(input.byte() % 8),
        };
        let random = input.u64();
        let base = policy.base_delay(attempt);
        assert!(base <= policy.max, "base delay {base:?} over max");
        let delay = policy.delay(attempt, random);
        assert!(delay <= policy.max, "delay {delay:?} over max");
        let (b, d) = (base.as_nanos(), delay.as_nanos());
        match jitter {
            Jitter::None => assert_eq!(delay, base),
            Jitter::Full => assert!(d <= b),
            Jitter::Equal => assert!(b - b / 2 <= d && d <= b, "equal jitter window"),
        }
        if valid {
            let next = policy.base_delay(attempt.saturating_add(1));
            assert!(next >= base, "schedule went down at attempt {attempt}");
            assert!(base >= policy.initial, "below initial");
            assert_eq!(policy.base_delay(0), policy.initial);
        }
    }

    // The stateful schedule against a model.
    let t0 = base;
    let mut now = t0;
    let mut backoff = Backoff::new(policy.clone());
    let mut attempt = 0u32;
    let mut given_up = false;
    let mut connected_at: Option<Instant> = None;
    let mut trigger: Option<Instant> = None;
    let mut last_delay: Option<Duration> = None;
    let mut steps = 0;
    while !input.is_empty() && steps < 1_000 {
        steps += 1;
        match input.byte() % 8 {
            0..=2 => {
                let random = input.u64();
                let floor = match input.byte() % 4 {
                    0 => Some(fuzz_duration(&mut input)),
                    _ => None,
                };
                let r = backoff.on_failure(now, random, floor);
                if given_up {
                    assert_eq!(r, None, "retry after giving up");
                    continue;
                }
                connected_at = None;
                attempt = attempt.saturating_add(1);
                if max_retries.is_some_and(|l| attempt > l) {
                    assert_eq!(r, None, "retry past the budget");
                    given_up = true;
                    trigger = None;
                    continue;
                }
                let at = r.expect("a retry within the budget");
                let computed = policy.delay(attempt - 1, random);
                let capped = floor.map(|f| f.min(MAX_FLOOR));
                let want = capped.map_or(computed, |f| computed.max(f));
                let delay = at - now;
                match now.checked_add(want) {
                    Some(_) => assert_eq!(delay, want, "retry delay"),
                    // Unrepresentable instants are clamped, never a panic.
                    None => assert!(delay <= want),
                }
                assert!(
                    delay <= policy.max.max(capped.unwrap_or_default()),
                    "delay {delay:?} over max and floor"
                );
                if jitter == Jitter::None && valid && floor.is_none() {
                    if let Some(last) = last_delay {
                        assert!(
                            computed >= last,
                            "schedule went down: {last:?} then {computed:?}"
                        );
                    }
                    last_delay = Some(computed);
                }
                trigger = Some(at);
            }
            3 => {
                backoff.on_connected(now);
                connected_at = Some(now);
                trigger = None;
            }
            4 => {
                backoff.on_disconnected(now);
                if let Some(since) = connected_at.take() {
                    if now.saturating_duration_since(since) >= policy.reset_after {
                        attempt = 0;
                        given_up = false;
                        last_delay = None;
                    }
                }
            }
            5 => {
                let ms = u64::from(input.u16()) * u64::from(input.byte() % 4 + 1);
                // A retry instant may sit at the end of the representable
                // range (the backoff clamps there); time stops there too.
                now = now.checked_add(Duration::from_millis(ms)).unwrap_or(now);
            }
            6 => {
                if let Some(at) = trigger.filter(|_| input.byte() & 1 == 0) {
                    now = now.max(at);
                }
                let fired = backoff.handle_timeout(now);
                assert_eq!(fired, trigger.is_some_and(|at| at <= now), "handle_timeout");
                if fired {
                    trigger = None;
                }
            }
            _ => {
                backoff.reset();
                attempt = 0;
                given_up = false;
                connected_at = None;
                trigger = None;
                last_delay = None;
            }
        }
        assert_eq!(backoff.attempt(), attempt, "attempt count");
        assert_eq!(backoff.is_given_up(), given_up, "given up");
        assert_eq!(backoff.next_trigger(), trigger, "next trigger");
    }
}
