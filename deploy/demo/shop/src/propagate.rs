//! Trace context propagation, which every app in a mesh owes its traces: the
//! sidecars record a span per hop, but only the app knows which outgoing calls
//! serve which incoming request. So while a service handles a request, the
//! request's `traceparent`/`tracestate` and B3 headers are kept in a task-local,
//! and every call it makes meanwhile (HTTP or gRPC) carries them on. Nothing is
//! parsed or changed: the sidecars do that.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers of W3C Trace Context and B3 (single and multi).
const CONTEXT: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The incoming request's trace headers, in the order they came.
pub type Context = Vec<(HeaderName, HeaderValue)>;

tokio::task_local! {
    static INCOMING: Context;
}

/// The trace headers of an incoming request.
pub fn extract(headers: &HeaderMap) -> Context {
    let mut context = Context::new();
    for name in CONTEXT {
        for value in headers.get_all(name) {
            context.push((HeaderName::from_static(name), value.clone()));
        }
    }
    context
}

/// Runs `handling` (one request's handler) with `context` as what its calls carry.
pub async fn within<F: std::future::Future>(context: Context, handling: F) -> F::Output {
    INCOMING.scope(context, handling).await
}

/// Adds the handled request's trace headers to an outgoing call's; outside a
/// handler (the shopper), there are none to add.
pub fn inject(headers: &mut HeaderMap) {
    let _ = INCOMING.try_with(|context| {
        for (name, value) in context {
            headers.append(name.clone(), value.clone());
        }
    });
}
