//! The timeouts and retries in force for the requests a rule selects: its service's,
//! with what the rule sets in their place.
//!
//! A rule's `timeouts.request` replaces the service's request timeout and
//! `timeouts.backendRequest` its per-try timeout (`0s` turns either off); a rule's
//! `retry` replaces the response statuses worth a retry (the connection failures the
//! service retries on stay: nothing reached a backend then), the number of retries
//! and the backoff's base, whose cap stays the service's unless the base is larger.
//!
//! [`InForce`] says it for one request, borrowing both settings (the proxy asks it
//! on every attempt and copies nothing); [`Effective`] is the same answer written
//! out, for `weftctl explain`. One is built from the other, so the two cannot
//! disagree.

use std::time::Duration;

use super::grpc_code::GrpcCode;
use super::resilience::{RetryCode, RouteRetry, RouteTimeouts};
use crate::model::{Resilience, RetryOn};

/// What earns a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCondition {
    /// One of the service's `retryOn` conditions.
    Service(RetryOn),
    /// An HTTP status a rule lists.
    Status(u16),
    /// A gRPC status a rule lists.
    Grpc(GrpcCode),
}

/// A rule's code as a retry condition.
pub trait IntoCondition: RetryCode {
    fn condition(self) -> RetryCondition;
    /// A retry with codes of this kind, borrowed as either kind.
    fn rule_retry(retry: &RouteRetry<Self>) -> RuleRetry<'_>;
}

impl IntoCondition for u16 {
    fn condition(self) -> RetryCondition {
        RetryCondition::Status(self)
    }
    fn rule_retry(retry: &RouteRetry<u16>) -> RuleRetry<'_> {
        RuleRetry::Http(retry)
    }
}

impl IntoCondition for GrpcCode {
    fn condition(self) -> RetryCondition {
        RetryCondition::Grpc(self)
    }
    fn rule_retry(retry: &RouteRetry<GrpcCode>) -> RuleRetry<'_> {
        RuleRetry::Grpc(retry)
    }
}

/// A rule's retry, borrowed, whichever route kind the rule belongs to.
#[derive(Debug, Clone, Copy)]
pub enum RuleRetry<'a> {
    Http(&'a RouteRetry<u16>),
    Grpc(&'a RouteRetry<GrpcCode>),
}

impl RuleRetry<'_> {
    fn attempts(self) -> Option<u32> {
        match self {
            RuleRetry::Http(retry) => retry.attempts,
            RuleRetry::Grpc(retry) => retry.attempts,
        }
    }

    fn backoff(self) -> Option<Duration> {
        match self {
            RuleRetry::Http(retry) => retry.backoff,
            RuleRetry::Grpc(retry) => retry.backoff,
        }
    }

    /// Whether the rule lists the response's status: its HTTP status for an
    /// HTTPRoute rule, its gRPC status for a GRPCRoute one.
    fn lists(self, status: u16, grpc: Option<u16>) -> bool {
        match self {
            RuleRetry::Http(retry) => retry.codes.contains(&status),
            RuleRetry::Grpc(retry) => {
                grpc.is_some_and(|grpc| retry.codes.iter().any(|c| c.code() == grpc))
            }
        }
    }

    fn conditions(self) -> Vec<RetryCondition> {
        match self {
            RuleRetry::Http(retry) => retry.codes.iter().map(|c| c.condition()).collect(),
            RuleRetry::Grpc(retry) => retry.codes.iter().map(|c| c.condition()).collect(),
        }
    }
}

/// The service conditions a rule's retry keeps: failures where nothing reached a
/// backend, or the connection broke, say nothing of the response codes it lists.
fn kept_by_rule(on: RetryOn) -> bool {
    matches!(
        on,
        RetryOn::ConnectFailure | RetryOn::RefusedStream | RetryOn::Reset
    )
}

/// The timeouts and retries for one request, borrowed from its service's settings
/// and its rule's (none for a request no route chose).
#[derive(Debug, Clone, Copy)]
pub struct InForce<'a> {
    service: &'a Resilience,
    timeouts: RouteTimeouts,
    retry: Option<RuleRetry<'a>>,
}

impl<'a> InForce<'a> {
    /// The service's own settings.
    pub fn service(service: &'a Resilience) -> InForce<'a> {
        InForce {
            service,
            timeouts: RouteTimeouts::default(),
            retry: None,
        }
    }

    /// The service's settings, with the rule's in their place where it sets them.
    pub fn rule(
        service: &'a Resilience,
        timeouts: RouteTimeouts,
        retry: Option<RuleRetry<'a>>,
    ) -> InForce<'a> {
        InForce {
            service,
            timeouts,
            retry,
        }
    }

    /// The service's settings, the rule's aside (the retry budget, always the
    /// service's).
    pub fn resilience(&self) -> &'a Resilience {
        self.service
    }

    /// The whole request's timeout, retries included.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.timeouts
            .request
            .map_or(self.service.timeouts.request, |t| t.duration())
    }

    /// Each attempt's timeout.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.timeouts
            .backend_request
            .map_or(self.service.retries.per_try_timeout, |t| t.duration())
    }

    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.retry
            .and_then(RuleRetry::attempts)
            .unwrap_or(self.service.retries.max_retries)
    }

    pub fn backoff_base(&self) -> Duration {
        self.retry
            .and_then(RuleRetry::backoff)
            .unwrap_or(self.service.retries.backoff_base)
    }

    /// The backoff's cap: the service's, or a rule's base when that is larger.
    pub fn backoff_max(&self) -> Duration {
        let max = self.service.retries.backoff_max;
        match self.retry.and_then(RuleRetry::backoff) {
            Some(base) => max.max(base),
            None => max,
        }
    }

    /// Whether a failure other than a response (a refused connect or stream, a
    /// reset) earns a retry.
    pub fn retries(&self, on: RetryOn) -> bool {
        self.service.retries.retries(on) && (self.retry.is_none() || kept_by_rule(on))
    }

    /// Whether a response with this HTTP status (and gRPC status, if any) earns a
    /// retry: the rule's codes when it has a retry, else the service's conditions.
    pub fn retries_status(&self, status: u16, grpc: Option<u16>) -> bool {
        match self.retry {
            Some(retry) => retry.lists(status, grpc),
            None => self.service.retries.retries_status(status, grpc),
        }
    }

    /// Whether some gRPC status earns a retry (which makes a gRPC call, never
    /// idempotent by its method, worth recording for one).
    pub fn retries_grpc(&self) -> bool {
        match self.retry {
            Some(RuleRetry::Grpc(retry)) => !retry.codes.is_empty(),
            Some(RuleRetry::Http(_)) => false,
            None => self
                .service
                .retries
                .retry_on
                .iter()
                .any(|on| matches!(on, RetryOn::Grpc(_))),
        }
    }
}

