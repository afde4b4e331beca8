//! One request, forwarded: admit it past the circuit breakers, pick an endpoint
//! (nearest locality, ejected endpoints avoided), send over a pooled connection
//! within the per-try and request timeouts, and stream the response back.
//!
//! Failover (DESIGN.md decision 8): an attempt is made again, on another endpoint,
//! when nothing of the request reached an upstream (connecting failed, a stream was
//! refused, a pooled connection was closed before the request was written), or
//! when the request may be repeated (an idempotent method, a `weft-retryable: true`
//! header, or gRPC on a service that retries gRPC codes) and its body, at most
//! [`MAX_BUFFERED`], was recorded to its end while the first attempt streamed it:
//! then a reset, a per-try timeout or a status the service retries on is retried
//! too. Recording never delays the first attempt (Linkerd buffers the same way). Every retry spends the destination's budget
//! and waits a jittered backoff (not for a move after a refused connect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use hyper::body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weft_proto::model::{Protocol, Resilience, RetryOn};

use crate::metrics::Direction;
use crate::resilience::breaker::Limit;
use crate::resilience::{backoff, deadline};

use super::super::destination::Destination;
use super::super::endpoint::InFlight;
use super::super::error::{rescue, ForwardError};
use super::super::Context;
use super::attempt::{self, Failure, Sent};
use super::body::{
    grpc_status, Buffered, Completion, ProxyBody, ReceivedBody, Recording, RequestBody,
};
use super::headers::{self, strip_hop_by_hop};
use super::Route;

/// The largest request body recorded so that the request can be retried.
pub const MAX_BUFFERED: u64 = 64 * 1024;

/// The request header by which a client marks a non-idempotent request safe to
/// repeat; removed before forwarding.
const RETRYABLE: HeaderName = HeaderName::from_static("weft-retryable");

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Handles the requests of one downstream connection.
pub struct Handler {
    cx: Arc<Context>,
    route: Route,
}

/// The request to send on each attempt: the original one (until an attempt
/// consumed it; an attempt that did not send it gives it back), then, for a
/// repeatable request, copies rebuilt from its head and recorded body.
struct Pending {
    request: Option<Request<RequestBody>>,
    /// The head, and the body's recording (`None`: the body was empty, which
    /// needs no recording).
    replay: Option<(Box<Parts>, Option<Arc<Recording>>)>,
}

impl Pending {
    /// A repeatable request whose body may fit the bound is recorded as it streams.
    fn new(request: Request<ReceivedBody>, repeatable: bool) -> Pending {
        if !(repeatable && fits(request.body())) {
            return Pending {
                request: Some(request.map(RequestBody::Streaming)),
                replay: None,
            };
        }
        let (parts, body) = request.into_parts();
        let head = Box::new(parts.clone());
        if body.is_end_stream() {
            return Pending {
                request: Some(Request::from_parts(parts, RequestBody::Streaming(body))),
                replay: Some((head, None)),
            };
        }
        let recording = Arc::new(Recording::new(MAX_BUFFERED as usize, false));
        Pending {
            request: Some(Request::from_parts(
                parts,
                RequestBody::Recorded(body, recording.clone()),
            )),
            replay: Some((head, Some(recording))),
        }
    }

    fn take(&mut self) -> Option<Request<RequestBody>> {
        if let Some(request) = self.request.take() {
            return Some(request);
        }
        let (parts, recording) = self.replay.as_ref()?;
        let body = match recording {
            Some(recording) => recording.replay()?,
            None => Buffered::default(),
        };
        Some(Request::from_parts(
            (**parts).clone(),
            RequestBody::Buffered(body),
        ))
    }

    fn give_back(&mut self, request: Request<RequestBody>) {
        self.request = Some(request);
    }

    /// Whether another attempt can send the request again after one sent it.
    fn replayable(&self) -> bool {
        self.replay.as_ref().is_some_and(|(_, recording)| {
            recording
                .as_ref()
                .is_none_or(|recording| recording.complete())
        })
    }
}

/// Why the last attempt did not give a final answer.
enum Last {
    None,
    Error(ForwardError),
    Response(Sent),
}

impl Handler {
    pub fn new(cx: Arc<Context>, route: Route) -> Handler {
        Handler { cx, route }
    }

