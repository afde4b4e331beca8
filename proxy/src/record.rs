//! What the proxy records of one HTTP request for those who read it request by
//! request: a tap ([`crate::tap`]) and the access log ([`crate::access_log`]).
//!
//! A [`Record`] is built when the request arrives, only while someone taps or when
//! the request is drawn into its service's access log share, so a request neither
//! wants allocates nothing. It travels with the response
//! ([`crate::dataplane::http::body`]), and at the response's end becomes a tap
//! [`Event`] and/or an access log [`Line`], from the same facts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderName, Request, Version};
use hyper::body::Body;

use crate::access_log::line::{Flags, Line};
use crate::access_log::Writer;
use crate::dataplane::http::body::{Measured, ReceivedBody};
use crate::metrics::ServiceMetrics;
use crate::tap::event::{rfc3339, Event};
use crate::tap::Hub;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The attempt that ended a forwarded request: where it went and after how many
/// retries. Set by the forwarder, only on a recorded request.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub endpoint: SocketAddr,
    /// The endpoint's SPIFFE ID: then a proxy that holds a certificate dials it
    /// with mTLS.
    pub identity: Option<String>,
    pub retries: u32,
    /// From the request's arrival to the response headers of this attempt.
    pub answered_after: std::time::Duration,
}

/// Who wants the record, and what they learnt of the connection.
pub struct Readers {
    pub tap: Option<Arc<Hub>>,
    pub log: Option<Arc<Writer>>,
    /// The client's address and the address it reached, for the access log.
    pub downstream: Option<(SocketAddr, SocketAddr)>,
}

/// A recorded request on its way: what was known when it arrived, and what the
/// forwarder and the response add.
pub struct Record {
    readers: Readers,
    started: Instant,
    arrived: SystemTime,
    direction: &'static str,
    inbound: bool,
    /// The caller's identity inbound (over mTLS), this proxy's outbound.
    source: Option<String>,
    /// This proxy's identity, inbound (for the access log's destination).
    own: Option<String>,
    service: String,
    route: String,
    method: String,
    authority: String,
    /// With the query string.
    path_and_query: String,
    version: Version,
    /// Request headers only the access log shows.
    logged: Option<Box<LoggedHeaders>>,
    /// The request body's length when it was known on arrival.
    bytes_received: u64,
    /// Else its bytes as they are read ([`Record::measure`]).
    measured: Option<Arc<AtomicU64>>,
    /// Inbound: whether the caller came in over mTLS; outbound: from [`Attempted`].
    tls: bool,
    /// A gRPC status the response headers carried (a trailers-only response).
    grpc_status: Option<u16>,
    /// `None` when the proxy answered itself, before any attempt.
    attempted: Option<Attempted>,
    flags: Flags,
    bytes_sent: u64,
    /// Set by [`Record::finish`]; a record dropped without it is a request given up
    /// before its response began.
    finished: bool,
}

impl Drop for Record {
    /// The request's future was dropped before a response existed: the client went
    /// away (a reset stream, a closed connection). Envoy logs such a request with
    /// `DC` and no status; so does the access log. Taps see finished requests only.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.flags.insert(Flags::DC);
        self.emit(0, None, false);
    }
}

struct LoggedHeaders {
    forwarded_for: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
}

