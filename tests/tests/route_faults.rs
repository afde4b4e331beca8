//! A rule's fault injection, local rate limit and request mirror, end to end: the
//! real control plane takes the routes through `weftctl apply`, the real
//! client-side proxy carries them out, curl (thousands of requests on one
//! keep-alive connection) and the Python grpcio client count what comes back.
//!
//! Each route has a `/ready` rule that aborts every request with an unusual
//! status: once curl sees it, the data path holds that version of the route (the
//! filters' state is swapped in with the route table), so no request before that
//! is counted.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_e2e::mesh::{
    client_proxy, http_app, metric_value, named_app, shop_service, weftctl_ok, ControlPlane,
};
use weft_e2e::{free_port, grpc, loopback, metric_sum, run, wait_for, which};

const WAIT: Duration = Duration::from_secs(30);

/// An HTTPRoute `name` on `web` whose first rule answers `/ready` with `ready`
/// (the marker of this version), then `rules` (YAML list items), then a rule
/// sending everything else to `web`.
fn route(name: &str, ready: u16, rules: &str) -> String {
    format!(
        "kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: web, port: 80}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /ready}}}}]
    filters: [{{type: weft.io/Fault, fault: {{abort: {{httpStatus: {ready}, percent: 100}}}}}}]
{rules}
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
"
    )
}

/// What curl saw of one response.
#[derive(Debug)]
struct Reply {
    status: u16,
    seconds: f64,
    retry_after: String,
}

/// `n` GETs of `path` through the proxy, in order, on one keep-alive connection
/// (curl's URL globbing), with their status, time and `Retry-After`.
fn curl_many(listen: SocketAddr, path: &str, n: usize) -> Vec<Reply> {
    let output = run(Command::new(which("curl")).args([
        "-sS",
        "-w",
        "\n@@ %{http_code} %{time_total} %header{retry-after}\n",
        &format!("http://{listen}{path}?n=[1-{n}]"),
    ]));
    let text = String::from_utf8_lossy(&output.stdout);
    let replies: Vec<Reply> = text
        .lines()
        .filter_map(|line| line.strip_prefix("@@ "))
        .map(|line| {
            let mut words = line.split(' ');
            Reply {
                status: words.next().and_then(|s| s.parse().ok()).unwrap_or(0),
                seconds: words.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
                retry_after: words.next().unwrap_or("").to_owned(),
            }
        })
        .collect();
    assert_eq!(
        replies.len(),
        n,
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    replies
}

fn status_of(listen: SocketAddr, path: &str) -> u16 {
    curl_many(listen, path, 1)[0].status
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// The `q` quantile (0-1) of the replies' times, in seconds.
fn quantile(replies: &[Reply], q: f64) -> f64 {
    let mut times: Vec<f64> = replies.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    times[((times.len() - 1) as f64 * q) as usize]
}

/// An HTTP/1.1 app that answers every request (keep-alive) after `delay`,
/// recording each request's Host header.
fn recording_app(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().expect("app address");
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = hosts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut writer = stream;
                loop {
                    let mut host = String::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {
                                if let Some((name, value)) = line.split_once(':') {
                                    if name.eq_ignore_ascii_case("host") {
                                        host = value.trim().to_owned();
                                    }
                                }
                            }
                        }
                    }
                    std::thread::sleep(delay);
                    seen.lock().expect("hosts").push(host);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nshadow";
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, hosts)
}

/// A control plane, a client proxy for `shop/web`, and `mesh` applied.
fn mesh(dir: &std::path::Path, mesh: &str) -> (ControlPlane, weft_e2e::mesh::Proxy, SocketAddr) {
    let cp = ControlPlane::start(dir, &dir.join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir, &cp.address(), "client", "shop/web", &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(mesh));
    client.wait_ready();
    (cp, client, listen)
}

