//! Chaos tests: steady load through a real client proxy, configured by the real
//! control plane, to real `weft-test-app` endpoints, while one endpoint is killed,
//! starts failing, hangs, or all of them fail, or the load overruns the circuit
//! breakers. Every request is counted; each test prints what it measured (requests
//! sent, failed, and how long traffic took to avoid the bad endpoint).
//!
//! Run with `--nocapture` to see the figures.

use std::time::Duration;

use weft_e2e::load::{Load, Options, Report};
use weft_e2e::mesh::resource;
use weft_e2e::wait_for;
use weft_e2e::web::Mesh;

const WAIT: Duration = Duration::from_secs(20);

fn load(mesh: &Mesh, rate: u32, connections: u32) -> Load {
    Load::start(
        mesh.listen,
        Options {
            rate,
            connections,
            ..Options::default()
        },
    )
}

fn print(test: &str, report: &Report, extra: &str) {
    println!(
        "chaos {test}: sent {}, failed {}, success {:.4}, p99 {:?}, by server {:?}{extra}",
        report.sent(),
        report.failed().len(),
        report.success_ratio(),
        report.latency_quantile(0.99),
        report.by_server(),
    );
}

#[test]
fn chaos_1_a_killed_endpoint_fails_no_request() {
    let mut mesh = Mesh::start(
        &[("web-1", &[]), ("web-2", &[]), ("web-3", &[])],
        // Round robin would keep sending web-1 its share; its first refused
        // connect takes it out of rotation instead.
        "  loadBalancer: round_robin",
    );
    let load = load(&mesh, 200, 4);
    load.wait_for_successes(300, WAIT);
    let fault = load.elapsed();
    mesh.apps[0].proc.kill();
    load.wait_for_successes(900, WAIT);
    let report = load.stop();
    let avoided = report.last_served_by_after("web-1", fault);
    let retried = mesh.metric(&["weft_retries_total", "outcome=\"success\""]);
    print(
        "1 (SIGKILL)",
        &report,
        &format!(", traffic avoided web-1 after {avoided:?}, requests saved by a retry {retried}"),
    );
    assert!(report.failed().is_empty(), "{}", report.summary());
    assert!(
        mesh.metric(&["weft_endpoint_unreachable_total", "shop/web"]) >= 1.0,
        "the dead endpoint left rotation"
    );
    assert_eq!(
        mesh.metric(&["weft_endpoints_unreachable", "shop/web"]),
        1.0,
        "it stays out while it refuses"
    );
}

#[test]
fn chaos_2_an_endpoint_failing_half_its_requests_is_ejected() {
    let mesh = Mesh::start(
        &[
            ("web-1", &["--fail-ratio", "0.5", "--fail-status", "503"]),
            ("web-2", &[]),
            ("web-3", &[]),
        ],
        // Round robin: P2C counts each failure as slow and so keeps most requests
        // away from web-1 by itself (the dataplane test
        // `p2c_does_not_favour_an_endpoint_that_fails_fast`); this tests ejection.
        "  loadBalancer: round_robin
  retries: {retryOn: [5xx]}
  outlierDetection: {failurePercentageThreshold: 40, failurePercentageMinRequests: 10, baseEjectionMs: 30000}",
    );
    // The flaky app was there from the start: the fault time is the load's start.
    let load = load(&mesh, 200, 4);
    load.wait_for_successes(1200, WAIT);
    let report = load.stop();
    let avoided = report.last_served_by_after("web-1", Duration::ZERO);
    print(
        "2 (503 on half)",
        &report,
        &format!(", traffic avoided web-1 after {avoided:?}"),
    );
    assert!(report.success_ratio() >= 0.999, "{}", report.summary());
    assert!(
        mesh.metric(&["weft_outlier_ejections_total", "shop/web"]) >= 1.0,
        "the flaky endpoint was ejected"
    );
    wait_for("the ejected gauge", WAIT, || {
        (mesh.metric(&["weft_outlier_ejected_endpoints", "shop/web"]) == 1.0).then_some(())
    });
    assert!(mesh.metric(&["weft_retries_total", "outcome=\"success\""]) >= 1.0);
}

