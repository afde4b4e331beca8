//! A tap's query: which requests it wants (`namespace`, `service`, `path` prefix,
//! `method`), how many a second at most (`max_rps`, a token bucket), and what
//! share of them (`sample`, 0 to 1).

use std::time::Instant;

use super::event::Event;

/// `max_rps` when the query sets none.
pub const DEFAULT_MAX_RPS: u32 = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub namespace: Option<String>,
    /// `namespace/name`, or a bare name matched in any namespace.
    pub service: Option<String>,
    pub path: Option<String>,
    /// Upper case, as methods are sent.
    pub method: Option<String>,
    pub max_rps: u32,
    pub sample: f64,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            namespace: None,
            service: None,
            path: None,
            method: None,
            max_rps: DEFAULT_MAX_RPS,
            sample: 1.0,
        }
    }
}

impl Filter {
    /// The filter of a `/tap?...` query; every problem, one line each.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        let mut problems = Vec::new();
        for (key, value) in form_urlencoded(query) {
            let value = Some(value).filter(|v| !v.is_empty());
            match key.as_str() {
                "namespace" => filter.namespace = value,
                "service" => filter.service = value,
                "path" => filter.path = value,
                "method" => filter.method = value.map(|m| m.to_ascii_uppercase()),
                "max_rps" => match value.as_deref().map(str::parse::<u32>) {
                    Some(Ok(rps)) if rps > 0 => filter.max_rps = rps,
                    _ => problems.push("max_rps: a whole number above 0".to_owned()),
                },
                "sample" => match value.as_deref().map(str::parse::<f64>) {
                    Some(Ok(share)) if (0.0..=1.0).contains(&share) => filter.sample = share,
                    _ => problems.push("sample: a number from 0 to 1".to_owned()),
                },
                other => problems.push(format!("{other}: not a tap parameter")),
            }
        }
        match problems.is_empty() {
            true => Ok(filter),
            false => Err(problems.join("\n")),
        }
    }

    pub fn matches(&self, event: &Event<'_>) -> bool {
        let (namespace, name) = event.service.split_once('/').unwrap_or(("", event.service));
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self
                .service
                .as_deref()
                .is_none_or(|s| s == event.service || s == name)
            && self
                .path
                .as_deref()
                .is_none_or(|p| event.path.starts_with(p))
            && self.method.as_deref().is_none_or(|m| m == event.method)
    }

    /// Whether this event is in the sample (always, at the default 1).
    pub fn sampled(&self) -> bool {
        self.sample >= 1.0 || rand::random::<f64>() < self.sample
    }
}

/// A token bucket holding at most one second of `rate`, full at the start.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    pub fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: None,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

/// The pairs of a query string, percent- and plus-decoded.
fn form_urlencoded(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key), decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match hex(bytes.get(i + 1..i + 3)) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digits: Option<&[u8]>) -> Option<u8> {
    u8::from_str_radix(std::str::from_utf8(digits?).ok()?, 16).ok()
}
