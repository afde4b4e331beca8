//! Circuit breakers of one destination: limits on active requests, requests
//! waiting for a new upstream connection (pending), and open upstream connections.
//! Beyond a limit the request is refused at once (503 / gRPC UNAVAILABLE); nothing
//! queues, so memory stays bounded however much load arrives.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections = 0,
    Pending = 1,
    Requests = 2,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Connections, Limit::Pending, Limit::Requests];

    pub fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Pending => "pending",
            Limit::Requests => "requests",
        }
    }
}

/// The counters one destination's limits are checked against.
#[derive(Debug, Default)]
pub struct Breakers {
    counts: [Arc<AtomicU32>; 3],
}

/// One admitted unit (a request, a pending connect, a connection), released on drop.
#[derive(Debug)]
pub struct Permit(Arc<AtomicU32>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted request, released on drop; borrows its counter (a request never
/// outlives its destination), which spares a reference count per request.
#[derive(Debug)]
pub struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breakers {
    /// [`Breakers::admit`] for a unit that ends before the destination does.
    pub fn admit_scoped(&self, limit: Limit, max: u32) -> Option<Active<'_>> {
        let count = &self.counts[limit as usize];
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Active(count))
    }

    /// A permit when the count is under `max`, else `None` (the breaker is open).
    pub fn admit(&self, limit: Limit, max: u32) -> Option<Permit> {
        let count = &self.counts[limit as usize];
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(count.clone()))
    }

    pub fn current(&self, limit: Limit) -> u32 {
        self.counts[limit as usize].load(Ordering::Acquire)
    }
}
