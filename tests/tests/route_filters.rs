//! Route rule filters, timeouts and retries on the request path, end to end: the
//! real control plane takes an HTTPRoute through `weftctl apply`, the real client
//! proxy carries out its rules, curl is the client and `weft-test-app --echo`
//! reports what reached the backend. Header modifiers on the request and the
//! response, URL rewrites of path and host, redirects with their Location, a rule's
//! request timeout shorter than its service's, a rule's retry replacing the
//! service's, the debug headers naming the rule and backend; a GRPCRoute rule's
//! retry by gRPC status, seen by the Python grpcio client; and header and path
//! matches driven by h2load over h2c, counted at the backends.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_e2e::mesh::{client_proxy, metric_value, shop_service, weftctl_ok, App, ControlPlane};
use weft_e2e::{free_port, grpc, http_get, run, wait_for, which};

const WAIT: Duration = Duration::from_secs(20);

/// A service `name` in `shop` on port 80 (`spec` adds indented lines to its spec),
/// its one endpoint the app at `addr`. The parent service of the routes below is
/// `http2` instead, so that the proxy's listener for it takes HTTP/2 clients (h2c,
/// prior knowledge) as well as HTTP/1.1 ones; its backends are `http1`.
fn service(name: &str, addr: SocketAddr, spec: &str) -> String {
    shop_service(name, "http1", addr, spec)
}

/// The rules under test, all on `web`.
const ROUTE: &str = "kind: HTTPRoute
metadata: {name: web-filters, namespace: shop}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: by-route}]
        add: [{name: x-add, value: by-route}]
        remove: [x-gone]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-answer, value: by-route}]
        add: [{name: x-served-by, value: by-route}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [x-served-by]}
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /status}}}
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
  - matches: [{path: {type: Exact, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 308}}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    backendRefs: [{name: slow, port: 80}]
    timeouts: {request: 300ms}
  - matches: [{path: {type: PathPrefix, value: /patient}}]
    backendRefs: [{name: slow, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /unhurried}}]
    backendRefs: [{name: slow, port: 80}]
    timeouts: {request: 0s}
  - matches: [{path: {type: PathPrefix, value: /per-try}}]
    backendRefs: [{name: slow, port: 80}]
    timeouts: {backendRequest: 200ms}
  - matches: [{path: {type: PathPrefix, value: /retry}}]
    backendRefs: [{name: flaky, port: 80}]
    retry: {codes: [503], attempts: 1, backoff: 10ms}
  - matches: [{path: {type: PathPrefix, value: /noretry}}]
    backendRefs: [{name: flaky, port: 80}]
    retry: {codes: [503], attempts: 0}
  - matches: [{path: {type: PathPrefix, value: /service-retry}}]
    backendRefs: [{name: flaky, port: 80}]
";

/// What curl got: the status, the response headers (names lower case), the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The echoing backend's report of the request it received.
    fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not an echo: {}", self.body))
    }
}

/// `curl` through the proxy, for `web.shop`, with extra arguments (`-H ...`).
fn curl(listen: SocketAddr, path: &str, extra: &[&str]) -> Answer {
    try_curl(listen, path, extra).unwrap_or_else(|e| panic!("curl {path}: {e}"))
}

