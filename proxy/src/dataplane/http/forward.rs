//! One request, forwarded: admit it past the circuit breakers, pick an endpoint
//! (nearest locality, ejected endpoints avoided), send over a pooled connection
//! within the per-try and request timeouts, and stream the response back.
//!
//! What happens after each attempt is the failover rule's to say
//! ([`failover::decide`], DESIGN.md decision 8): the request *moves* to another
//! endpoint when nothing of it reached an upstream (connecting failed, a stream was
//! refused, a pooled connection was closed before the request was written), spending
//! only the failover bound; it is *retried* when it may be repeated (an idempotent
//! method, a `weft-retryable: true` header, or gRPC on a service that retries gRPC
//! codes) and its body, at most [`MAX_BUFFERED`], was recorded to its end while the
//! first attempt streamed it: then a reset, a per-try timeout or a status the service
//! retries on is sent again, paid by the retry budget after a jittered backoff.
//! Recording never delays the first attempt (Linkerd buffers the same way). This
//! module only carries the rule out: it sends, waits, and feeds back.
//!
//! Before any of that, the service's routes may send the request to another
//! service ([`routing`]), and the rule that chose it may answer it itself or change
//! it ([`filters`]); its timeouts and retries then stand in for the service's
//! ([`InForce`]), which costs a request no route chose nothing.
//!
//! While someone taps ([`crate::tap`]), or when the request is drawn into its
//! service's access log ([`crate::access_log`]), what the request was goes with
//! its response as a [`Record`] and is finished when the response ends; while
//! neither, that costs two relaxed loads. A sampled request's span
//! ([`crate::trace`]) travels the same way; a service that does not trace costs
//! another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use hyper::body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use weft_proto::model::route::InForce;
use weft_proto::model::Protocol;

use crate::access_log::line::Flags;
use crate::metrics::{Direction, ServiceMetrics};
use crate::record::{Attempted, Readers, Record};
use crate::resilience::breaker::Limit;
use crate::resilience::failover::{self, Feedback, Next, Outcome, Progress};
use crate::resilience::{backoff, deadline};
use crate::trace::{self, Span};

use super::super::destination::Destination;
use super::super::endpoint::InFlight;
use super::super::error::{rescue, Class, ForwardError};
use super::super::Context;
use super::attempt::{self, Failure, Sent};
use super::body::{
    grpc_status, Buffered, Completion, ProxyBody, ReceivedBody, Recording, RequestBody,
};
use super::debug;
use super::filters;
use super::headers::{self, strip_hop_by_hop};
use super::routing;
use super::Route;

/// The largest request body recorded so that the request can be retried.
pub const MAX_BUFFERED: u64 = 64 * 1024;

/// Attempts of one request at most, moves and retries together (`maxRetries` is
/// at most 10, and moves are bounded by the endpoints left untried).
const MAX_ATTEMPTS: usize = 12;

/// The request header by which a client marks a non-idempotent request safe to
/// repeat; removed before forwarding.
const RETRYABLE: HeaderName = HeaderName::from_static("weft-retryable");

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// What [`Handler::forward`] needs to know of a request besides the request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    pub started: Instant,
    pub grpc: bool,
}

/// What records a request as it goes, to learn which attempt ended it: its
/// record while someone taps or it is logged, a sampled request's span.
#[derive(Default)]
pub(super) struct Records<'a> {
    pub record: Option<&'a mut Record>,
    pub span: Option<&'a mut Span>,
}

/// Handles the requests of one downstream connection.
pub struct Handler {
    cx: Arc<Context>,
    route: Route,
    /// The client's address and the one it reached, for access log lines.
    downstream: Option<(SocketAddr, SocketAddr)>,
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

impl Handler {
    pub fn new(
        cx: Arc<Context>,
        route: Route,
        downstream: Option<(SocketAddr, SocketAddr)>,
    ) -> Handler {
        Handler {
            cx,
            route,
            downstream,
        }
    }

