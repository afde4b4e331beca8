//! Weft's own filters: `weft.io/Fault` (a delay or an abort for a share of the
//! requests, as Istio's fault injection) and `weft.io/LocalRateLimit` (a token
//! bucket per proxy and rule; beyond it, 429 or `RESOURCE_EXHAUSTED`).

use std::time::Duration;

use super::{percent, Invalid};
use crate::model::route::duration::{format_duration, parse_duration};
use crate::model::route::grpc_code::GrpcCode;
use crate::v1;

/// weft.io/Fault: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultDelay {
    pub delay: Duration,
    /// 0-100.
    pub percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultAbort {
    pub status: AbortStatus,
    /// 0-100.
    pub percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    /// 200-599.
    Http(u16),
    Grpc(GrpcCode),
}

/// weft.io/LocalRateLimit: a token bucket of `burst` tokens refilled with
/// `requests_per_unit` per `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRateLimit {
    pub requests_per_unit: u32,
    pub unit: RateUnit,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Second,
    Minute,
}

impl RateUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            RateUnit::Second => Duration::from_secs(1),
            RateUnit::Minute => Duration::from_secs(60),
        }
    }
}

impl Fault {
    pub(super) fn from_proto(msg: Option<&v1::FaultFilter>) -> Result<Fault, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        let delay = match &msg.delay {
            None => None,
            Some(d) => Some(FaultDelay {
                delay: parse_duration("delay.fixedDelay", &d.fixed_delay)?,
                percent: percent("delay.percent", d.percent)?,
            }),
        };
        let abort = match &msg.abort {
            None => None,
            Some(a) => {
                let status = match (a.http_status, a.grpc_status.as_str()) {
                    (0, "") => return Err(Invalid::new("abort", "needs httpStatus or grpcStatus")),
                    (code, "") => match u16::try_from(code) {
                        Ok(code @ 200..=599) => AbortStatus::Http(code),
                        _ => {
                            return Err(Invalid::new(
                                "abort.httpStatus",
                                format!("{code} is not an HTTP status from 200 to 599"),
                            ))
                        }
                    },
                    (0, name) => AbortStatus::Grpc(GrpcCode::parse("abort.grpcStatus", name)?),
                    _ => {
                        return Err(Invalid::new(
                            "abort",
                            "takes httpStatus or grpcStatus, not both",
                        ))
                    }
                };
                Some(FaultAbort {
                    status,
                    percent: percent("abort.percent", a.percent)?,
                })
            }
        };
        if delay.is_none() && abort.is_none() {
            return Err(Invalid::new("", "needs a delay, an abort, or both"));
        }
        Ok(Fault { delay, abort })
    }

    pub(super) fn to_proto(&self) -> v1::FaultFilter {
        v1::FaultFilter {
            delay: self.delay.as_ref().map(|d| v1::FaultDelay {
                fixed_delay: format_duration(d.delay),
                percent: Some(d.percent),
            }),
            abort: self.abort.as_ref().map(|a| {
                let (http_status, grpc_status) = match a.status {
                    AbortStatus::Http(code) => (u32::from(code), String::new()),
                    AbortStatus::Grpc(code) => (0, code.name().to_owned()),
                };
                v1::FaultAbort {
                    http_status,
                    grpc_status,
                    percent: Some(a.percent),
                }
            }),
        }
    }
}

impl LocalRateLimit {
    pub(super) fn from_proto(
        msg: Option<&v1::LocalRateLimitFilter>,
    ) -> Result<LocalRateLimit, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        if msg.requests_per_unit == 0 {
            return Err(Invalid::new(
                "requestsPerUnit",
                "must be at least 1 (to refuse every request, use weft.io/Fault's abort)",
            ));
        }
        let unit = match msg.unit.as_str() {
            "second" => RateUnit::Second,
            "minute" => RateUnit::Minute,
            other => {
                return Err(Invalid::new(
                    "unit",
                    format!("{other:?} is not second or minute"),
                ))
            }
        };
        Ok(LocalRateLimit {
            requests_per_unit: msg.requests_per_unit,
            unit,
            burst: if msg.burst == 0 {
                msg.requests_per_unit
            } else {
                msg.burst
            },
        })
    }

    pub(super) fn to_proto(self) -> v1::LocalRateLimitFilter {
        v1::LocalRateLimitFilter {
            requests_per_unit: self.requests_per_unit,
            unit: self.unit.as_str().to_owned(),
            burst: self.burst,
        }
    }
}
