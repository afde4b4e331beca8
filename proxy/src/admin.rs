//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config_dump`, `/shutdown`.
//!
//! It runs on the control runtime, apart from the data-path workers, so a saturated
//! data path never makes the proxy look dead to Kubernetes (DESIGN.md decision 10).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::drain::Watch;
use crate::local::{Local, LocalPort};
use crate::snapshot::Snapshot;
use crate::state::Shared;

pub struct Admin {
    pub shared: Arc<Shared>,
    pub metrics: PrometheusHandle,
    /// `POST /shutdown` sends here; the main task starts the drain.
    pub shutdown: mpsc::Sender<()>,
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut drain: Watch) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        let (stream, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => match admin.shared.not_ready_reason() {
            None => text(StatusCode::OK, "ready\n"),
            Some("no certificate yet") => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no certificate yet\n",
            ),
            Some("draining") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n"),
            Some(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no configuration received yet\n",
            ),
        },
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(admin.metrics.render())))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "render failed\n")),
        (&Method::GET, "/config_dump") => {
            // The snapshot requests are routed by, not one still being applied.
            let snapshot = admin.shared.applied.borrow().clone();
            let out_of_rotation = admin.shared.out_of_rotation();
            let body = json!({
                "ready": admin.shared.is_ready(),
                "node_id": admin.shared.config.node_id,
                "control_plane": admin.shared.connection(),
                "config_source": admin.shared.source(),
                "stale": admin.shared.is_stale(),
                "workload_health": admin.shared.workload_health.borrow().as_str(),
                "config": admin.shared.config,
                "local_workload": dump_local(&admin.shared.config, &admin.shared.local.borrow()),
                "resources": dump_resources(&snapshot, &out_of_rotation),
                "identity": admin.shared.identity.dump(),
            });
            let text_body = serde_json::to_string_pretty(&body).unwrap_or_default();
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(text_body)))
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "dump failed\n"))
        }
        (&Method::POST, "/shutdown") => {
            let _ = admin.shutdown.try_send(());
            text(StatusCode::ACCEPTED, "draining\n")
        }
        (_, "/shutdown") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A service's effective resilience settings, defaults resolved (durations in ms).
fn dump_resilience(r: &weft_proto::model::Resilience) -> serde_json::Value {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    let (t, re, o, c) = (
        &r.timeouts,
        &r.retries,
        &r.outlier_detection,
        &r.circuit_breakers,
    );
    json!({
        "timeouts": {"connect_ms": ms(Some(t.connect)), "request_ms": ms(t.request), "idle_ms": ms(t.idle)},
        "retries": {
            "retry_on": re.retry_on.iter().map(|on| on.name()).collect::<Vec<_>>(),
            "max_retries": re.max_retries, "per_try_timeout_ms": ms(re.per_try_timeout),
            "backoff_base_ms": ms(Some(re.backoff_base)), "backoff_max_ms": ms(Some(re.backoff_max)),
            "budget_percent": re.budget_percent, "min_retries_per_second": re.min_retries_per_second,
        },
        "outlier_detection": {
            "consecutive_failures": o.consecutive_failures,
            "base_ejection_ms": ms(Some(o.base_ejection)), "max_ejection_ms": ms(Some(o.max_ejection)),
            "max_ejection_percent": o.max_ejection_percent,
            "failure_percentage_threshold": o.failure_percentage_threshold,
            "failure_percentage_min_requests": o.failure_percentage_min_requests,
        },
        "circuit_breakers": {
            "max_connections": c.max_connections, "max_pending_requests": c.max_pending_requests,
            "max_requests": c.max_requests,
        },
        "locality": {
            "min_healthy_percent": r.locality.min_healthy_percent, "failover": r.locality.failover,
        },
    })
}

/// The local workload as the data path applies it: where it comes from, the
/// services the app serves and how each port is served.
fn dump_local(config: &Config, local: &Local) -> serde_json::Value {
    let source = match (&config.workload, config.workload_address) {
        (Some(_), _) => "flags",
        (None, Some(_)) => "endpoints",
        (None, None) => "none",
    };
    let port = |served: &LocalPort| {
        json!({
            "services": served.owners.iter().map(|owner| json!({
                "service": owner.service.to_string(), "ports": owner.ports,
            })).collect::<Vec<_>>(),
            "protocol": served.protocol.map(|p| p.as_str()),
            "mtls": served.mtls.as_str(),
            "metrics_service": &*served.service,
        })
    };
    let mut ports = Vec::new();
    for (number, served) in &local.ports {
        let mut entry = port(served);
        entry["port"] = json!(number);
        ports.push(entry);
    }
    json!({
        "source": source,
        "address": config.workload_address.map(|a| a.to_string()),
        "services": local.services().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ports": ports,
        "other_ports": port(&local.other),
    })
}

