//! The policy half of a Service document: how callers reach a service (balancing,
//! mTLS, timeouts, retries, ejection, limits, locality, health checks), without what
//! the service *is* (ports, virtual IPs, hostnames).
//!
//! On Kubernetes the Service object says what the service is, so Weft's own kind there
//! carries only this half: a `ServicePolicy` named after the Service it applies to
//! (see `crate::crd`). Elsewhere a `kind: Service` document carries both halves, and its
//! conversion goes through this type too, so the two forms cannot map a field
//! differently.

use serde::{Deserialize, Serialize};

use super::{
    CircuitBreakersSpec, HealthCheckSpec, LocalityPolicySpec, OutlierDetectionSpec, RetriesSpec,
    TelemetrySpec, TimeoutsSpec,
};
use crate::v1;

/// The spec of a ServicePolicy: the policy of the Kubernetes Service of the same name
/// in the same namespace. Absent fields take the mesh's defaults.
// The fields, their types and serde attributes are those of `ServiceSpec`, so that a
// `kind: Service` document's policy and a ServicePolicy read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePolicySpec {
    /// p2c_ewma (the default), round_robin, random or weighted; a proxy refuses a name
    /// it does not implement and keeps the service's last good policy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub load_balancer: String,
    /// STRICT | PERMISSIVE (default) | DISABLED.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mtls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakersSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityPolicySpec>,
    /// The active check each proxy of the service runs against its application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Access logs and tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
}

impl ServicePolicySpec {
    /// Sets the policy fields of `service`, leaving its name, ports, virtual IPs and
    /// hostnames as they are. An absent section clears the message's.
    pub fn apply_to(&self, service: &mut v1::Service) {
        service.load_balancer = self.load_balancer.clone();
        service.mtls = self.mtls.clone();
        service.timeouts = self.timeouts.as_ref().map(TimeoutsSpec::to_proto);
        service.retries = self.retries.as_ref().map(RetriesSpec::to_proto);
        service.outlier_detection = self
            .outlier_detection
            .as_ref()
            .map(OutlierDetectionSpec::to_proto);
        service.circuit_breakers = self
            .circuit_breakers
            .as_ref()
            .map(CircuitBreakersSpec::to_proto);
        service.locality = self.locality.as_ref().map(LocalityPolicySpec::to_proto);
        service.health_check = self.health_check.as_ref().map(HealthCheckSpec::to_proto);
        service.telemetry = self.telemetry.as_ref().map(TelemetrySpec::to_proto);
    }

    /// The policy fields of `message`; its ports, virtual IPs and hostnames are left
    /// out (on Kubernetes they belong to the Service object).
    pub fn from_service(message: &v1::Service) -> ServicePolicySpec {
        ServicePolicySpec {
            load_balancer: message.load_balancer.clone(),
            mtls: message.mtls.clone(),
            timeouts: message.timeouts.as_ref().map(TimeoutsSpec::from_proto),
            retries: message.retries.as_ref().map(RetriesSpec::from_proto),
            outlier_detection: message
                .outlier_detection
                .as_ref()
                .map(OutlierDetectionSpec::from_proto),
            circuit_breakers: message
                .circuit_breakers
                .as_ref()
                .map(CircuitBreakersSpec::from_proto),
            locality: message
                .locality
                .as_ref()
                .map(LocalityPolicySpec::from_proto),
            health_check: message
                .health_check
                .as_ref()
                .map(HealthCheckSpec::from_proto),
            telemetry: message.telemetry.as_ref().map(TelemetrySpec::from_proto),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{parse, Document, ServiceDocument};

    /// A Service document with every policy section set.
    const FULL: &str = "kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: http1}]
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
  loadBalancer: round_robin
  mtls: STRICT
  timeouts: {connectMs: 500, requestMs: 2000, idleMs: 60000}
  retries: {retryOn: [5xx, unavailable], maxRetries: 0, perTryTimeoutMs: 300, budgetPercent: 10}
  outlierDetection: {consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionPercent: 50}
  circuitBreakers: {maxConnections: 10, maxPendingRequests: 20, maxRequests: 30}
  locality: {minHealthyPercent: 50, failover: [us-east]}
  healthCheck: {http: {path: /healthz, expectedStatus: 204}, intervalMs: 2000}
  telemetry: {accessLog: {samplingPercent: 10}, tracing: {samplingPercent: 0.5, collector: otel.observability:4317}}
";

    fn full() -> ServiceDocument {
        match parse(FULL).expect("parse").remove(0) {
            Document::Service(service) => service,
            other => panic!("not a service: {other:?}"),
        }
    }

    #[test]
    fn a_document_and_its_policy_produce_the_same_proto_fields() {
        let document = full();
        let from_document = document.to_proto();
        // A Kubernetes Service gives the name and ports; the policy adds the rest.
        let mut from_policy = v1::Service {
            namespace: from_document.namespace.clone(),
            name: from_document.name.clone(),
            ports: from_document.ports.clone(),
            virtual_ips: from_document.virtual_ips.clone(),
            hostnames: from_document.hostnames.clone(),
            ..v1::Service::default()
        };
        document.spec.policy().apply_to(&mut from_policy);
        assert_eq!(from_policy, from_document);
        // Every section was set, so a field the policy forgot would show above.
        assert!(from_document.health_check.is_some() && from_document.locality.is_some());
        assert!(from_document.telemetry.is_some());
    }

    #[test]
    fn the_policy_round_trips_through_the_message() {
        let policy = full().spec.policy();
        let mut message = v1::Service::default();
        policy.apply_to(&mut message);
        assert_eq!(ServicePolicySpec::from_service(&message), policy);
        // An empty policy clears what a previous one set.
        ServicePolicySpec::default().apply_to(&mut message);
        assert_eq!(
            message,
            v1::Service::default(),
            "an absent section must clear the message's"
        );
    }

    #[test]
    fn a_service_message_becomes_a_policy_without_ports_or_addresses() {
        let message = full().to_proto();
        let policy = ServicePolicySpec::from_service(&message);
        assert_eq!(policy, full().spec.policy());
        let yaml = serde_yaml::to_string(&policy).expect("yaml");
        for absent in ["ports", "virtualIPs", "hostnames"] {
            assert!(!yaml.contains(absent), "{absent} in {yaml}");
        }
        // The policy reads back as written, and rejects what only a Service has.
        let back: ServicePolicySpec = serde_yaml::from_str(&yaml).expect("parse back");
        assert_eq!(back, policy);
        assert!(serde_yaml::from_str::<ServicePolicySpec>("ports: []").is_err());
    }

    #[test]
    fn setting_a_policy_on_a_spec_keeps_its_ports() {
        let mut spec = full().spec;
        let ports = spec.ports.clone();
        spec.set_policy(ServicePolicySpec::default());
        assert_eq!(spec.ports, ports);
        assert_eq!(spec.policy(), ServicePolicySpec::default());
    }
}