    pub async fn handle(&self, mut request: Request<ReceivedBody>) -> Response<ProxyBody> {
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
        // The tracing of the service the caller addressed (a route may choose another).
        let tracer = destination.tracer();
        let chosen = match routing::select(&self.cx, destination, &request) {
            Ok(chosen) => chosen,
            Err((error, destination)) => {
                destination.metrics.requests.increment(1);
                let mut response = rescue(&error, &destination.metrics, grpc);
                // No rule matched, or the rule has no backend: the parent
                // service's log says so (NR, NC).
                let mut record = self.record(&request, &destination, &destination.metrics, started);
                if let Some(record) = &mut record {
                    record.flag(Flags::of(error.class()));
                }
                carry(&mut response, record);
                return response;
            }
        };
        let destination = chosen.destination;
        let metrics = match &self.route {
            // The connection's handles, labelled with its caller's identity.
            Route::Inbound { metrics, .. } => metrics,
            _ => chosen.metrics.as_ref().unwrap_or(&destination.metrics),
        };
        metrics.requests.increment(1);
        let mut record = self.record(&request, &destination, metrics, started);
        if let Some(record) = &mut record {
            record.measure(request.body_mut());
        }
        let mut span = match &tracer {
            Some(tracer) => self.span(tracer, &mut request, metrics, started, grpc),
            None => None,
        };
        if let Route::Inbound { caller, .. } = &self.route {
            if let Err(denied) = self.cx.registry.authorize(caller) {
                tracing::debug!(policy = %denied.policy, caller = ?caller.identity, "request denied");
                metrics.duration.record(started.elapsed().as_secs_f64());
                let mut response = rescue(&ForwardError::Denied, metrics, grpc);
                carry(&mut response, record);
                end_span(&mut response, span);
                return response;
            }
        }
        let rule = chosen.rule.as_ref();
        let answer = match rule {
            // Boxed: its state (a fault's timer, a mirror's copy) would otherwise
            // be part of every request's future, routed or not, and moved with it.
            Some(rule) => Box::pin(filters::on_request(&self.cx, rule, &mut request, grpc)).await,
            None => None,
        };
        let mut response = match answer {
            // A filter answered: nothing is forwarded.
            Some(answer) => {
                if let (Some(record), Some(message)) =
                    (&mut record, answer.headers().get("weft-proxy-error"))
                {
                    record.flag(Flags::of_filter_answer(message.as_bytes()));
                }
                metrics.response(answer.status().as_u16(), grpc_status(answer.headers()));
                metrics.duration.record(started.elapsed().as_secs_f64());
                answer
            }
            None => {
                let version = request.version();
                match self
                    .forward(
                        &destination,
                        metrics,
                        request,
                        Arrival { started, grpc },
                        rule,
                        Records {
                            record: record.as_deref_mut(),
                            span: span.as_deref_mut(),
                        },
                    )
                    .await
                {
                    Ok(mut response) => {
                        // The downstream connection's version, whatever the upstream spoke.
                        *response.version_mut() = version;
                        response
                    }
                    Err(error) => {
                        metrics.duration.record(started.elapsed().as_secs_f64());
                        if let Some(record) = &mut record {
                            record.flag(Flags::of(error.class()));
                        }
                        rescue(&error, metrics, grpc)
                    }
                }
            }
        };
        if let Some(rule) = rule {
            filters::on_response(rule, &mut response);
        }
        if self.cx.settings.debug_headers {
            debug::name_choice(response.headers_mut(), &destination, rule);
        }
        carry(&mut response, record);
        end_span(&mut response, span);
        response
    }

    /// Decides whether the request records a span and writes the context it
    /// carries on (only for a service that traces).
    #[cold]
    fn span(
        &self,
        tracer: &trace::Tracer,
        request: &mut Request<ReceivedBody>,
        metrics: &ServiceMetrics,
        started: Instant,
        grpc: bool,
    ) -> Option<Box<Span>> {
        let side = match &self.route {
            Route::Inbound { .. } => trace::Side::Server,
            _ => trace::Side::Client,
        };
        trace::span::begin(tracer, request, side, metrics, started, grpc)
    }

    /// The request's record, when someone taps or it is drawn into its
    /// destination's access log; else `None`, having allocated nothing.
    #[inline]
    fn record(
        &self,
        request: &Request<ReceivedBody>,
        destination: &Destination,
        metrics: &ServiceMetrics,
        started: Instant,
    ) -> Option<Box<Record>> {
        let tapped = self.cx.shared.tap.is_tapped();
        let logged = destination.logs_one();
        if !(tapped || logged) {
            return None;
        }
        Some(self.new_record(request, metrics, started, tapped, logged))
    }

