//! How much each counter of one target grew between two scrapes, as PromQL's
//! `increase()` sees it: a counter that went down was reset (the proxy restarted),
//! so its whole new value is the increase.

use std::collections::HashMap;

use super::parse::Sample;

/// Whether a series only ever grows: counters and histogram buckets.
pub fn is_counter(name: &str) -> bool {
    name.ends_with("_total") || name.ends_with("_bucket")
}

/// The increase of a counter from `previous` (`None`: the series is new since the
/// last scrape) to `current`.
pub fn increase(previous: Option<f64>, current: f64) -> f64 {
    match previous {
        Some(before) if current >= before => current - before,
        // A reset, or a series registered on its first use since the last scrape
        // (the proxy registers per-status counters lazily, starting from zero).
        _ => current.max(0.0),
    }
}

/// Every counter of `current` with its increase since `previous` (the same
/// target's earlier scrape).
pub fn increases<'a>(previous: &[Sample], current: &'a [Sample]) -> Vec<(&'a Sample, f64)> {
    let before: HashMap<SeriesKey, f64> = previous
        .iter()
        .filter(|s| is_counter(&s.name))
        .map(|s| (key(s), s.value))
        .collect();
    current
        .iter()
        .filter(|s| is_counter(&s.name) && !s.value.is_nan())
        .map(|s| (s, increase(before.get(&key(s)).copied(), s.value)))
        .collect()
}

/// A series' identity: its name and its labels in a fixed order.
type SeriesKey = (String, Vec<(String, String)>);

fn key(sample: &Sample) -> SeriesKey {
    let mut labels = sample.labels.clone();
    labels.sort();
    (sample.name.clone(), labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::parse::parse;

    #[test]
    fn increases_handle_growth_resets_and_new_series() {
        let before = parse(
            "weft_requests_total{service=\"a\",tls=\"true\"} 10\n\
             weft_requests_total{service=\"b\"} 50\n\
             weft_endpoints{service=\"a\"} 2\n",
        )
        .expect("parses");
        // Labels in another order are the same series.
        let after = parse(
            "weft_requests_total{tls=\"true\",service=\"a\"} 15\n\
             weft_requests_total{service=\"b\"} 4\n\
             weft_responses_total{service=\"a\",status_code=\"500\"} 3\n\
             weft_endpoints{service=\"a\"} 1\n",
        )
        .expect("parses");
        let increases: Vec<(&str, f64)> = increases(&before, &after)
            .into_iter()
            .map(|(s, d)| (s.label("service"), d))
            .collect();
        assert_eq!(increases, vec![("a", 5.0), ("b", 4.0), ("a", 3.0)]);
    }

    #[test]
    fn increase_never_goes_negative() {
        assert_eq!(increase(Some(3.0), 3.0), 0.0);
        assert_eq!(increase(Some(3.0), 1.0), 1.0);
        assert_eq!(increase(None, 7.0), 7.0);
        assert_eq!(increase(None, -1.0), 0.0);
    }
}
