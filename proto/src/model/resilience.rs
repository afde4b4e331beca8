//! A service's client-side resilience settings: timeouts, retries, outlier
//! detection, circuit breakers and locality preference, with every default
//! resolved, so a proxy reads plain values.
//!
//! The defaults follow what Envoy (Istio) and Linkerd users expect: connect 1 s, no
//! request timeout, two retries of requests that reached no upstream with 25 ms to
//! 250 ms of jittered backoff, a retry budget of 20% plus 10/s, ejection after 5
//! consecutive failures for 30 s growing to 300 s, 1024 connections / pending /
//! active requests.
//!
//! One default departs from Envoy's: `max_ejection_percent` is 100, not 10 (Linkerd
//! has no such cap at all). With 10%, a service with most of its replicas failing
//! keeps all but one of them in rotation, and clients see the failures that one
//! healthy replica could have spared them. What the cap guards against, ejecting
//! healthy endpoints on false evidence, is covered otherwise: endpoints that cannot
//! be reached are not counted (they are out of rotation by their own rule), and a
//! request still tries ejected endpoints when no other is left.

use std::time::Duration;

use super::Invalid;
use crate::v1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resilience {
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub outlier_detection: OutlierDetection,
    pub circuit_breakers: CircuitBreakers,
    pub locality: LocalityPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole request until its response headers, retries included.
    pub request: Option<Duration>,
    /// Idle pooled upstream connections and idle downstream keep-alive connections.
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: None,
            idle: None,
        }
    }
}

/// What makes an attempt worth retrying (where the failover rule allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    /// The connection broke after the request was sent.
    Reset,
    /// Any 5xx.
    ServerError,
    /// 502, 503 and 504.
    GatewayError,
    /// 503 only.
    Unavailable503,
    /// A gRPC status, by code.
    Grpc(u16),
}

const GRPC_CODES: [(&str, u16); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

impl RetryOn {
    pub fn name(self) -> &'static str {
        match self {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Reset => "reset",
            RetryOn::ServerError => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Unavailable503 => "503",
            RetryOn::Grpc(code) => GRPC_CODES
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(name, _)| *name)
                .unwrap_or("unavailable"),
        }
    }

    fn parse(text: &str) -> Option<RetryOn> {
        Some(match text {
            "connect-failure" => RetryOn::ConnectFailure,
            "refused-stream" => RetryOn::RefusedStream,
            "reset" => RetryOn::Reset,
            "5xx" => RetryOn::ServerError,
            "gateway-error" => RetryOn::GatewayError,
            "503" => RetryOn::Unavailable503,
            other => RetryOn::Grpc(GRPC_CODES.iter().find(|(n, _)| *n == other)?.1),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    pub retry_on: Vec<RetryOn>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_percent: u32,
    pub min_retries_per_second: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            retry_on: Self::DEFAULT_ON.to_vec(),
            max_retries: 2,
            per_try_timeout: None,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            min_retries_per_second: 10,
        }
    }
}

impl Retries {
    /// A reset only counts for requests that may be repeated (see the proxy's
    /// failover rule), so it is safe as a default.
    const DEFAULT_ON: [RetryOn; 4] = [
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Reset,
        RetryOn::Grpc(14),
    ];

    /// Whether a response with this HTTP status (and gRPC status, if any) may be retried.
    pub fn retries_status(&self, status: u16, grpc: Option<u16>) -> bool {
        self.retry_on.iter().any(|on| match on {
            RetryOn::ServerError => (500..600).contains(&status),
            RetryOn::GatewayError => matches!(status, 502..=504),
            RetryOn::Unavailable503 => status == 503,
            RetryOn::Grpc(code) => grpc == Some(*code),
            _ => false,
        })
    }