    #[cold]
    fn new_record(
        &self,
        request: &Request<ReceivedBody>,
        metrics: &ServiceMetrics,
        started: Instant,
        tapped: bool,
        logged: bool,
    ) -> Box<Record> {
        let shared = &self.cx.shared;
        let caller = match &self.route {
            Route::Inbound { caller, .. } => caller.identity.as_ref().map(ToString::to_string),
            _ => None,
        };
        let own = (shared.identity.current()).map(|own| own.spiffe_id.to_string());
        let readers = Readers {
            tap: tapped.then(|| shared.tap.clone()),
            log: logged.then(|| shared.access_log.clone()),
            downstream: self.downstream,
        };
        Box::new(Record::new(readers, request, metrics, caller, own, started))
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

    /// Forwards to `destination` (no route selection, no filters): the request
    /// path after the filters, and a mirrored copy's whole path.
    pub(super) async fn forward(
        &self,
        destination: &Destination,
        metrics: &Arc<ServiceMetrics>,
        mut request: Request<ReceivedBody>,
        arrival: Arrival,
        rule: Option<&routing::Matched>,
        records: Records<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let Arrival { started, grpc } = arrival;
        // The set as the request arrives: its policy applies to the whole request,
        // and the first attempt picks from it; a retry loads the set again.
        let first_set = destination.endpoints_full();
        let policy = &first_set.policy;
        // The timeouts and retries in force: the service's, or for a request a
        // route rule chose, the rule's where it sets them (borrowed, not copied).
        let in_force = match rule {
            Some(rule) => rule.in_force(policy),
            None => InForce::service(policy),
        };
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
        let deadline = request_deadline(&in_force, request.headers(), grpc, started);

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
            && in_force.max_retries() > 0
            && (idempotent(request.method()) || marked || (grpc && in_force.retries_grpc()));
        let mut pending = Pending::new(request, repeatable);

        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut last: Option<Result<Sent, ForwardError>> = None;
        let mut retried = 0;
        // The endpoint of the attempt that ended the request (moved here, not cloned).
        let mut answered = None;
        let mut later_set;
        for attempt in 0..MAX_ATTEMPTS {
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
                .pick_at(set, &tried[..attempt], now_ns)
                .ok_or(ForwardError::NoEndpoint)?;
            tried[attempt] = index;
            let in_flight = InFlight::begin_at(endpoint, now_ns, set.picker.uses_latency());
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
                        &in_flight,
                        attempt_request,
                        upgrade,
                    )
                    .await
                } else {
                    attempt::send_http2(&self.cx, destination, policy, &in_flight, attempt_request)
                        .await
                }
            };
            let try_deadline = earliest(
                deadline,
                in_force.per_try_timeout().map(|t| attempt_started + t),
            );
            let sent = match try_deadline {
                Some(at) => tokio::time::timeout_at(at.into(), send)
                    .await
                    .map_err(|_| (at, deadline.is_some_and(|d| at >= d))),
                None => Ok(send.await),
            };
            let (outcome, result) = match sent {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let grpc = grpc_status(response.headers());
                    (Outcome::Answered { status, grpc }, Ok(response))
                }
                Ok(Err(Failure::NotSent(unsent, error))) => {
                    tracing::debug!(endpoint = %endpoint.address, %error, "not sent");
                    pending.give_back(*unsent);
                    (unsent_outcome(&error), Err(error))
                }
                Ok(Err(Failure::Sent(error))) => (sent_outcome(&error), Err(error)),
                Ok(Err(Failure::Refused(error))) => (Outcome::Overflow, Err(error)),
                Err((at, overall)) => {
                    let outcome = match overall {
                        true => Outcome::Expired,
                        false => Outcome::TriedTooLong,
                    };
                    (outcome, Err(ForwardError::Timeout(at - started)))
                }
            };
            let progress = Progress {
                replayable: pending.replayable(),
                retries: retried,
                untried: set.endpoints.len().saturating_sub(attempt + 1),
            };
            let verdict = failover::decide(outcome, &in_force, progress);
            destination.feedback(set, &in_flight, verdict.feedback, crate::balance::now());
            if attempt > 0 {
                let resilience = destination.metrics.resilience();
                match verdict.feedback {
                    Feedback::Success => resilience.retry_success.increment(1),
                    _ => resilience.retry_failure.increment(1),
                }
            }
            let go_on = match verdict.next {
                Next::Respond => false,
                Next::Move => may_move(destination),
                Next::Retry => may_retry(destination, &in_force, retried + 1, deadline).await,
            };
            last = Some(result);
            answered = Some(endpoint);
            if !go_on {
                break;
            }
            retried += u32::from(verdict.next == Next::Retry);
        }
        let (Some(result), Some(endpoint)) = (last, answered) else {
            return Err(ForwardError::NoEndpoint);
        };
        if let Some(record) = records.record {
            let failed = result
                .as_ref()
                .map_or(true, |r| r.status().is_server_error());
            if retried > 0 && failed {
                record.flag(Flags::URX);
            }
            record.attempted(Attempted {
                endpoint: endpoint.address,
                identity: endpoint.tls.as_ref().map(ToString::to_string),
                retries: retried,
                answered_after: started.elapsed(),
            });
        }
        if let Some(span) = records.span {
            span.attempted(endpoint.address, retried);
        }
        // The answering endpoint's identity labels the response (`metrics::peers`).
        let metrics = match &endpoint.peer {
            Some(peer) => metrics.for_peer(peer),
            None => metrics,
        };
        self.finish(
            metrics,
            result,
            downstream_upgrade,
            started,
            upgrade,
            connect,
        )
    }

    /// The client's answer from the attempt that ended the request: the upstream's
    /// response, or the error the rescue table turns into one.
    fn finish(
        &self,
        metrics: &Arc<ServiceMetrics>,
        result: Result<Sent, ForwardError>,
        downstream_upgrade: Option<OnUpgrade>,
        started: Instant,
        upgrade: bool,
        connect: bool,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let response = result?;
        Ok(self.respond_upstream(
            metrics,
            response,
            downstream_upgrade,
            started,
            upgrade,
            connect,
        ))
    }

    fn respond_upstream(
        &self,
        metrics: &Arc<ServiceMetrics>,
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
        respond(metrics, response, started, upgrade)
    }
}

