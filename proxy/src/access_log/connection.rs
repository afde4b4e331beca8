//! The access log line of an opaque TCP connection: one at its close, with its
//! bytes each way, its duration and the endpoint it went to.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::line::{Flags, Line};
use super::Writer;
use crate::metrics::ServiceMetrics;
use crate::tap::event::rfc3339;

/// A logged connection: what was known when it was accepted.
pub struct Connection {
    started: Instant,
    arrived: SystemTime,
    downstream: Option<(SocketAddr, SocketAddr)>,
}

/// How a logged connection ended.
pub struct Closed {
    /// The endpoint it was proxied to; `None` when connecting failed.
    pub upstream: Option<SocketAddr>,
    pub flags: Flags,
    /// Bytes from the client, and to it.
    pub received: u64,
    pub sent: u64,
}

impl Connection {
    pub fn new(downstream: Option<(SocketAddr, SocketAddr)>) -> Connection {
        Connection {
            started: Instant::now(),
            arrived: SystemTime::now(),
            downstream,
        }
    }

    pub fn finish(self, writer: &Writer, metrics: &ServiceMetrics, closed: Closed) {
        let (remote, local) = self.downstream.unzip();
        let line = Line {
            start_time: &rfc3339(self.arrived),
            protocol: "tcp",
            response_flags: &closed.flags.render(),
            bytes_received: closed.received,
            bytes_sent: closed.sent,
            duration: self.started.elapsed().as_millis() as u64,
            upstream_host: closed.upstream,
            upstream_cluster: metrics.service(),
            downstream_remote_address: remote,
            downstream_local_address: local,
            direction: metrics.direction(),
            ..Line::default()
        };
        writer.write(line.to_bytes());
    }
}
