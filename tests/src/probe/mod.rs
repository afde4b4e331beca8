//! A differential probe of an HTTP/1.1 proxy's edge: request-smuggling and
//! malformed-message cases sent as raw bytes to the proxy, in front of a
//! [`recorder`] upstream that parses what arrives with a [`strict`] parser.
//!
//! # Layout
//! - [`cases`]: the case library; each case is bytes to send, the readings of
//!   them that RFC 9112 allows (the requests the client sent), and what the client
//!   may see ([`Expect`]).
//! - [`client`]: the raw client side.
//! - [`recorder`]: the upstream, and the misbehaviours a request can ask it for.
//! - [`strict`]: the recorder's parser.
//! - `verdict`: what one case's outcome means.
//!
//! [`run`] sends every case (several at once: each carries its own tag `/tNNN/`
//! in every request target, so the recorder's requests can be told apart), and
//! the verdict checks the rules that hold for every proxy: nothing reaches the
//! upstream that the client did not send as one request, nothing a strict server
//! would refuse reaches it, no response reaches a client it was not meant for,
//! slow and stalled peers are cut off within the timeouts, and the proxy stays up.

pub mod cases;
pub mod client;
pub mod recorder;
pub mod strict;
mod verdict;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use client::{Patience, Seen};
use recorder::Recorder;
pub use verdict::{escape, summary, unattributed};
use verdict::{judge, Observed};

/// What the client does, in order, on one connection.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    /// Reads until this many responses arrived (or the proxy closed).
    Await(usize),
    /// Sends the bytes one at a time, this far apart, until the proxy closes.
    Drip(Vec<u8>, Duration),
}

/// A request as the client sent it (under one reading of the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    /// Origin-form; an absolute-form target forwarded is compared by its path.
    pub target: String,
    pub body: Vec<u8>,
    /// The Host the upstream must see.
    pub host: String,
}

/// Which of the proxy's timeouts ends a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Between requests, and while a request head arrives.
    Idle,
    /// While a request body arrives.
    RequestBody,
    /// While the upstream's response is awaited.
    ResponseIdle,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub request_body: Duration,
    pub response_idle: Duration,
    /// What a close may come later than its timeout.
    pub margin: Duration,
}

impl Timeouts {
    pub fn of(&self, timeout: Timeout) -> Duration {
        let timeout = match timeout {
            Timeout::Idle => self.idle,
            Timeout::RequestBody => self.request_body,
            Timeout::ResponseIdle => self.response_idle,
        };
        timeout + self.margin
    }
}

/// What the client may see, beyond the rules every case keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every request of the (only) reading forwarded, each answered 200.
    Forwarded,
    /// Nothing forwarded; a 4xx (or 501, 505) or a close.
    Refused,
    /// Nothing forwarded; this status first.
    RefusedWith(u16),
    /// Forwarded as one of the readings (whole or a prefix, the rest refused).
    RefusedOrForwarded,
    /// The upstream's answer is broken: no 2xx reaches the client, a 5xx or a close does.
    BadGateway,
    /// The upstream's answer is odd but readable: the client gets it with at most
    /// one framing field, or a 502.
    Normalised,
    /// The client's connection (and the upstream one its request held) closed
    /// within the timeout.
    ClosedWithin(Timeout),
    /// A 5xx or a close within the timeout, and the upstream connection closed.
    GatewayTimeout(Timeout),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The number in the `/tNNN/` tag of its request targets.
    pub tag: u32,
    pub steps: Vec<Step>,
    /// The ways RFC 9112 lets a recipient read the bytes; none: nothing may be
    /// forwarded.
    pub readings: Vec<Vec<Req>>,
    pub expect: Expect,
    /// RFC 9112 wants the connection closed after the response (both framing
    /// fields, `Connection: close`).
    pub must_close: bool,
}

impl Case {
    /// The timeout that ends this case, if it is a stall.
    pub fn stall(&self) -> Option<Timeout> {
        match self.expect {
            Expect::ClosedWithin(t) | Expect::GatewayTimeout(t) => Some(t),
            _ => None,
        }
    }

    /// Every byte the client sends, for reports.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for step in &self.steps {
            if let Step::Send(b) | Step::Drip(b, _) = step {
                bytes.extend_from_slice(b);
            }
        }
        bytes
    }

    fn most_requests(&self) -> usize {
        self.readings.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The probe tags (`/tNNN/`, see [`cases`]) anywhere in `bytes`.
pub fn tags(bytes: &[u8]) -> BTreeSet<u32> {
    bytes
        .windows(6)
        .filter(|w| w[0] == b'/' && w[1] == b't' && w[5] == b'/')
        .filter_map(|w| std::str::from_utf8(&w[2..5]).ok()?.parse().ok())
        .collect()
}

/// The proxy under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// Its `/live` address, asked after every case.
    pub live: Option<SocketAddr>,
}

/// What one case saw, and what is wrong with it (nothing: it passed).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seen: Seen,
    pub forwarded: usize,
    pub problems: Vec<String>,
}

/// Runs the cases against `target`, `parallel` at a time, and judges them.
pub fn run(
    cases: &[Case],
    target: &Target,
    recorder: &Recorder,
    timeouts: &Timeouts,
    parallel: usize,
) -> Vec<Outcome> {
    // Connections an earlier run opened (to another proxy) are not this run's.
    let earlier = recorder.connections().len();
    let next = AtomicUsize::new(0);
    let observed: Mutex<Vec<Option<Observed>>> = Mutex::new(cases.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(index) else { return };
                let (seen, connection) = observe(case, target, timeouts);
                let upstream_open = match case.stall() {
                    Some(_) => upstream_still_open(recorder, earlier, case.tag, timeouts.margin),
                    None => 0,
                };
                drop(connection);
                let live = target.live.is_none_or(live);
                let mut all = observed.lock().unwrap_or_else(|p| p.into_inner());
                all[index] = Some(Observed {
                    seen,
                    live,
                    upstream_open,
                });
            });
        }
    });
    let connections = recorder.connections().split_off(earlier);
    let observed = observed.into_inner().unwrap_or_else(|p| p.into_inner());
    cases
        .iter()
        .zip(observed)
        .map(|(case, observed)| {
            let observed = observed.unwrap_or(Observed {
                seen: Seen::default(),
                live: false,
                upstream_open: 0,
            });
            judge(case, observed, &connections, timeouts)
        })
        .collect()
}

fn observe(case: &Case, target: &Target, timeouts: &Timeouts) -> (Seen, Option<TcpStream>) {
    let want = case.most_requests().max(1);
    let patience = Patience {
        settle: Duration::from_millis(150),
        quiet: Duration::from_millis(1000),
        close_within: case.stall().map(|t| timeouts.of(t)),
        want_only: matches!(case.expect, Expect::GatewayTimeout(_)),
    };
    client::exchange(target.addr, &case.steps, want, &patience)
}

/// How many upstream connections still hold this case's request once `margin`
/// has passed.
fn upstream_still_open(recorder: &Recorder, earlier: usize, tag: u32, margin: Duration) -> usize {
    let deadline = Instant::now() + margin;
    loop {
        let open = recorder
            .connections()
            .iter()
            .skip(earlier)
            .filter(|c| c.closed.is_none() && c.busy_with.contains(&tag))
            .count();
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn live(admin: SocketAddr) -> bool {
    matches!(crate::http_get(admin, "/live"), Ok((200, _)))
}