#[test]
fn chaos_3_a_hung_endpoint_costs_at_most_the_per_try_timeout() {
    let per_try = Duration::from_millis(300);
    // Round robin, so that requests do meet the hung endpoint: P2C may already
    // prefer the other two so much that it never picks web-1 after the fault
    // (seen under load), and then nothing here would be tested.
    let mesh = Mesh::start(
        &[("web-1", &[]), ("web-2", &[]), ("web-3", &[])],
        "  loadBalancer: round_robin
  retries: {perTryTimeoutMs: 300}
  outlierDetection: {consecutiveFailures: 2}",
    );
    // The proxy shows the settings it applies, defaults resolved.
    let service = resource(&mesh.client.config_dump(), "services", "shop/web").expect("shop/web");
    let retries = &service["resilience"]["retries"];
    assert_eq!(retries["per_try_timeout_ms"], 300, "{service}");
    assert_eq!(retries["max_retries"], 2, "{service}");
    let load = load(&mesh, 200, 4);
    load.wait_for_successes(300, WAIT);
    let fault = load.elapsed();
    mesh.apps[0].proc.signal("STOP");
    load.wait_for_successes(900, WAIT);
    let report = load.stop();
    mesh.apps[0].proc.signal("CONT");
    let after: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.at >= fault)
        .map(|o| o.latency)
        .collect();
    let slowest = after.iter().max().copied().unwrap_or_default();
    // A request that met the hung endpoint took at least the per-try timeout; the
    // last one sent says when traffic stopped going there.
    let avoided = report
        .outcomes
        .iter()
        .filter(|o| o.at >= fault && o.latency >= per_try)
        .map(|o| o.at - fault)
        .max()
        .unwrap_or_default();
    // A request that met the hung endpoint waited one per-try timeout, then a
    // backoff of at most 25 ms, then went elsewhere.
    let p99 = report.latency_quantile(0.99);
    print(
        "3 (SIGSTOP)",
        &report,
        &format!(
            ", slowest after the fault {slowest:?}, per-try timeout {per_try:?}, \
             traffic avoided web-1 after {avoided:?}"
        ),
    );
    assert!(report.failed().is_empty(), "{}", report.summary());
    // Slack for a loaded two-core machine, well under a second retry's timeout.
    assert!(
        p99 < per_try + Duration::from_millis(250),
        "{}",
        report.summary()
    );
    assert!(mesh.metric(&["weft_outlier_ejections_total", "shop/web"]) >= 1.0);
}

#[test]
fn chaos_7_a_retry_storm_is_refused_by_the_budget() {
    let failing: &[&str] = &["--fail-ratio", "1", "--fail-status", "503"];
    let mesh = Mesh::start(
        &[("web-1", failing), ("web-2", failing), ("web-3", failing)],
        "  retries: {retryOn: [5xx], maxRetries: 3, backoffBaseMs: 1, backoffMaxMs: 2, budgetPercent: 20, minRetriesPerSecond: 5}
  outlierDetection: {consecutiveFailures: 0}",
    );
    let before: u64 = (0..3).map(|i| mesh.served(i)).sum();
    let load = load(&mesh, 200, 4);
    // Every request fails: wait for a number of answers, not successes.
    wait_for("1000 answers", WAIT, || {
        (load.snapshot().sent() >= 1000).then_some(())
    });
    let report = load.stop();
    let attempts: u64 = (0..3).map(|i| mesh.served(i)).sum::<u64>() - before;
    let sent = report.sent() as u64;
    // Without a budget: up to 4 attempts a request. With it: the requests, 20% of
    // them, and the floor of 5/s over the 10 s window; plus a few for the setup's
    // requests, which also paid into the window.
    let allowed = sent + sent / 5 + 50 + 10;
    let exhausted = mesh.metric(&["weft_retry_budget_exhausted_total", "shop/web"]);
    println!(
        "chaos 7 (retry storm): sent {sent}, failed {}, upstream attempts {attempts} \
         (budget allows {allowed}, unbounded would be {}), budget exhausted {exhausted}",
        report.failed().len(),
        sent * 4,
    );
    assert!(attempts >= sent, "every request reached an app once");
    assert!(
        attempts <= allowed,
        "{attempts} attempts for {sent} requests"
    );
    assert!(exhausted > 0.0);
    assert!(report.failed().iter().all(|o| o.result == Ok(503)));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn chaos_8_the_circuit_breaker_refuses_at_once_and_memory_stays_bounded() {
    let slow: &[&str] = &["--delay-ms", "400"];
    let mesh = Mesh::start(
        &[("web-1", slow), ("web-2", slow)],
        "  circuitBreakers: {maxRequests: 4}",
    );
    let rss_before = rss_kib(mesh.client.proc.pid());
    // 48 connections at 400 requests/s against a capacity of 4 requests per 400 ms.
    let load = load(&mesh, 400, 48);
    wait_for("2000 answers", WAIT, || {
        (load.snapshot().sent() >= 2000).then_some(())
    });
    let rss_during = rss_kib(mesh.client.proc.pid());
    let report = load.stop();
    let refused: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.result == Ok(503))
        .collect();
    let slowest_refusal = refused.iter().map(|o| o.latency).max().unwrap_or_default();
    let overflows = mesh.metric(&[
        "weft_circuit_breaker_overflows_total",
        "shop/web",
        "limit=\"requests\"",
    ]);
    println!(
        "chaos 8 (circuit breaker): sent {}, served {}, refused {} (counted {overflows}), \
         slowest refusal {slowest_refusal:?}, proxy RSS {rss_before} KiB -> {rss_during} KiB",
        report.sent(),
        report.succeeded(),
        refused.len(),
    );
    assert!(!refused.is_empty(), "{}", report.summary());
    assert_eq!(refused.len() + report.succeeded(), report.sent());
    assert_eq!(overflows as usize, refused.len());
    // Refused at once: faster than any request the slow apps served.
    assert!(
        slowest_refusal < Duration::from_millis(400),
        "{slowest_refusal:?}"
    );
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_during} KiB"
    );
}

