//! The peer identity labels of the request series and their bound: `dst_identity`
//! on outbound responses and durations (the SPIFFE ID of the endpoint that
//! answered), `client_identity` on inbound requests, responses, durations and
//! errors (the SPIFFE ID of the mTLS caller).
//!
//! Each identity a service meets in a direction gets a slot, in order of arrival,
//! for the life of the process: a slot's label set is registered once and never
//! changes, so a request only indexes a table. After [`MAX_IDENTITIES`] slots a
//! service's further identities share one more, labelled [`OVERFLOW`], and
//! `weft_metrics_identities_overflowed_total` counts each endpoint (outbound) or
//! connection (inbound) sent there. A service's request series are so bounded by
//! `MAX_IDENTITIES + 2` identity values (the 16, `overflow`, and empty for
//! plaintext or for answers the proxy made itself). Identities are workload
//! identities (one per service account, not per pod), so the bound is rarely met.

use std::sync::Arc;

use metrics::Counter;

use super::Direction;

/// Distinct identities with a label value of their own, per service and direction.
pub const MAX_IDENTITIES: usize = 16;

/// The label value of every identity past the bound.
pub const OVERFLOW: &str = "overflow";

/// The slots of one service's table: one per identity, then the overflow slot.
pub(super) const SLOTS: usize = MAX_IDENTITIES + 1;

pub(super) const OVERFLOWED: &str = "weft_metrics_identities_overflowed_total";

/// A peer identity as the request series label it: a slot in the service's
/// handle tables and the label value of that slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub(super) slot: usize,
    pub(super) label: Arc<str>,
}

impl Peer {
    /// The label value: a SPIFFE ID, or [`OVERFLOW`].
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// The identities one service has met in one direction, in order of arrival.
#[derive(Debug)]
pub struct PeerSlots {
    seen: Vec<Arc<str>>,
    overflow: Peer,
    overflowed: Counter,
}

impl PeerSlots {
    pub fn new(direction: Direction, service: &str) -> PeerSlots {
        PeerSlots {
            seen: Vec::new(),
            overflow: Peer {
                slot: MAX_IDENTITIES,
                label: Arc::from(OVERFLOW),
            },
            overflowed: metrics::counter!(OVERFLOWED, "direction" => direction.as_str(), "service" => service.to_owned()),
        }
    }

    /// The slot of `identity`: its own while fewer than [`MAX_IDENTITIES`] came
    /// before it, else the shared overflow slot (counted).
    pub fn slot(&mut self, identity: &str) -> Peer {
        if let Some(slot) = self.seen.iter().position(|s| &**s == identity) {
            return Peer {
                slot,
                label: self.seen[slot].clone(),
            };
        }
        if self.seen.len() < MAX_IDENTITIES {
            let label: Arc<str> = Arc::from(identity);
            self.seen.push(label.clone());
            return Peer {
                slot: self.seen.len() - 1,
                label,
            };
        }
        self.overflowed.increment(1);
        self.overflow.clone()
    }
}

#[cfg(test)]
mod tests;
