//! Tracing: a span per proxy hop for the requests of services that turn it on
//! (`telemetry.tracing` on the Service, pushed by the control plane), exported with
//! OTLP over gRPC, and the trace context of every such request carried on to the
//! next hop.
//!
//! # Layout
//! - [`Tracer`] (here): one service's setting as the data path holds it, its
//!   share and its collector's queue; a destination holds one while the service
//!   traces ([`crate::dataplane::destination::Destination::tracer`]).
//! - [`context`]: the headers: W3C `traceparent`/`tracestate`, B3 single and multi.
//! - [`span`]: the decision per request and the span a sampled one records, from
//!   its arrival ([`span::begin`], in the forwarder) to the end of its response
//!   (carried by the response body, as a tap's record is).
//! - [`tracers`]: each tracing service's [`Tracer`], from a snapshot.
//! - [`export`]: bounded queues and batching OTLP exporters, one per collector,
//!   on a thread of their own.
//!
//! Which setting applies: outbound, the destination service's; inbound, the local
//! workload's. A service with tracing off costs a request one relaxed load, and its
//! headers pass untouched; a request that is not sampled costs a pass over its
//! headers and a draw, allocates nothing, and passes its headers untouched too.

pub mod context;
pub mod export;
pub mod span;
pub mod tracers;

use std::sync::Arc;

use weft_proto::model::Sampling;

pub use self::export::{Collectors, Recorder};
pub use self::span::{Side, Span};

/// One service's tracing as the data path applies it.
pub struct Tracer {
    /// The share of requests drawn when no caller decided.
    pub sampling: Sampling,
    queue: Arc<export::Queue>,
}

impl Tracer {
    pub fn new(sampling: Sampling, queue: Arc<export::Queue>) -> Tracer {
        Tracer { sampling, queue }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}