fn wait_ready_marker(listen: SocketAddr, status: u16) {
    wait_for(&format!("the route marked {status}"), WAIT, || {
        (status_of(listen, "/ready") == status).then_some(())
    });
}

#[test]
fn faults_abort_and_delay_their_share_of_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = "  - matches: [{path: {type: Exact, value: /abort}}]
    filters: [{type: weft.io/Fault, fault: {abort: {httpStatus: 503, percent: 30}}}]
  - matches: [{path: {type: Exact, value: /delay}}]
    filters: [{type: weft.io/Fault, fault: {delay: {fixedDelay: 25ms, percent: 10}}}]
  - matches: [{path: {type: Exact, value: /beyond}}]
    filters: [{type: weft.io/Fault, fault: {delay: {fixedDelay: 1s, percent: 100}}}]";
    let timeout = "  timeouts: {requestMs: 500}";
    let config =
        shop_service("web", "http1", named_app("web"), timeout) + &route("faults", 418, rules);
    let (_cp, client, listen) = mesh(dir.path(), &config);
    wait_ready_marker(listen, 418);

    let replies = curl_many(listen, "/abort", 5_000);
    let aborted = replies.iter().filter(|r| r.status == 503).count();
    let passed = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(aborted + passed, 5_000, "only 200 and the configured 503");
    let share = percent(aborted, 5_000);
    eprintln!("abort: configured 30%, measured {share:.2}% of 5000");
    assert!((share - 30.0).abs() <= 2.0, "aborted {share}%");

    // A delayed request takes the 25 ms; the others take a loopback hop.
    let replies = curl_many(listen, "/delay", 3_000);
    assert!(replies.iter().all(|r| r.status == 200));
    let delayed = replies.iter().filter(|r| r.seconds >= 0.024).count();
    let share = percent(delayed, 3_000);
    eprintln!("delay: configured 10%, measured {share:.2}% of 3000");
    assert!((share - 10.0).abs() <= 2.0, "delayed {share}%");

    // A delay beyond the service's request timeout: the proxy's own 504.
    let beyond = curl_many(listen, "/beyond", 1);
    assert_eq!(beyond[0].status, 504, "{beyond:?}");

    let metrics = client.metrics();
    let faults = |kind: &str| {
        let kind = format!("kind=\"{kind}\"");
        metric_value(
            &metrics,
            &["weft_route_faults_total{", "route=\"shop/faults\"", &kind],
        )
        .unwrap_or(0.0)
    };
    eprintln!(
        "delay: the proxy counted {} delays, curl saw {delayed}",
        faults("delay")
    );
    // The /ready polls abort too.
    assert!(faults("abort") >= aborted as f64 + 1.0, "{metrics}");
    assert!(faults("delay") >= delayed as f64 * 0.9, "{metrics}");
}

#[test]
fn injected_aborts_are_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, accepted) = http_app("backend");
    let retries = "  retries: {retryOn: [5xx, reset, connect-failure], maxRetries: 2}";
    let rules = "  - matches: [{path: {type: PathPrefix, value: /flaky}}]
    filters: [{type: weft.io/Fault, fault: {abort: {httpStatus: 503, percent: 100}}}]";
    let config = shop_service("web", "http1", backend, retries) + &route("aborts", 418, rules);
    let (_cp, client, listen) = mesh(dir.path(), &config);
    wait_ready_marker(listen, 418);

    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let replies = curl_many(listen, "/flaky", 500);
    assert!(replies.iter().all(|r| r.status == 503));
    // Not one request reached the backend, and the retry loop never ran.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), before);
    let metrics = client.metrics();
    assert_eq!(
        metric_sum(&metrics, "weft_retries_total", &["service=\"shop/web\""]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "weft_responses_total",
            &["route=\"shop/aborts\"", "status_code=\"503\""]
        ),
        500.0,
        "{metrics}"
    );
}

