//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config_dump`, `/tap`,
//! `/shutdown`.
//!
//! It runs on the control runtime, apart from the data-path workers, so a saturated
//! data path never makes the proxy look dead to Kubernetes (DESIGN.md decision 10).
//!
//! `/tap` streams the proxy's finished requests ([`crate::tap`]). It shows paths and
//! identities, so it answers only a client on loopback, or one that sends the
//! `--tap-token` as a bearer token; anyone else gets 403.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
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
use crate::tap::{filter::Filter, Subscription};

/// A page, or the endless body of a tap.
type Body = Either<Full<Bytes>, TapBody>;

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
        let (stream, peer) = match accepted {
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
                async move { Ok::<_, Infallible>(route(&admin, req, peer)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn route(admin: &Admin, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if req.uri().path() == "/tap" {
        return match tap(admin, &req, peer) {
            Ok(subscription) => Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(Either::Right(TapBody::new(subscription)))
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "").map(Either::Left)),
            Err((status, reason)) => owned_text(status, reason).map(Either::Left),
        };
    }
    handle(admin, req).map(Either::Left)
}

/// A subscription for an authorized `GET /tap?...`, or the status and reason
/// refusing it.
fn tap(
    admin: &Admin,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Subscription, (StatusCode, String)> {
    if req.method() != Method::GET {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned()));
    }
    if !tap_allowed(admin, req, peer) {
        let reason = "tap: only from loopback, or with the proxy's tap token as a bearer token\n";
        return Err((StatusCode::FORBIDDEN, reason.to_owned()));
    }
    let filter = Filter::parse(req.uri().query().unwrap_or(""))
        .map_err(|problems| (StatusCode::BAD_REQUEST, format!("{problems}\n")))?;
    let subscribed = admin.shared.tap.subscribe(filter);
    subscribed.map_err(|too_many| (StatusCode::TOO_MANY_REQUESTS, format!("{too_many}\n")))
}

/// From loopback (no network in between), or with `Authorization: Bearer
/// <--tap-token>`.
fn tap_allowed(admin: &Admin, req: &Request<Incoming>, peer: SocketAddr) -> bool {
    if peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let Some(expected) = admin
        .shared
        .config
        .tap_token
        .as_ref()
        .and_then(|t| t.read().ok())
    else {
        return false;
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented.is_some_and(|token| same(token.trim().as_bytes(), expected.as_bytes()))
}

/// Compares without stopping at the first difference, so the time taken does not
/// tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// How often a quiet tap sends an empty line: writing is how a tap whose client
/// went away is noticed (and its slot freed) on a proxy with no traffic.
const TAP_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// A tap's events as they come; it ends only when the client goes (hyper drops
/// it, which unsubscribes).
pub struct TapBody {
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
}

impl TapBody {
    fn new(subscription: Subscription) -> TapBody {
        let first = tokio::time::Instant::now() + TAP_HEARTBEAT;
        TapBody {
            subscription,
            heartbeat: tokio::time::interval_at(first, TAP_HEARTBEAT),
        }
    }
}

impl hyper::body::Body for TapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Poll::Ready(line) = self.subscription.events.poll_recv(cx) {
            self.heartbeat.reset();
            return Poll::Ready(line.map(|line| Ok(Frame::data(line))));
        }
        self.heartbeat
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b"\n")))))
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

fn owned_text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
