//! The resilience sections of a Service document (`timeouts`, `retries`,
//! `outlierDetection`, `circuitBreakers`, `locality`), mapped field for field to
//! their weft.v1 messages. Durations are milliseconds, as on the wire; an absent
//! field keeps the default (see `model::resilience`).

use serde::{Deserialize, Serialize};

use crate::v1;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutsSpec {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connect_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_ms: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetriesSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_try_timeout_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_base_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_max_ms: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base_ejection_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ejection_ms: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failure_percentage_threshold: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failure_percentage_min_requests: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakersSpec {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_connections: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_pending_requests: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_requests: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_percent: Option<u32>,
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
