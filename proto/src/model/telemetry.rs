//! `Telemetry`: what a service's proxies record of its requests besides metrics: an
//! access log line and a trace span per request, each sampled by a per-service share.
//! It is part of the service, so turning either on or off is a push, not a restart.

use super::{validate_host_port, Invalid};
use crate::v1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// `None`: no access log lines for the service's requests.
    pub access_log: Option<AccessLog>,
    /// `None`: the service's requests start no traces and record no spans.
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLog {
    pub sampling: Sampling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// Applies to requests no caller made a sampling decision for.
    pub sampling: Sampling,
    /// The OTLP/gRPC collector, `host:port`; empty until the control plane fills in
    /// its default when it serves the service.
    pub collector: String,
}

/// A share of requests, kept in millionths so that a draw is one integer comparison
/// and the type stays `Eq` (a percentage as `f64` would not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sampling {
    per_million: u32,
}

impl Sampling {
    pub const ALL: Sampling = Sampling {
        per_million: 1_000_000,
    };
    pub const NONE: Sampling = Sampling { per_million: 0 };
    /// Istio's default tracing share.
    pub const DEFAULT_TRACING: Sampling = Sampling {
        per_million: 10_000,
    };

    /// `percent` in 0..=100, finite; rounded to a millionth.
    pub fn from_percent(field: &str, percent: f64) -> Result<Sampling, Invalid> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(Invalid::new(
                field,
                format!("{percent} is not a percentage from 0 to 100"),
            ));
        }
        // In range by the check above: at most 1_000_000.
        let per_million = (percent * 10_000.0).round() as u32;
        Ok(Sampling { per_million })
    }

    pub fn percent(self) -> f64 {
        f64::from(self.per_million) / 10_000.0
    }

    /// `per_million` millionths, at most all of them.
    pub fn from_per_million(per_million: u32) -> Sampling {
        Sampling {
            per_million: per_million.min(1_000_000),
        }
    }

    pub fn per_million(self) -> u32 {
        self.per_million
    }

    /// Whether a request with the uniform random `draw` is in the share.
    pub fn admits(self, draw: u32) -> bool {
        match self.per_million {
            0 => false,
            1_000_000 => true,
            // draw / 2^32 < per_million / 10^6, without floating point.
            n => u64::from(draw) * 1_000_000 < u64::from(n) << 32,
        }
    }
}

impl TryFrom<&v1::Telemetry> for Telemetry {
    type Error = Invalid;

    fn try_from(msg: &v1::Telemetry) -> Result<Self, Invalid> {
        let access_log = match &msg.access_log {
            None => None,
            Some(log) => Some(AccessLog {
                sampling: sampling(log.sampling_percent, Sampling::ALL)
                    .map_err(|e| e.within("access_log"))?,
            }),
        };
        let tracing = match &msg.tracing {
            None => None,
            Some(tracing) => {
                if !tracing.collector.is_empty() {
                    validate_host_port("collector", &tracing.collector)
                        .map_err(|e| e.within("tracing"))?;
                }
                Some(Tracing {
                    sampling: sampling(tracing.sampling_percent, Sampling::DEFAULT_TRACING)
                        .map_err(|e| e.within("tracing"))?,
                    collector: tracing.collector.clone(),
                })
            }
        };
        Ok(Telemetry {
            access_log,
            tracing,
        })
    }
}

fn sampling(percent: Option<f64>, default: Sampling) -> Result<Sampling, Invalid> {
    percent.map_or(Ok(default), |p| {
        Sampling::from_percent("sampling_percent", p)
    })
}

impl Telemetry {
    pub fn is_empty(&self) -> bool {
        self.access_log.is_none() && self.tracing.is_none()
    }

    /// `None` when nothing is on, as an operator who never wrote the block left it.
    pub fn to_proto(&self) -> Option<v1::Telemetry> {
        if self.is_empty() {
            return None;
        }
        Some(v1::Telemetry {
            access_log: self.access_log.map(|log| v1::AccessLog {
                sampling_percent: Some(log.sampling.percent()),
            }),
            tracing: self.tracing.as_ref().map(|tracing| v1::Tracing {
                sampling_percent: Some(tracing.sampling.percent()),
                collector: tracing.collector.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_shares_take_the_defaults_and_bad_ones_name_the_field() {
        let msg = v1::Telemetry {
            access_log: Some(v1::AccessLog::default()),
            tracing: Some(v1::Tracing::default()),
        };
        let telemetry = Telemetry::try_from(&msg).expect("valid");
        assert_eq!(
            telemetry.access_log.map(|l| l.sampling),
            Some(Sampling::ALL)
        );
        assert_eq!(
            telemetry.tracing.map(|t| t.sampling),
            Some(Sampling::DEFAULT_TRACING)
        );

        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            let msg = v1::Telemetry {
                tracing: Some(v1::Tracing {
                    sampling_percent: Some(bad),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let error = Telemetry::try_from(&msg).expect_err("out of range");
            assert_eq!(error.field, "tracing.sampling_percent", "{bad}");
        }
        let msg = v1::Telemetry {
            tracing: Some(v1::Tracing {
                collector: "collector".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error = Telemetry::try_from(&msg).expect_err("no port");
        assert_eq!(error.field, "tracing.collector");
    }

    #[test]
    fn a_share_admits_that_fraction_of_uniform_draws() {
        let draws = (0..100_000u32).map(|i| i.wrapping_mul(42_949)); // spread over u32
        for percent in [0.0, 0.01, 1.0, 37.5, 100.0] {
            let share = Sampling::from_percent("p", percent).expect("in range");
            let admitted = draws.clone().filter(|d| share.admits(*d)).count();
            let expected = percent * 1_000.0;
            assert!(
                (admitted as f64 - expected).abs() <= 2.0,
                "{percent}%: {admitted} of 100000"
            );
        }
        assert!(Sampling::ALL.admits(u32::MAX));
        assert!(!Sampling::NONE.admits(0));
    }

    #[test]
    fn round_trips_through_the_message() {
        let telemetry = Telemetry {
            access_log: Some(AccessLog {
                sampling: Sampling::from_percent("p", 12.5).expect("in range"),
            }),
            tracing: Some(Tracing {
                sampling: Sampling::from_percent("p", 0.1).expect("in range"),
                collector: "otel.observability:4317".to_owned(),
            }),
        };
        let msg = telemetry.to_proto().expect("not empty");
        assert_eq!(Telemetry::try_from(&msg).expect("valid"), telemetry);
        assert_eq!(Telemetry::default().to_proto(), None);
    }
}
