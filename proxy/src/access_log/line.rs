//! One access log line: Envoy's default format's fields, named as Istio's JSON
//! access log names them (`start_time`, `response_code`, `upstream_host`, ...),
//! then Weft's own (`direction`, `grpc_status`, `retries`, `tls`, identities).
//! A field Weft does not know is `null` (Envoy prints `-`); `response_flags` is
//! `-` when no flag applies, as Envoy's is.

use std::net::SocketAddr;

use serde::{Serialize, Serializer};

use crate::dataplane::error::Class;

/// One finished HTTP request or TCP connection.
#[derive(Debug, Default, Serialize)]
pub struct Line<'a> {
    /// When the request (or connection) arrived, RFC 3339, UTC, milliseconds.
    pub start_time: &'a str,
    /// `null` for a TCP connection, as the next five.
    pub method: Option<&'a str>,
    /// With the query string, as Envoy's `%REQ(:PATH)%`.
    pub path: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2`; `tcp` for a connection.
    pub protocol: &'a str,
    /// The status the client got; 0 for a TCP connection.
    pub response_code: u16,
    pub response_flags: &'a str,
    /// Body bytes from the client, as declared or as counted (a TCP connection:
    /// every byte).
    pub bytes_received: u64,
    /// Body bytes to the client (a TCP connection: every byte).
    pub bytes_sent: u64,
    /// From arrival to the response's (connection's) end, milliseconds.
    pub duration: u64,
    /// From arrival to the upstream's response headers, milliseconds; `null` when
    /// the proxy answered itself.
    pub upstream_service_time: Option<u64>,
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    /// The endpoint of the last attempt.
    #[serde(serialize_with = "address")]
    pub upstream_host: Option<SocketAddr>,
    /// The service (`namespace/name`) the request went to: Weft's "cluster".
    pub upstream_cluster: &'a str,
    /// The route (`namespace/name`) that chose the service; `null` when none did.
    pub route_name: Option<&'a str>,
    #[serde(serialize_with = "address")]
    pub downstream_remote_address: Option<SocketAddr>,
    #[serde(serialize_with = "address")]
    pub downstream_local_address: Option<SocketAddr>,
    /// `inbound` or `outbound`.
    pub direction: &'a str,
    pub grpc_status: Option<u16>,
    pub retries: u32,
    /// Whether the hop this line describes was mTLS.
    pub tls: bool,
    /// The caller's SPIFFE ID (inbound, over mTLS) or this proxy's (outbound).
    pub source_identity: Option<&'a str>,
    /// This proxy's (inbound) or the endpoint's (outbound, over mTLS).
    pub destination_identity: Option<&'a str>,
}

impl Line<'_> {
    /// The line as JSON, newline included.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut line = Vec::with_capacity(768);
        // A struct of strings and numbers: serialising it cannot fail.
        let _ = serde_json::to_writer(&mut line, self);
        line.push(b'\n');
        line.into()
    }
}

/// `a.b.c.d:port`, written digit by digit: `Display` took about 2,000
/// instructions an address, three per line. IPv6 takes the `Display` path.
fn address<S: Serializer>(address: &Option<SocketAddr>, out: S) -> Result<S::Ok, S::Error> {
    let Some(SocketAddr::V4(v4)) = address else {
        return match address {
            Some(other) => out.collect_str(other),
            None => out.serialize_none(),
        };
    };
    // "255.255.255.255:65535"
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        len += decimal(&mut text[len..], u64::from(octet));
        text[len] = if i < 3 { b'.' } else { b':' };
        len += 1;
    }
    len += decimal(&mut text[len..], u64::from(v4.port()));
    // ASCII digits and separators only.
    out.serialize_str(std::str::from_utf8(&text[..len]).unwrap_or_default())
}

/// Writes `value` in decimal at the start of `out` (which has room); its length.
fn decimal(out: &mut [u8], value: u64) -> usize {
    let width = (1..20).take_while(|d| value >= 10u64.pow(*d)).count() + 1;
    crate::tap::event::digits(&mut out[..width], value);
    width
}

/// Envoy's response flags, those Weft has an equivalent of; a set, written
/// comma-separated in Envoy's order of listing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    /// No healthy upstream.
    pub const UH: Flags = Flags(1);
    /// Upstream connection failure.
    pub const UF: Flags = Flags(1 << 1);
    /// Upstream overflow (a circuit breaker).
    pub const UO: Flags = Flags(1 << 2);
    /// No route.
    pub const NR: Flags = Flags(1 << 3);
    /// Upstream retry limit exceeded.
    pub const URX: Flags = Flags(1 << 4);
    /// No cluster: the matched route rule has no backend.
    pub const NC: Flags = Flags(1 << 5);
    /// Downstream connection termination: the client left before the response's end.
    pub const DC: Flags = Flags(1 << 6);
    /// Upstream request timeout.
    pub const UT: Flags = Flags(1 << 7);
    /// Upstream connection termination: the upstream broke off after the request went.
    pub const UC: Flags = Flags(1 << 8);
    /// Fault injected (an abort).
    pub const FI: Flags = Flags(1 << 9);
    /// Rate limited (locally).
    pub const RL: Flags = Flags(1 << 10);
    /// Downstream protocol error: the client's request body failed.
    pub const DPE: Flags = Flags(1 << 11);
    /// Stream idle timeout: the client stopped sending its request body.
    pub const SI: Flags = Flags(1 << 12);

    const NAMES: [(Flags, &'static str); 13] = [
        (Flags::UH, "UH"),
        (Flags::UF, "UF"),
        (Flags::UO, "UO"),
        (Flags::NR, "NR"),
        (Flags::URX, "URX"),
        (Flags::NC, "NC"),
        (Flags::DC, "DC"),
        (Flags::UT, "UT"),
        (Flags::UC, "UC"),
        (Flags::FI, "FI"),
        (Flags::RL, "RL"),
        (Flags::DPE, "DPE"),
        (Flags::SI, "SI"),
    ];

    pub fn insert(&mut self, flags: Flags) {
        self.0 |= flags.0;
    }

    pub fn contains(self, flags: Flags) -> bool {
        self.0 & flags.0 == flags.0
    }

    /// The flag of a failure the rescue table answered; none for an authorization
    /// denial (a 403 says it) or a request the proxy cannot forward.
    pub fn of(class: Class) -> Flags {
        match class {
            Class::NoRoute => Flags::NR,
            Class::NoBackend => Flags::NC,
            Class::NoEndpoint => Flags::UH,
            Class::Connect | Class::ConnectTimeout => Flags::UF,
            Class::Upstream => Flags::UC,
            Class::Overflow => Flags::UO,
            Class::Timeout => Flags::UT,
            Class::Client => Flags::DPE,
            Class::BodyTimeout => Flags::SI,
            Class::Denied | Class::Unsupported => Flags::default(),
        }
    }

    /// The flag of an answer a route filter made, by the `weft-proxy-error` it carries.
    pub fn of_filter_answer(message: &[u8]) -> Flags {
        match message {
            b"fault filter abort" => Flags::FI,
            b"local rate limit exceeded" => Flags::RL,
            _ => Flags::default(),
        }
    }

    /// `UF,URX`; `-` for none.
    pub fn render(self) -> String {
        if self.0 == 0 {
            return "-".to_owned();
        }
        let names: Vec<&str> = Flags::NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        names.join(",")
    }
}
