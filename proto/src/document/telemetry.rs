//! `telemetry:` in a Service document or a ServicePolicy: access logs and tracing for
//! the service's requests. Values are checked when the document becomes a resource
//! (`model::Telemetry`), so a bad share is refused with the field's name.

use serde::{Deserialize, Serialize};

use crate::v1;

/// Absent sections are off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// A JSON line per request on each proxy's stdout; `accessLog: {}` logs every
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// A span per proxy hop, exported with OTLP/gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogSpec {
    /// Percent of requests logged, 0-100; absent: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_percent: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSpec {
    /// Percent of requests that start a trace when no caller decided, 0-100; absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_percent: Option<f64>,
    /// The OTLP/gRPC collector, host:port; absent: the control plane's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub collector: String,
}

impl TelemetrySpec {
    pub fn to_proto(&self) -> v1::Telemetry {
        v1::Telemetry {
            access_log: self.access_log.as_ref().map(|log| v1::AccessLog {
                sampling_percent: log.sampling_percent,
            }),
            tracing: self.tracing.as_ref().map(|tracing| v1::Tracing {
                sampling_percent: tracing.sampling_percent,
                collector: tracing.collector.clone(),
            }),
        }
    }

    pub fn from_proto(message: &v1::Telemetry) -> TelemetrySpec {
        TelemetrySpec {
            access_log: message.access_log.as_ref().map(|log| AccessLogSpec {
                sampling_percent: log.sampling_percent,
            }),
            tracing: message.tracing.as_ref().map(|tracing| TracingSpec {
                sampling_percent: tracing.sampling_percent,
                collector: tracing.collector.clone(),
            }),
        }
    }
}
