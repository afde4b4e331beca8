//! Client-side resilience, as pure logic the forwarder consults: the [`failover`]
//! rule, the retry [`budget`], jittered [`backoff`], per-endpoint [`outlier`]
//! detection and [`reachability`], the circuit [`breaker`] limits of a
//! destination, [`locality`] preference, and the gRPC [`deadline`] header.
//!
//! Nothing here does IO; time is passed in (nanoseconds from
//! [`crate::balance::now`], or whole seconds for the budget), so every rule is
//! unit-tested without sockets or sleeps.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod deadline;
pub mod failover;
pub mod locality;
pub mod outlier;
pub mod reachability;
#[cfg(test)]
mod tests;
