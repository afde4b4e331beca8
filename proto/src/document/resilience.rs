//! The resilience sections of a Service document (`timeouts`, `retries`,
//! `outlierDetection`, `circuitBreakers`, `locality`), mapped field for field to
//! their weft.v1 messages. Durations are milliseconds, as on the wire; an absent
//! field keeps the default (see `model::resilience`).

use serde::{Deserialize, Serialize};

use crate::v1;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// `timeouts:` in milliseconds; 0 or absent takes the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Connecting to an endpoint (default 1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connect_ms: u32,
    /// The whole request until its response headers, retries included (default: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_ms: u32,
    /// Idle pooled and keep-alive connections (default: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_ms: u32,
}

/// `retries:` which failed attempts are tried again, how often and how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetriesSpec {
    /// connect-failure, refused-stream, reset, 5xx, gateway-error, 503, or a gRPC status
    /// (cancelled, deadline-exceeded, resource-exhausted, internal, unavailable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Retries after the first attempt (default 2; 0 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Each attempt's own timeout (default: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_try_timeout_ms: u32,
    /// The first jittered backoff (default 25).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_base_ms: u32,
    /// The largest backoff (default 250).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_max_ms: u32,
    /// Retries that re-send work, as a percentage of live requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
    /// Retries allowed per second whatever the budget (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<u32>,
}

/// `outlierDetection:` when an endpoint is taken out of rotation for its failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    /// Failures in a row that eject an endpoint (default 5; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// The first ejection's length, growing with each ejection (default 30000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base_ejection_ms: u32,
    /// The longest ejection (default 300000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ejection_ms: u32,
    /// The share of endpoints that may be ejected at once (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Ejects an endpoint whose failure percentage reaches this (default 0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failure_percentage_threshold: u32,
    /// Requests an endpoint must have seen before its failure percentage counts (default 20).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failure_percentage_min_requests: u32,
}

/// `circuitBreakers:` limits per proxy and service (0 or absent: 1024 each).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakersSpec {
    /// Upstream connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_connections: u32,
    /// Requests waiting for a connection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_pending_requests: u32,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_requests: u32,
}

/// `locality:` keeping traffic in the caller's zone and region while enough of it is healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityPolicySpec {
    /// Below this share of healthy endpoints in the caller's zone, traffic spills over
    /// (default 70; 0: no locality preference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_percent: Option<u32>,
    /// Regions to fail over to, in order, after the caller's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
}

impl TimeoutsSpec {
    pub fn to_proto(&self) -> v1::Timeouts {
        v1::Timeouts {
            connect_ms: self.connect_ms,
            request_ms: self.request_ms,
            idle_ms: self.idle_ms,
        }
    }
    pub fn from_proto(m: &v1::Timeouts) -> Self {
        TimeoutsSpec {
            connect_ms: m.connect_ms,
            request_ms: m.request_ms,
            idle_ms: m.idle_ms,
        }
    }
}

impl RetriesSpec {
    pub fn to_proto(&self) -> v1::Retries {
        v1::Retries {
            retry_on: self.retry_on.clone(),
            max_retries: self.max_retries,
            per_try_timeout_ms: self.per_try_timeout_ms,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            budget_percent: self.budget_percent,
            min_retries_per_second: self.min_retries_per_second,
        }
    }
    pub fn from_proto(m: &v1::Retries) -> Self {
        RetriesSpec {
            retry_on: m.retry_on.clone(),
            max_retries: m.max_retries,
            per_try_timeout_ms: m.per_try_timeout_ms,
            backoff_base_ms: m.backoff_base_ms,
            backoff_max_ms: m.backoff_max_ms,
            budget_percent: m.budget_percent,
            min_retries_per_second: m.min_retries_per_second,
        }
    }
}

impl OutlierDetectionSpec {
    pub fn to_proto(&self) -> v1::OutlierDetection {
        v1::OutlierDetection {
            consecutive_failures: self.consecutive_failures,
            base_ejection_ms: self.base_ejection_ms,
            max_ejection_ms: self.max_ejection_ms,
            max_ejection_percent: self.max_ejection_percent,
            failure_percentage_threshold: self.failure_percentage_threshold,
            failure_percentage_min_requests: self.failure_percentage_min_requests,
        }
    }
    pub fn from_proto(m: &v1::OutlierDetection) -> Self {
        OutlierDetectionSpec {
            consecutive_failures: m.consecutive_failures,
            base_ejection_ms: m.base_ejection_ms,
            max_ejection_ms: m.max_ejection_ms,
            max_ejection_percent: m.max_ejection_percent,
            failure_percentage_threshold: m.failure_percentage_threshold,
            failure_percentage_min_requests: m.failure_percentage_min_requests,
        }
    }
}

impl CircuitBreakersSpec {
    pub fn to_proto(&self) -> v1::CircuitBreakers {
        v1::CircuitBreakers {
            max_connections: self.max_connections,
            max_pending_requests: self.max_pending_requests,
            max_requests: self.max_requests,
        }
    }
    pub fn from_proto(m: &v1::CircuitBreakers) -> Self {
        CircuitBreakersSpec {
            max_connections: m.max_connections,
            max_pending_requests: m.max_pending_requests,
            max_requests: m.max_requests,
        }
    }
}

impl LocalityPolicySpec {
    pub fn to_proto(&self) -> v1::LocalityPolicy {
        v1::LocalityPolicy {
            min_healthy_percent: self.min_healthy_percent,
            failover: self.failover.clone(),
        }
    }
    pub fn from_proto(m: &v1::LocalityPolicy) -> Self {
        LocalityPolicySpec {
            min_healthy_percent: m.min_healthy_percent,
            failover: m.failover.clone(),
        }
    }
}