/// Unary calls at a fixed rate with Python grpcio (another stack's client), every
/// outcome counted; prints one JSON line.
const GRPC_LOAD: &str = r#"
import grpc, json, sys, time
target, rate, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
out = {"sent": 0, "ok": 0, "codes": {}, "by_server": {}, "last_web1": 0.0}
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary("/weft.test.Echo/Call")
    start = time.monotonic()
    for i in range(count):
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent = time.monotonic() - start
        out["sent"] += 1
        try:
            _, info = call.with_call(b"x", timeout=10)
            out["ok"] += 1
            server = dict(info.initial_metadata()).get("x-served-by", "")
            out["by_server"][server] = out["by_server"].get(server, 0) + 1
            if server == "web-1":
                out["last_web1"] = max(out["last_web1"], sent)
        except grpc.RpcError as e:
            name = e.code().name
            out["codes"][name] = out["codes"].get(name, 0) + 1
print(json.dumps(out), flush=True)
"#;

#[test]
fn chaos_2_grpc_an_endpoint_failing_half_its_calls_is_ejected() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .expect("python3 (with grpcio) is installed");
    assert!(
        python.status.success(),
        "the Python grpcio package is missing (pip install grpcio)"
    );
    let mesh = Mesh::start_with(
        &[
            ("web-1", &["--fail-ratio", "0.5"]),
            ("web-2", &[]),
            ("web-3", &[]),
        ],
        "grpc",
        // Round robin, as in chaos 2: this tests ejection, not the balancer.
        "  loadBalancer: round_robin
  outlierDetection: {failurePercentageThreshold: 40, failurePercentageMinRequests: 10}",
    );
    let output = std::process::Command::new("python3")
        .args(["-c", GRPC_LOAD, &mesh.listen.to_string(), "200", "1000"])
        .output()
        .expect("run the gRPC load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let sent = report["sent"].as_f64().unwrap_or(0.0);
    let ok = report["ok"].as_f64().unwrap_or(0.0);
    println!(
        "chaos 2 gRPC (UNAVAILABLE on half): sent {sent}, failed {}, success {:.4}, by server {}, \
         codes {}, traffic avoided web-1 after {:.3}s",
        sent - ok,
        ok / sent,
        report["by_server"],
        report["codes"],
        report["last_web1"].as_f64().unwrap_or(0.0),
    );
    assert!(ok / sent >= 0.999, "{stdout}");
    assert!(mesh.metric(&["weft_outlier_ejections_total", "shop/web"]) >= 1.0);
}
