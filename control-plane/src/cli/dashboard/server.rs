//! The dashboard's HTTP server: the page's three files, compiled into weftctl so
//! that it works offline (no CDN, no framework), `/api/state`, the latest
//! [`super::state::View`] as JSON, and `/api/tap`, the live tap's event stream
//! ([`super::tap`]). GET and HEAD only; it binds loopback unless told otherwise, as
//! `linkerd viz dashboard` does, since it shows (and taps) the whole mesh.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tap::{Events, Query, Target};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// What the server answers from, published by the dashboard's rounds.
#[derive(Clone)]
pub struct Sources {
    /// The latest view's JSON.
    pub state: watch::Receiver<Arc<Bytes>>,
    /// The proxies the latest view lists, which the tap view may tap.
    pub targets: watch::Receiver<Arc<Vec<Target>>>,
    /// The proxies' `--tap-token`, for a dashboard not on their loopback.
    pub tap_token: Option<Arc<str>>,
}

type Body = Either<Full<Bytes>, StreamBody<Events>>;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, sources: Sources) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "dashboard accept");
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&request, &sources);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "dashboard connection");
            }
        });
    }
}

fn answer(request: &Request<Incoming>, sources: &Sources) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(INDEX.as_bytes()),
        ),
        "/app.js" => reply(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            Bytes::from_static(SCRIPT.as_bytes()),
        ),
        "/style.css" => reply(
            StatusCode::OK,
            "text/css; charset=utf-8",
            Bytes::from_static(STYLE.as_bytes()),
        ),
        "/api/state" => {
            let json = sources.state.borrow().clone();
            reply(StatusCode::OK, "application/json", (*json).clone())
        }
        "/api/tap" => tap(request, sources),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    }
}

/// The tap view's event stream, from the proxies the query chooses.
fn tap(request: &Request<Incoming>, sources: &Sources) -> Response<Body> {
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let chosen = query.chosen(&sources.targets.borrow());
    let events = Events::start(chosen, &query, sources.tap_token.as_deref());
    let mut response = Response::new(Either::Right(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    // The state changes every round; the page is small enough to fetch each time.
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