#[test]
fn a_rate_limit_passes_its_burst_then_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Refilled once a minute: no token comes back while the test runs, so the
    // counts are exact, not timing-dependent.
    let limits = |burst: u32| {
        format!(
            "  - matches: [{{path: {{type: Exact, value: /burst}}}}]
    filters: [{{type: weft.io/LocalRateLimit, localRateLimit: {{requestsPerUnit: 1, unit: minute, burst: {burst}}}}}]
  - matches: [{{path: {{type: Exact, value: /share}}}}]
    filters: [{{type: weft.io/LocalRateLimit, localRateLimit: {{requestsPerUnit: 1, unit: minute, burst: 1000}}}}]"
        )
    };
    let config =
        shop_service("web", "http1", named_app("web"), "") + &route("limits", 418, &limits(5));
    let (cp, client, listen) = mesh(dir.path(), &config);
    wait_ready_marker(listen, 418);

    let burst = curl_many(listen, "/burst", 8);
    let statuses: Vec<u16> = burst.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    for reply in &burst[5..] {
        let seconds: u64 = reply.retry_after.trim().parse().expect("Retry-After");
        assert!((1..=60).contains(&seconds), "{reply:?}");
    }

    let replies = curl_many(listen, "/share", 5_000);
    let limited = replies.iter().filter(|r| r.status == 429).count();
    let passed = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(limited + passed, 5_000);
    let share = percent(limited, 5_000);
    eprintln!("rate limit: burst 1000 of 5000, limited {share:.2}% (configured 80%)");
    assert!((share - 80.0).abs() <= 2.0, "limited {share}%");

    // A push that changes another rule keeps the bucket: still empty.
    let pushed = route("limits", 419, &limits(5));
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&pushed));
    wait_ready_marker(listen, 419);
    assert_eq!(status_of(listen, "/burst"), 429);
    // A changed limit starts a new, full bucket.
    let pushed = route("limits", 420, &limits(2));
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&pushed));
    wait_ready_marker(listen, 420);
    let statuses: Vec<u16> = curl_many(listen, "/burst", 3)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    let metrics = client.metrics();
    let counted = metric_value(
        &metrics,
        &["weft_route_rate_limited_total{", "route=\"shop/limits\""],
    )
    .unwrap_or(0.0);
    assert_eq!(counted, (3 + limited + 1 + 1) as f64, "{metrics}");
}

#[test]
fn grpc_faults_and_limits_answer_with_grpc_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = grpc::script(dir.path());
    let app = grpc::app(&script, "one");
    let shadow = grpc::app(&script, "shadow");
    let config = shop_service("echo", "grpc", app.addr, "")
        + &shop_service("echo-shadow", "grpc", shadow.addr, "")
        + "kind: GRPCRoute
metadata: {name: echo-faults, namespace: shop}
spec:
  parentRefs: [{name: echo, port: 80}]
  rules:
  - matches: [{method: {service: weft.test.Echo, method: Unary}}]
    filters: [{type: weft.io/Fault, fault: {abort: {grpcStatus: ABORTED, percent: 100}}}]
  - matches: [{method: {service: weft.test.Echo, method: Stream}}]
    filters: [{type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 1, unit: minute, burst: 1}}]
";
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/echo", &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&config));
    client.wait_ready();
    let target = listen.to_string();
    let call = |path: &str| grpc::client(&script, &["served", &target, path]);
    wait_for("the abort to apply", WAIT, || {
        (call("/weft.test.Echo/Unary")["code"] == "ABORTED").then_some(())
    });
    let first = call("/weft.test.Echo/Stream");
    assert_eq!(first["code"], "OK", "{first}");
    let second = call("/weft.test.Echo/Stream");
    assert_eq!(second["code"], "RESOURCE_EXHAUSTED", "{second}");

    // A gRPC call's body streams (HTTP/2 DATA after the headers): the mirror gets
    // it teed, and answers each copy.
    let mirrored = config.replace(
        "filters: [{type: weft.io/Fault, fault: {abort: {grpcStatus: ABORTED, percent: 100}}}]",
        "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: echo-shadow, port: 80}}}]",
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mirrored));
    wait_for("the mirror rule to apply", WAIT, || {
        (call("/weft.test.Echo/Unary")["code"] == "OK").then_some(())
    });
    for _ in 0..5 {
        let unary = call("/weft.test.Echo/Unary");
        assert_eq!(unary["served_by"], "one", "{unary}");
    }
    let answered = || {
        metric_sum(
            &client.metrics(),
            "weft_responses_total",
            &["service=\"shop/echo-shadow\"", "grpc_status=\"0\""],
        )
    };
    wait_for("the mirror to answer the copies", WAIT, || {
        (answered() >= 5.0).then_some(())
    });
}

