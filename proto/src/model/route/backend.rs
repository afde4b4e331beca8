//! Choosing a rule's backend by weight.
//!
//! The choice takes the random number as an argument, so it is a pure function a
//! property test can sweep, and the data path keeps its own generator. A rule whose
//! weights are all 0 has no backend: the Gateway API answers its requests with 500.

use super::refs::BackendRef;

/// A rule's backends with their total weight, summed once when the table is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    refs: Vec<BackendRef>,
    total: u64,
}

impl Backends {
    pub fn new(refs: Vec<BackendRef>) -> Backends {
        let total = refs.iter().map(|b| u64::from(b.weight)).sum();
        Backends { refs, total }
    }

    pub fn refs(&self) -> &[BackendRef] {
        &self.refs
    }

    /// The sum of the weights; 0: no backend takes traffic.
    pub fn total_weight(&self) -> u64 {
        self.total
    }

    /// The backend for a request, given a uniformly random `random`.
    pub fn pick(&self, random: u32) -> Option<&BackendRef> {
        self.pick_index(random).map(|i| &self.refs[i])
    }

    /// [`Backends::pick`], as the backend's position in [`Backends::refs`]: for
    /// state kept beside the table in the same order.
    pub fn pick_index(&self, random: u32) -> Option<usize> {
        pick_at(&self.refs, self.total, random)
    }
}

/// The backend for a request, given a uniformly random `random`: each backend is
/// chosen with probability weight / total. `None` when every weight is 0.
pub fn pick_backend(backends: &[BackendRef], random: u32) -> Option<&BackendRef> {
    let total = backends.iter().map(|b| u64::from(b.weight)).sum();
    pick_in(backends, total, random)
}

fn pick_in(backends: &[BackendRef], total: u64, random: u32) -> Option<&BackendRef> {
    pick_at(backends, total, random).map(|i| &backends[i])
}

fn pick_at(backends: &[BackendRef], total: u64, random: u32) -> Option<usize> {
    if total == 0 {
        return None;
    }
    // Scales the 32-bit number onto [0, total) without modulo bias beyond 2^-32
    // per unit of weight; total is at most 16 * 10^6, so the product fits in u64.
    let mut point = (u64::from(random) * total) >> 32;
    for (i, backend) in backends.iter().enumerate() {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceName;
    use proptest::prelude::*;

    fn backends(weights: &[u32]) -> Vec<BackendRef> {
        weights
            .iter()
            .enumerate()
            .map(|(i, weight)| BackendRef {
                service: ResourceName::new("shop", &format!("v{i}")).expect("name"),
                port: None,
                weight: *weight,
            })
            .collect()
    }

    /// Picks for `samples` random numbers spread evenly over the u32 range.
    fn counts(refs: &[BackendRef], samples: u64) -> Vec<u64> {
        let mut counts = vec![0; refs.len()];
        for i in 0..samples {
            let random = ((i << 32) / samples) as u32;
            if let Some(chosen) = pick_backend(refs, random) {
                let index = refs
                    .iter()
                    .position(|b| std::ptr::eq(b, chosen))
                    .expect("one of them");
                counts[index] += 1;
            }
        }
        counts
    }

    #[test]
    fn all_zero_weights_mean_no_backend() {
        assert_eq!(pick_backend(&backends(&[0, 0]), 12345), None);
        assert_eq!(pick_backend(&[], 0), None);
        assert_eq!(Backends::new(backends(&[0])).pick(u32::MAX), None);
    }

    #[test]
    fn a_drained_backend_gets_nothing_and_the_extremes_stay_in_range() {
        let refs = backends(&[0, 1, 0]);
        for random in [0, 1, u32::MAX / 2, u32::MAX] {
            assert_eq!(pick_backend(&refs, random).map(|b| b.weight), Some(1));
        }
    }

    #[test]
    fn a_ninety_ten_split_is_ninety_ten() {
        let refs = backends(&[90, 10]);
        let counts = counts(&refs, 10_000);
        // Within one of 10,000 (the sweep's rounding).
        assert!(
            counts[0].abs_diff(9_000) <= 1 && counts[1].abs_diff(1_000) <= 1,
            "{counts:?}"
        );
    }

    proptest! {
        /// Over n evenly spread random numbers, each backend's share is its weight's
        /// share within 2/n, the sweep's rounding (the sweep is the limit a uniform
        /// generator converges to).
        #[test]
        fn shares_converge_to_the_weights(
            weights in proptest::collection::vec(0u32..=1000, 1..=16),
        ) {
            let refs = backends(&weights);
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            let samples = 100_000u64;
            let counts = counts(&refs, samples);
            if total == 0 {
                prop_assert!(counts.iter().all(|c| *c == 0));
                return Ok(());
            }
            prop_assert_eq!(counts.iter().sum::<u64>(), samples);
            for (count, weight) in counts.iter().zip(&weights) {
                let share = *count as f64 / samples as f64;
                let expected = f64::from(*weight) / total as f64;
                prop_assert!((share - expected).abs() <= 2.0 / samples as f64 + 1e-9,
                    "weight {} of {}: share {} expected {}", weight, total, share, expected);
            }
        }

        /// The precomputed total and the free function choose alike.
        #[test]
        fn the_table_form_chooses_as_the_function_does(
            weights in proptest::collection::vec(0u32..=1_000_000, 0..=16),
            random: u32,
        ) {
            let refs = backends(&weights);
            let table = Backends::new(refs.clone());
            prop_assert_eq!(table.pick(random), pick_backend(&refs, random));
        }
    }
}
