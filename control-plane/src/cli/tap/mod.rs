//! `weftctl tap`: the requests proxies are serving, live, as `linkerd viz tap`,
//! read from each proxy's admin `GET /tap` (newline-delimited JSON, one finished
//! request a line).
//!
//! # Layout
//! - here: which listed proxies to tap ([`chosen`]), the filter as the `/tap`
//!   query ([`Filter::query`]) and one event as a line of text ([`render`]); pure,
//!   tested below.
//! - [`stream`]: the loop the binary runs: one streaming GET per proxy, their
//!   lines merged as they come, until `--count` events or Ctrl-C.

pub mod stream;

use serde_json::Value;
use weft_proto::v1;

/// The admin addresses of the listed proxies whose workload is in `namespace` and
/// is `service` (`namespace/name`, or a name in any namespace); a proxy that
/// announced no admin address cannot be tapped and is left out.
pub fn chosen(
    proxies: &[v1::ProxyStatus],
    namespace: Option<&str>,
    service: Option<&str>,
) -> Vec<String> {
    let wanted = |proxy: &v1::ProxyStatus| {
        let (ns, name) = match &proxy.workload {
            Some(w) => (w.namespace.as_str(), w.service.as_str()),
            None => ("", ""),
        };
        let full = format!("{ns}/{name}");
        namespace.is_none_or(|n| n == ns) && service.is_none_or(|s| s == full || s == name)
    };
    let mut chosen: Vec<String> = proxies
        .iter()
        .filter(|p| !p.admin_address.is_empty() && wanted(p))
        .map(|p| p.admin_address.clone())
        .collect();
    chosen.sort();
    chosen.dedup();
    chosen
}

/// What the proxies are asked for; each proxy filters before sending and caps
/// what it sends at `max_rps`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Requests to this service (`namespace/name` or a name).
    pub service: Option<String>,
    /// Paths that start with this.
    pub path: Option<String>,
    pub method: Option<String>,
    pub max_rps: Option<u32>,
}

impl Filter {
    /// `/tap?...`, the values percent-encoded.
    pub fn query(&self) -> String {
        let max_rps = self.max_rps.map(|rps| rps.to_string());
        let pairs = [
            ("service", self.service.as_deref()),
            ("path", self.path.as_deref()),
            ("method", self.method.as_deref()),
            ("max_rps", max_rps.as_deref()),
        ];
        let query: Vec<String> = pairs
            .iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", encode(value.as_ref()?))))
            .collect();
        match query.is_empty() {
            true => "/tap".to_owned(),
            false => format!("/tap?{}", query.join("&")),
        }
    }
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// One event as a line of text: when, which proxy and direction, the request, its
/// answer and latency, then where it went and how.
pub fn render(proxy: &str, event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("").to_owned();
    let direction = match event["direction"].as_str() {
        Some("inbound") => "in ",
        Some("outbound") => "out",
        _ => "?  ",
    };
    let status = match (event["status"].as_u64(), event["grpc_status"].as_u64()) {
        (Some(status), Some(grpc)) => format!("{status} grpc-status={grpc}"),
        (Some(status), None) => status.to_string(),
        (None, _) => "-".to_owned(),
    };
    let mut line = format!(
        "{} {proxy} {direction} {} {}{} -> {status} {:.1}ms service={}",
        text("time"),
        text("method"),
        text("authority"),
        text("path"),
        event["latency_ms"].as_f64().unwrap_or(0.0),
        text("service"),
    );
    let mut field = |key: &str, value: String| {
        if !value.is_empty() {
            line.push_str(&format!(" {key}={value}"));
        }
    };
    field("endpoint", text("endpoint"));
    field("route", text("route"));
    let retries = event["retries"].as_u64().unwrap_or(0);
    if retries > 0 {
        field("retries", retries.to_string());
    }
    field("tls", event["tls"].as_bool().unwrap_or(false).to_string());
    field("src", text("source"));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_chosen_by_their_workload() {
        let proxy = |admin: &str, namespace: &str, service: &str| v1::ProxyStatus {
            admin_address: admin.into(),
            workload: Some(v1::Workload {
                namespace: namespace.into(),
                service: service.into(),
                ..v1::Workload::default()
            }),
            ..v1::ProxyStatus::default()
        };
        let listed = [
            proxy("10.0.0.1:15020", "shop", "web"),
            proxy("10.0.0.2:15020", "shop", "cart"),
            proxy("10.0.0.3:15020", "blog", "web"),
            proxy("", "shop", "web"),
        ];
        assert_eq!(chosen(&listed, None, None).len(), 3);
        assert_eq!(
            chosen(&listed, Some("shop"), None),
            ["10.0.0.1:15020", "10.0.0.2:15020"]
        );
        assert_eq!(
            chosen(&listed, None, Some("web")),
            ["10.0.0.1:15020", "10.0.0.3:15020"]
        );
        assert_eq!(chosen(&listed, None, Some("blog/web")), ["10.0.0.3:15020"]);
    }

    #[test]
    fn the_query_names_what_is_set_percent_encoded() {
        assert_eq!(Filter::default().query(), "/tap");
        let filter = Filter {
            service: Some("shop/web".into()),
            path: Some("/a b&c".into()),
            max_rps: Some(5),
            ..Filter::default()
        };
        assert_eq!(
            filter.query(),
            "/tap?service=shop/web&path=/a%20b%26c&max_rps=5"
        );
    }

    #[test]
    fn an_event_reads_as_one_line() {
        let event = serde_json::json!({
            "time": "2026-12-05T07:40:01.123Z", "direction": "outbound",
            "source": "spiffe://cluster.local/ns/default/sa/client",
            "service": "default/web", "endpoint": "127.0.0.1:8080", "method": "GET",
            "authority": "web.default", "path": "/api", "status": 200, "grpc_status": null,
            "latency_ms": 1.25, "retries": 1, "route": "", "tls": true,
        });
        assert_eq!(
            render("127.0.0.1:15020", &event),
            "2026-12-05T07:40:01.123Z 127.0.0.1:15020 out GET web.default/api -> 200 1.2ms \
             service=default/web endpoint=127.0.0.1:8080 retries=1 tls=true \
             src=spiffe://cluster.local/ns/default/sa/client"
        );
    }
}