/// The timeouts and retries for one rule's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub request_timeout: Option<Duration>,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<RetryCondition>,
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Effective {
    /// The service's settings, with the rule's in their place where it sets them.
    pub fn of<C: IntoCondition>(
        service: &Resilience,
        timeouts: &RouteTimeouts,
        retry: Option<&RouteRetry<C>>,
    ) -> Effective {
        Effective::from(InForce::rule(service, *timeouts, retry.map(C::rule_retry)))
    }
}

impl From<InForce<'_>> for Effective {
    fn from(in_force: InForce<'_>) -> Effective {
        let mut retry_on: Vec<RetryCondition> = in_force
            .service
            .retries
            .retry_on
            .iter()
            .filter(|on| in_force.retries(**on))
            .map(|on| RetryCondition::Service(*on))
            .collect();
        if let Some(retry) = in_force.retry {
            retry_on.extend(retry.conditions());
        }
        Effective {
            request_timeout: in_force.request_timeout(),
            per_try_timeout: in_force.per_try_timeout(),
            retry_on,
            max_retries: in_force.max_retries(),
            backoff_base: in_force.backoff_base(),
            backoff_max: in_force.backoff_max(),
        }
    }
}

impl RetryCondition {
    pub fn name(self) -> String {
        match self {
            RetryCondition::Service(on) => on.name().to_owned(),
            RetryCondition::Status(code) => code.to_string(),
            RetryCondition::Grpc(code) => code.name().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::Timeout;

    #[test]
    fn a_rule_without_settings_keeps_the_service_s() {
        let service = Resilience::default();
        let effective = Effective::of::<u16>(&service, &RouteTimeouts::default(), None);
        assert_eq!(effective.request_timeout, service.timeouts.request);
        assert_eq!(effective.max_retries, service.retries.max_retries);
        assert_eq!(effective.retry_on.len(), service.retries.retry_on.len());
    }

    #[test]
    fn a_rule_replaces_timeouts_statuses_attempts_and_backoff() {
        let mut service = Resilience::default();
        service.timeouts.request = Some(Duration::from_secs(5));
        service.retries.retry_on = vec![RetryOn::ConnectFailure, RetryOn::ServerError];
        let timeouts = RouteTimeouts {
            request: Some(Timeout::Disabled),
            backend_request: Some(Timeout::After(Duration::from_millis(300))),
        };
        let retry = RouteRetry {
            codes: vec![503u16],
            attempts: Some(4),
            backoff: Some(Duration::from_secs(1)),
        };
        let effective = Effective::of(&service, &timeouts, Some(&retry));
        assert_eq!(effective.request_timeout, None);
        assert_eq!(effective.per_try_timeout, Some(Duration::from_millis(300)));
        assert_eq!(
            effective.retry_on,
            vec![
                RetryCondition::Service(RetryOn::ConnectFailure),
                RetryCondition::Status(503)
            ]
        );
        assert_eq!(effective.max_retries, 4);
        assert_eq!(effective.backoff_base, Duration::from_secs(1));
        assert_eq!(effective.backoff_max, Duration::from_secs(1));
    }

    #[test]
    fn a_rule_retry_answers_by_its_own_codes_only() {
        let mut service = Resilience::default();
        service.retries.retry_on = vec![RetryOn::Reset, RetryOn::ServerError, RetryOn::Grpc(14)];
        let http = RouteRetry {
            codes: vec![503u16],
            attempts: Some(0),
            backoff: None,
        };
        let rule = InForce::rule(
            &service,
            RouteTimeouts::default(),
            Some(RuleRetry::Http(&http)),
        );
        assert!(rule.retries_status(503, None));
        assert!(
            !rule.retries_status(500, None),
            "the service's 5xx gives way"
        );
        assert!(rule.retries(RetryOn::Reset));
        assert!(!rule.retries_grpc());
        assert_eq!(rule.max_retries(), 0);
        let unavailable = GrpcCode::parse("codes[0]", "UNAVAILABLE").expect("a code");
        let grpc = RouteRetry {
            codes: vec![unavailable],
            attempts: None,
            backoff: None,
        };
        let rule = InForce::rule(
            &service,
            RouteTimeouts::default(),
            Some(RuleRetry::Grpc(&grpc)),
        );
        assert!(rule.retries_status(200, Some(14)));
        assert!(!rule.retries_status(503, None));
        assert!(rule.retries_grpc());
        assert_eq!(rule.max_retries(), service.retries.max_retries);
        // Without a rule, the service's settings as they are.
        let plain = InForce::service(&service);
        assert!(plain.retries_status(500, None) && plain.retries_grpc());
        assert_eq!(plain.backoff_max(), service.retries.backoff_max);
    }
}
