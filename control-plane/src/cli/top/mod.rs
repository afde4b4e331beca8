//! `weftctl top` (alias `stat`): live golden metrics per service, like `linkerd viz
//! stat`, read from the proxies' own `/metrics`.
//!
//! # Layout
//! - [`parse`]: the Prometheus text format, to samples.
//! - [`diff`]: a counter's increase between two scrapes of one target (resets
//!   included).
//! - [`quantile`]: `histogram_quantile` over summed bucket increases.
//! - [`aggregate`]: the per-service rows (RPS, success, P50/P99, TLS, endpoints).
//! - [`scrape`]: the HTTP GET of one target's `/metrics`.
//! - [`run`]: the loop the binary runs: targets, rounds, printing.
//!
//! [`Top`] keeps each target's previous scrape and turns each new round of scrapes
//! into a [`Frame`]; the binary only scrapes, sleeps and prints.

pub mod aggregate;
pub mod diff;
pub mod parse;
pub mod quantile;
pub mod run;
pub mod scrape;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use self::aggregate::{EdgeStats, ServiceStats, Window};
use self::parse::Sample;
use super::table::Table;

/// One target's scrape: when it was taken and what it said.
pub struct Scraped {
    pub at: Instant,
    pub samples: Vec<Sample>,
}

/// What one frame shows.
#[derive(Debug, Serialize)]
pub struct Frame {
    /// RFC 3339, UTC.
    pub time: String,
    pub services: Vec<ServiceStats>,
    /// Who calls whom: the service graph's edges.
    pub edges: Vec<EdgeStats>,
    pub unreachable: Vec<Unreachable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    pub target: String,
    pub error: String,
}

/// The previous scrape of every target, so each frame shows rates over the last
/// interval.
#[derive(Default)]
pub struct Top {
    previous: BTreeMap<String, Scraped>,
}

impl Top {
    /// Turns one round of scrapes (target, text or error) into a frame and keeps
    /// them for the next. A target seen for the first time has no rates yet (its
    /// counters since it started are not one interval's worth); it still counts
    /// for endpoints. A target that failed keeps its last good scrape, so its next
    /// rates cover the whole gap; one no longer in the round is forgotten.
    /// `sources` names the workload behind each target (the caller of its
    /// outbound series); a target it does not name stands for itself.
    pub fn frame(
        &mut self,
        time: String,
        round: Vec<(String, Result<Scraped, String>)>,
        sources: &BTreeMap<String, String>,
        namespace: Option<&str>,
    ) -> Frame {
        self.previous
            .retain(|target, _| round.iter().any(|(t, _)| t == target));
        let mut unreachable = Vec::new();
        let mut fresh = Vec::new();
        for (target, result) in round {
            match result {
                Ok(scraped) => fresh.push((target, scraped)),
                Err(error) => unreachable.push(Unreachable { target, error }),
            }
        }
        let (services, edges) = {
            let windows: Vec<Window<'_>> = fresh
                .iter()
                .filter_map(|(target, now)| {
                    let before = self.previous.get(target)?;
                    Some(Window {
                        source: sources.get(target).map_or(target.as_str(), String::as_str),
                        seconds: now.at.saturating_duration_since(before.at).as_secs_f64(),
                        increases: diff::increases(&before.samples, &now.samples),
                    })
                })
                .collect();
            let current: Vec<&[Sample]> = fresh.iter().map(|(_, s)| s.samples.as_slice()).collect();
            (
                aggregate::aggregate(&windows, &current, namespace),
                aggregate::edges(&windows, namespace),
            )
        };
        for (target, scraped) in fresh {
            self.previous.insert(target, scraped);
        }
        Frame {
            time,
            services,
            edges,
            unreachable,
        }
    }
}

/// The table of a frame, with a footer naming the targets that could not be
/// scraped.
pub fn render_table(frame: &Frame) -> String {
    let mut table = Table::new([
        "SERVICE",
        "ENDPOINTS",
        "RPS",
        "SUCCESS",
        "P50",
        "P99",
        "TLS",
    ]);
    for s in &frame.services {
        table.row([
            s.service.clone(),
            s.endpoints.to_string(),
            format!("{:.1}", s.rps),
            percent(s.success, 2),
            millis(s.p50_ms),
            millis(s.p99_ms),
            percent(s.tls, 0),
        ]);
    }
    let mut out = table.render();
    if frame.services.is_empty() {
        out.push_str("(no services)\n");
    }
    for u in &frame.unreachable {
        out.push_str(&format!("unreachable: {} ({})\n", u.target, u.error));
    }
    out
}

fn percent(share: Option<f64>, decimals: usize) -> String {
    match share {
        Some(share) => format!("{:.*}%", decimals, share * 100.0),
        None => "-".to_owned(),
    }
}

fn millis(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) => format!("{ms:.0}ms"),
        None => "-".to_owned(),
    }
}

/// `2026-01-02T03:04:05Z` for a time in seconds since the Unix epoch.
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day number (0 = 1970-01-01), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
