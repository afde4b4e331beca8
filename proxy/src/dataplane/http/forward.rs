//! One request, forwarded: pick an endpoint, send over a pooled connection, and
//! stream the response back.
//!
//! Failover (DESIGN.md decision 8, first step): a request is sent again, to another
//! endpoint where possible, only when nothing of it reached an upstream: connecting
//! failed, or a pooled connection turned out closed before the request was
//! written (hyper hands the request back). Once bytes are sent, a failure is final.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weft_proto::model::Protocol;

use crate::metrics::Direction;

use super::super::destination::Destination;
use super::super::endpoint::{Endpoint, InFlight};
use super::super::error::{rescue, ForwardError};
use super::super::Context;
use super::body::{grpc_status, Completion, ProxyBody};
use super::client::Http1Pool;
use super::headers::{self, strip_hop_by_hop};
use super::Route;

/// Attempts per request, counting the first.
const MAX_ATTEMPTS: usize = 3;

/// Handles the requests of one downstream connection.
pub struct Handler {
    cx: Arc<Context>,
    route: Route,
}

/// A failed send: whether the request came back unsent (and may go elsewhere).
/// Boxed because failures are rare and the request is large.
enum Failure {
    NotSent(Box<Request<Incoming>>, ForwardError),
    Sent(ForwardError),
}

impl Handler {
    pub fn new(cx: Arc<Context>, route: Route) -> Handler {
        Handler { cx, route }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let grpc = is_grpc(request.headers());
        let destination = match self.destination(&request) {
            Ok(destination) => destination,
            Err(error) => {
                let unknown = self.cx.registry.metrics(Direction::Outbound, "");
                unknown.requests.increment(1);
                return rescue(&error, &unknown, grpc);
            }
        };
        let metrics = &destination.metrics;
        metrics.requests.increment(1);
        if let Route::Inbound { caller, .. } = &self.route {
            if let Err(denied) = self.cx.registry.authorize(caller) {
                tracing::debug!(policy = %denied.policy, caller = ?caller.identity, "request denied");
                metrics.duration.record(started.elapsed().as_secs_f64());
                return rescue(&ForwardError::Denied, metrics, grpc);
            }
        }
        let version = request.version();
        match self.forward(&destination, request, started).await {
            Ok(mut response) => {
                // The downstream connection's version, whatever the upstream spoke.
                *response.version_mut() = version;
                response
            }
            Err(error) => {
                metrics.duration.record(started.elapsed().as_secs_f64());
                rescue(&error, metrics, grpc)
            }
        }
    }

    fn destination(&self, request: &Request<Incoming>) -> Result<Arc<Destination>, ForwardError> {
        match &self.route {
            Route::Fixed(destination) | Route::Inbound { destination, .. } => {
                Ok(destination.clone())
            }
            Route::ByHost {
                fallback,
                default_port,
            } => {
                let authority = headers::authority(request).unwrap_or("");
                let routes = self.cx.registry.routes();
                routes
                    .by_authority(authority, *default_port)
                    .or(fallback.as_ref())
                    .cloned()
                    .ok_or_else(|| ForwardError::NoRoute(authority.to_owned()))
            }
        }
    }