/// Whether retry number `retry` may go ahead: the budget pays for it, and its
/// backoff ends before the deadline (then it has waited the backoff).
async fn may_retry(
    destination: &Destination,
    in_force: &InForce<'_>,
    retry: u32,
    deadline: Option<Instant>,
) -> bool {
    // The budget is the service's, whatever a rule says: it bounds what retries
    // cost the service as a whole.
    let retries = &in_force.resilience().retries;
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
    let pause = backoff::delay(
        retry,
        in_force.backoff_base(),
        in_force.backoff_max(),
        &mut rand::rng(),
    );
    if deadline.is_some_and(|at| Instant::now() + pause >= at) {
        return false;
    }
    tokio::time::sleep(pause).await;
    true
}

/// Whether a move (nothing was sent; another endpoint gets the request) may go
/// ahead: it spends no retry budget, only the failover bound.
fn may_move(destination: &Destination) -> bool {
    let resilience = destination.metrics.resilience();
    let moved = destination.budget.withdraw_move(
        seconds(),
        failover::MOVE_BUDGET_PERCENT,
        failover::MOVE_FLOOR_PER_SECOND,
    );
    match moved {
        true => resilience.moves.increment(1),
        false => resilience.moves_bounded.increment(1),
    }
    moved
}

/// What a failure before anything was sent says: a failed connect (refused, timed
/// out, a failed TLS or HTTP/2 handshake) means the endpoint cannot be reached; a
/// refused stream or a connection closed before the write means it was reached
/// but took nothing.
fn unsent_outcome(error: &ForwardError) -> Outcome {
    match error.class() {
        Class::Connect | Class::ConnectTimeout => Outcome::Unreachable,
        _ => Outcome::Refused,
    }
}

/// What a failure after the request (or part of it) was sent says: the client's
/// own (its body broke off or was malformed), an upstream that fell silent for the
/// response inactivity timeout (as a per-try timeout), or a broken connection.
fn sent_outcome(error: &ForwardError) -> Outcome {
    match error {
        ForwardError::Client(_) => Outcome::ClientFailed,
        ForwardError::ResponseIdle { .. } => Outcome::TriedTooLong,
        _ => Outcome::Reset,
    }
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

/// When the whole request must have its response headers: the request timeout in
/// force (the service's or its rule's), shortened by a gRPC client's `grpc-timeout`.
fn request_deadline(
    in_force: &InForce<'_>,
    headers: &HeaderMap,
    grpc: bool,
    started: Instant,
) -> Option<Instant> {
    let client = grpc
        .then(|| headers.get(GRPC_TIMEOUT))
        .flatten()
        .and_then(|v| deadline::grpc_timeout(v.as_bytes()));
    let timeout = match (in_force.request_timeout(), client) {
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

/// Whether a body may be small enough to record: not one announced larger.
fn fits(body: &ReceivedBody) -> bool {
    body.size_hint().lower() <= MAX_BUFFERED
}

/// The upstream response as sent downstream, counted and observed to its end.
fn respond(
    metrics: &Arc<ServiceMetrics>,
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
        metrics.response(status, status_in_headers);
    }
    let completion = Completion {
        metrics: metrics.clone(),
        started,
        status,
        grpc_pending,
        record: None,
        span: None,
    };
    Response::from_parts(parts, ProxyBody::upstream(body, completion))
}

/// Carries a recorded request with its response, to be finished when it ends.
fn carry(response: &mut Response<ProxyBody>, record: Option<Box<Record>>) {
    if let Some(mut record) = record {
        record.set_grpc_status(grpc_status(response.headers()));
        let status = response.status().as_u16();
        response.body_mut().record(record, status);
    }
}

/// Ends a sampled request's span with its response (when the response ends).
fn end_span(response: &mut Response<ProxyBody>, span: Option<Box<Span>>) {
    if let Some(mut span) = span {
        span.set_grpc_status(grpc_status(response.headers()));
        let status = response.status().as_u16();
        response.body_mut().trace(span, status);
    }
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
