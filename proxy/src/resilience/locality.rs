//! Locality preference: which endpoints a proxy in a given region and zone sends
//! to. Endpoints are ranked into tiers (own zone, the rest of the own region, each
//! failover region in its listed order, then every other region); a request uses
//! the first tiers that together hold enough available endpoints.
//!
//! "Enough" is `min_healthy_percent` of the endpoints listed in the caller's zone
//! (Envoy spills over the same way when a priority's healthy share drops): a zone
//! with 3 of 4 endpoints available keeps its traffic at 70%, with 2 of 4 it
//! spills over.

use weft_proto::model::{Locality, LocalityPolicy};

/// The tier of an endpoint at `locality` for a caller at `own` (lower is nearer).
pub fn tier(own: &Locality, locality: &Locality, policy: &LocalityPolicy) -> u8 {
    if own.region.is_empty() && own.zone.is_empty() {
        return 0;
    }
    if locality.region == own.region {
        return if locality.zone == own.zone { 0 } else { 1 };
    }
    match policy.failover.iter().position(|r| *r == locality.region) {
        Some(i) => 2u8.saturating_add(u8::try_from(i).unwrap_or(u8::MAX - 3)),
        None => u8::MAX,
    }
}

/// The highest tier to use, given each tier's (listed, available) endpoint counts
/// sorted by tier: the first tiers whose available endpoints reach the threshold
/// of the first tier's listed count. `None`: use every tier.
pub fn cutoff(tiers: &[(u8, usize, usize)], min_healthy_percent: u32) -> Option<u8> {
    let (_, first_listed, _) = *tiers.first()?;
    if min_healthy_percent == 0 {
        return None;
    }
    let needed = (first_listed * min_healthy_percent as usize)
        .div_ceil(100)
        .max(1);
    let mut available = 0;
    for (tier, _, up) in tiers {
        available += up;
        if available >= needed {
            return Some(*tier);
        }
    }
    None
}
