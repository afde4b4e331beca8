//! Distribution properties of every policy, checked over many generated endpoint
//! sets from fixed seeds (reproducible, no flakes).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

struct Endpoint {
    weight: u32,
    load: Load,
}

impl Candidate for Endpoint {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn load(&self) -> &Load {
        &self.load
    }
}

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .map(|w| Endpoint {
            weight: *w,
            load: Load::new(0),
        })
        .collect()
}

/// Picks `picks` times with 100 requests in flight, finishing the oldest first
/// (equal latencies), which is how P2C sees real traffic: without requests in
/// flight, its cost alone would always favour the heaviest endpoint.
fn counts(policy: Policy, set: &[Endpoint], picks: usize, rng: &mut StdRng) -> Vec<usize> {
    let weights: Vec<u32> = set.iter().map(|e| e.weight).collect();
    let picker = Picker::new(policy, &weights, 0);
    let mut counts = vec![0; set.len()];
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..picks {
        let i = picker.pick(set, |_| false, 0, rng).expect("non-empty");
        counts[i] += 1;
        set[i].load.begin();
        in_flight.push_back(i);
        if in_flight.len() > 100 {
            if let Some(done) = in_flight.pop_front() {
                set[done].load.end();
            }
        }
    }
    counts
}

const ALL: [Policy; 4] = [
    Policy::P2cEwma,
    Policy::RoundRobin,
    Policy::Random,
    Policy::Weighted,
];

#[test]
fn equal_weights_spread_within_five_percent_under_every_policy() {
    let mut rng = StdRng::seed_from_u64(1);
    for policy in ALL {
        let c = counts(policy, &endpoints(&[1, 1, 1]), 30_000, &mut rng);
        for n in &c {
            let share = *n as f64 / 30_000.0;
            assert!((share - 1.0 / 3.0).abs() < 0.05 / 3.0, "{policy:?}: {c:?}");
        }
    }
}

#[test]
fn weight_three_gets_about_three_times_weight_one_under_every_policy() {
    let mut rng = StdRng::seed_from_u64(2);
    for policy in ALL {
        let c = counts(policy, &endpoints(&[3, 1]), 40_000, &mut rng);
        let ratio = c[0] as f64 / c[1] as f64;
        assert!(
            (2.7..3.3).contains(&ratio),
            "{policy:?}: {c:?} ratio {ratio}"
        );
    }
}

#[test]
fn round_robin_is_exactly_proportional_over_whole_cycles() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let weights: Vec<u32> = (0..rng.random_range(1..8))
            .map(|_| rng.random_range(1..20))
            .collect();
        let total: u32 = weights.iter().sum();
        let c = counts(
            Policy::RoundRobin,
            &endpoints(&weights),
            5 * total as usize,
            &mut rng,
        );
        // The schedule is built from weights reduced by their common divisor, so
        // whole cycles of the original total are whole cycles of the reduced one.
        let expected: Vec<usize> = weights.iter().map(|w| 5 * *w as usize).collect();
        assert_eq!(c, expected, "weights {weights:?}");
    }
}

#[test]
fn avoided_endpoints_are_never_picked_while_another_is_left() {
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..500 {
        let len = rng.random_range(2..6);
        let weights: Vec<u32> = (0..len).map(|_| rng.random_range(1..5)).collect();
        let set = endpoints(&weights);
        let avoid: Vec<usize> = (0..len).filter(|_| rng.random_bool(0.5)).collect();
        for policy in ALL {
            let picker = Picker::new(policy, &weights, 0);
            let picked = picker.pick(&set, |i| avoid.contains(&i), 0, &mut rng);
            match picked {
                Some(i) => assert!(!avoid.contains(&i), "{policy:?} {avoid:?} -> {i}"),
                None => assert_eq!(avoid.len(), len, "{policy:?}: nothing picked"),
            }
        }
    }
}

#[test]
fn p2c_avoids_a_slow_endpoint() {
    let mut rng = StdRng::seed_from_u64(5);
    let set = endpoints(&[1, 1, 1]);
    let now = 1_000_000_000;
    set[0].load.observe(Duration::from_millis(1), now);
    set[1].load.observe(Duration::from_millis(1), now);
    // Slow answers in a row (one alone is taken for an outlier of timing).
    for i in 0..12 {
        set[2].load.observe(Duration::from_millis(50), now - 12 + i);
    }
    let picker = Picker::new(Policy::P2cEwma, &[1, 1, 1], 0);
    let mut slow = 0;
    for _ in 0..10_000 {
        if picker.pick(&set, |_| false, now, &mut rng) == Some(2) {
            slow += 1;
        }
    }
    // It is chosen only when drawn against itself (never: draws are distinct), so
    // the slow endpoint gets nothing while the others are this much faster.
    assert_eq!(slow, 0);
}