    pub fn retries(&self, on: RetryOn) -> bool {
        self.retry_on.contains(&on)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 0: disabled.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
    /// 0: the failure-percentage detector is off.
    pub failure_percentage_threshold: u32,
    pub failure_percentage_min_requests: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 100,
            failure_percentage_threshold: 0,
            failure_percentage_min_requests: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityPolicy {
    /// 0: no locality preference.
    pub min_healthy_percent: u32,
    /// Regions to fail over to, in order, after the caller's own.
    pub failover: Vec<String>,
}

impl Default for LocalityPolicy {
    fn default() -> Self {
        LocalityPolicy {
            min_healthy_percent: 70,
            failover: Vec::new(),
        }
    }
}

fn millis(value: u32) -> Option<Duration> {
    (value != 0).then(|| Duration::from_millis(u64::from(value)))
}

fn percent(field: &str, value: u32) -> Result<u32, Invalid> {
    if value > 100 {
        return Err(Invalid::new(
            field,
            format!("{value} is not a percentage (0-100)"),
        ));
    }
    Ok(value)
}

impl Resilience {
    pub fn from_proto(msg: &v1::Service) -> Result<Resilience, Invalid> {
        let defaults = Resilience::default();
        let timeouts = match &msg.timeouts {
            None => defaults.timeouts,
            Some(t) => Timeouts {
                connect: millis(t.connect_ms).unwrap_or(defaults.timeouts.connect),
                request: millis(t.request_ms),
                idle: millis(t.idle_ms),
            },
        };
        let retries = match &msg.retries {
            None => defaults.retries,
            Some(r) => Retries::try_from(r).map_err(|e| e.within("retries"))?,
        };
        let outlier_detection = match &msg.outlier_detection {
            None => defaults.outlier_detection,
            Some(o) => OutlierDetection::try_from(o).map_err(|e| e.within("outlier_detection"))?,
        };
        let circuit_breakers = match &msg.circuit_breakers {
            None => defaults.circuit_breakers,
            Some(c) => {
                let or = |v: u32| if v == 0 { 1024 } else { v };
                CircuitBreakers {
                    max_connections: or(c.max_connections),
                    max_pending_requests: or(c.max_pending_requests),
                    max_requests: or(c.max_requests),
                }
            }
        };
        let locality = match &msg.locality {
            None => defaults.locality,
            Some(l) => {
                for (i, region) in l.failover.iter().enumerate() {
                    super::validate_label("", region)
                        .map_err(|e| e.within(format!("locality.failover[{i}]")))?;
                }
                LocalityPolicy {
                    min_healthy_percent: percent(
                        "locality.min_healthy_percent",
                        l.min_healthy_percent.unwrap_or(70),
                    )?,
                    failover: l.failover.clone(),
                }
            }
        };
        Ok(Resilience {
            timeouts,
            retries,
            outlier_detection,
            circuit_breakers,
            locality,
        })
    }

    /// The proto fields of a service: a section equal to its defaults is left out,
    /// as an operator who never set it wrote it.
    pub fn to_proto(&self, msg: &mut v1::Service) {
        let defaults = Resilience::default();
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u32);
        if self.timeouts != defaults.timeouts {
            msg.timeouts = Some(v1::Timeouts {
                connect_ms: ms(Some(self.timeouts.connect)),
                request_ms: ms(self.timeouts.request),
                idle_ms: ms(self.timeouts.idle),
            });
        }
        let r = &self.retries;
        if *r != defaults.retries {
            msg.retries = Some(v1::Retries {
                retry_on: r.retry_on.iter().map(|on| on.name().to_owned()).collect(),
                max_retries: Some(r.max_retries),
                per_try_timeout_ms: ms(r.per_try_timeout),
                backoff_base_ms: ms(Some(r.backoff_base)),
                backoff_max_ms: ms(Some(r.backoff_max)),
                budget_percent: Some(r.budget_percent),
                min_retries_per_second: Some(r.min_retries_per_second),
            });
        }
        let o = &self.outlier_detection;
        if *o != defaults.outlier_detection {
            msg.outlier_detection = Some(v1::OutlierDetection {
                consecutive_failures: Some(o.consecutive_failures),
                base_ejection_ms: ms(Some(o.base_ejection)),
                max_ejection_ms: ms(Some(o.max_ejection)),
                max_ejection_percent: Some(o.max_ejection_percent),
                failure_percentage_threshold: o.failure_percentage_threshold,
                failure_percentage_min_requests: o.failure_percentage_min_requests,
            });
        }
        let c = &self.circuit_breakers;
        if *c != defaults.circuit_breakers {
            msg.circuit_breakers = Some(v1::CircuitBreakers {
                max_connections: c.max_connections,
                max_pending_requests: c.max_pending_requests,
                max_requests: c.max_requests,
            });
        }
        if self.locality != defaults.locality {
            msg.locality = Some(v1::LocalityPolicy {
                min_healthy_percent: Some(self.locality.min_healthy_percent),
                failover: self.locality.failover.clone(),
            });
        }
    }
}

impl TryFrom<&v1::Retries> for Retries {
    type Error = Invalid;

