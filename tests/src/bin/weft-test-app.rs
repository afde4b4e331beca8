//! A sample application for the end-to-end and chaos tests: an HTTP/1.1 and h2c
//! server that names itself in every answer and can be told to misbehave.
//!
//! ```text
//! weft-test-app --listen 127.0.0.1:8080 --name users-1
//!               [--fail-ratio 0.5] [--fail-status 503] [--delay-ms 0]
//!               [--unhealthy-file PATH] [--control 127.0.0.1:8081] [--echo true]
//! ```
//! With `--control`, a test switches the app between ways of failing from outside,
//! one line per command on that port, each answered `ok` once in effect:
//! `up` (serve), `down` (stop listening, so connects are refused, and cut every
//! open connection), `fail STATUS` (answer STATUS to every request), `stall`
//! (read requests, never answer). The process stays up throughout, so a switch
//! takes microseconds, not a restart.
//! Every answer carries `x-served-by: NAME` and the body `NAME\n`. A share
//! `--fail-ratio` of the requests (spread evenly, deterministic) gets `--fail-status`
//! instead. `GET /health` answers 200, or 503 while `--unhealthy-file` exists, so a
//! test turns the app's health off and on by creating and removing a file. The line
//! `listening on ADDR` is printed once the socket is bound. `GET /served` answers
//! how many requests (other than these two paths) reached the app, so a test can
//! count upstream attempts.
//!
//! With `--echo true`, an HTTP answer's body is instead the request as the app saw
//! it, in JSON: `{"served_by", "method", "target", "host", "headers": {name:
//! [values]}}` (`target` the path and query, `host` the Host or `:authority`), so
//! a test can check what a proxy changed on the way.
//!
//! A gRPC request (`content-type: application/grpc`, any method) is answered as a
//! unary call: the app's name as the message and `grpc-status: 0` in the trailers,
//! or, for the failing share, a trailers-only `UNAVAILABLE` (14).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

struct App {
    name: String,
    fail_ratio: f64,
    fail_status: StatusCode,
    delay: Duration,
    unhealthy_file: Option<PathBuf>,
    served: AtomicU64,
    /// Set by `--control`: 0 serve, 1 stall, else answer that status to everything.
    forced: AtomicU16,
    /// `--echo`: describe the request in the body.
    echo: bool,
}

const SERVE: u16 = 0;
const STALL: u16 = 1;

impl App {
    /// Whether request number `n` (from 0) is one of the failing share: the failures
    /// fall where `n * ratio` crosses a whole number, so exactly `ratio` of any long
    /// run fails, evenly spread.
    fn fails(&self, n: u64) -> bool {
        (((n + 1) as f64) * self.fail_ratio).floor() > ((n as f64) * self.fail_ratio).floor()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Answer> {
        let path = request.uri().path().to_owned();
        let grpc = request
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let echo = (self.echo && !grpc).then(|| echo(&request));
        // Read the whole body so that uploads are consumed like a real app would.
        let _ = request.into_body().collect().await;
        if path == "/served" {
            let count = self.served.load(Ordering::Relaxed);
            return Response::new(Answer::text(format!("{count}\n")));
        }
        let status = if path == "/health" {
            match &self.unhealthy_file {
                Some(file) if file.exists() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            }
        } else {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let n = self.served.fetch_add(1, Ordering::Relaxed);
            let forced = self.forced.load(Ordering::Relaxed);
            if forced == STALL {
                return std::future::pending().await;
            }
            if let Some(status) = (forced != SERVE)
                .then(|| StatusCode::from_u16(forced).ok())
                .flatten()
            {
                status
            } else if self.fails(n) {
                self.fail_status
            } else {
                StatusCode::OK
            }
        };
        let mut response = if grpc {
            self.grpc_answer(status == StatusCode::OK)
        } else {
            let text = match echo {
                Some(mut echo) => {
                    echo["served_by"] = self.name.clone().into();
                    format!("{echo}\n")
                }
                None => format!("{}\n", self.name),
            };
            let mut response = Response::new(Answer::text(text));
            *response.status_mut() = status;
            response
        };
        if let Ok(value) = self.name.parse() {
            response.headers_mut().insert("x-served-by", value);
        }
        response
    }
}

/// The request as `--echo` describes it.
fn echo(request: &Request<Incoming>) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in request.headers().keys() {
        let values: Vec<serde_json::Value> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    let uri = request.uri();
    let host = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        request
            .headers()
            .get("host")
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
    });
    serde_json::json!({
        "method": request.method().as_str(),
        "target": uri.path_and_query().map_or("/", |p| p.as_str()),
        "host": host,
        "headers": headers,
    })
}

impl App {
    fn grpc_answer(&self, ok: bool) -> Response<Answer> {
        let mut response = if ok {
            // A length-prefixed message (uncompressed), then the status in trailers.
            let mut message = vec![0u8];
            message.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
            message.extend_from_slice(self.name.as_bytes());
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            Response::new(Answer {
                data: Some(Bytes::from(message)),
                trailers: Some(trailers),
            })
        } else {
            let mut response = Response::new(Answer::default());
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from_static("14"));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static("failing on purpose"),
            );
            response
        };
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    }
}