impl Record {
    /// `caller`: the caller's identity, inbound; `own`: this proxy's.
    pub fn new<B: Body>(
        readers: Readers,
        request: &Request<B>,
        metrics: &ServiceMetrics,
        caller: Option<String>,
        own: Option<String>,
        started: Instant,
    ) -> Record {
        let authority = crate::dataplane::http::headers::authority(request).unwrap_or("");
        let inbound = metrics.direction() == crate::metrics::Direction::Inbound.as_str();
        let header = |name| {
            let value = request.headers().get(name)?;
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        let logged = readers.log.as_ref().map(|_| {
            Box::new(LoggedHeaders {
                forwarded_for: header(FORWARDED_FOR),
                user_agent: header(http::header::USER_AGENT),
                request_id: header(REQUEST_ID),
            })
        });
        let (source, own) = match inbound {
            true => (caller, own),
            false => (own, None),
        };
        Record {
            readers,
            started,
            arrived: SystemTime::now(),
            direction: metrics.direction(),
            inbound,
            tls: inbound && source.is_some(),
            source,
            own,
            service: metrics.service().to_owned(),
            route: metrics.route().to_owned(),
            method: request.method().as_str().to_owned(),
            authority: authority.to_owned(),
            path_and_query: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            version: request.version(),
            logged,
            bytes_received: request.body().size_hint().exact().unwrap_or(0),
            measured: None,
            grpc_status: None,
            attempted: None,
            flags: Flags::default(),
            bytes_sent: 0,
            finished: false,
        }
    }

    /// Counts the bytes of a logged request's body whose length was not declared
    /// (a streamed gRPC call, a chunked upload) as they are read.
    pub fn measure(&mut self, body: &mut ReceivedBody) {
        if self.readers.log.is_none() || body.size_hint().exact().is_some() {
            return;
        }
        let bytes = Arc::new(AtomicU64::new(0));
        let inner = std::mem::replace(body, ReceivedBody::Empty);
        *body = ReceivedBody::Measured(Box::new(Measured {
            inner,
            bytes: bytes.clone(),
        }));
        self.measured = Some(bytes);
    }

    pub fn attempted(&mut self, hop: Attempted) {
        self.attempted = Some(hop);
    }

    /// The gRPC status of the response headers (trailers-only responses).
    pub fn set_grpc_status(&mut self, status: Option<u16>) {
        self.grpc_status = status;
    }

    pub fn flag(&mut self, flags: Flags) {
        self.flags.insert(flags);
    }

    /// Response body bytes sent on to the client.
    pub fn sent(&mut self, bytes: u64) {
        self.bytes_sent += bytes;
    }

    /// Hands the finished request to its readers. `grpc_status`: from the trailers.
    pub fn finish(mut self, status: u16, grpc_status: Option<u16>) {
        self.finished = true;
        self.emit(status, grpc_status, true);
    }

    /// `tapped`: whether the taps get it too (they see finished requests only).
    fn emit(&self, status: u16, grpc_status: Option<u16>, tapped: bool) {
        let hop = self.attempted.as_ref();
        let grpc_status = grpc_status.or(self.grpc_status);
        let tls = match (self.inbound, hop) {
            (false, Some(hop)) => hop.identity.is_some() && self.source.is_some(),
            _ => self.tls,
        };
        let path = match self.path_and_query.split_once('?') {
            Some((path, _)) => path,
            None => &self.path_and_query,
        };
        let latency = self.started.elapsed();
        if let Some(hub) = self.readers.tap.as_ref().filter(|_| tapped) {
            hub.publish(&Event {
                time: rfc3339(SystemTime::now()),
                direction: self.direction,
                source: self.source.as_deref(),
                service: &self.service,
                endpoint: hop.map(|h| h.endpoint.to_string()),
                method: &self.method,
                authority: &self.authority,
                path,
                status,
                grpc_status,
                latency_ms: latency.as_secs_f64() * 1000.0,
                retries: hop.map_or(0, |h| h.retries),
                route: &self.route,
                tls,
            });
        }
        let Some(log) = &self.readers.log else {
            return;
        };
        let logged = self.logged.as_deref();
        let header =
            |pick: fn(&LoggedHeaders) -> &Option<String>| logged.and_then(|l| pick(l).as_deref());
        let destination_identity = match self.inbound {
            true => self.own.as_deref(),
            false => hop.and_then(|h| h.identity.as_deref()),
        };
        let (remote, local) = self.readers.downstream.unzip();
        let line = Line {
            start_time: &rfc3339(self.arrived),
            method: Some(&self.method),
            path: Some(&self.path_and_query),
            protocol: protocol(self.version),
            response_code: status,
            response_flags: &self.flags.render(),
            bytes_received: self
                .measured
                .as_ref()
                .map_or(self.bytes_received, |m| m.load(Ordering::Relaxed)),
            bytes_sent: self.bytes_sent,
            duration: latency.as_millis() as u64,
            upstream_service_time: hop.map(|h| h.answered_after.as_millis() as u64),
            x_forwarded_for: header(|l| &l.forwarded_for),
            user_agent: header(|l| &l.user_agent),
            request_id: header(|l| &l.request_id),
            authority: Some(&self.authority)
                .filter(|a| !a.is_empty())
                .map(|a| a.as_str()),
            upstream_host: hop.map(|h| h.endpoint),
            upstream_cluster: &self.service,
            route_name: Some(self.route.as_str()).filter(|r| !r.is_empty()),
            downstream_remote_address: remote,
            downstream_local_address: local,
            direction: self.direction,
            grpc_status,
            retries: hop.map_or(0, |h| h.retries),
            tls,
            source_identity: self.source.as_deref(),
            destination_identity,
        };
        log.write(line.to_bytes());
    }
}

pub fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