/// `out_of_rotation`: the data path's endpoints out of rotation now, by (service,
/// address); an endpoint's `state` is that, else the health the control plane gave.
fn dump_resources(
    snapshot: &Snapshot,
    out_of_rotation: &BTreeMap<(String, String), &'static str>,
) -> serde_json::Value {
    use weft_proto::document::{
        AuthorizationPolicyDocument, EndpointsDocument, GrpcRouteDocument, HttpRouteDocument,
        ServiceDocument,
    };

    let mut services: Vec<_> = snapshot
        .services
        .iter()
        .map(|(name, view)| {
            let s = &view.service;
            json!({
                "name": name.to_string(),
                "version": view.version,
                "ports": s.ports.iter().map(|p| json!({
                    "name": p.name, "port": p.port, "protocol": p.protocol.as_str(),
                })).collect::<Vec<_>>(),
                "virtual_ips": s.virtual_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "hostnames": s.hostnames,
                "load_balancer": view.policy,
                "resilience": dump_resilience(&s.resilience),
            })
        })
        .collect();
    services.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut endpoints: Vec<_> = snapshot
        .endpoints
        .iter()
        .map(|(name, view)| {
            let service = name.to_string();
            let state = |address: String, health: &'static str| {
                let key = (service.clone(), address);
                out_of_rotation.get(&key).copied().unwrap_or(health)
            };
            json!({
                "name": service,
                "version": view.version,
                "endpoints": view.endpoints.endpoints.iter().map(|e| json!({
                    "address": e.address.to_string(),
                    "state": state(e.address.to_string(), e.state()),
                    "port_name": e.port_name,
                    "weight": e.weight,
                    "region": e.locality.region,
                    "zone": e.locality.zone,
                    "labels": e.labels,
                    "health": e.health.as_str(),
                    "identity": e.identity.as_ref().map(ToString::to_string),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    endpoints.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    // Already sorted by name.
    let policies: Vec<_> = snapshot
        .policies
        .iter()
        .map(|(name, view)| {
            let p = &view.policy;
            json!({
                "name": name.to_string(),
                "version": view.version,
                "service": p.service.to_string(),
                "port": p.port,
                "allow": p.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "default_action": p.default_action.as_str(),
            })
        })
        .collect();
    // Routes as the documents `weftctl apply` reads, so that a dump can be read back
    // into the model (and the route tables rebuilt from it).
    let http_routes: Vec<_> = snapshot
        .http_routes
        .values()
        .map(|view| HttpRouteDocument::from_proto(&view.route.to_proto(), Some(view.version)))
        .collect();
    let grpc_routes: Vec<_> = snapshot
        .grpc_routes
        .values()
        .map(|view| GrpcRouteDocument::from_proto(&view.route.to_proto(), Some(view.version)))
        .collect();
    // The same resources as the documents `weftctl apply` reads, so that a dump can
    // be read back into the model (`weftctl explain --config-dump`): the summaries
    // above resolve defaults for reading, and lose what a conversion back would need.
    let mut documents: Vec<serde_json::Value> = Vec::new();
    let mut names: Vec<_> = snapshot.services.keys().collect();
    names.sort();
    for name in names {
        let view = &snapshot.services[name];
        let document = ServiceDocument::from_proto(&view.service.to_proto(), Some(view.version));
        documents.push(json!(document));
    }
    let mut names: Vec<_> = snapshot.endpoints.keys().collect();
    names.sort();
    for name in names {
        let view = &snapshot.endpoints[name];
        let document =
            EndpointsDocument::from_proto(&view.endpoints.to_proto(), Some(view.version));
        documents.push(json!(document));
    }
    for view in snapshot.policies.values() {
        let document =
            AuthorizationPolicyDocument::from_proto(&view.policy.to_proto(), Some(view.version));
        documents.push(json!(document));
    }
    json!({
        "services": services,
        "endpoints": endpoints,
        "authorization_policies": policies,
        "http_routes": http_routes,
        "grpc_routes": grpc_routes,
        "documents": documents,
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
