//! A rule's own timeouts and retries, which override its service's for the requests
//! the rule selects (the Gateway API's HTTPRoute `timeouts` and GEP-1731 `retry`;
//! Weft accepts both on GRPCRoute rules too, with gRPC statuses as retry codes).

use std::time::Duration;

use super::duration::{format_duration, parse_duration};
use super::grpc_code::GrpcCode;
use crate::model::Invalid;
use crate::v1;

/// A timeout a rule sets: `0s` turns the service's off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    Disabled,
    After(Duration),
}

impl Timeout {
    fn parse(field: &str, text: &str) -> Result<Option<Timeout>, Invalid> {
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(match parse_duration(field, text)? {
            Duration::ZERO => Timeout::Disabled,
            duration => Timeout::After(duration),
        }))
    }

    /// The deadline, if any.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Timeout::Disabled => None,
            Timeout::After(duration) => Some(duration),
        }
    }

    fn format(timeout: Option<Timeout>) -> String {
        match timeout {
            None => String::new(),
            Some(timeout) => format_duration(timeout.duration().unwrap_or(Duration::ZERO)),
        }
    }
}

/// `None` fields keep the service's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RouteTimeouts {
    /// The whole request, retries included, as the service's `request` timeout.
    pub request: Option<Timeout>,
    /// Each attempt sent to a backend, as the service's per-try timeout.
    pub backend_request: Option<Timeout>,
}

impl RouteTimeouts {
    pub fn from_proto(msg: &v1::RouteTimeouts) -> Result<RouteTimeouts, Invalid> {
        let request = Timeout::parse("request", &msg.request)?;
        let backend_request = Timeout::parse("backendRequest", &msg.backend_request)?;
        if let (Some(Timeout::After(request)), Some(Timeout::After(backend))) =
            (request, backend_request)
        {
            if backend > request {
                return Err(Invalid::new(
                    "backendRequest",
                    format!(
                        "{} is longer than the request timeout, {}",
                        format_duration(backend),
                        format_duration(request)
                    ),
                ));
            }
        }
        Ok(RouteTimeouts {
            request,
            backend_request,
        })
    }

    /// A rule's `timeouts`, absent or not.
    pub fn from_rule(msg: Option<&v1::RouteTimeouts>) -> Result<RouteTimeouts, Invalid> {
        msg.map_or(Ok(RouteTimeouts::default()), |t| {
            RouteTimeouts::from_proto(t).map_err(|e| e.within("timeouts"))
        })
    }

    /// `None` when neither is set, as the message is absent then.
    pub fn to_proto(&self) -> Option<v1::RouteTimeouts> {
        (*self != RouteTimeouts::default()).then(|| v1::RouteTimeouts {
            request: Timeout::format(self.request),
            backend_request: Timeout::format(self.backend_request),
        })
    }
}

/// What a retried response looks like: an HTTP status for HTTPRoute rules, a gRPC
/// status for GRPCRoute rules.
pub trait RetryCode: Copy + Eq + std::fmt::Debug {}
impl RetryCode for u16 {}
impl RetryCode for GrpcCode {}

/// A rule's retry policy (GEP-1731). Requests that reached no backend are retried
/// by the failover rule whatever this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRetry<C: RetryCode> {
    /// Responses worth another attempt, instead of the service's `retryOn` statuses.
    pub codes: Vec<C>,
    /// Retries after the first attempt; `None`: the service's; 0 disables retries.
    pub attempts: Option<u32>,
    /// The base of the jittered exponential backoff; `None`: the service's. (Its cap
    /// stays the service's `backoffMaxMs`, or this base when that is smaller.)
    pub backoff: Option<Duration>,
}

/// The Gateway API allows retries on 400-599.
fn http_code(field: &str, code: u32) -> Result<u16, Invalid> {
    match u16::try_from(code) {
        Ok(code @ 400..=599) => Ok(code),
        _ => Err(Invalid::new(
            field,
            format!("{code} is not an HTTP status from 400 to 599"),
        )),
    }
}

/// As the service's `maxRetries`: more would multiply an outage's load.
fn attempts(attempts: Option<u32>) -> Result<Option<u32>, Invalid> {
    match attempts {
        Some(n) if n > 10 => Err(Invalid::new("attempts", format!("{n} is more than 10"))),
        other => Ok(other),
    }
}

fn backoff(text: &str) -> Result<Option<Duration>, Invalid> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_duration("backoff", text).map(Some)
}

/// A retry's codes, each listed once.
fn codes<T, C: RetryCode + std::fmt::Display>(
    list: &[T],
    parse: impl Fn(&str, &T) -> Result<C, Invalid>,
) -> Result<Vec<C>, Invalid> {
    let mut codes = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("codes[{i}]");
        let code = parse(&field, item)?;
        if codes.contains(&code) {
            return Err(Invalid::new(field, format!("{code} is listed twice")));
        }
        codes.push(code);
    }
    Ok(codes)
}

impl RouteRetry<u16> {
    pub fn from_proto(msg: &v1::HttpRouteRetry) -> Result<RouteRetry<u16>, Invalid> {
        Ok(RouteRetry {
            codes: codes(&msg.codes, |field, code| http_code(field, *code))?,
            attempts: attempts(msg.attempts)?,
            backoff: backoff(&msg.backoff)?,
        })
    }

    pub fn to_proto(&self) -> v1::HttpRouteRetry {
        v1::HttpRouteRetry {
            codes: self.codes.iter().map(|c| u32::from(*c)).collect(),
            attempts: self.attempts,
            backoff: self.backoff.map(format_duration).unwrap_or_default(),
        }
    }
}

impl RouteRetry<GrpcCode> {
    pub fn from_proto(msg: &v1::GrpcRouteRetry) -> Result<RouteRetry<GrpcCode>, Invalid> {
        Ok(RouteRetry {
            codes: codes(&msg.codes, |field, name| GrpcCode::parse(field, name))?,
            attempts: attempts(msg.attempts)?,
            backoff: backoff(&msg.backoff)?,
        })
    }

    pub fn to_proto(&self) -> v1::GrpcRouteRetry {
        v1::GrpcRouteRetry {
            codes: self.codes.iter().map(|c| c.name().to_owned()).collect(),
            attempts: self.attempts,
            backoff: self.backoff.map(format_duration).unwrap_or_default(),
        }
    }
}