    fn try_from(r: &v1::Retries) -> Result<Self, Invalid> {
        let defaults = Retries::default();
        let mut retry_on = Vec::with_capacity(r.retry_on.len());
        for (i, name) in r.retry_on.iter().enumerate() {
            let on = RetryOn::parse(name).ok_or_else(|| {
                Invalid::new(
                    format!("retry_on[{i}]"),
                    format!(
                        "unknown condition {name:?} (expected connect-failure, refused-stream, \
                         reset, 5xx, gateway-error, 503, or a gRPC code such as unavailable)"
                    ),
                )
            })?;
            if !retry_on.contains(&on) {
                retry_on.push(on);
            }
        }
        if retry_on.is_empty() {
            retry_on = defaults.retry_on;
        }
        let max_retries = r.max_retries.unwrap_or(defaults.max_retries);
        if max_retries > 10 {
            return Err(Invalid::new(
                "max_retries",
                format!("{max_retries} is more than 10"),
            ));
        }
        let backoff_base = millis(r.backoff_base_ms).unwrap_or(defaults.backoff_base);
        let backoff_max = millis(r.backoff_max_ms).unwrap_or(defaults.backoff_max);
        if backoff_max < backoff_base {
            return Err(Invalid::new(
                "backoff_max_ms",
                "must not be less than backoff_base_ms",
            ));
        }
        Ok(Retries {
            retry_on,
            max_retries,
            per_try_timeout: millis(r.per_try_timeout_ms),
            backoff_base,
            backoff_max,
            budget_percent: percent(
                "budget_percent",
                r.budget_percent.unwrap_or(defaults.budget_percent),
            )?,
            min_retries_per_second: r
                .min_retries_per_second
                .unwrap_or(defaults.min_retries_per_second),
        })
    }
}

impl TryFrom<&v1::OutlierDetection> for OutlierDetection {
    type Error = Invalid;

    fn try_from(o: &v1::OutlierDetection) -> Result<Self, Invalid> {
        let defaults = OutlierDetection::default();
        let base_ejection = millis(o.base_ejection_ms).unwrap_or(defaults.base_ejection);
        let max_ejection = millis(o.max_ejection_ms).unwrap_or(defaults.max_ejection);
        if max_ejection < base_ejection {
            return Err(Invalid::new(
                "max_ejection_ms",
                "must not be less than base_ejection_ms",
            ));
        }
        Ok(OutlierDetection {
            consecutive_failures: o
                .consecutive_failures
                .unwrap_or(defaults.consecutive_failures),
            base_ejection,
            max_ejection,
            max_ejection_percent: percent(
                "max_ejection_percent",
                o.max_ejection_percent
                    .unwrap_or(defaults.max_ejection_percent),
            )?,
            failure_percentage_threshold: percent(
                "failure_percentage_threshold",
                o.failure_percentage_threshold,
            )?,
            failure_percentage_min_requests: if o.failure_percentage_min_requests == 0 {
                defaults.failure_percentage_min_requests
            } else {
                o.failure_percentage_min_requests
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;

    fn service() -> v1::Service {
        v1::Service {
            namespace: "shop".into(),
            name: "orders".into(),
            ports: vec![v1::ServicePort {
                name: String::new(),
                port: 80,
                protocol: "http1".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn absent_sections_take_the_defaults_and_stay_absent() {
        let s = Service::try_from(&service()).expect("valid");
        assert_eq!(*s.resilience, Resilience::default());
        assert_eq!(s.resilience.retries.max_retries, 2);
        let mut expected = service();
        expected.load_balancer = "p2c_ewma".into();
        assert_eq!(s.to_proto(), expected);
    }

    #[test]
    fn set_sections_round_trip() {
        let mut msg = service();
        msg.retries = Some(v1::Retries {
            retry_on: vec!["5xx".into(), "unavailable".into()],
            max_retries: Some(0),
            per_try_timeout_ms: 300,
            budget_percent: Some(50),
            ..Default::default()
        });
        msg.outlier_detection = Some(v1::OutlierDetection {
            consecutive_failures: Some(3),
            base_ejection_ms: 1000,
            ..Default::default()
        });
        msg.timeouts = Some(v1::Timeouts {
            request_ms: 2000,
            ..Default::default()
        });
        let s = Service::try_from(&msg).expect("valid");
        let r = &s.resilience.retries;
        assert_eq!(r.max_retries, 0);
        assert_eq!(r.per_try_timeout, Some(Duration::from_millis(300)));
        assert!(r.retries_status(502, None) && r.retries_status(200, Some(14)));
        assert!(!r.retries_status(200, Some(13)));
        assert_eq!(s.resilience.timeouts.connect, Duration::from_secs(1));
        assert_eq!(Service::try_from(&s.to_proto()).expect("round trip"), s);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut msg = service();
        msg.retries = Some(v1::Retries {
            retry_on: vec!["sometimes".into()],
            ..Default::default()
        });
        let error = Service::try_from(&msg).expect_err("invalid");
        assert_eq!(error.field, "retries.retry_on[0]");
        let mut msg = service();
        msg.outlier_detection = Some(v1::OutlierDetection {
            max_ejection_percent: Some(150),
            ..Default::default()
        });
        let error = Service::try_from(&msg).expect_err("invalid");
        assert_eq!(error.field, "outlier_detection.max_ejection_percent");
        let mut msg = service();
        msg.retries = Some(v1::Retries {
            backoff_base_ms: 500,
            backoff_max_ms: 100,
            ..Default::default()
        });
        assert!(Service::try_from(&msg).is_err());
    }
}
