//! The `status` of a Weft custom resource, written by the control plane through the
//! status subresource: the generation it last read and whether it accepted it.
//!
//! The condition has the shape of Kubernetes' `metav1.Condition`, so `kubectl wait
//! --for=condition=Accepted` and every tool that reads conditions understand it.

use serde::{Deserialize, Serialize};

/// The condition type the control plane writes, and its reason when it accepted.
pub const ACCEPTED: &str = "Accepted";
/// The reason of an `Accepted: "False"` condition: the spec failed validation.
pub const INVALID: &str = "Invalid";

/// Written by the control plane: whether it accepted the spec, and which generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CrdStatus {
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["type"]
        ))
    )]
    pub conditions: Vec<Condition>,
}

/// One condition, as Kubernetes' `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type; Weft writes `Accepted`: whether the control plane
    /// validated the spec and serves it.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 316)))]
    pub condition_type: String,
    pub status: ConditionStatus,
    /// Accepted or Invalid.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub reason: String,
    /// Why, naming the field when the spec is invalid (`spec.retries.maxRetries: ...`).
    #[cfg_attr(feature = "schema", schemars(length(max = 32768)))]
    pub message: String,
    /// The generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339, UTC).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl Condition {
    /// `Accepted: "True"` for `generation`, as of `now` (RFC 3339).
    pub fn accepted(generation: i64, now: impl Into<String>) -> Condition {
        Condition {
            condition_type: ACCEPTED.to_owned(),
            status: ConditionStatus::True,
            reason: ACCEPTED.to_owned(),
            message: String::new(),
            observed_generation: Some(generation),
            last_transition_time: now.into(),
        }
    }

    /// `Accepted: "False"`, reason Invalid, with the validation error as the message.
    pub fn invalid(
        generation: i64,
        message: impl Into<String>,
        now: impl Into<String>,
    ) -> Condition {
        Condition {
            condition_type: ACCEPTED.to_owned(),
            status: ConditionStatus::False,
            reason: INVALID.to_owned(),
            message: message.into(),
            observed_generation: Some(generation),
            last_transition_time: now.into(),
        }
    }
}

impl CrdStatus {
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == condition_type)
    }

    /// Whether the `Accepted` condition is true for the current `generation`.
    pub fn is_accepted(&self, generation: i64) -> bool {
        self.observed_generation == Some(generation)
            && self
                .condition(ACCEPTED)
                .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Records `condition` for the generation it names, replacing the condition of the
    /// same type. As Kubernetes' own helpers do, the transition time only moves when
    /// the status does: re-validating an unchanged object must not look like a change,
    /// nor make every replica's write differ.
    pub fn record(&mut self, mut condition: Condition) {
        if condition.observed_generation.is_some() {
            self.observed_generation = condition.observed_generation;
        }
        match self
            .conditions
            .iter_mut()
            .find(|c| c.condition_type == condition.condition_type)
        {
            Some(existing) => {
                if existing.status == condition.status {
                    condition.last_transition_time = existing.last_transition_time.clone();
                }
                *existing = condition;
            }
            None => self.conditions.push(condition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut status = CrdStatus::default();
        status.record(Condition::accepted(1, "2026-01-01T00:00:00Z"));
        status.record(Condition::accepted(2, "2026-01-02T00:00:00Z"));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(
            status.conditions[0].last_transition_time,
            "2026-01-01T00:00:00Z"
        );
        assert!(status.is_accepted(2));
        assert!(!status.is_accepted(3));

        status.record(Condition::invalid(
            3,
            "spec.retries.maxRetries: too many",
            "2026-01-03T00:00:00Z",
        ));
        let condition = status.condition(ACCEPTED).expect("accepted condition");
        assert_eq!(condition.status, ConditionStatus::False);
        assert_eq!(condition.reason, INVALID);
        assert_eq!(condition.last_transition_time, "2026-01-03T00:00:00Z");
        assert!(!status.is_accepted(3));
    }

    #[test]
    fn the_status_has_the_kubernetes_shape() {
        let mut status = CrdStatus::default();
        status.record(Condition::invalid(
            4,
            "spec.mtls: unknown mode",
            "2026-01-01T00:00:00Z",
        ));
        let json = serde_json::to_value(&status).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "observedGeneration": 4,
                "conditions": [{
                    "type": "Accepted",
                    "status": "False",
                    "reason": "Invalid",
                    "message": "spec.mtls: unknown mode",
                    "observedGeneration": 4,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
            })
        );
        let back: CrdStatus = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, status);
    }
}