/// A response body: some bytes, then optionally trailers (for gRPC).
#[derive(Default)]
struct Answer {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn text(text: String) -> Answer {
        Answer {
            data: Some(Bytes::from(text)),
            trailers: None,
        }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.data, &self.trailers) {
            (Some(data), None) => hyper::body::SizeHint::with_exact(data.len() as u64),
            (None, None) => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

struct Flags {
    listen: SocketAddr,
    control: Option<SocketAddr>,
}

fn parse(args: Vec<String>) -> anyhow::Result<(Flags, App)> {
    let mut listen = None;
    let mut control = None;
    let mut app = App {
        name: "app".to_owned(),
        fail_ratio: 0.0,
        fail_status: StatusCode::SERVICE_UNAVAILABLE,
        delay: Duration::ZERO,
        unhealthy_file: None,
        served: AtomicU64::new(0),
        forced: AtomicU16::new(SERVE),
        echo: false,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().context("--listen")?),
            "--name" => app.name = value,
            "--fail-ratio" => {
                app.fail_ratio = value.parse().context("--fail-ratio")?;
                if !(0.0..=1.0).contains(&app.fail_ratio) {
                    bail!("--fail-ratio must be within 0..1");
                }
            }
            "--fail-status" => {
                app.fail_status = StatusCode::from_u16(value.parse().context("--fail-status")?)?;
            }
            "--delay-ms" => app.delay = Duration::from_millis(value.parse().context("--delay-ms")?),
            "--unhealthy-file" => app.unhealthy_file = Some(value.into()),
            "--control" => control = Some(value.parse().context("--control")?),
            "--echo" => app.echo = value.parse().context("--echo: true or false")?,
            other => bail!("unknown flag {other}"),
        }
    }
    let listen = listen.context("--listen is required")?;
    Ok((Flags { listen, control }, app))
}

/// Whether the app listens; commands that change it wait here for their `ok`.
type Switch = tokio::sync::mpsc::Sender<(bool, tokio::sync::oneshot::Sender<()>)>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let (flags, app) = parse(std::env::args().skip(1).collect())?;
    let app = Arc::new(app);
    let (switch, mut switches) = tokio::sync::mpsc::channel(1);
    if let Some(control) = flags.control {
        let listener = tokio::net::TcpListener::bind(control)
            .await
            .with_context(|| format!("cannot listen on {control}"))?;
        tokio::spawn(control_loop(listener, app.clone(), switch));
    }
    let mut listener = Some(bind(flags.listen).await?);
    println!("listening on {}", flags.listen);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = async {
            match &listener {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = accepted => {
                let (stream, _) = accepted?;
                connections.spawn(serve(stream, app.clone()));
            }
            Some((up, done)) = switches.recv() => {
                match up {
                    true if listener.is_none() => listener = Some(bind(flags.listen).await?),
                    true => {}
                    false => {
                        listener = None;
                        connections.abort_all();
                        while connections.join_next().await.is_some() {}
                    }
                }
                let _ = done.send(());
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Binds with SO_REUSEADDR, so that listening again right after `down` works.
async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(address)
        .with_context(|| format!("cannot listen on {address}"))?;
    Ok(socket.listen(1024)?)
}

async fn serve(stream: tokio::net::TcpStream, app: Arc<App>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.answer(request).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Serves `--control`: one command per line, `ok` once it is in effect.
async fn control_loop(listener: tokio::net::TcpListener, app: Arc<App>, switch: Switch) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    while let Ok((stream, _)) = listener.accept().await {
        let (app, switch) = (app.clone(), switch.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match command(&line, &app, &switch).await {
                    Ok(()) => "ok\n".to_owned(),
                    Err(e) => format!("error: {e}\n"),
                };
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn command(line: &str, app: &App, switch: &Switch) -> anyhow::Result<()> {
    let mut words = line.split_whitespace();
    let (forced, listening) = match (words.next(), words.next()) {
        (Some("up"), None) => (SERVE, true),
        (Some("down"), None) => (SERVE, false),
        (Some("stall"), None) => (STALL, true),
        (Some("fail"), Some(status)) => {
            let status: u16 = status.parse().context("fail STATUS")?;
            StatusCode::from_u16(status).context("fail STATUS")?;
            (status, true)
        }
        _ => bail!("unknown command {line:?}"),
    };
    app.forced.store(forced, Ordering::Relaxed);
    let (done, applied) = tokio::sync::oneshot::channel();
    switch
        .send((listening, done))
        .await
        .context("the app is gone")?;
    applied.await.context("the app is gone")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(ratio: f64) -> App {
        let (_, mut app) = parse(vec!["--listen".into(), "127.0.0.1:1".into()]).expect("parse");
        app.fail_ratio = ratio;
        app
    }

    #[test]
    fn the_failing_share_is_exact_and_spread() {
        let half = app(0.5);
        let failed: Vec<bool> = (0..6).map(|n| half.fails(n)).collect();
        assert_eq!(failed, [false, true, false, true, false, true]);
        let tenth = app(0.1);
        assert_eq!((0..1000).filter(|&n| tenth.fails(n)).count(), 100);
        assert_eq!((0..50).filter(|&n| app(0.0).fails(n)).count(), 0);
        assert_eq!((0..50).filter(|&n| app(1.0).fails(n)).count(), 50);
    }
}
