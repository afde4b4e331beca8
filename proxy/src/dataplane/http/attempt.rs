//! One attempt of a request on one endpoint: a pooled connection, or a new one
//! within the destination's circuit-breaker limits, then the request sent and the
//! response head back. What came of it ([`Failure`]) tells the forwarder whether
//! the request may go elsewhere, and its error's class whose failure it was: a
//! request body that failed on the client's side is [`ForwardError::Client`]
//! (class `Client`), sent as [`Failure::Sent`]; an upstream that sent nothing for
//! the response inactivity timeout is [`ForwardError::ResponseIdle`] (class
//! `Timeout`), also sent.

use std::sync::Arc;

use http::{Request, Response};
use weft_proto::model::Resilience;

use crate::resilience::breaker::{Limit, Permit};

use super::super::destination::Destination;
use super::super::endpoint::{Endpoint, InFlight};
use super::super::error::ForwardError;
use super::super::Context;
use super::body::{ReceivedBody, RequestBody};
use super::client::Http1Pool;
use super::h1client;
use super::stream::{self, Refusal};

/// A failed attempt: whether the request came back unsent (and may go elsewhere),
/// or was refused before any endpoint was involved. Boxed because failures are
/// rare and the request is large. A `Sent` failure of class `Client` says nothing
/// about the endpoint: it is neither retried nor held against the endpoint.
pub(super) enum Failure {
    NotSent(Box<Request<RequestBody>>, ForwardError),
    Sent(ForwardError),
    Refused(ForwardError),
}

pub(super) type Sent = Response<ReceivedBody>;

/// Sends over a pooled connection, or a new one when none is idle. An upgrade
/// goes over a connection of its own (see [`send_upgrade`]).
pub(super) async fn send_http1(
    cx: &Context,
    destination: &Destination,
    policy: &Resilience,
    attempt: &InFlight,
    mut request: Request<RequestBody>,
    upgrade: bool,
) -> Result<Sent, Failure> {
    let endpoint = attempt.endpoint();
    if upgrade {
        return Box::pin(send_upgrade(cx, destination, policy, endpoint, request)).await;
    }
    let pool = &endpoint.clients.http1;
    let addr = endpoint.address;
    loop {
        let pooled = pool.checkout();
        let reused = pooled.is_some();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let (_pending, permit) = admit_connection(destination, policy)?;
                // Boxed: connecting is rare on a warm pool, and its large future
                // would otherwise bloat every request's state machine.
                match Box::pin(Http1Pool::connect(cx, endpoint, permit)).await {
                    Ok(connection) => {
                        attempt.connected();
                        connection
                    }
                    Err(error) => return Err(Failure::NotSent(Box::new(request), error)),
                }
            }
        };
        let idle = cx.shared.config.response_idle_timeout;
        match h1client::exchange(connection, request, endpoint, idle).await {
            Ok(response) => return Ok(response),
            // A pooled connection failed before any of the request was written:
            // try the next one.
            Err(h1client::Refusal::Unsent(unsent, _)) if reused => request = *unsent,
            Err(h1client::Refusal::Unsent(unsent, source)) => {
                let error = ForwardError::Http1 { addr, source };
                return Err(Failure::NotSent(unsent, error));
            }
            Err(h1client::Refusal::Sent(source)) => {
                return Err(Failure::Sent(http1_error(addr, source)))
            }
        }
    }
}

