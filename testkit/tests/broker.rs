//! The broker contract (see `wshub_testkit::broker`) on hand-made programs
//! that reach each failure path, and on random ones.

use std::time::Instant;

use quickcheck::{Gen, QuickCheck};
use wshub_testkit::{check_broker_bytes, run_broker, BrokerOp as Op};

#[allow(clippy::disallowed_methods)]
fn anchor() -> Instant {
    Instant::now()
}

/// Subscribers on both nodes with positions; node 1's link drops while
/// node 0 publishes, comes back, and node 1's subscriber gets the gap.
#[test]
fn a_dropped_link_is_caught_up_in_order() {
    let mut ops = vec![
        Op::Connect(0, 0),
        Op::Connect(1, 1),
        Op::Subscribe(0, 0),
        Op::Subscribe(1, 0),
    ];
    for _ in 0..3 {
        ops.extend([Op::Take(0), Op::Deliver(0), Op::Take(1), Op::Deliver(1)]);
    }
    ops.extend([
        Op::AppPublish(0, 0),
        Op::Take(0),
        Op::Deliver(0),
        Op::Deliver(1),
    ]);
    ops.extend([Op::LinkDown(1), Op::Deliver(1)]);
    for _ in 0..3 {
        ops.extend([Op::AppPublish(0, 0), Op::Take(0), Op::Deliver(0)]);
    }
    ops.extend([Op::LinkUp(1), Op::Deliver(1), Op::Take(1), Op::Deliver(1)]);
    let t = run_broker(anchor(), &ops).unwrap();
    assert_eq!(t.reconnects, 1, "{t:?}");
    assert_eq!(t.catch_ups, 1, "{t:?}");
}

/// Publishes from a cut-off node are refused, each one answered.
#[test]
fn publishes_while_down_are_answered_with_unavailable() {
    let ops = vec![
        Op::Connect(0, 0),
        Op::LinkDown(0),
        Op::ClientPublish(0, 0),
        Op::Take(0),
        Op::Deliver(0),
        Op::ClientPublish(0, 1),
        Op::AppPublish(0, 0),
        Op::Restart,
    ];
    let t = run_broker(anchor(), &ops).unwrap();
    assert!(t.publish_failures >= 3, "{t:?}");
}

#[test]
fn random_broker_programs_hold() {
    QuickCheck::new()
        .tests(400)
        .rng(Gen::from_size_and_seed(400, 6))
        .quickcheck(
            (|d: Vec<u8>| {
                check_broker_bytes(anchor(), &d);
                true
            }) as fn(Vec<u8>) -> bool,
        );
}
