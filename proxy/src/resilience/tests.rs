use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_proto::model::{Locality, LocalityPolicy, OutlierDetection};

use super::breaker::{Breakers, Limit};
use super::budget::RetryBudget;
use super::{backoff, deadline, locality, outlier};

const SECOND: u64 = 1_000_000_000;

#[test]
fn the_budget_allows_its_floor_and_a_share_of_requests() {
    let budget = RetryBudget::default();
    // No traffic: only the floor, 1/s over the 10 s window.
    let granted = (0..100).filter(|_| budget.withdraw(0, 20, 1)).count();
    assert_eq!(granted, 10);
    let budget = RetryBudget::default();
    for _ in 0..1000 {
        budget.deposit(5);
    }
    let granted = (0..1000).filter(|_| budget.withdraw(5, 20, 0)).count();
    assert_eq!(granted, 200);
}

#[test]
fn moves_have_a_bound_of_their_own_and_spend_no_retries() {
    let budget = RetryBudget::default();
    for _ in 0..100 {
        budget.deposit(3);
    }
    // Every retry spent...
    let retries = (0..100).filter(|_| budget.withdraw(3, 20, 0)).count();
    assert_eq!(retries, 20);
    // ...moves still go, up to their own share, then stop.
    let moves = (0..500).filter(|_| budget.withdraw_move(3, 100, 1)).count();
    assert_eq!(moves, 100 + 10);
    assert!(!budget.withdraw(3, 20, 0));
}

#[test]
fn the_budget_forgets_requests_older_than_its_window() {
    let budget = RetryBudget::default();
    for _ in 0..1000 {
        budget.deposit(0);
    }
    assert!(budget.withdraw(9, 20, 0));
    // Eleven seconds on, the old requests no longer pay for retries.
    assert!(!budget.withdraw(11, 20, 0));
    // Ten new requests pay for two retries, one of which second 9 already took.
    for _ in 0..10 {
        budget.deposit(11);
    }
    assert!(budget.withdraw(11, 20, 0));
    assert!(!budget.withdraw(11, 20, 0));
}

#[test]
fn backoff_stays_within_its_exponential_bound_and_the_cap() {
    let mut rng = StdRng::seed_from_u64(7);
    let base = Duration::from_millis(25);
    let max = Duration::from_millis(250);
    for retry in 1..12 {
        let bound = (base * (1 << (retry - 1).min(20))).min(max);
        for _ in 0..200 {
            assert!(backoff::delay(retry, base, max, &mut rng) <= bound);
        }
    }
    // Jittered: not every draw is the same.
    let draws: std::collections::HashSet<_> = (0..20)
        .map(|_| backoff::delay(3, base, max, &mut rng))
        .collect();
    assert!(draws.len() > 10);
}

fn detection() -> OutlierDetection {
    OutlierDetection {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(3),
        max_ejection_percent: 50,
        ..OutlierDetection::default()
    }
}

#[test]
fn consecutive_failures_eject_for_a_growing_capped_time() {
    let config = detection();
    let endpoint = outlier::Outlier::default();
    assert_eq!(endpoint.record(false, 0, &config, || true), None);
    assert_eq!(endpoint.record(true, 0, &config, || true), None);
    // A success in between resets the count: three more are needed.
    assert_eq!(endpoint.record(false, 0, &config, || true), None);
    assert_eq!(endpoint.record(false, 0, &config, || true), None);
    assert_eq!(endpoint.record(false, 0, &config, || true), Some(SECOND));
    assert!(endpoint.is_ejected(SECOND - 1));
    // Back on probation after its time: one failure ejects again, for twice as long.
    assert!(!endpoint.is_ejected(SECOND));
    assert_eq!(
        endpoint.record(false, SECOND, &config, || true),
        Some(3 * SECOND)
    );
    assert_eq!(
        endpoint.record(false, 3 * SECOND, &config, || true),
        Some(6 * SECOND),
        "capped at max_ejection"
    );
    // A success on probation ends it: the next single failure does not eject.
    assert_eq!(endpoint.record(true, 6 * SECOND, &config, || true), None);
    assert_eq!(endpoint.record(false, 6 * SECOND, &config, || true), None);
}

