//! The readable rendering of an [`Explanation`]: the answer first, then the route,
//! the settings in force, and each backend with its policy and endpoints.

use std::fmt::Write;

use super::{Explanation, Outcome};

pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let source = e
        .source
        .identity
        .clone()
        .unwrap_or_else(|| format!("a plaintext caller in {}", e.source.namespace));
    let query = e
        .request
        .query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {}://{}{}{query}",
        e.request.method,
        match e.request.scheme {
            super::Scheme::Http => "http",
            super::Scheme::Grpc => "grpc",
        },
        e.request.authority,
        e.request.path
    );
    let _ = writeln!(out, "from     {source}");
    if let (Some(service), Some(port), Some(by)) = (&e.service, e.port, e.resolved_by) {
        let by = by.replace('_', " ");
        let _ = writeln!(out, "service  {service} port {port} (by {by})");
    }
    let outcome = match e.outcome {
        Outcome::Forwarded => "forwarded",
        Outcome::Redirected => "redirected",
        Outcome::NotMeshed => "not meshed",
        Outcome::NoRouteMatched => "404 (no route matches)",
        Outcome::NoBackend => "500 (no backend)",
        Outcome::Denied => "403 (denied)",
    };
    let _ = writeln!(out, "outcome  {outcome}");
    let _ = writeln!(out, "why      {}", e.reason);
    if let Some(route) = &e.route {
        let rule = match &route.rule_name {
            Some(name) => format!("rule {} ({name})", route.rule),
            None => format!("rule {}", route.rule),
        };
        let _ = writeln!(
            out,
            "route    {} {} {rule}, {} route",
            route.kind, route.name, route.audience
        );
        let _ = writeln!(out, "match    {}", route.matched);
        if !route.filters.is_empty() {
            let _ = writeln!(out, "filters  {}", route.filters.join(", "));
        }
    }
    for b in &e.backends {
        let port = b.port.map(|p| format!(":{p}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "backend  {}{port}  weight {} ({}%)",
            b.service, b.weight, b.share_percent
        );
        if let Some(problem) = &b.problem {
            let _ = writeln!(out, "  problem  {problem}");
            continue;
        }
        let authz = match (&b.authorization.policy, b.authorization.decision) {
            (None, _) => "open (no policy applies)".to_owned(),
            (Some(policy), decision) => format!("{decision} by {policy}"),
        };
        let _ = writeln!(out, "  authz    {authz}");
        if let Some(r) = &b.resilience {
            let timeout = |t: Option<u64>| t.map_or("none".to_owned(), |ms| format!("{ms}ms"));
            let _ = writeln!(
                out,
                "  timeouts request {}, per try {}, connect {}ms",
                timeout(r.request_timeout_ms),
                timeout(r.per_try_timeout_ms),
                r.connect_timeout_ms
            );
            let _ = writeln!(
                out,
                "  retries  up to {} on {}, backoff {}-{}ms, budget {}%",
                r.max_retries,
                if r.retry_on.is_empty() {
                    "nothing".to_owned()
                } else {
                    r.retry_on.join(", ")
                },
                r.backoff_base_ms,
                r.backoff_max_ms,
                r.retry_budget_percent
            );
        }
        for (label, text) in [
            ("outlier", &b.outlier_detection),
            ("breakers", &b.circuit_breakers),
            ("locality", &b.locality),
        ] {
            if let Some(text) = text {
                let _ = writeln!(out, "  {label:<8} {text}");
            }
        }
        if b.endpoints.is_empty() {
            let _ = writeln!(out, "  endpoints: none");
        }
        for ep in &b.endpoints {
            let zone = if ep.zone.is_empty() { "-" } else { &ep.zone };
            let _ = writeln!(
                out,
                "  endpoint {:<22} {:<9} zone {zone} weight {}",
                ep.address, ep.state, ep.weight
            );
        }
    }
    out
}
