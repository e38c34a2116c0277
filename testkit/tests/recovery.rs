//! The quickcheck property of the recovery contract (issue 11), over the
//! model in `src/recovery/`: random programs of publishes, cuts, resumed
//! subscribes, stalls, trims, TTL expiry and restarts; see
//! [`wshub_testkit::run_recovery`] for what is checked.

use std::sync::Mutex;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use wshub_testkit::{run_recovery, RecoveryOp, RecoveryTally};

/// A [`RecoveryOp`] drawn from quickcheck's generator.
#[derive(Clone, Debug)]
struct Op(RecoveryOp);

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        Op(RecoveryOp::decode(|| u8::arbitrary(g)))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Op>> {
        Box::new(std::iter::empty())
    }
}

/// Outcomes over all cases (so the test can check the cases reach them).
static TALLY: Mutex<RecoveryTally> = Mutex::new(RecoveryTally {
    recovered: 0,
    failed: 0,
    gaps: 0,
    dups: 0,
});

/// The checks' anchor instant; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
fn anchor() -> std::time::Instant {
    std::time::Instant::now()
}

fn recovery_contract(ops: Vec<Op>, seed: u64) -> TestResult {
    let ops: Vec<RecoveryOp> = ops.into_iter().map(|o| o.0).collect();
    match run_recovery(anchor(), seed, &ops) {
        Ok(t) => {
            let mut tally = TALLY.lock().unwrap();
            tally.recovered += t.recovered;
            tally.failed += t.failed;
            tally.gaps += t.gaps;
            tally.dups += t.dups;
            TestResult::passed()
        }
        Err(e) => TestResult::error(e),
    }
}

#[test]
fn every_resumed_subscription_misses_nothing_or_says_so() {
    QuickCheck::new()
        .tests(
            std::env::var("HISTORY_MODEL_TESTS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(300),
        )
        .rng(Gen::new(60))
        .quickcheck(recovery_contract as fn(Vec<Op>, u64) -> TestResult);
    let t = *TALLY.lock().unwrap();
    println!(
        "recovered {}, not recovered {}, gaps {}, duplicates dropped {}",
        t.recovered, t.failed, t.gaps, t.dups
    );
    assert!(
        t.recovered > 0 && t.failed > 0,
        "the cases reach both outcomes"
    );
}
