//! The order of a weighted round robin, computed once per endpoint set.
//!
//! "Smooth" weighted round robin (the algorithm nginx uses): every turn each endpoint
//! gains its weight, the richest one is chosen and pays the total. Weights 5,1,1 give
//! `a a b a c a a` rather than `a a a a a b c`, so a burst never lands on one endpoint.

/// The largest schedule built; heavier weight sets are scaled down to about this
/// many turns (keeping proportions within one turn per endpoint).
const MAX_TURNS: u64 = 4096;

pub fn smooth_weighted(weights: &[u32]) -> Vec<u32> {
    let weights = reduce(weights);
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut credit = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            credit[i] += i64::from(*w);
            if credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= total;
        order.push(best as u32);
    }
    order
}

/// Divides by the common divisor, then scales down a sum above [`MAX_TURNS`].
fn reduce(weights: &[u32]) -> Vec<u32> {
    let weights: Vec<u32> = weights.iter().map(|w| (*w).max(1)).collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total <= MAX_TURNS {
        return weights;
    }
    weights
        .iter()
        .map(|w| ((u64::from(*w) * MAX_TURNS / total) as u32).max(1))
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_a_heavy_endpoint_between_the_light_ones() {
        assert_eq!(smooth_weighted(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted(&[2, 2, 2]), vec![0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled_not_expanded() {
        let order = smooth_weighted(&[10_000, 9_999, 1]);
        assert!(order.len() as u64 <= MAX_TURNS + 3);
        assert!(order.contains(&2));
    }
}
