//! The `weftctl tap` loop: one streaming `GET /tap` per proxy, each on a task of
//! its own ([`spawn`], which the dashboard's tap view uses too), their lines merged
//! into one channel and printed as they come, until
//! `count` events or Ctrl-C. A proxy that refuses or cannot be reached is named
//! on stderr and the others go on; when none is left, the tap ends.

use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{render, Filter};
use crate::cli::client::CliError;
use crate::cli::top::scrape::{connect, AbortOnDrop};

/// An event line is a few hundred bytes; a proxy sending more without a newline
/// is not a tap.
const MAX_LINE: usize = 64 * 1024;

/// How long connecting to a proxy and getting its answer's head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    /// Each proxy's lines as they are.
    Json,
}

pub struct Options {
    pub filter: Filter,
    /// Events to print; `None`: until Ctrl-C.
    pub count: Option<u64>,
    pub output: Output,
    /// Sent as `Authorization: Bearer`: what a proxy's `--tap-token` asks of a
    /// client not on its loopback.
    pub token: Option<String>,
}

/// What a proxy's stream task sends: a line, or why the proxy's stream ended.
pub enum Message {
    Line(String, Bytes),
    Ended(String, Result<(), String>),
}

/// One task per proxy streaming its `GET {path}` into the returned channel, each
/// ending with a [`Message::Ended`]; dropping the set stops them. `weftctl tap`
/// and the dashboard's tap view both read their taps from here.
pub fn spawn(
    proxies: &[String],
    path: &str,
    token: Option<&str>,
) -> (mpsc::Receiver<Message>, JoinSet<()>) {
    let (sender, received) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    for proxy in proxies {
        let (proxy, path, token, sender) = (
            proxy.clone(),
            path.to_owned(),
            token.map(str::to_owned),
            sender.clone(),
        );
        tasks.spawn(async move {
            let ended = tap(&proxy, &path, token.as_deref(), &sender).await;
            let _ = sender.send(Message::Ended(proxy, ended)).await;
        });
    }
    (received, tasks)
}

/// Taps every proxy in `proxies` (admin addresses) until `count` events, Ctrl-C,
/// or every stream ended. An error only when no proxy could be tapped at all.
pub async fn run(proxies: Vec<String>, options: Options) -> Result<(), CliError> {
    if proxies.is_empty() {
        return Err(CliError::Input("no proxy to tap".to_owned()));
    }
    let path = options.filter.query();
    let (mut received, _tasks) = spawn(&proxies, &path, options.token.as_deref());
    let mut printed = 0;
    let mut open = proxies.len();
    let mut failures = Vec::new();
    let mut stdout = std::io::stdout().lock();
    loop {
        let message = tokio::select! {
            message = received.recv() => message,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match message {
            Some(Message::Line(proxy, line)) => {
                let text = match options.output {
                    Output::Json => String::from_utf8_lossy(&line).into_owned(),
                    Output::Text => match serde_json::from_slice(&line) {
                        Ok(event) => render(&proxy, &event),
                        Err(_) => continue,
                    },
                };
                // A closed stdout (`| head`) ends the tap.
                if writeln!(stdout, "{}", text.trim_end())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(());
                }
                printed += 1;
                if options.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            Some(Message::Ended(proxy, ended)) => {
                open -= 1;
                if let Err(error) = ended {
                    eprintln!("weftctl: tap {proxy}: {error}");
                    failures.push(format!("{proxy}: {error}"));
                }
                if open == 0 {
                    break;
                }
            }
            None => break,
        }
    }
    match failures.len() == proxies.len() {
        true => Err(CliError::Input(format!(
            "no proxy could be tapped ({})",
            failures.join("; ")
        ))),
        false => Ok(()),
    }
}

/// Streams one proxy's `/tap` into `sender`, line by line, until it ends.
async fn tap(
    proxy: &str,
    path: &str,
    token: Option<&str>,
    sender: &mpsc::Sender<Message>,
) -> Result<(), String> {
    let response = tokio::time::timeout(CONNECT_TIMEOUT, request(proxy, path, token))
        .await
        .map_err(|_| format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))??;
    let (mut body, _driver) = response;
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading /tap: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(at + 1).freeze();
            // An empty line is the proxy's heartbeat.
            if line.len() == 1 {
                continue;
            }
            if sender
                .send(Message::Line(proxy.to_owned(), line))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
    }
    Ok(())
}

/// The body of an accepted `GET {path}`, and the task driving its connection
/// (aborted when dropped).
async fn request(
    proxy: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(hyper::body::Incoming, AbortOnDrop), String> {
    let (mut sender, driver) = connect(proxy).await?;
    let mut request = http::Request::get(path).header(http::header::HOST, proxy);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET /tap: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let text = body.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
        return Err(format!("{status}: {}", text.unwrap_or_default()));
    }
    Ok((response.into_body(), driver))
}
