//! `RequestMirror` on the data path: a fire-and-forget copy of `percent` of a
//! rule's requests to another service. The copy goes through the mirror service's
//! own destination (its endpoints, balancer, resilience and metrics), on a task of
//! its own: the client's request never waits for it, its response is read to the
//! end and dropped, and its failure (a dead or unknown mirror) changes nothing for
//! the client.
//!
//! Bounds, so that a slow or dead mirror cannot cost the real traffic more than a
//! little memory:
//! - at most [`MAX_IN_FLIGHT`] copies in flight per proxy; a copy beyond that is
//!   not sent (counted as dropped, reason `limit`);
//! - a copy lives at most [`DEADLINE`], its response included;
//! - a body in hand (none, or a small HTTP/1.1 body the server read whole) is
//!   shared with the copy; one still streaming (gRPC calls, HTTP/2 bodies, larger
//!   HTTP/1.1 uploads) is teed as the real request sends it ([`super::tee`]) and
//!   the copy leaves once it has ended: the client's upload never waits on the
//!   mirror. A body over [`tee::LIMIT`] (64 KiB), or one that fails or is never
//!   sent, is not mirrored (dropped, reason `body`). Upgrades and CONNECT are not
//!   mirrored either (there is no copy of a tunnel).
//!
//! As Envoy and Istio do, the copy's Host (`:authority`) gets a `-shadow` suffix on
//! its host part (`orders.shop:80` becomes `orders.shop-shadow:80`), so the mirror's
//! logs and metrics can tell copies from real traffic. Copies are sent only for
//! requests that go on to be forwarded: one a later filter answers (an abort, a
//! rate limit) is not mirrored, as in Envoy, where mirroring is the router's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::oneshot;
use weft_proto::model::route::RequestMirror;

use crate::metrics::RouteFilterMetrics;

use super::super::super::error::rescue;
use super::super::super::Context;
use super::super::body::ReceivedBody;
use super::super::forward::{Arrival, Handler, Records};
use super::super::Route;
use super::tee::{self, Tee};

/// Copies in flight per proxy at most.
pub const MAX_IN_FLIGHT: usize = 256;

/// How long a copy may take, its response included.
pub const DEADLINE: Duration = Duration::from_secs(10);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place among the copies in flight, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The body a copy carries: in hand already, or the real request's once it has
/// streamed through the tee.
enum CopyBody {
    Ready(ReceivedBody),
    Streaming(oneshot::Receiver<Bytes>),
}

/// Sends a copy of `request` to the mirror when the draw falls in its share; a
/// body still streaming is teed (`request`'s body is wrapped).
pub(super) fn send(
    cx: &Arc<Context>,
    mirror: &RequestMirror,
    request: &mut Request<ReceivedBody>,
    metrics: &Arc<RouteFilterMetrics>,
    grpc: bool,
) {
    if !super::fault::chosen(mirror.percent, rand::random_range(0..100)) {
        return;
    }
    let tunnel = request.method() == Method::CONNECT
        || request.headers().contains_key(http::header::UPGRADE);
    let too_large = request.body().size_hint().lower() > tee::LIMIT as u64;
    if tunnel || too_large {
        metrics.mirrors_body_streaming.increment(1);
        return;
    }
    let destination = cx
        .registry
        .routes()
        .by_service(&mirror.service, mirror.port)
        .cloned();
    let Some(destination) = destination else {
        metrics.mirrors_no_service.increment(1);
        return;
    };
    let Some(slot) = Slot::take() else {
        metrics.mirrors_over_limit.increment(1);
        return;
    };
    let head = shadow_head(request);
    let body = copy_body(request);
    if matches!(body, CopyBody::Ready(_)) {
        metrics.mirrored.increment(1);
    }
    let handler = Handler::new(cx.clone(), Route::Fixed(destination.clone()), None);
    let route_metrics = metrics.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let metrics = &destination.metrics;
        let exchange = async {
            let body = match body {
                CopyBody::Ready(body) => body,
                CopyBody::Streaming(copied) => match copied.await {
                    Ok(bytes) => {
                        route_metrics.mirrored.increment(1);
                        match bytes.is_empty() {
                            true => ReceivedBody::Empty,
                            false => ReceivedBody::Whole(Some(bytes)),
                        }
                    }
                    Err(_) => {
                        route_metrics.mirrors_body_streaming.increment(1);
                        return;
                    }
                },
            };
            metrics.requests.increment(1);
            let copy = head.map(|()| body);
            let arrival = Arrival {
                started: Instant::now(),
                grpc,
            };
            match handler
                .forward(
                    &destination,
                    metrics,
                    copy,
                    arrival,
                    None,
                    Records::default(),
                )
                .await
            {
                Ok(response) => {
                    let mut body = response.into_body();
                    while let Some(Ok(_)) = body.frame().await {}
                }
                Err(error) => drop(rescue(&error, metrics, grpc)),
            }
        };
        if tokio::time::timeout(DEADLINE, exchange).await.is_err() {
            tracing::debug!(service = metrics.service(), "mirrored request timed out");
        }
    });
}