    async fn forward(
        &self,
        destination: &Destination,
        mut request: Request<Incoming>,
        started: Instant,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let http1 = destination.protocol == Protocol::Http1;
        let upgrade = http1 && headers::is_upgrade(&request);
        strip_hop_by_hop(request.headers_mut(), upgrade);
        let downstream_upgrade = if upgrade {
            request.extensions_mut().remove::<OnUpgrade>()
        } else {
            None
        };
        if http1 && request.version() == Version::HTTP_2 {
            headers::to_http1(&mut request);
        }
        let mut failed = [usize::MAX; MAX_ATTEMPTS];
        let mut last_error = ForwardError::NoEndpoint;
        for attempt in 0..MAX_ATTEMPTS {
            let (index, endpoint) = pick(destination, &failed[..attempt])?;
            failed[attempt] = index;
            let in_flight = InFlight::begin(endpoint);
            let endpoint = in_flight.endpoint();
            let sent = if http1 {
                self.send_http1(endpoint, request, upgrade).await
            } else {
                if request.version() != Version::HTTP_2 {
                    headers::to_http2(&mut request, &endpoint.address.to_string());
                }
                self.send_http2(endpoint, request).await
            };
            match sent {
                Ok((mut response, reuse)) => {
                    in_flight.observe();
                    if let Some(downstream) = downstream_upgrade {
                        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                            tunnel(downstream, hyper::upgrade::on(&mut response));
                        }
                    }
                    let reuse = reuse.map(|sender| (endpoint.clone(), sender));
                    return Ok(respond(destination, response, reuse, started, upgrade));
                }
                Err(Failure::NotSent(unsent, error)) => {
                    tracing::debug!(endpoint = %endpoint.address, %error, "not sent; trying again");
                    request = *unsent;
                    last_error = error;
                }
                Err(Failure::Sent(error)) => return Err(error),
            }
        }
        Err(last_error)
    }

    /// Sends over a pooled connection (a new one when none is idle, or for an
    /// upgrade, which consumes its connection).
    async fn send_http1(
        &self,
        endpoint: &Arc<Endpoint>,
        mut request: Request<Incoming>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), Failure> {
        let pool = &endpoint.clients.http1;
        let addr = endpoint.address;
        loop {
            let pooled = if upgrade { None } else { pool.checkout() };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                // Boxed: connecting is rare on a warm pool, and its large future
                // would otherwise bloat every request's state machine.
                None => match Box::pin(Http1Pool::connect(&self.cx, endpoint, upgrade)).await {
                    Ok(sender) => sender,
                    Err(error) => return Err(Failure::NotSent(Box::new(request), error)),
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                let error = ForwardError::Connect {
                    addr,
                    source: std::io::ErrorKind::ConnectionReset.into(),
                };
                return Err(Failure::NotSent(Box::new(request), error));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, (!upgrade).then_some(sender))),
                Err(mut e) => match e.take_message() {
                    // A pooled connection closed under us: try the next one.
                    Some(unsent) if reused => request = unsent,
                    Some(unsent) => {
                        let error = ForwardError::Upstream {
                            addr,
                            source: e.into_error(),
                        };
                        return Err(Failure::NotSent(Box::new(unsent), error));
                    }
                    None => {
                        let error = ForwardError::Upstream {
                            addr,
                            source: e.into_error(),
                        };
                        return Err(Failure::Sent(error));
                    }
                },
            }
        }
    }

    async fn send_http2(
        &self,
        endpoint: &Arc<Endpoint>,
        request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<http1::SendRequest<Incoming>>), Failure> {
        let addr = endpoint.address;
        let mut sender = match endpoint.clients.http2.get(&self.cx, endpoint).await {
            Ok(sender) => sender,
            Err(error) => return Err(Failure::NotSent(Box::new(request), error)),
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, None)),
            Err(mut e) => {
                let unsent = e.take_message();
                let error = ForwardError::Upstream {
                    addr,
                    source: e.into_error(),
                };
                match unsent {
                    Some(unsent) => Err(Failure::NotSent(Box::new(unsent), error)),
                    None => Err(Failure::Sent(error)),
                }
            }
        }
    }
}

fn pick(
    destination: &Destination,
    failed: &[usize],
) -> Result<(usize, Arc<Endpoint>), ForwardError> {
    let set = destination.endpoints();
    let index = set
        .picker
        .pick(
            &set.endpoints,
            failed,
            crate::balance::now(),
            &mut rand::rng(),
        )
        .ok_or(ForwardError::NoEndpoint)?;
    Ok((index, set.endpoints[index].clone()))
}

/// The upstream response as sent downstream, counted and observed to its end.
fn respond(
    destination: &Destination,
    response: Response<Incoming>,
    reuse: Option<(Arc<Endpoint>, http1::SendRequest<Incoming>)>,
    started: Instant,
    upgrade: bool,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let switching = upgrade && parts.status == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(&mut parts.headers, switching);
    let grpc = is_grpc(&parts.headers);
    // Trailers-only gRPC responses carry the status in the headers.
    let status_in_headers = if grpc {
        grpc_status(&parts.headers)
    } else {
        None
    };
    let grpc_pending = grpc && status_in_headers.is_none();
    if !grpc_pending {
        destination.metrics.response(status, status_in_headers);
    }
    let completion = Completion {
        metrics: destination.metrics.clone(),
        started,
        status,
        grpc_pending,
        reuse,
    };
    Response::from_parts(parts, ProxyBody::upstream(body, completion))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Joins the two upgraded connections (after a 101) and copies between them.
fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut downstream = TokioIo::new(downstream);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
