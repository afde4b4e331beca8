//! `HealthCheck`: how each proxy of a service checks its own application (active
//! health checking). The result travels on the discovery stream and becomes the
//! health of that proxy's endpoint in every other proxy's view.

use std::time::Duration;

use super::Invalid;
use crate::v1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy application healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy application unhealthy.
    pub unhealthy_threshold: u32,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path`, healthy on exactly `expected_status`.
    Http { path: String, expected_status: u16 },
    /// `grpc.health.v1.Health/Check` for `service` (empty: the server), healthy on
    /// SERVING.
    Grpc { service: String },
    /// A TCP connection accepted.
    Tcp,
}

impl Probe {
    /// The metric label of the probe kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http { .. } => "http",
            Probe::Grpc { .. } => "grpc",
            Probe::Tcp => "tcp",
        }
    }
}

impl HealthCheck {
    /// Envoy and Consul check every 5-10 s; 5 s with 3 failures marks a dead
    /// application within ~15 s, like a Kubernetes readiness probe's defaults
    /// (period 10 s, failure threshold 3) but a little faster.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
    /// Below this, checks would load the application more than its traffic does.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

    pub fn to_proto(&self) -> v1::HealthCheck {
        let mut message = v1::HealthCheck {
            interval_ms: millis(self.interval),
            timeout_ms: millis(self.timeout),
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            ..Default::default()
        };
        match &self.probe {
            Probe::Http {
                path,
                expected_status,
            } => {
                message.http = Some(v1::HttpHealthCheck {
                    path: path.clone(),
                    expected_status: u32::from(*expected_status),
                })
            }
            Probe::Grpc { service } => {
                message.grpc = Some(v1::GrpcHealthCheck {
                    service: service.clone(),
                })
            }
            Probe::Tcp => message.tcp = Some(v1::TcpHealthCheck {}),
        }
        message
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl TryFrom<&v1::HealthCheck> for HealthCheck {
    type Error = Invalid;

    fn try_from(msg: &v1::HealthCheck) -> Result<Self, Invalid> {
        let probe = match (&msg.http, &msg.grpc, &msg.tcp) {
            (Some(http), None, None) => {
                let path = if http.path.is_empty() {
                    "/".to_owned()
                } else {
                    http.path.clone()
                };
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Invalid::new(
                        "http.path",
                        format!("{path:?} is not an absolute request path"),
                    ));
                }
                let expected_status = match http.expected_status {
                    0 => 200,
                    code @ 100..=599 => code as u16,
                    other => {
                        return Err(Invalid::new(
                            "http.expected_status",
                            format!("{other} is not an HTTP status (100-599)"),
                        ))
                    }
                };
                Probe::Http {
                    path,
                    expected_status,
                }
            }
            (None, Some(grpc), None) => Probe::Grpc {
                service: grpc.service.clone(),
            },
            (None, None, Some(_)) => Probe::Tcp,
            (None, None, None) => {
                return Err(Invalid::new("", "set one of http, grpc or tcp"));
            }
            _ => return Err(Invalid::new("", "set only one of http, grpc or tcp")),
        };
        let interval = match msg.interval_ms {
            0 => Self::DEFAULT_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)),
        };
        if interval < Self::MIN_INTERVAL {
            return Err(Invalid::new(
                "interval_ms",
                format!(
                    "{} is below the minimum of {} ms",
                    msg.interval_ms,
                    Self::MIN_INTERVAL.as_millis()
                ),
            ));
        }
        let timeout = match msg.timeout_ms {
            0 => Self::DEFAULT_TIMEOUT.min(interval),
            ms => Duration::from_millis(u64::from(ms)),
        };
        if timeout > interval {
            return Err(Invalid::new(
                "timeout_ms",
                format!(
                    "{} is longer than the interval ({} ms)",
                    msg.timeout_ms,
                    interval.as_millis()
                ),
            ));
        }
        let threshold = |value: u32, default: u32, field: &str| match value {
            0 => Ok(default),
            1..=100 => Ok(value),
            other => Err(Invalid::new(field, format!("{other} is above 100"))),
        };
        Ok(HealthCheck {
            probe,
            interval,
            timeout,
            healthy_threshold: threshold(
                msg.healthy_threshold,
                Self::DEFAULT_HEALTHY_THRESHOLD,
                "healthy_threshold",
            )?,
            unhealthy_threshold: threshold(
                msg.unhealthy_threshold,
                Self::DEFAULT_UNHEALTHY_THRESHOLD,
                "unhealthy_threshold",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(path: &str, status: u32) -> v1::HealthCheck {
        v1::HealthCheck {
            http: Some(v1::HttpHealthCheck {
                path: path.into(),
                expected_status: status,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in_and_round_trip() {
        let check = HealthCheck::try_from(&http("/health", 0)).expect("valid");
        assert_eq!(
            check.probe,
            Probe::Http {
                path: "/health".into(),
                expected_status: 200
            }
        );
        assert_eq!(check.interval, HealthCheck::DEFAULT_INTERVAL);
        assert_eq!(check.timeout, HealthCheck::DEFAULT_TIMEOUT);
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 3));
        assert_eq!(HealthCheck::try_from(&check.to_proto()), Ok(check));
    }

    #[test]
    fn bad_checks_name_the_field() {
        let cases = [
            (v1::HealthCheck::default(), "set one of"),
            (
                v1::HealthCheck {
                    tcp: Some(v1::TcpHealthCheck {}),
                    ..http("/", 0)
                },
                "only one",
            ),
            (http("health", 0), "http.path"),
            (http("/", 700), "http.expected_status"),
            (
                v1::HealthCheck {
                    interval_ms: 10,
                    ..http("/", 0)
                },
                "interval_ms",
            ),
            (
                v1::HealthCheck {
                    interval_ms: 1000,
                    timeout_ms: 2000,
                    ..http("/", 0)
                },
                "timeout_ms",
            ),
            (
                v1::HealthCheck {
                    unhealthy_threshold: 1000,
                    ..http("/", 0)
                },
                "unhealthy_threshold",
            ),
        ];
        for (message, expected) in cases {
            let error = HealthCheck::try_from(&message).expect_err(expected);
            assert!(
                error.to_string().contains(expected),
                "{error} lacks {expected}"
            );
        }
    }
}
