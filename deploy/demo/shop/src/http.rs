//! The HTTP/1.1 plumbing the JSON services share: a tiny server loop with a router
//! shape, JSON replies, and a pooled keep-alive client for calling other services.
//!
//! Nothing here knows about Weft. The one mesh-facing convention is the
//! `weft-retryable: true` request header, which a caller sets on a call that is safe to
//! repeat; the sidecar may then retry it even after the request was sent.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::propagate;

/// The header that tells the mesh a request may be retried after it was sent.
pub const RETRYABLE: HeaderName = HeaderName::from_static("weft-retryable");
/// The header every response carries: the replica that answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
/// The header that makes `POST /orders` safe to repeat.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The largest request body a service reads.
const MAX_BODY: usize = 64 * 1024;

/// Every call a service or the shopper makes gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A request with its body already read: handlers are plain functions of this.
pub struct ShopRequest {
    pub method: Method,
    /// The path split on `/` without empty parts: `/carts/7/items` is `["carts", "7", "items"]`,
    /// so a handler routes with one `match` on `(method, segments)`.
    pub segments: Vec<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ShopRequest {
    /// The segments as `&str`s, the shape a `match` wants.
    pub fn route(&self) -> (&Method, Vec<&str>) {
        (
            &self.method,
            self.segments.iter().map(String::as_str).collect(),
        )
    }

    /// The body as JSON, or the 400 reply to send back (boxed: a reply is large next
    /// to the value).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Box<Reply>> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("bad JSON body: {e}"),
            ))
        })
    }
}

pub type Reply = Response<Full<Bytes>>;

/// A JSON reply.
pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    // Serializing our own plain structs cannot fail; fall back to an empty body anyway
    // rather than panic.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// A JSON error reply: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A 502 naming the upstream that failed, so a caller (or a human reading the shopper's
/// log) knows which hop broke.
pub fn upstream_error(upstream: &str, detail: impl std::fmt::Display) -> Reply {
    tracing::warn!("call to {upstream} failed: {detail}");
    json(
        StatusCode::BAD_GATEWAY,
        &serde_json::json!({ "error": format!("{upstream}: {detail}"), "upstream": upstream }),
    )
}

/// A reply without a body (204, for example).
pub fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

/// A JSON service: one method from a request to a reply. Failures are replies too
/// (4xx / 502), so a handler has nothing to propagate and nothing to panic about.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: ShopRequest) -> impl std::future::Future<Output = Reply> + Send;
}

/// Serves `handler` over HTTP/1.1 on `listener` until SIGTERM or Ctrl-C, stamping every
/// response with `x-served-by: replica`. On the signal it stops accepting, lets requests
/// in flight finish (closing idle keep-alive connections at once) and returns after at
/// most [`crate::SHUTDOWN_GRACE`].
pub async fn serve<H: Handler>(listener: TcpListener, replica: String, handler: H) {
    let handler = Arc::new(handler);
    let replica = HeaderValue::from_str(&replica).unwrap_or(HeaderValue::from_static("unknown"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, for example: keep serving the others.
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let handler = handler.clone();
        let replica = replica.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            let replica = replica.clone();
            async move {
                let mut reply = match read(request).await {
                    Ok(request) => {
                        let context = propagate::extract(&request.headers);
                        propagate::within(context, handler.handle(request)).await
                    }
                    Err(reply) => reply,
                };
                reply.headers_mut().insert(SERVED_BY, replica);
                Ok::<_, Infallible>(reply)
            }
        });
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            // A client that goes away mid-request is normal; not worth a log line.
            tokio::select! {
                _ = &mut connection => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(crate::SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(
            "{} connections still busy after {:?}, closing them",
            connections.len(),
            crate::SHUTDOWN_GRACE
        );
    }
}

async fn read(request: Request<Incoming>) -> Result<ShopRequest, Reply> {
    let (parts, body) = request.into_parts();
    // The shop's bodies are a few hundred bytes; a bound keeps a bad client from
    // making a service buffer without end.
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("bodies are at most {MAX_BODY} bytes"),
                )
            } else {
                error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    Ok(ShopRequest {
        method: parts.method,
        segments: parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        headers: parts.headers,
        body,
    })
}

/// Binds `--listen` with a clear error (address in use, bad address) instead of a panic,
/// and prints `listening on ADDR` on stdout: with port 0, that is how a caller learns
/// the port (the tests do, rather than pick a free port that something else may take
/// before the server binds it).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {bound}")?;
    stdout.flush()?;
    Ok(listener)
}

/// Why a call to another service got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no response within {}s", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Transport(String),
    #[error("bad request URL {0:?}")]
    Url(String),
}

/// An HTTP response from another service, body read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| CallError::Transport(format!("bad JSON in the response: {e}")))
    }

    /// The first 200 bytes of the body on one line, for a log line.
    pub fn excerpt(&self) -> String {
        let end = self.body.len().min(200);
        let text = String::from_utf8_lossy(&self.body[..end]);
        text.trim().replace(|c: char| c.is_control(), " ")
    }

    /// Which replica answered (`x-served-by`), if the upstream said.
    pub fn served_by(&self) -> Option<&str> {
        self.headers.get(SERVED_BY).and_then(|v| v.to_str().ok())
    }
}

/// A client for one upstream service, `http://HOST:PORT`: the application just calls the
/// service's address; whether that is a VIP captured by iptables or a sidecar's port is
/// the mesh's business.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    // The legacy client keeps idle connections per host, so calls reuse them (HTTP/1.1
    // keep-alive) instead of paying a connect each time.
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub fn new(base: &str) -> Self {
        Upstream {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
        }
    }

    /// A GET; always safe to repeat, so it is marked retryable.
    pub async fn get(&self, path: &str) -> Result<Answer, CallError> {
        self.send(Method::GET, path, Bytes::new(), &[(RETRYABLE, "true")])
            .await
    }

    /// A POST with a JSON body and extra headers (the caller decides whether it is
    /// retryable).
    pub async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        headers: &[(HeaderName, &str)],
    ) -> Result<Answer, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        self.send(Method::POST, path, Bytes::from(body), headers)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(HeaderName, &str)],
    ) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let mut request = request
            .body(Full::new(body))
            .map_err(|_| CallError::Url(url))?;
        propagate::inject(request.headers_mut());
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError::Transport(describe(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| CallError::Timeout)?
    }
}

/// The client error with its causes ("client error (Connect): connection refused"), as
/// the top level alone says little.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