/// [`curl`], with a failed exchange as an error.
fn try_curl(listen: SocketAddr, path: &str, extra: &[&str]) -> Result<Answer, String> {
    let mut command = Command::new(which("curl"));
    command.args(["-sS", "-i", "-H", "host: web.shop"]);
    command.args(extra);
    command.arg(format!("http://{listen}{path}"));
    let output = run(&mut command);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response head in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// How many requests reached an app (its own counter, asked directly).
fn served(app: &App) -> u64 {
    let (status, body) = http_get(app.addr, "/served").expect("ask the app");
    assert_eq!(status, 200);
    body.trim().parse().expect("a count")
}

#[test]
fn rule_filters_timeouts_and_retries_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = ["--echo", "true"];
    let web = App::start(dir.path(), "web", &echo);
    let v1 = App::start(dir.path(), "v1", &echo);
    let slow = App::start(dir.path(), "slow", &["--delay-ms", "2000"]);
    // Every other request fails with 503.
    let flaky = App::start(
        dir.path(),
        "flaky",
        &["--fail-ratio", "0.5", "--fail-status", "503"],
    );
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(
        dir.path(),
        &cp.address(),
        "client",
        "shop/web",
        &["--debug-headers"],
    );
    let mesh = [
        shop_service("web", "http2", web.addr, ""),
        service("v1", v1.addr, ""),
        // The service's own timeout is longer than the rules' and shorter than
        // the app takes.
        service("slow", slow.addr, "  timeouts: {requestMs: 1500}"),
        // The service retries every 5xx on its own; rules say otherwise.
        service(
            "flaky",
            flaky.addr,
            "  retries: {retryOn: [5xx], maxRetries: 2, backoffBaseMs: 1}\n  outlierDetection: {consecutiveFailures: 0}",
        ),
        ROUTE.to_owned(),
    ]
    .concat();
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    wait_for("the route to apply", WAIT, || {
        try_curl(listen, "/headers", &[])
            .is_ok_and(|answer| answer.status == 200)
            .then_some(())
    });

    // Request headers reach the backend modified; the response the client gets is
    // modified too; the debug headers name the rule and the backend.
    let answer = curl(
        listen,
        "/headers/x",
        &[
            "-H",
            "x-set: from-client",
            "-H",
            "x-add: from-client",
            "-H",
            "x-gone: 1",
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = answer.echo();
    assert_eq!(seen["served_by"], "v1");
    assert_eq!(seen["headers"]["x-set"], serde_json::json!(["by-route"]));
    assert_eq!(
        seen["headers"]["x-add"],
        serde_json::json!(["from-client", "by-route"])
    );
    assert!(seen["headers"].get("x-gone").is_none(), "{seen}");
    assert_eq!(answer.header("x-answer"), ["by-route"]);
    assert_eq!(answer.header("x-served-by"), ["v1", "by-route"]);
    assert_eq!(answer.header("weft-route"), ["shop/web-filters"]);
    assert_eq!(answer.header("weft-route-rule"), ["0"]);
    assert_eq!(answer.header("weft-backend"), ["shop/v1:80"]);

    // URL rewrites: the backend sees the new path (query kept) and host, from an
    // HTTP/1.1 client and from an HTTP/2 one (whose host is `:authority`).
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let answer = curl(listen, "/api/items?id=7&x", extra);
        assert_eq!(answer.status, 200, "{extra:?}: {}", answer.body);
        let seen = answer.echo();
        assert_eq!(seen["target"], "/v2/items?id=7&x", "{extra:?}");
        assert_eq!(seen["host"], "api.internal", "{extra:?}");
        assert!(answer.header("x-served-by").is_empty(), "{extra:?}");
        assert_eq!(answer.header("weft-route-rule"), ["1"]);
    }
    assert_eq!(curl(listen, "/strip/bar?q", &[]).echo()["target"], "/bar?q");
    assert_eq!(curl(listen, "/strip", &[]).echo()["target"], "/");
    let full = curl(listen, "/full/anything?verbose=1", &[]).echo();
    assert_eq!(full["target"], "/status?verbose=1");
    assert_eq!(full["host"], "web.shop", "the host is left alone");

    // Redirects answer with their status and Location, and forward nothing.
    let before = served(&web) + served(&v1);
    let moved = curl(listen, "/old/page?id=7", &[]);
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        ["http://example.com/new/page?id=7"]
    );
    assert_eq!(moved.header("weft-route-rule"), ["4"]);
    assert!(moved.header("weft-backend").is_empty());
    let secure = curl(listen, "/moved", &[]);
    assert_eq!(secure.status, 308);
    assert_eq!(secure.header("location"), ["https://web.shop/moved"]);
    assert_eq!(served(&web) + served(&v1), before);

    // Timeouts against an app that takes 2 s, under a service that allows 1.5 s:
    // (path, status, at least, less than). A 504 before 1.5 s is the rule's doing.
    let ms = Duration::from_millis;
    for (path, status, at_least, within) in [
        // The rule's 300 ms request timeout fires first.
        ("/slow", 504, ms(300), ms(1400)),
        // Without rule timeouts, the service's.
        ("/patient", 504, ms(1500), ms(5000)),
        // `0s` turns the service's off.
        ("/unhurried", 200, ms(2000), ms(5000)),
        // 200 ms per attempt; the service's two retries go the same way.
        ("/per-try", 504, ms(600), ms(1400)),
    ] {
        let started = Instant::now();
        let answer = curl(listen, path, &[]);
        let took = started.elapsed();
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(at_least <= took && took < within, "{path} took {took:?}");
    }

    // Retries: the rule's code and attempts in place of the service's.
    let count = |path: &str| -> (usize, u64) {
        let before = served(&flaky);
        let ok = (0..10)
            .filter(|_| curl(listen, path, &[]).status == 200)
            .count();
        (ok, served(&flaky) - before)
    };
    let (ok, attempts) = count("/retry");
    assert_eq!(ok, 10, "a retry on 503 hides every failure");
    assert!(attempts > 10, "{attempts} attempts");
    // attempts: 0 turns retries off, though the service would retry 5xx: the app
    // alternates, so exactly every other request fails, each sent once.
    let (ok, attempts) = count("/noretry");
    assert_eq!((ok, attempts), (5, 10));
    let (ok, _) = count("/service-retry");
    assert_eq!(ok, 10, "without a rule retry, the service's own applies");
}