/// Sends an upgrade request over a new hyper connection, which the tunnel takes
/// over after a 101 response.
async fn send_upgrade(
    cx: &Context,
    destination: &Destination,
    policy: &Resilience,
    endpoint: &Arc<Endpoint>,
    request: Request<RequestBody>,
) -> Result<Sent, Failure> {
    let addr = endpoint.address;
    let (_pending, permit) = admit_connection(destination, policy)?;
    let mut sender = match Http1Pool::connect_upgrade(cx, endpoint, permit).await {
        Ok(sender) => sender,
        Err(error) => return Err(Failure::NotSent(Box::new(request), error)),
    };
    if sender.ready().await.is_err() {
        let error = ForwardError::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        return Err(Failure::NotSent(Box::new(request), error));
    }
    // hyper's client has no inactivity timer of its own: the wait for the answer
    // to an upgrade is bounded whole (once upgraded, a tunnel may idle at will).
    let idle = cx.shared.config.response_idle_timeout;
    let sent = sender.try_send_request(request);
    let answered = match idle.is_zero() {
        true => sent.await,
        false => match tokio::time::timeout(idle, sent).await {
            Ok(answered) => answered,
            Err(_) => {
                return Err(Failure::Sent(ForwardError::ResponseIdle {
                    addr,
                    after: idle,
                }));
            }
        },
    };
    match answered {
        Ok(response) => Ok(response.map(ReceivedBody::Http1)),
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

pub(super) async fn send_http2(
    cx: &Context,
    destination: &Destination,
    policy: &Resilience,
    attempt: &InFlight,
    mut request: Request<RequestBody>,
) -> Result<Sent, Failure> {
    let endpoint = attempt.endpoint();
    let addr = endpoint.address;
    let h2 = &endpoint.clients.http2;
    loop {
        let current = h2.current();
        let reused = current.is_some();
        let connected = match current {
            Some(sender) => Ok(sender),
            None => {
                let (_pending, permit) = admit_connection(destination, policy)?;
                // Boxed: connecting is rare, and its large future would otherwise
                // bloat every request's state machine.
                let connected = Box::pin(h2.connect(cx, endpoint, permit)).await;
                if connected.is_ok() {
                    attempt.connected();
                }
                connected
            }
        };
        let connection = match connected {
            Ok(connection) => connection,
            Err(error) => return Err(Failure::NotSent(Box::new(request), error)),
        };
        let idle = cx.shared.config.response_idle_timeout;
        match stream::exchange(connection.sender.clone(), request, idle).await {
            Ok(response) => return Ok(response.map(ReceivedBody::Http2)),
            // The connection takes no more streams (it is going away or gone):
            // retired, so that this request and the next connect anew.
            Err(Refusal::Unsent(unsent, source)) => {
                connection.retire();
                if reused {
                    request = *unsent;
                    continue;
                }
                let error = ForwardError::Http2 { addr, source };
                return Err(Failure::NotSent(unsent, error));
            }
            Err(Refusal::Sent(source)) => {
                if source.is_go_away() || source.is_io() {
                    connection.retire();
                }
                return Err(Failure::Sent(ForwardError::Http2 { addr, source }));
            }
            Err(Refusal::Client(source)) => {
                return Err(Failure::Sent(ForwardError::Client(source)))
            }
            Err(Refusal::Idle(after)) => {
                return Err(Failure::Sent(ForwardError::ResponseIdle { addr, after }))
            }
        }
    }
}

/// Whose failure an HTTP/1.1 exchange's was: the client's (its request body),
/// a silent upstream's, or the upstream's in any other way.
fn http1_error(addr: std::net::SocketAddr, source: h1client::Error) -> ForwardError {
    match source {
        h1client::Error::Idle(after) => ForwardError::ResponseIdle { addr, after },
        h1client::Error::RequestBody(source) => ForwardError::Client(source),
        source if source.from_client() => ForwardError::Client(Box::new(source)),
        source => ForwardError::Http1 { addr, source },
    }
}

/// Admits a new upstream connection past the pending and connection limits: a
/// permit held by the connection while it lives (`None` for destinations without
/// limits), and a pending permit the request holds while it connects (connecting
/// is the only wait a request has: nothing queues for a pooled connection).
fn admit_connection(
    destination: &Destination,
    policy: &Resilience,
) -> Result<(Option<Permit>, Option<Permit>), Failure> {
    let limits = &policy.circuit_breakers;
    if limits.max_connections == u32::MAX {
        return Ok((None, None));
    }
    let Some(pending) = destination
        .breakers
        .admit(Limit::Pending, limits.max_pending_requests)
    else {
        return Err(Failure::Refused(destination.overflow(Limit::Pending)));
    };
    match destination
        .breakers
        .admit(Limit::Connections, limits.max_connections)
    {
        Some(permit) => Ok((Some(pending), Some(permit))),
        None => Err(Failure::Refused(destination.overflow(Limit::Connections))),
    }
}