#[test]
fn p2c_prefers_the_endpoint_with_fewer_requests_in_flight() {
    let mut rng = StdRng::seed_from_u64(6);
    let set = endpoints(&[1, 1]);
    for _ in 0..5 {
        set[0].load.begin();
    }
    let picker = Picker::new(Policy::P2cEwma, &[1, 1], 0);
    assert_eq!(picker.pick(&set, |_| false, 0, &mut rng), Some(1));
}

#[test]
fn empty_and_single_sets() {
    let mut rng = StdRng::seed_from_u64(7);
    let picker = Picker::new(Policy::P2cEwma, &[], 0);
    assert_eq!(picker.pick::<Endpoint>(&[], |_| false, 0, &mut rng), None);
    let one = endpoints(&[1]);
    let picker = Picker::new(Policy::RoundRobin, &[1], 0);
    assert_eq!(picker.pick(&one, |_| false, 0, &mut rng), Some(0));
    assert_eq!(picker.pick(&one, |i| i == 0, 0, &mut rng), None);
}

#[test]
fn only_p2c_reads_latencies() {
    for policy in [
        Policy::P2cEwma,
        Policy::RoundRobin,
        Policy::Random,
        Policy::Weighted,
    ] {
        let picker = Picker::new(policy, &[1, 1], 0);
        assert_eq!(
            picker.uses_latency(),
            policy == Policy::P2cEwma,
            "{policy:?}"
        );
    }
}

/// Four equal endpoints answering in about 1 ms (with the jitter real answers
/// have), served one request at a time (low load, nothing in flight to tell them
/// apart): each gets its share from the first requests on, not only once a default
/// estimate has decayed.
#[test]
fn fresh_endpoints_get_their_share_at_once() {
    const MS: u64 = 1_000_000;
    let mut rng = StdRng::seed_from_u64(8);
    let set = endpoints(&[1, 1, 1, 1]);
    let picker = Picker::new(Policy::P2cEwma, &[1, 1, 1, 1], 0);
    let mut counts = [0usize; 4];
    // 150 requests a second for one second.
    for n in 0..150u64 {
        let now = 1_000 * MS + n * 1_000 * MS / 150;
        let i = picker
            .pick(&set, |_| false, now, &mut rng)
            .expect("non-empty");
        counts[i] += 1;
        let rtt = Duration::from_micros(rng.random_range(800..1_200));
        set[i].load.observe(rtt, now + MS);
    }
    for c in counts {
        let share = c as f64 / 150.0;
        assert!((0.15..=0.35).contains(&share), "{counts:?}");
    }
}

/// A fourth endpoint joins three that have answered for a while: it is not
/// starved while a made-up estimate decays.
#[test]
fn an_endpoint_added_to_a_warm_set_gets_traffic_at_once() {
    const MS: u64 = 1_000_000;
    let mut rng = StdRng::seed_from_u64(9);
    let set = endpoints(&[1, 1, 1, 1]);
    let picker = Picker::new(Policy::P2cEwma, &[1, 1, 1, 1], 0);
    for e in &set[..3] {
        e.load.observe(Duration::from_millis(1), 0);
    }
    let mut fresh = 0;
    for n in 0..400u64 {
        let now = MS + n * MS;
        let i = picker
            .pick(&set, |_| false, now, &mut rng)
            .expect("non-empty");
        if i == 3 {
            fresh += 1;
        }
        let rtt = Duration::from_micros(rng.random_range(800..1_200));
        set[i].load.observe(rtt, now + MS / 2);
    }
    assert!(
        (60..=140).contains(&fresh),
        "the new endpoint got {fresh} of 400"
    );
}

/// One slow answer (a moment the host was busy) does not make an equal endpoint
/// lose every comparison for a decay period: it stays within a tie.
#[test]
fn one_outlier_of_timing_does_not_starve_an_endpoint() {
    const MS: u64 = 1_000_000;
    let mut rng = StdRng::seed_from_u64(10);
    let set = endpoints(&[1, 1, 1, 1]);
    let picker = Picker::new(Policy::P2cEwma, &[1, 1, 1, 1], 0);
    for e in &set {
        e.load.observe(Duration::from_millis(1), 0);
    }
    set[3].load.observe(Duration::from_millis(10), MS);
    let mut counts = [0usize; 4];
    for n in 0..300u64 {
        let now = 2 * MS + n * 7 * MS;
        let i = picker
            .pick(&set, |_| false, now, &mut rng)
            .expect("non-empty");
        counts[i] += 1;
        let rtt = Duration::from_micros(rng.random_range(900..1_100));
        set[i].load.observe(rtt, now + MS);
    }
    assert!(
        counts[3] >= 45,
        "the endpoint that drew one slow answer: {counts:?}"
    );
}
