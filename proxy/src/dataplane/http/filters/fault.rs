//! `weft.io/Fault` on the data path, as Istio's fault injection: a fixed delay for
//! `delay.percent` of the requests, and an abort for `abort.percent`, each drawn
//! independently per request (a request may be delayed, then aborted). The delay
//! runs before the request goes on; an abort answers it. The delay counts toward
//! the request's timeout, whose clock starts when the request arrives: a delay
//! longer than the service's (or the client's `grpc-timeout`) deadline ends in
//! the proxy's own 504 / `DEADLINE_EXCEEDED`, which is what a test of timeouts
//! wants to see. (Envoy starts its route timeout after its fault filter.)
//!
//! An abort with `httpStatus` is that HTTP status, also to a gRPC client (whose
//! library maps it to a gRPC status, as the gRPC spec says: 503 is `UNAVAILABLE`);
//! with `grpcStatus` it is HTTP 200, trailers-only, with that `grpc-status`, as
//! Envoy answers.
//!
//! **Injected aborts are not retried** by the proxy that injects them: the answer
//! is made here, before forwarding, so it never reaches an upstream, and the
//! forwarder's retry loop never sees it. "Unless asked" means the caller's own
//! retries: the application, or a proxy or gateway in front of this one, may retry
//! the 503 or `UNAVAILABLE` it receives if its own policy says so, as it would any
//! answer (Istio behaves the same way).

use http::{Response, StatusCode};
use weft_proto::model::route::{AbortStatus, Fault};

use crate::metrics::RouteFilterMetrics;

use super::super::body::ProxyBody;
use super::answer;

/// Whether a request falls in the `percent` share, given a uniform draw in
/// `0..100`: exactly `percent` of the draws do.
pub fn chosen(percent: u32, draw: u32) -> bool {
    draw < percent
}

fn draw() -> u32 {
    rand::random_range(0..100)
}

/// Delays the request, or answers it with the abort, or both, as drawn.
pub(super) async fn apply(
    fault: &Fault,
    metrics: &RouteFilterMetrics,
) -> Option<Response<ProxyBody>> {
    if let Some(delay) = &fault.delay {
        if chosen(delay.percent, draw()) {
            metrics.delays.increment(1);
            tokio::time::sleep(delay.delay).await;
        }
    }
    let abort = fault.abort.as_ref()?;
    if !chosen(abort.percent, draw()) {
        return None;
    }
    metrics.aborts.increment(1);
    Some(match abort.status {
        AbortStatus::Http(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            answer(false, status, 0, "fault filter abort")
        }
        AbortStatus::Grpc(code) => answer(true, StatusCode::OK, code.code(), "fault filter abort"),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use weft_proto::model::route::{FaultAbort, FaultDelay};

    #[test]
    fn a_percentage_selects_exactly_that_many_of_the_draws() {
        for percent in [0, 1, 30, 50, 99, 100] {
            let hits = (0..100).filter(|d| chosen(percent, *d)).count();
            assert_eq!(hits, percent as usize);
        }
    }

    #[test]
    fn drawn_shares_land_near_the_percentage() {
        let hits = (0..100_000).filter(|_| chosen(30, draw())).count();
        let share = hits as f64 / 1_000.0;
        assert!((share - 30.0).abs() < 1.0, "{share}");
    }

    fn abort(status: AbortStatus, percent: u32) -> Fault {
        Fault {
            delay: None,
            abort: Some(FaultAbort { status, percent }),
        }
    }

    #[tokio::test]
    async fn an_abort_answers_with_its_status() {
        let metrics = RouteFilterMetrics::new("t/r".into());
        let http = apply(&abort(AbortStatus::Http(503), 100), &metrics)
            .await
            .expect("aborted");
        assert_eq!(http.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!http.headers().contains_key("grpc-status"));
        let code = weft_proto::model::route::GrpcCode::UNAVAILABLE;
        let grpc = apply(&abort(AbortStatus::Grpc(code), 100), &metrics)
            .await
            .expect("aborted");
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
        assert!(apply(&abort(AbortStatus::Http(503), 0), &metrics)
            .await
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_waits_then_lets_the_request_go_on() {
        let metrics = RouteFilterMetrics::new("t/r".into());
        let fault = Fault {
            delay: Some(FaultDelay {
                delay: Duration::from_secs(3),
                percent: 100,
            }),
            abort: None,
        };
        let started = tokio::time::Instant::now();
        assert!(apply(&fault, &metrics).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
