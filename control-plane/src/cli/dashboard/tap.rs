//! The dashboard's live tap: `GET /api/tap` streams, as server-sent events, the
//! requests the chosen proxies serve, read from their admin `/tap` by the streams
//! `weftctl tap` uses ([`crate::cli::tap::stream::spawn`]) and merged.
//!
//! The page chooses proxies as `weftctl tap` does (`namespace`, `service`), or one
//! by its admin address (`proxy`, the per-proxy page); only proxies the dashboard
//! lists can be tapped, so the page cannot point the dashboard anywhere else. The
//! filters (`to`, `path`, `method`) travel to the proxies, which apply them before
//! sending and cap what they send (`max_rps`). Events: `open` (the proxies
//! tapped), a message per request (`{"proxy", "event"}`, the event as the proxy
//! wrote it), `ended` per proxy whose stream ended, `done` when none is left. A
//! page that leaves the view closes the stream: the body is dropped, and with it
//! the proxies' streams (their tasks are aborted).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::state::ProxyView;
use crate::cli::tap::stream::{spawn, Message};
use crate::cli::tap::Filter;

/// What each proxy may send a second for the page: enough to watch, little
/// enough that a busy mesh does not flood a browser.
const MAX_RPS: u32 = 20;

/// A comment line now and then, so that a page gone without closing is noticed
/// (the write fails) even when no request passes.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A proxy the page may tap: one the dashboard lists, not down, with an admin address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub id: String,
    pub admin: String,
    /// `namespace/service`, else the proxy's id.
    pub workload: String,
}

impl Target {
    pub fn of(proxies: &[ProxyView]) -> Vec<Target> {
        proxies
            .iter()
            .filter(|p| p.state != "down" && !p.admin.is_empty())
            .map(|p| Target {
                id: p.id.clone(),
                admin: p.admin.clone(),
                workload: p.workload.clone(),
            })
            .collect()
    }
}

/// `/api/tap`'s query: which proxies, and what of their traffic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub namespace: Option<String>,
    pub service: Option<String>,
    /// One proxy, by its admin address.
    pub proxy: Option<String>,
    pub filter: Filter,
}

impl Query {
    /// Unknown keys and empty values are ignored.
    pub fn parse(query: &str) -> Query {
        let mut parsed = Query {
            filter: Filter {
                max_rps: Some(MAX_RPS),
                ..Filter::default()
            },
            ..Query::default()
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            if value.is_empty() {
                continue;
            }
            match key {
                "namespace" => parsed.namespace = Some(value),
                "service" => parsed.service = Some(value),
                "proxy" => parsed.proxy = Some(value),
                "to" => parsed.filter.service = Some(value),
                "path" => parsed.filter.path = Some(value),
                "method" => parsed.filter.method = Some(value.to_ascii_uppercase()),
                _ => {}
            }
        }
        parsed
    }

    /// The admin addresses to tap, sorted.
    pub fn chosen(&self, targets: &[Target]) -> Vec<String> {
        let wanted = |target: &Target| {
            let (namespace, name) = target.workload.split_once('/').unwrap_or(("", ""));
            self.proxy.as_ref().is_none_or(|p| *p == target.admin)
                && self.namespace.as_ref().is_none_or(|n| n == namespace)
                && self
                    .service
                    .as_ref()
                    .is_none_or(|s| *s == target.workload || s == name)
        };
        let mut chosen: Vec<String> = targets
            .iter()
            .filter(|t| wanted(t))
            .map(|t| t.admin.clone())
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a
/// malformed escape stays as it is.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The event stream of one page's tap: a response body's frames, ending when
/// every proxy's stream has, and stopping them all when dropped.
pub struct Events {
    received: mpsc::Receiver<Message>,
    /// Aborted on drop: a page gone stops its proxies' streams.
    _tasks: JoinSet<()>,
    heartbeat: tokio::time::Interval,
    /// The first frame: which proxies are tapped.
    opening: Option<Bytes>,
    open: usize,
}

impl Events {
    /// Starts tapping `proxies`; `token` is their `--tap-token`.
    pub fn start(proxies: Vec<String>, query: &Query, token: Option<&str>) -> Events {
        let (received, tasks) = spawn(&proxies, &query.filter.query(), token);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.reset();
        Events {
            received,
            _tasks: tasks,
            heartbeat,
            opening: Some(opening(&proxies)),
            open: proxies.len(),
        }
    }
}

/// The first frame: which proxies are tapped, and with none, that it is over
/// (a stream that just ended would have the page's EventSource reconnect).
fn opening(proxies: &[String]) -> Bytes {
    let open = event("open", &json!({ "proxies": proxies }));
    match proxies.is_empty() {
        true => [open, event("done", &json!({}))].concat().into(),
        false => open,
    }
}

/// One server-sent event (`name` empty: a plain message).
fn event(name: &str, data: &Value) -> Bytes {
    let name = match name {
        "" => String::new(),
        name => format!("event: {name}\n"),
    };
    Bytes::from(format!("{name}data: {data}\n\n"))
}

/// A stream of body frames, for [`http_body_util::StreamBody`].
impl Stream for Events {
    type Item = Result<Frame<Bytes>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Some(Ok(Frame::data(opening))));
        }
        loop {
            if self.open == 0 {
                return Poll::Ready(None);
            }
            match self.received.poll_recv(cx) {
                Poll::Ready(Some(Message::Line(proxy, line))) => {
                    // Only what parses goes to the page: a JSON object per line.
                    let Ok(event @ Value::Object(_)) = serde_json::from_slice::<Value>(&line)
                    else {
                        continue;
                    };
                    let data = json!({ "proxy": proxy, "event": event });
                    return Poll::Ready(Some(Ok(Frame::data(self::event("", &data)))));
                }
                Poll::Ready(Some(Message::Ended(proxy, ended))) => {
                    self.open -= 1;
                    let error = ended.err().unwrap_or_default();
                    let mut frame =
                        event("ended", &json!({ "proxy": proxy, "error": error })).to_vec();
                    if self.open == 0 {
                        frame.extend_from_slice(&event("done", &json!({})));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        match self.heartbeat.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": \n\n"))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests;
