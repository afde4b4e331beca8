//! Quantiles from a cumulative histogram, as PromQL's `histogram_quantile` computes
//! them: find the bucket the rank falls in and interpolate linearly inside it, the
//! observations being assumed spread evenly between its bounds.

/// The `q` quantile (0 to 1) of `buckets`: `(upper bound, cumulative count)`, in
/// any order, with a `+Inf` bucket. `None` when there are no observations or no
/// `+Inf` bucket (Prometheus answers NaN there).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, count)| !le.is_nan() && !count.is_nan())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    if sorted.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
        return None;
    }
    // Counts summed over scrapes and targets can dip by a reset; keep them
    // cumulative as Prometheus does.
    let mut running = 0.0_f64;
    for bucket in &mut sorted {
        running = running.max(bucket.1);
        bucket.1 = running;
    }
    let total = running;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let index = sorted
        .iter()
        .position(|(_, count)| *count >= rank)
        .unwrap_or(sorted.len() - 1);
    let (upper, count) = sorted[index];
    if upper == f64::INFINITY {
        // Past the last finite bound nothing says how far: its bound is the answer.
        return Some(if index == 0 { 0.0 } else { sorted[index - 1].0 });
    }
    let (lower, below) = match index {
        0 if upper <= 0.0 => return Some(upper),
        0 => (0.0, 0.0),
        _ => sorted[index - 1],
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket_like_prometheus() {
        // 10 observations up to 0.1, 10 more up to 0.2.
        let buckets = [(0.1, 10.0), (0.2, 20.0), (INF, 20.0)];
        assert_eq!(histogram_quantile(0.5, &buckets), Some(0.1));
        let p75 = histogram_quantile(0.75, &buckets).expect("some");
        assert!((p75 - 0.15).abs() < 1e-12, "{p75}");
        let p25 = histogram_quantile(0.25, &buckets).expect("some");
        assert!((p25 - 0.05).abs() < 1e-12, "{p25}");
        // The order the buckets come in does not matter.
        let shuffled = [(INF, 20.0), (0.2, 20.0), (0.1, 10.0)];
        assert_eq!(histogram_quantile(0.75, &shuffled), Some(p75));
    }

    #[test]
    fn a_rank_in_the_inf_bucket_is_the_highest_finite_bound() {
        let buckets = [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)];
        assert_eq!(histogram_quantile(0.99, &buckets), Some(0.5));
    }

    #[test]
    fn no_observations_or_no_inf_bucket_has_no_quantile() {
        assert_eq!(histogram_quantile(0.5, &[(0.1, 0.0), (INF, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(0.1, 3.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
        assert_eq!(histogram_quantile(1.5, &[(INF, 3.0)]), None);
    }

    /// For any histogram: quantiles grow with q and stay within the finite bounds.
    #[test]
    fn quantiles_are_monotonic_and_bounded_for_random_histograms() {
        let bounds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 50
        };
        for _ in 0..500 {
            let mut cumulative = 0.0;
            let mut buckets: Vec<(f64, f64)> = bounds
                .iter()
                .map(|le| {
                    cumulative += next() as f64;
                    (*le, cumulative)
                })
                .collect();
            cumulative += next() as f64;
            buckets.push((INF, cumulative + 1.0));
            let mut previous = 0.0;
            for step in 0..=20 {
                let q = f64::from(step) / 20.0;
                let value = histogram_quantile(q, &buckets).expect("observations");
                assert!(
                    value >= previous,
                    "q={q}: {value} < {previous} in {buckets:?}"
                );
                assert!((0.0..=1.0).contains(&value), "{value}");
                previous = value;
            }
        }
    }
}
