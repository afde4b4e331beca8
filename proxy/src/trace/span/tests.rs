use std::time::Instant;

use http::{HeaderValue, Request};
use weft_proto::model::Sampling;

use super::*;
use crate::metrics::{Direction, ServiceMetrics};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(sampling: Sampling) -> (Tracer, tokio::sync::mpsc::Receiver<SpanData>) {
    let (queue, spans) = Queue::detached(1);
    (Tracer::new(sampling, queue), spans)
}

fn request(headers: &[(&'static str, &str)]) -> Request<()> {
    let mut request = Request::builder()
        .method("POST")
        .uri("/shop.v1.Products/GetProduct")
        .header("host", "products.shop:8080");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).expect("a request")
}

fn begin_with(tracer: &Tracer, request: &mut Request<()>, grpc: bool) -> Option<Box<Span>> {
    let metrics = ServiceMetrics::new(Direction::Outbound, "shop/products".to_owned());
    begin(
        tracer,
        request,
        Side::Client,
        &metrics,
        Instant::now(),
        grpc,
    )
}

#[test]
fn a_sampled_caller_gets_a_child_span_and_the_next_hop_this_one() {
    let (tracer, mut spans) = tracer(Sampling::NONE);
    let mut request = request(&[("traceparent", CALLER), ("tracestate", "vendor=1")]);
    let span = begin_with(&tracer, &mut request, true).expect("the caller sampled");
    let sent = request.headers()["traceparent"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_eq!(&sent[..36], &CALLER[..36], "same version and trace");
    assert_eq!(&sent[52..], "-01");
    assert_ne!(&sent[36..52], &CALLER[36..52], "a span of its own");
    assert_eq!(request.headers()["tracestate"], "vendor=1");

    span.finish(200, Some(0));
    let data = spans.try_recv().expect("queued");
    assert_eq!(data.span_kind, SpanKind::Client);
    assert_eq!(
        format!("{:016x}", data.span_context.span_id()),
        &sent[36..52]
    );
    assert_eq!(format!("{:016x}", data.parent_span_id), &CALLER[36..52]);
    assert_eq!(data.name, "shop.v1.Products/GetProduct");
    let attribute = |key: &str| {
        data.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("rpc.method").as_deref(), Some("GetProduct"));
    assert_eq!(
        attribute("server.address").as_deref(),
        Some("products.shop")
    );
    assert_eq!(attribute("server.port").as_deref(), Some("8080"));
    assert_eq!(attribute("rpc.grpc.status_code").as_deref(), Some("0"));
}

#[test]
fn a_declining_caller_is_passed_on_untouched_and_costs_no_span() {
    let (tracer, _spans) = tracer(Sampling::ALL);
    let declined = CALLER.replace("-01", "-00");
    let mut request = request(&[("traceparent", &declined)]);
    assert!(begin_with(&tracer, &mut request, false).is_none());
    assert_eq!(request.headers()["traceparent"], declined.as_str());
}

#[test]
fn a_root_not_drawn_passes_untouched() {
    let (tracer, _spans) = tracer(Sampling::NONE);
    let mut request = request(&[]);
    assert!(begin_with(&tracer, &mut request, false).is_none());
    assert!(request.headers().get("traceparent").is_none());
}

#[test]
fn a_broken_traceparent_starts_a_new_trace_without_its_tracestate() {
    let (tracer, _spans) = tracer(Sampling::ALL);
    let mut request = request(&[
        ("traceparent", &CALLER.to_uppercase()),
        ("tracestate", "vendor=1"),
    ]);
    let span = begin_with(&tracer, &mut request, false).expect("drawn");
    assert_eq!(span.parent_id, 0, "a root");
    let sent = request.headers()["traceparent"].to_str().expect("text");
    assert!(!sent.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(request.headers().get("tracestate").is_none());
}

#[test]
fn b3_multi_in_is_b3_multi_out() {
    let (tracer, _spans) = tracer(Sampling::NONE);
    let mut request = request(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]);
    let span = begin_with(&tracer, &mut request, false).expect("the caller sampled");
    let headers = request.headers();
    assert!(headers.get("traceparent").is_none());
    assert_eq!(headers["x-b3-traceid"], "a3ce929d0e0e4736");
    assert_eq!(headers["x-b3-parentspanid"], "e457b5a2e4d86bd1");
    assert_eq!(
        headers["x-b3-spanid"],
        HeaderValue::from_str(&format!("{:016x}", span.span_id)).expect("hex")
    );
    assert_eq!(span.trace_id, 0xa3ce929d0e0e4736);
}

#[test]
fn a_full_queue_drops_the_span_and_the_request_goes_on() {
    let (tracer, mut spans) = tracer(Sampling::ALL);
    for _ in 0..3 {
        let span = begin_with(&tracer, &mut request(&[]), false).expect("drawn");
        span.finish(503, None);
    }
    let first = spans.try_recv().expect("one fits");
    assert!(matches!(first.status, Status::Error { .. }));
    assert!(spans.try_recv().is_err(), "the others were dropped");
}

#[test]
fn grpc_paths_split_into_service_and_method() {
    assert_eq!(
        rpc("/shop.v1.Products/Get"),
        Some(("shop.v1.Products", "Get"))
    );
    assert_eq!(rpc("/nomethod"), None);
    assert_eq!(rpc("/a/b/c"), None);
}

#[test]
fn errors_as_the_conventions_count_them() {
    let error = |side, status, grpc| matches!(status_of(side, status, grpc), Status::Error { .. });
    assert!(error(Side::Server, 503, None));
    assert!(!error(Side::Server, 404, None));
    assert!(error(Side::Client, 404, None));
    assert!(error(Side::Client, 200, Some(5)));
    assert!(!error(Side::Server, 200, Some(5)));
    assert!(error(Side::Server, 200, Some(14)));
    assert!(!error(Side::Client, 200, Some(0)));
}