/// The body for the copy: a clone of one in hand, else a tee put in the real
/// request's place.
fn copy_body(request: &mut Request<ReceivedBody>) -> CopyBody {
    match request.body() {
        ReceivedBody::Whole(Some(bytes)) => {
            return CopyBody::Ready(ReceivedBody::Whole(Some(bytes.clone())))
        }
        body if body.is_end_stream() => return CopyBody::Ready(ReceivedBody::Empty),
        _ => {}
    }
    let inner = std::mem::replace(request.body_mut(), ReceivedBody::Empty);
    let (tee, copied) = Tee::new(inner);
    *request.body_mut() = ReceivedBody::Teed(Box::new(tee));
    CopyBody::Streaming(copied)
}

/// The copy's head: the request's, its host marked `-shadow`.
fn shadow_head(request: &Request<ReceivedBody>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = request.method().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.uri_mut() = request.uri().clone();
    if let Some(authority) = request.uri().authority() {
        let shadowed = Authority::try_from(shadow(authority.as_str()))
            .ok()
            .and_then(|authority| {
                let mut parts = request.uri().clone().into_parts();
                parts.authority = Some(authority);
                Uri::from_parts(parts).ok()
            });
        if let Some(uri) = shadowed {
            *copy.uri_mut() = uri;
        }
    }
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| HeaderValue::from_str(&shadow(h)).ok());
    if let Some(host) = host {
        copy.headers_mut().insert(http::header::HOST, host);
    }
    copy
}

/// `host[:port]` with `-shadow` after the host part (an IPv6 literal keeps its
/// brackets: `[::1]-shadow:80`, which is what Envoy sends too).
pub fn shadow(authority: &str) -> String {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        match authority.rfind(':') {
            // One colon followed by digits is a port; more colons, a bare IPv6 host.
            Some(colon) if !authority[..colon].contains(':') => colon,
            _ => authority.len(),
        }
    };
    let (host, port) = authority.split_at(host_end);
    format!("{host}-shadow{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_shadow_suffix_goes_on_the_host_part() {
        assert_eq!(shadow("orders.shop"), "orders.shop-shadow");
        assert_eq!(shadow("orders.shop:8080"), "orders.shop-shadow:8080");
        assert_eq!(shadow("10.0.0.1:80"), "10.0.0.1-shadow:80");
        assert_eq!(shadow("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow("[::1]"), "[::1]-shadow");
    }

    #[test]
    fn the_copy_has_the_head_and_a_body_in_hand_or_teed() {
        let mut request = Request::new(ReceivedBody::Empty);
        request
            .headers_mut()
            .insert("host", HeaderValue::from_static("web.shop:80"));
        request
            .headers_mut()
            .insert("x-trace", HeaderValue::from_static("1"));
        let head = shadow_head(&request);
        assert_eq!(head.headers()["host"], "web.shop-shadow:80");
        assert_eq!(head.headers()["x-trace"], "1");
        assert!(matches!(
            copy_body(&mut request),
            CopyBody::Ready(ReceivedBody::Empty)
        ));

        let mut whole = Request::post("http://web.shop/items")
            .body(ReceivedBody::Whole(Some(Bytes::from_static(b"{}"))))
            .expect("request");
        assert_eq!(shadow_head(&whole).uri(), "http://web.shop-shadow/items");
        let copied = copy_body(&mut whole);
        assert!(matches!(copied, CopyBody::Ready(ReceivedBody::Whole(Some(b))) if b == "{}"));
        assert!(matches!(whole.body(), ReceivedBody::Whole(Some(_))));
    }

    #[test]
    fn copies_in_flight_are_bounded() {
        let slots: Vec<Slot> = std::iter::from_fn(Slot::take)
            .take(MAX_IN_FLIGHT + 1)
            .collect();
        assert!(slots.len() <= MAX_IN_FLIGHT);
        drop(slots);
        assert!(Slot::take().is_some());
    }
}