#[test]
fn ejection_respects_the_destination_limit_and_can_be_disabled() {
    let config = detection();
    let endpoint = outlier::Outlier::default();
    for _ in 0..10 {
        assert_eq!(endpoint.record(false, 0, &config, || false), None);
    }
    let disabled = OutlierDetection {
        consecutive_failures: 0,
        ..detection()
    };
    for _ in 0..10 {
        assert_eq!(endpoint.record(false, 0, &disabled, || true), None);
    }
    assert_eq!(outlier::max_ejected(3, 10), 1);
    assert_eq!(outlier::max_ejected(10, 50), 5);
    assert_eq!(outlier::max_ejected(10, 0), 0);
}

#[test]
fn an_endpoint_failing_every_other_request_is_caught_by_the_failure_percentage() {
    let config = OutlierDetection {
        failure_percentage_threshold: 40,
        failure_percentage_min_requests: 10,
        ..detection()
    };
    let endpoint = outlier::Outlier::default();
    let mut ejected = None;
    for n in 0..10 {
        ejected = endpoint.record(n % 2 == 0, 0, &config, || true);
        if n < 9 {
            assert_eq!(ejected, None, "not before the window is full ({n})");
        }
    }
    assert_eq!(ejected, Some(SECOND));
    // A mostly healthy endpoint is left alone.
    let healthy = outlier::Outlier::default();
    for n in 0..100 {
        assert_eq!(healthy.record(n % 5 != 0, 0, &config, || true), None);
    }
}

#[test]
fn breakers_refuse_beyond_the_limit_and_release_on_drop() {
    let breakers = Breakers::default();
    let first = breakers.admit(Limit::Requests, 2).expect("under the limit");
    let second = breakers.admit(Limit::Requests, 2).expect("at the limit");
    assert!(breakers.admit(Limit::Requests, 2).is_none());
    assert!(
        breakers.admit(Limit::Pending, 2).is_some(),
        "limits are apart"
    );
    drop(first);
    assert!(breakers.admit(Limit::Requests, 2).is_some());
    drop(second);
    assert_eq!(breakers.current(Limit::Requests), 0);
}

#[test]
fn grpc_timeouts_parse_every_unit_and_ignore_garbage() {
    assert_eq!(deadline::grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
    assert_eq!(
        deadline::grpc_timeout(b"250m"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        deadline::grpc_timeout(b"2H"),
        Some(Duration::from_secs(7200))
    );
    assert_eq!(
        deadline::grpc_timeout(b"5u"),
        Some(Duration::from_micros(5))
    );
    for bad in [&b""[..], b"S", b"123456789S", b"1x", b"-1S", b"1.5S"] {
        assert_eq!(deadline::grpc_timeout(bad), None, "{bad:?}");
    }
}

fn at(region: &str, zone: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: zone.into(),
    }
}

#[test]
fn locality_tiers_rank_zone_region_failover_then_the_rest() {
    let policy = LocalityPolicy {
        min_healthy_percent: 70,
        failover: vec!["eu".into(), "ap".into()],
    };
    let own = at("us", "us-a");
    assert_eq!(locality::tier(&own, &at("us", "us-a"), &policy), 0);
    assert_eq!(locality::tier(&own, &at("us", "us-b"), &policy), 1);
    assert_eq!(locality::tier(&own, &at("eu", "eu-a"), &policy), 2);
    assert_eq!(locality::tier(&own, &at("ap", "ap-a"), &policy), 3);
    assert_eq!(locality::tier(&own, &at("sa", "sa-a"), &policy), u8::MAX);
    // A proxy that does not know where it runs has no preference.
    assert_eq!(locality::tier(&at("", ""), &at("eu", "x"), &policy), 0);
}

#[test]
fn locality_spills_over_when_the_zone_runs_short() {
    // (tier, listed, available)
    let full = [(0, 4, 4), (1, 4, 4)];
    assert_eq!(locality::cutoff(&full, 70), Some(0));
    let three_of_four = [(0, 4, 3), (1, 4, 4)];
    assert_eq!(locality::cutoff(&three_of_four, 70), Some(0));
    let two_of_four = [(0, 4, 2), (1, 4, 4)];
    assert_eq!(locality::cutoff(&two_of_four, 70), Some(1));
    let everything_short = [(0, 4, 0), (1, 1, 1), (u8::MAX, 1, 0)];
    assert_eq!(locality::cutoff(&everything_short, 70), None);
    assert_eq!(locality::cutoff(&two_of_four, 0), None, "disabled");
}