    pub async fn handle(&self, request: Request<ReceivedBody>) -> Response<ProxyBody> {
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
        match self.forward(&destination, request, started, grpc).await {
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

    fn destination(
        &self,
        request: &Request<ReceivedBody>,
    ) -> Result<Arc<Destination>, ForwardError> {
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
        mut request: Request<ReceivedBody>,
        started: Instant,
        grpc: bool,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        // The set as the request arrives: its policy applies to the whole request,
        // and the first attempt picks from it; a retry loads the set again.
        let first_set = destination.endpoints_full();
        let policy = &first_set.policy;
        let limits = &policy.circuit_breakers;
        let Some(_active) = destination
            .breakers
            .admit_scoped(Limit::Requests, limits.max_requests)
        else {
            return Err(destination.overflow(Limit::Requests));
        };
        // One clock reading (the request's start) serves the budget, the first
        // pick and the first attempt's latency.
        let started_ns = crate::balance::at(started);
        destination.budget.deposit(started_ns / 1_000_000_000);
        let deadline = request_deadline(policy, request.headers(), grpc, started);

        let http1 = destination.protocol == Protocol::Http1;
        let present = headers::Present::scan(request.headers());
        // A CONNECT becomes a tunnel on a 2xx, an upgrade on a 101; both need an
        // HTTP/1.1 connection of their own on each side.
        let connect = request.method() == Method::CONNECT;
        let upgrade = http1 && (connect || present.upgrade()) && headers::is_upgrade(&request);
        if connect && http1 && !upgrade {
            return Err(ForwardError::Unsupported(
                "CONNECT to an http1 service is tunnelled only from an HTTP/1.1 client",
            ));
        }
        headers::strip_present(request.headers_mut(), present, upgrade);
        let downstream_upgrade = if upgrade {
            request.extensions_mut().remove::<OnUpgrade>()
        } else {
            None
        };
        // The request's version is set per attempt, below: an HTTP/2 request for an
        // HTTP/1 service that goes to an mTLS peer stays HTTP/2 and is not
        // converted twice.
        let marked = present.retryable()
            && request
                .headers_mut()
                .remove(RETRYABLE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let repeatable = !upgrade
            && policy.retries.max_retries > 0
            && (idempotent(request.method()) || marked || (grpc && retries_grpc(policy)));
        let mut pending = Pending::new(request, repeatable);

        let retries = &policy.retries;
        let resilience = destination.metrics.resilience();
        // A request that reached nothing may always move once more.
        let attempts = 1 + retries.max_retries.max(1) as usize;
        let mut failed = [usize::MAX; 12];
        let mut last = Last::None;
        let mut delay_next = false;
        let mut later_set;
        for attempt in 0..attempts.min(failed.len()) {
            if attempt > 0 && !may_retry(destination, policy, attempt, delay_next, deadline).await {
                break;
            }
            let Some(mut attempt_request) = pending.take() else {
                break;
            };
            let (set, attempt_started, now_ns) = if attempt == 0 {
                (&first_set, started, started_ns)
            } else {
                let now = Instant::now();
                later_set = destination.endpoints_full();
                (&later_set, now, crate::balance::at(now))
            };
            let (index, endpoint) = destination
                .pick_at(set, &failed[..attempt], now_ns)
                .ok_or(ForwardError::NoEndpoint)?;
            failed[attempt] = index;
            let in_flight =
                InFlight::begin_at(endpoint, attempt_started, set.picker.uses_latency());
            let endpoint = in_flight.endpoint().clone();
            // Between two proxies speaking mTLS, HTTP/1.1 rides the one multiplexed
            // HTTP/2 connection to the endpoint (ALPN h2); the peer proxy turns it
            // back into HTTP/1.1 for its app. An upgrade keeps a connection of its own.
            let over_h2 =
                !http1 || (!upgrade && endpoint.tls.is_some() && self.cx.tls.holds_certificate());
            match (over_h2, attempt_request.version() == Version::HTTP_2) {
                (true, false) => {
                    headers::to_http2(&mut attempt_request, &endpoint.address.to_string())
                }
                (false, true) => headers::to_http1(&mut attempt_request),
                _ => {}
            }
            let send = async {
                if !over_h2 {
                    attempt::send_http1(
                        &self.cx,
                        destination,
                        policy,
                        &endpoint,
                        attempt_request,
                        upgrade,
                    )
                    .await
                } else {
                    attempt::send_http2(&self.cx, destination, policy, &endpoint, attempt_request)
                        .await
                }
            };
            let try_deadline = earliest(
                deadline,
                retries.per_try_timeout.map(|t| attempt_started + t),
            );
            let sent = match try_deadline {
                Some(at) => match tokio::time::timeout_at(at.into(), send).await {
                    Ok(sent) => sent,
                    Err(_) => {
                        let overall = deadline.is_some_and(|d| at >= d);
                        let error = ForwardError::Timeout(at - started);
                        in_flight.observe_failure();
                        destination.observe(set, &endpoint, false);
                        if attempt > 0 {
                            resilience.retry_failure.increment(1);
                        }
                        if overall || !pending.replayable() {
                            return Err(error);
                        }
                        last = Last::Error(error);
                        delay_next = true;
                        continue;
                    }
                },
                None => send.await,
            };
            match sent {
                Ok(response) => {
                    let now = Instant::now();
                    let status = response.status().as_u16();
                    let grpc_code = grpc_status(response.headers());
                    let failure = status >= 500 || grpc_code == Some(14);
                    match failure {
                        false => in_flight.observe_at(now),
                        true => in_flight.observe_failure_at(now),
                    }
                    destination.observe_at(set, &endpoint, !failure, crate::balance::at(now));
                    if attempt > 0 {
                        match failure {
                            true => resilience.retry_failure.increment(1),
                            false => resilience.retry_success.increment(1),
                        }
                    }
                    if retries.retries_status(status, grpc_code) && pending.replayable() {
                        last = Last::Response(response);
                        delay_next = true;
                        continue;
                    }
                    return Ok(self.respond_upstream(
                        destination,
                        response,
                        downstream_upgrade,
                        started,
                        upgrade,
                        connect,
                    ));
                }
                Err(Failure::NotSent(unsent, error)) => {
                    tracing::debug!(endpoint = %endpoint.address, %error, "not sent; trying again");
                    in_flight.observe_failure();
                    destination.observe(set, &endpoint, false);
                    if attempt > 0 {
                        resilience.retry_failure.increment(1);
                    }
                    let reason = match error {
                        ForwardError::Upstream { .. }
                        | ForwardError::Http1 { .. }
                        | ForwardError::Http2 { .. } => RetryOn::RefusedStream,
                        _ => RetryOn::ConnectFailure,
                    };
                    pending.give_back(*unsent);
                    last = Last::Error(error);
                    if !retries.retries(reason) && retries.max_retries > 0 {
                        break;
                    }
                    delay_next = false;
                }
                Err(Failure::Sent(error)) => {
                    in_flight.observe_failure();
                    destination.observe(set, &endpoint, false);
                    if attempt > 0 {
                        resilience.retry_failure.increment(1);
                    }
                    if !(pending.replayable() && retries.retries(RetryOn::Reset)) {
                        return Err(error);
                    }
                    last = Last::Error(error);
                    delay_next = true;
                }
                Err(Failure::Refused(error)) => return Err(error),
            }
        }
        match last {
            Last::Response(sent) => Ok(self.respond_upstream(
                destination,
                sent,
                downstream_upgrade,
                started,
                upgrade,
                connect,
            )),
            Last::Error(error) => Err(error),
            Last::None => Err(ForwardError::NoEndpoint),
        }
    }

    fn respond_upstream(
        &self,
        destination: &Destination,
        mut response: Sent,
        downstream_upgrade: Option<OnUpgrade>,
        started: Instant,
        upgrade: bool,
        connect: bool,
    ) -> Response<ProxyBody> {
        if let Some(downstream) = downstream_upgrade {
            let status = response.status();
            let tunnel_from_here = match connect {
                true => status.is_success(),
                false => status == StatusCode::SWITCHING_PROTOCOLS,
            };
            if tunnel_from_here {
                tunnel(downstream, hyper::upgrade::on(&mut response));
            }
        }
        respond(destination, response, started, upgrade)
    }
}

/// Whether retry number `attempt` may go ahead: the budget pays for it, and its
/// backoff (after a failure that reached an upstream) ends before the deadline.
async fn may_retry(
    destination: &Destination,
    policy: &Resilience,
    attempt: usize,
    backoff: bool,
    deadline: Option<Instant>,
) -> bool {
    let retries = &policy.retries;
    let paid = destination.budget.withdraw(
        seconds(),
        retries.budget_percent,
        retries.min_retries_per_second,
    );
    if !paid {
        destination
            .metrics
            .resilience()
            .budget_exhausted
            .increment(1);
        return false;
    }
    if backoff {
        let pause = backoff::delay(
            attempt as u32,
            retries.backoff_base,
            retries.backoff_max,
            &mut rand::rng(),
        );
        if deadline.is_some_and(|at| Instant::now() + pause >= at) {
            return false;
        }
        tokio::time::sleep(pause).await;
    }
    true
}

/// Whole seconds since the process epoch, the retry budget's clock.
fn seconds() -> u64 {
    crate::balance::now() / 1_000_000_000
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the whole request must have its response headers: the service's request
/// timeout, shortened by a gRPC client's `grpc-timeout`.
fn request_deadline(
    policy: &Resilience,
    headers: &HeaderMap,
    grpc: bool,
    started: Instant,
) -> Option<Instant> {
    let client = grpc
        .then(|| headers.get(GRPC_TIMEOUT))
        .flatten()
        .and_then(|v| deadline::grpc_timeout(v.as_bytes()));
    let timeout = match (policy.timeouts.request, client) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    timeout.map(|t| started + t.min(Duration::from_secs(365 * 24 * 3600)))
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn retries_grpc(policy: &Resilience) -> bool {
    policy
        .retries
        .retry_on
        .iter()
        .any(|on| matches!(on, RetryOn::Grpc(_)))
}

/// Whether a body may be small enough to record: not one announced larger.
fn fits(body: &ReceivedBody) -> bool {
    body.size_hint().lower() <= MAX_BUFFERED
}

/// The upstream response as sent downstream, counted and observed to its end.
fn respond(
    destination: &Destination,
    response: Response<ReceivedBody>,
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
    };
    Response::from_parts(parts, ProxyBody::upstream(body, completion))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Joins the two upgraded connections (after a 101, or a 2xx to a CONNECT) and
/// copies between them.
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
