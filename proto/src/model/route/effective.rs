//! The timeouts and retries in force for the requests a rule selects: its service's,
//! with what the rule sets in their place.
//!
//! A rule's `timeouts.request` replaces the service's request timeout and
//! `timeouts.backendRequest` its per-try timeout (`0s` turns either off); a rule's
//! `retry` replaces the response statuses worth a retry (the connection failures the
//! service retries on stay: nothing reached a backend then), the number of retries
//! and the backoff's base, whose cap stays the service's unless the base is larger.

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
}

impl IntoCondition for u16 {
    fn condition(self) -> RetryCondition {
        RetryCondition::Status(self)
    }
}

impl IntoCondition for GrpcCode {
    fn condition(self) -> RetryCondition {
        RetryCondition::Grpc(self)
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
        let retries = &service.retries;
        let mut effective = Effective {
            request_timeout: timeouts
                .request
                .map_or(service.timeouts.request, |t| t.duration()),
            per_try_timeout: timeouts
                .backend_request
                .map_or(retries.per_try_timeout, |t| t.duration()),
            retry_on: retries
                .retry_on
                .iter()
                .map(|on| RetryCondition::Service(*on))
                .collect(),
            max_retries: retries.max_retries,
            backoff_base: retries.backoff_base,
            backoff_max: retries.backoff_max,
        };
        if let Some(retry) = retry {
            effective.retry_on.retain(|on| {
                matches!(
                    on,
                    RetryCondition::Service(
                        RetryOn::ConnectFailure | RetryOn::RefusedStream | RetryOn::Reset
                    )
                )
            });
            effective
                .retry_on
                .extend(retry.codes.iter().map(|c| c.condition()));
            if let Some(attempts) = retry.attempts {
                effective.max_retries = attempts;
            }
            if let Some(base) = retry.backoff {
                effective.backoff_base = base;
                effective.backoff_max = effective.backoff_max.max(base);
            }
        }
        effective
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
}
