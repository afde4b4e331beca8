//! What the control plane adds to the Services it serves: its default trace
//! collector, for a service whose `telemetry.tracing` names none. The stored
//! resource stays as the operator wrote it (so `weftctl get` and a re-apply show
//! no collector), and changing the default changes what proxies are served.

use prost::Message;
use weft_proto::v1;

/// Settings of the control plane that the served view carries to proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    /// `host:port` of the OTLP/gRPC collector for services that trace without
    /// naming one; empty: none (such services' proxies propagate trace context but
    /// export nothing).
    pub trace_collector: String,
}

/// The encoded Service with the default collector filled in where tracing is on
/// and names none; the same bytes otherwise (no decoding without a default).
pub fn fill_collector(body: &[u8], defaults: &Defaults) -> Vec<u8> {
    if defaults.trace_collector.is_empty() {
        return body.to_vec();
    }
    let Ok(mut service) = v1::Service::decode(body) else {
        return body.to_vec();
    };
    match service
        .telemetry
        .as_mut()
        .and_then(|telemetry| telemetry.tracing.as_mut())
    {
        Some(tracing) if tracing.collector.is_empty() => {
            tracing.collector = defaults.trace_collector.clone();
            service.encode_to_vec()
        }
        _ => body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(tracing: Option<v1::Tracing>) -> Vec<u8> {
        v1::Service {
            namespace: "shop".to_owned(),
            name: "orders".to_owned(),
            telemetry: Some(v1::Telemetry {
                tracing,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn collector(body: &[u8]) -> Option<String> {
        let service = v1::Service::decode(body).expect("a service");
        Some(service.telemetry?.tracing?.collector)
    }

    #[test]
    fn only_a_tracing_service_without_a_collector_gets_the_default() {
        let defaults = Defaults {
            trace_collector: "otel.observability:4317".to_owned(),
        };
        let unnamed = service(Some(v1::Tracing::default()));
        assert_eq!(
            collector(&fill_collector(&unnamed, &defaults)).as_deref(),
            Some("otel.observability:4317")
        );
        let named = service(Some(v1::Tracing {
            collector: "own:4317".to_owned(),
            ..Default::default()
        }));
        assert_eq!(fill_collector(&named, &defaults), named);
        let off = service(None);
        assert_eq!(fill_collector(&off, &defaults), off);
        assert_eq!(fill_collector(&unnamed, &Defaults::default()), unnamed);
    }
}
