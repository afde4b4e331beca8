//! Real upstream servers for the tests: an HTTP server speaking HTTP/1.1 and h2c
//! on one port, and a TCP echo server.
//!
//! HTTP paths: `/` answers the server's name; `/echo` streams the request body
//! (and its trailers) back; `/status/N` answers status N; `/trailers` answers a
//! body followed by trailers; `/headers` lists the request headers it received;
//! `/ws` accepts an upgrade and echoes bytes; `/sink` reads the whole request
//! body before it answers (counting bodies cut short in `aborted`); `/drip`
//! sends ten chunks 100 ms apart. A CONNECT is accepted (200, its
//! target in `x-connect-target`) and echoes bytes, unless its target starts with
//! `refused.` (403). Every response carries `x-upstream: <name>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An HTTP upstream and what it has seen.
#[derive(Clone)]
pub struct HttpUpstream {
    pub addr: SocketAddr,
    pub name: Arc<str>,
    /// Connections currently open to it.
    pub open: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// `/sink` request bodies that failed before their end.
    pub aborted: Arc<AtomicUsize>,
}

impl HttpUpstream {
    pub async fn start(name: &str) -> HttpUpstream {
        Self::start_slow(name, Duration::ZERO).await
    }

    /// Every response waits `delay` first.
    pub async fn start_slow(name: &str, delay: Duration) -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = HttpUpstream {
            addr: listener.local_addr().expect("addr"),
            name: name.into(),
            open: Arc::default(),
            requests: Arc::default(),
            aborted: Arc::default(),
        };
        let server = upstream.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(server.clone().serve(stream, delay));
            }
        });
        upstream
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    async fn serve(self, stream: TcpStream, delay: Duration) {
        self.open.fetch_add(1, Ordering::SeqCst);
        let mut first = [0u8; 3];
        let h2 = matches!(stream.peek(&mut first).await, Ok(3) if &first == b"PRI");
        let this = self.clone();
        let service = service_fn(move |request| {
            let this = this.clone();
            async move {
                this.requests.fetch_add(1, Ordering::SeqCst);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                match request.uri().path() {
                    "/sink" => Ok::<_, Infallible>(this.sink(request).await),
                    "/drip" => Ok(drip()),
                    _ => Ok(this.respond(request)),
                }
            }
        });
        let io = TokioIo::new(stream);
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn respond(&self, mut request: Request<Incoming>) -> Response<Body> {
        let path = match request.method() == Method::CONNECT {
            true => "CONNECT".to_owned(),
            false => request.uri().path().to_owned(),
        };
        let mut response = match path.as_str() {
            "CONNECT" => {
                let target = request.uri().to_string();
                if target.starts_with("refused.") {
                    let mut response = text(format!("{target} refused"));
                    *response.status_mut() = StatusCode::FORBIDDEN;
                    response
                } else {
                    echo_after_upgrade(&mut request);
                    let mut response = Response::new(empty());
                    if let Ok(value) = HeaderValue::from_str(&target) {
                        response.headers_mut().insert("x-connect-target", value);
                    }
                    response
                }
            }
            "/echo" => Response::new(request.into_body().map_err(Into::into).boxed()),
            "/trailers" => {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc"));
                let frames = vec![
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(
                        Bytes::from_static(b"part one, "),
                    )),
                    Ok(Frame::data(Bytes::from_static(b"part two"))),
                    Ok(Frame::trailers(trailers)),
                ];
                let mut response = Response::new(BodyExt::boxed(StreamBody::new(
                    futures::stream::iter(frames),
                )));
                // hyper's HTTP/1 server sends only the trailers announced here.
                response
                    .headers_mut()
                    .insert("trailer", HeaderValue::from_static("x-checksum"));
                response
            }
            "/headers" => {
                let mut listed: Vec<String> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                listed.sort();
                text(listed.join("\n"))
            }
            "/ws" => {
                echo_after_upgrade(&mut request);
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert("connection", HeaderValue::from_static("upgrade"));
                headers.insert("upgrade", HeaderValue::from_static("websocket"));
                response
            }
            // `/fail-if/NAME`: 503 from the upstream of that name, 200 from others.
            other if other.strip_prefix("/fail-if/") == Some(&*self.name) => {
                let mut response = text(format!("{} fails", self.name));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
            }
            other => match other.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
                Some(code) => {
                    let mut response = text(format!("status {code}"));
                    *response.status_mut() =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
                    response
                }
                None => text(self.name.to_string()),
            },
        };
        if let Ok(name) = HeaderValue::from_str(&self.name) {
            response.headers_mut().insert("x-upstream", name);
        }
        response
    }
}

impl HttpUpstream {
    async fn sink(&self, request: Request<Incoming>) -> Response<Body> {
        match request.into_body().collect().await {
            Ok(body) => text(format!("{} bytes", body.to_bytes().len())),
            Err(_) => {
                self.aborted.fetch_add(1, Ordering::SeqCst);
                text("aborted".into())
            }
        }
    }
}

fn drip() -> Response<Body> {
    let chunks = futures::stream::unfold(0, |sent| async move {
        if sent == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frame = Frame::data(Bytes::from(format!("drip {sent}\n")));
        Some((
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frame),
            sent + 1,
        ))
    });
    Response::new(BodyExt::boxed(StreamBody::new(chunks)))
}

/// Echoes bytes on the connection once the response has turned it into a tunnel.
fn echo_after_upgrade(request: &mut Request<Incoming>) {
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
}

fn text(body: String) -> Response<Body> {
    Response::new(Full::new(Bytes::from(body)).map_err(Into::into).boxed())
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(Into::into).boxed()
}

/// A TCP echo server that echoes until the client half-closes, then closes its
/// side: a client that shuts down writing still reads every byte back.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// A port nothing listens on (bound, then released), for connect failures.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}
