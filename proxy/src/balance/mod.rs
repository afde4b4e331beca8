//! Load balancing: which endpoint of a service gets the next request (HTTP) or the
//! next connection (TCP).
//!
//! Pure logic and no IO, so it is tested without sockets. The data path builds one
//! [`Picker`] per endpoint set (a service port's healthy endpoints, rebuilt whenever a
//! snapshot changes them) and keeps each endpoint's [`Load`] across rebuilds, so the
//! latency history survives a snapshot swap.
//!
//! Policies (`Service.load_balancer`), all honouring endpoint weights:
//! - `p2c_ewma` (default): two weighted-random candidates, the one with the lower
//!   peak-EWMA cost divided by its weight wins (costs within [`TIE`] of each other
//!   tie, and the one with fewer requests in flight wins). An endpoint never
//!   measured is priced at its rival's estimate, so a new one gets its share at once.
//! - `round_robin`: smooth weighted round robin (no bursts onto one endpoint).
//! - `random`, `weighted`: weighted random. The two pick with the same distribution;
//!   `weighted` is the explicit name, `random` is what an operator of another mesh
//!   types, and with weights honoured everywhere they cannot differ.

mod ewma;
mod schedule;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

pub use ewma::{at, epoch, now, Load, DECAY, DEFAULT_RTT, FAILURE_RTT, PEAK_STEP};

use crate::snapshot::Policy;

/// P2C costs closer than this factor are a tie. A peak-EWMA estimate rides at the
/// highest recent sample, so among equal endpoints at low load the one that drew
/// the slowest answer would lose every comparison for a whole decay period;
/// treating differences below half again as noise keeps equal endpoints equal,
/// while a slow or failing endpoint (several times the cost) is still avoided.
const TIE: f64 = 1.5;

/// What a picker needs to know about an endpoint.
pub trait Candidate {
    fn weight(&self) -> u32;
    fn load(&self) -> &Load;
}

/// Picks among one fixed set of candidates (the same slice, in the same order, as
/// the weights it was built from).
#[derive(Debug)]
pub struct Picker {
    policy: Policy,
    /// Running sums of the weights, for weighted random choice.
    cumulative: Box<[u64]>,
    /// Round-robin order, `None` when every weight is equal (then it is `0..len`).
    order: Option<Box<[u32]>>,
    cursor: AtomicUsize,
}

impl Picker {
    /// `cursor` carries the round-robin position over from the previous picker, so a
    /// snapshot swap does not send the next request back to the first endpoint.
    pub fn new(policy: Policy, weights: &[u32], cursor: usize) -> Picker {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += u64::from((*w).max(1));
                total
            })
            .collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let order = (policy == Policy::RoundRobin && !uniform)
            .then(|| schedule::smooth_weighted(weights).into_boxed_slice());
        Picker {
            policy,
            cumulative,
            order,
            cursor: AtomicUsize::new(cursor),
        }
    }

    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    pub fn cursor(&self) -> usize {
        self.cursor.load(Ordering::Relaxed)
    }

    /// Whether picks read the endpoints' latency estimates. Only `p2c_ewma` does, so
    /// the other policies skip recording latencies (an `exp` per response). An
    /// endpoint's estimate survives a change of policy; one never measured starts
    /// from the default, whose first sample replaces it outright.
    pub fn uses_latency(&self) -> bool {
        self.policy == Policy::P2cEwma
    }

    /// The index of the candidate to use, passing over those `skip` names (endpoints
    /// that already failed this request, or that are out of rotation). `None` when
    /// there are no candidates or every one is skipped: what to do then (try a
    /// skipped one anyway?) is the caller's rule, not the policy's.
    pub fn pick<C: Candidate>(
        &self,
        candidates: &[C],
        skip: impl Fn(usize) -> bool,
        now: u64,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        let len = self.len().min(candidates.len());
        if len == 0 {
            return None;
        }
        if len == 1 {
            return (!skip(0)).then_some(0);
        }
        // A few fresh draws usually land elsewhere; the scan after them makes the
        // answer certain without biasing the common case (nothing skipped).
        for _ in 0..4 {
            let index = self.pick_once(candidates, len, now, rng);
            if !skip(index) {
                return Some(index);
            }
        }
        let start = rng.random_range(0..len);
        (0..len).map(|i| (start + i) % len).find(|i| !skip(*i))
    }

    fn pick_once<C: Candidate>(
        &self,
        candidates: &[C],
        len: usize,
        now: u64,
        rng: &mut impl Rng,
    ) -> usize {
        match self.policy {
            Policy::RoundRobin => {
                let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
                match &self.order {
                    Some(order) => order[turn % order.len()] as usize % len,
                    None => turn % len,
                }
            }
            Policy::Random | Policy::Weighted => self.weighted_random(len, rng),
            Policy::P2cEwma => {
                let a = self.weighted_random(len, rng);
                let mut b = self.weighted_random(len, rng);
                if b == a {
                    // A second draw of the same endpoint would make it a one-choice
                    // pick; its neighbour keeps the comparison meaningful.
                    b = (a + 1) % len;
                }
                let (ca, cb) = (&candidates[a], &candidates[b]);
                let (ea, eb) = (ca.load().estimate(now), cb.load().estimate(now));
                // An endpoint never heard from is priced at its rival's estimate,
                // so it competes on load alone and gets its share from the first
                // request: a made-up default would starve it (or flood it) until
                // the default decayed, for tens of seconds after a scale-up.
                let fallback = ea.or(eb).unwrap_or(DEFAULT_RTT.as_nanos() as f64);
                let cost = |c: &C, estimate: Option<f64>| {
                    estimate.unwrap_or(fallback) * f64::from(c.load().pending() + 1)
                        / f64::from(c.weight().max(1))
                };
                let (cost_a, cost_b) = (cost(ca, ea), cost(cb, eb));
                let (low, high) = (cost_a.min(cost_b), cost_a.max(cost_b));
                let in_flight =
                    |c: &C| f64::from(c.load().pending() + 1) / f64::from(c.weight().max(1));
                if high < low * TIE {
                    // A tie: requests in flight per weight decide, else the first
                    // draw (random).
                    match in_flight(cb) < in_flight(ca) {
                        true => b,
                        false => a,
                    }
                } else if cost_b < cost_a {
                    b
                } else {
                    a
                }
            }
        }
    }

    fn weighted_random(&self, len: usize, rng: &mut impl Rng) -> usize {
        let total = self.cumulative[len - 1];
        let ticket = rng.random_range(0..total);
        self.cumulative[..len]
            .partition_point(|sum| *sum <= ticket)
            .min(len - 1)
    }
}