/// h2load through the proxy over h2c: (succeeded, 2xx, its report).
fn h2load(
    listen: SocketAddr,
    path: &str,
    requests: usize,
    extra: &[&str],
) -> (usize, usize, String) {
    let mut command = Command::new(which("h2load"));
    command.args(["-n", &requests.to_string(), "-c", "2", "-m", "8"]);
    command.args(["-H", "host: web.shop"]);
    command.args(extra);
    command.arg(format!("http://{listen}{path}"));
    let output = run(&mut command);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "h2load: {text}{output:?}");
    // "requests: 500 total, 500 started, 500 done, 500 succeeded, 0 failed, ..."
    // "status codes: 500 2xx, 0 3xx, 0 4xx, 0 5xx"
    let number_before = |line: &str, word: &str| -> usize {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == word).expect(word);
        words[at - 1].parse().expect("a number")
    };
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
            .to_owned()
    };
    (
        number_before(&line("requests:"), "succeeded"),
        number_before(&line("status codes:"), "2xx"),
        text,
    )
}

#[test]
fn header_and_path_matches_hold_under_h2load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let apps: Vec<App> = ["web", "v1", "v2"]
        .iter()
        .map(|name| App::start(dir.path(), name, &[]))
        .collect();
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/web", &[]);
    let mut mesh: String = apps
        .iter()
        .map(|a| match a.name.as_str() {
            "web" => shop_service(&a.name, "http2", a.addr, ""),
            _ => service(&a.name, a.addr, ""),
        })
        .collect();
    mesh.push_str(
        "kind: HTTPRoute
metadata: {name: web-matches, namespace: shop}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: 'yes'}]}]
    backendRefs: [{name: v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}}]
",
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    wait_for("the route to apply", WAIT, || {
        matches!(http_get(listen, "/v1/x"), Ok((200, body)) if body == "v1\n").then_some(())
    });

    let counts = || apps.iter().map(served).collect::<Vec<u64>>();
    let routed = |service: &str| {
        let metrics = client.metrics();
        let service = format!("service=\"shop/{service}\"");
        metric_value(
            &metrics,
            &[
                "weft_requests_total{",
                &service,
                "route=\"shop/web-matches\"",
            ],
        )
        .unwrap_or(0.0)
    };
    // Each run's requests all land on its rule's backend, and nowhere else.
    for (path, header, backend) in [
        ("/anything", Some("x-canary: yes"), 2),
        ("/v1/items", None, 1),
        ("/other", None, 0),
    ] {
        let before = counts();
        let metric_before = routed(&apps[backend].name);
        let extra: Vec<&str> = header.iter().flat_map(|h| ["-H", *h]).collect();
        let (succeeded, ok, report) = h2load(listen, path, 400, &extra);
        assert_eq!((succeeded, ok), (400, 400), "{path} {header:?}: {report}");
        let after = counts();
        for (i, app) in apps.iter().enumerate() {
            let expected = if i == backend { 400 } else { 0 };
            assert_eq!(
                after[i] - before[i],
                expected,
                "{path} {header:?}: {} served {}",
                app.name,
                after[i] - before[i]
            );
        }
        assert_eq!(
            routed(&apps[backend].name) - metric_before,
            400.0,
            "{path} {header:?}"
        );
    }
}

#[test]
fn a_grpc_rule_retry_answers_by_grpc_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = grpc::script(dir.path());
    // Every other call fails with UNAVAILABLE, which the service retries by default.
    let flaky = App::start(dir.path(), "flaky", &["--fail-ratio", "0.5"]);
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/echo", &[]);
    let mut mesh = shop_service(
        "echo",
        "grpc",
        flaky.addr,
        "  outlierDetection: {consecutiveFailures: 0}",
    );
    mesh.push_str(
        "kind: GRPCRoute
metadata: {name: echo-retries, namespace: shop}
spec:
  parentRefs: [{name: echo, port: 80}]
  rules:
  - matches: [{method: {service: weft.test.Echo, method: Retried}}]
    retry: {codes: [UNAVAILABLE], attempts: 1, backoff: 10ms}
  - matches: [{method: {service: weft.test.Echo, method: Once}}]
    retry: {codes: [UNAVAILABLE], attempts: 0}
",
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    let target = listen.to_string();
    let call = |method: &str| {
        let path = format!("/weft.test.Echo/{method}");
        grpc::client(&script, &["served", &target, &path])["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    wait_for("the route to apply", WAIT, || {
        let dump = client.config_dump();
        dump["resources"]["grpc_routes"]
            .to_string()
            .contains("echo-retries")
            .then_some(())
    });
    let count = |method: &str| -> (usize, u64) {
        let before = served(&flaky);
        let ok = (0..10).filter(|_| call(method) == "OK").count();
        (ok, served(&flaky) - before)
    };
    let (ok, attempts) = count("Retried");
    assert_eq!(ok, 10, "a retry on UNAVAILABLE hides every failure");
    assert!(attempts > 10, "{attempts} attempts");
    let (ok, attempts) = count("Once");
    assert_eq!(
        (ok, attempts),
        (5, 10),
        "attempts: 0 turns the service's retries off"
    );
}