#[test]
fn a_mirror_gets_its_share_and_never_slows_or_fails_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shadow, shadow_hosts) = recording_app(Duration::ZERO);
    let (slow, slow_hosts) = recording_app(Duration::from_secs(2));
    // Nothing listens there.
    let dead = loopback(free_port());
    let rules = "  - matches: [{path: {type: Exact, value: /half}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 50}}]
  - matches: [{path: {type: Exact, value: /slow}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: slow}}}]
  - matches: [{path: {type: Exact, value: /dead}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: dead}}}]";
    let config = [
        shop_service("web", "http1", named_app("web"), ""),
        shop_service("shadow", "http1", shadow, ""),
        shop_service("slow", "http1", slow, ""),
        shop_service("dead", "http1", dead, ""),
        route("mirrors", 418, rules),
    ]
    .concat();
    let (_cp, client, listen) = mesh(dir.path(), &config);
    wait_ready_marker(listen, 418);

    let n = 5_000;
    let replies = curl_many(listen, "/half", n);
    assert!(replies.iter().all(|r| r.status == 200));
    let sent = || {
        metric_value(
            &client.metrics(),
            &["weft_route_mirrors_total{", "route=\"shop/mirrors\""],
        )
        .unwrap_or(0.0) as usize
    };
    // The copies are sent on their own: wait until the mirror has every one.
    let mirrored = sent();
    wait_for("the mirror to receive every copy", WAIT, || {
        (shadow_hosts.lock().expect("hosts").len() == mirrored).then_some(())
    });
    let share = percent(mirrored, n);
    eprintln!("mirror: configured 50%, measured {share:.2}% of {n}");
    assert!((share - 50.0).abs() <= 2.0, "mirrored {share}%");
    // curl sends `Host: 127.0.0.1:PORT`; the copy says `127.0.0.1-shadow:PORT`.
    let shadowed = format!("127.0.0.1-shadow:{}", listen.port());
    let hosts = shadow_hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| *h == shadowed), "{:?}", &hosts[..3]);

    // A mirror that takes 2 s per request: the client does not wait for it.
    let replies = curl_many(listen, "/slow", 200);
    assert!(replies.iter().all(|r| r.status == 200));
    let p99 = quantile(&replies, 0.99);
    eprintln!("client p99 with a 2 s mirror: {:.1} ms", p99 * 1000.0);
    assert!(p99 < 0.5, "p99 {p99}");
    wait_for("the slow mirror to see copies", WAIT, || {
        (!slow_hosts.lock().expect("hosts").is_empty()).then_some(())
    });

    // A mirror with no live endpoint: every client request still succeeds.
    let replies = curl_many(listen, "/dead", 500);
    assert!(replies.iter().all(|r| r.status == 200));
    let p99 = quantile(&replies, 0.99);
    eprintln!("client p99 with a dead mirror: {:.1} ms", p99 * 1000.0);
    assert!(p99 < 0.5, "p99 {p99}");
    let metrics = client.metrics();
    assert!(
        metric_sum(
            &metrics,
            "weft_request_errors_total",
            &["service=\"shop/dead\""]
        ) > 0.0,
        "the dead mirror's failures are counted against it: {metrics}"
    );
}
