//! Reconnect delays: exponential from `min` to `max`, with jitter so nodes
//! cut off together do not all redial at the same instant.

use std::time::Duration;

/// The delay schedule of one connection.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt: in `[d/2, d]` for the current
    /// step `d`, which then doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let half = d / 2;
        let jitter = (random_u64() % (half.as_nanos() as u64).max(1)) as u32;
        half + Duration::from_nanos(u64::from(jitter))
    }

    /// After a success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// 64 random bits; 0 if the OS has no randomness to give (never in practice,
/// and a fixed jitter is harmless).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0; 8];
    getrandom::getrandom(&mut b).map_or(0, |()| u64::from_le_bytes(b))
}

/// `n` random chars of `[A-Za-z0-9]` (epochs and node ids).
pub(crate) fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; n];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness: time-derived, still unique enough per restart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (t >> (i % 16 * 8)) as u8 ^ i as u8);
    }
    b.iter()
        .map(|x| ALPHABET[*x as usize % 62] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_max_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} for step {step:?}");
            step = (step * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn alnum_is_alnum() {
        let s = random_alnum(16);
        assert_eq!(s.len(), 16);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
