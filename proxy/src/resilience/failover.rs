//! The failover rule (DESIGN.md decision 8) as one pure function: after an attempt,
//! what the endpoint learns from it and what the request does next.
//!
//! Two kinds of "try again" are told apart, because they cost different things:
//! - a **move**: nothing reached the endpoint (the connect was refused or timed out,
//!   the TLS handshake failed, a stream was refused before the request was written).
//!   No work is repeated, so it spends no retry budget; the endpoint that could not
//!   be reached leaves rotation at once. Moves are bounded by the endpoints the
//!   request has not tried yet and by a destination-wide failover bound
//!   ([`MOVE_BUDGET_PERCENT`]), so a dead service cannot become a connect storm.
//! - a **retry**: the request reached an upstream and is sent again (a reset, a
//!   per-try timeout, a status the service retries). Only a request that may be
//!   repeated and whose body is still in hand is retried; each retry spends the retry
//!   budget and waits a jittered backoff, so retries cannot multiply an outage.
//!
//! What the caller does with a [`Verdict`] (withdraw from a budget, sleep, pick the
//! next endpoint) is IO and lives in the forwarder; everything that decides is here.

use weft_proto::model::route::InForce;
use weft_proto::model::{Retries, RetryOn};

/// Moves after failed connects may add at most this share of the destination's
/// recent requests (plus [`MOVE_FLOOR_PER_SECOND`]): generous, because a move costs
/// the upstream nothing, yet bounded.
pub const MOVE_BUDGET_PERCENT: u32 = 100;
pub const MOVE_FLOOR_PER_SECOND: u32 = 20;

/// What came of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connecting failed (refused, timed out, TLS or HTTP/2 handshake failed):
    /// nothing was sent, and the endpoint is not reachable right now.
    Unreachable,
    /// The endpoint was reached but took none of the request (an HTTP/2 stream
    /// refused, a fresh connection closed before the request was written).
    Refused,
    /// The request was sent (maybe in part) and the connection broke.
    Reset,
    /// The attempt's own time ran out (the per-try timeout).
    TriedTooLong,
    /// The whole request's time ran out.
    Expired,
    /// The upstream answered.
    Answered { status: u16, grpc: Option<u16> },
    /// The downstream client failed the request (its body broke off or was
    /// malformed): nobody upstream is to blame.
    ClientFailed,
    /// The proxy refused the request itself (a circuit breaker): no endpoint involved.
    Overflow,
}

/// What the attempt tells the endpoint's health and the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A success for outlier detection and a latency sample for the balancer.
    Success,
    /// A failure for outlier detection, counted as slow by the balancer.
    Failure,
    /// The endpoint leaves rotation until a probe connects to it again; outlier
    /// detection and the latency estimate are left alone (the probe speaks for it).
    Unreachable,
    /// Nothing: the endpoint was not at fault, or not involved.
    None,
}

/// What the request does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// This attempt's result (its response, or its error) goes to the client.
    Respond,
    /// Another endpoint gets the request; nothing was sent, so no budget or
    /// backoff, only the failover bound.
    Move,
    /// The request is sent again on another endpoint, paid for by the retry
    /// budget, after a backoff.
    Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub feedback: Feedback,
    pub next: Next,
}

/// What the request has been through so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Whether the request may be sent again: it may be repeated (idempotent,
    /// marked, or gRPC retried by the service) and its whole body is in hand.
    pub replayable: bool,
    /// Retries (sends after the first) made so far.
    pub retries: u32,
    /// Endpoints of the current set this request has not tried yet.
    pub untried: usize,
}

/// What the rule asks of a retry policy: a service's own [`Retries`], or the
/// settings in force for a request a route rule chose ([`InForce`]: its service's
/// with the rule's in their place).
pub trait RetryPolicy {
    /// Retries after the first attempt.
    fn max_retries(&self) -> u32;
    /// Whether a failure other than a response earns a retry.
    fn retries(&self, on: RetryOn) -> bool;
    /// Whether a response earns a retry.
    fn retries_status(&self, status: u16, grpc: Option<u16>) -> bool;
}

impl RetryPolicy for Retries {
    fn max_retries(&self) -> u32 {
        self.max_retries
    }
    fn retries(&self, on: RetryOn) -> bool {
        Retries::retries(self, on)
    }
    fn retries_status(&self, status: u16, grpc: Option<u16>) -> bool {
        Retries::retries_status(self, status, grpc)
    }
}

impl RetryPolicy for InForce<'_> {
    fn max_retries(&self) -> u32 {
        InForce::max_retries(self)
    }
    fn retries(&self, on: RetryOn) -> bool {
        InForce::retries(self, on)
    }
    fn retries_status(&self, status: u16, grpc: Option<u16>) -> bool {
        InForce::retries_status(self, status, grpc)
    }
}

/// Whether an answer counts against its endpoint: a 5xx, or gRPC UNAVAILABLE.
pub fn is_failure(status: u16, grpc: Option<u16>) -> bool {
    status >= 500 || grpc == Some(14)
}

/// The failover rule. `retries` is the request's retry policy.
pub fn decide(outcome: Outcome, retries: &impl RetryPolicy, progress: Progress) -> Verdict {
    let verdict = |feedback, next| Verdict { feedback, next };
    let max_retries = retries.max_retries();
    let may_retry = |on: Option<RetryOn>| {
        progress.replayable
            && progress.retries < max_retries
            && on.is_none_or(|on| retries.retries(on))
    };
    let retry_or_respond = |ok: bool| if ok { Next::Retry } else { Next::Respond };
    match outcome {
        Outcome::Unreachable | Outcome::Refused => {
            let reason = match outcome {
                Outcome::Unreachable => RetryOn::ConnectFailure,
                _ => RetryOn::RefusedStream,
            };
            // Moving what reached nothing is always safe; a service that turned
            // retries off still gets one move, as it always had.
            let allowed = retries.retries(reason) || max_retries == 0;
            let next = match allowed && progress.untried > 0 {
                true => Next::Move,
                false => Next::Respond,
            };
            let feedback = match outcome {
                Outcome::Unreachable => Feedback::Unreachable,
                _ => Feedback::Failure,
            };
            verdict(feedback, next)
        }
        Outcome::Reset => verdict(
            Feedback::Failure,
            retry_or_respond(may_retry(Some(RetryOn::Reset))),
        ),
        // A per-try timeout is retried whenever the request may be: that is what
        // the per-try timeout is for.
        Outcome::TriedTooLong => verdict(Feedback::Failure, retry_or_respond(may_retry(None))),
        Outcome::Expired => verdict(Feedback::Failure, Next::Respond),
        Outcome::Answered { status, grpc } => {
            let feedback = match is_failure(status, grpc) {
                true => Feedback::Failure,
                false => Feedback::Success,
            };
            let again = progress.replayable
                && progress.retries < max_retries
                && retries.retries_status(status, grpc);
            verdict(feedback, retry_or_respond(again))
        }
        Outcome::ClientFailed | Outcome::Overflow => verdict(Feedback::None, Next::Respond),
    }
}

#[cfg(test)]
mod tests;
