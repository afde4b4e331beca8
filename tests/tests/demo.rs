//! The README's first command, run as a user runs it: `deploy/demo/run.sh` for a bounded
//! time, with chaos on, against the binaries the build step made. What it reports
//! (its summary and each sidecar's last `/metrics`) must show the shop working through
//! the mesh, and nothing it started may be left behind.
//!
//! Also checks the Kubernetes twin against the local demo's config: same mesh file,
//! same virtual IPs, the identities its policies allow.
//!
//! Needs root for the capture mode (network namespaces and iptables), as CI has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use weft_e2e::mesh::{weftctl, weftctl_ok};
use weft_e2e::{bin_dir, metric_sum as sum, wait_for};

/// One demo at a time: its namespaces, ports and run directory have fixed names.
static DEMO: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

struct Run {
    stdout: String,
    summary: serde_json::Value,
    /// Each sidecar's last /metrics text, by pod name.
    metrics: BTreeMap<String, String>,
}

fn run_demo(args: &[&str]) -> Run {
    run_demo_with(args, || {})
}

/// Runs the demo to its end, calling `during` while it runs (it must return before
/// the demo's `--duration` ends).
fn run_demo_with(args: &[&str], during: impl FnOnce()) -> Run {
    let summary_dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new("bash")
        .arg(repo().join("deploy/demo/run.sh"))
        .args(args)
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--summary-dir")
        .arg(summary_dir.path())
        .current_dir(repo())
        .stdin(Stdio::null())
        // Files, not pipes: nobody reads a pipe while `during` runs.
        .stdout(log(&summary_dir, "stdout"))
        .stderr(log(&summary_dir, "stderr"))
        .spawn()
        .expect("run deploy/demo/run.sh");
    // The demo ends by itself: a failure in `during` waits for it, so that nothing
    // it started outlives the test.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
    let status = child.wait().expect("wait for deploy/demo/run.sh");
    let read = |name: &str| {
        std::fs::read_to_string(summary_dir.path().join(format!("run.{name}"))).unwrap_or_default()
    };
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    if let Err(failure) = checked {
        eprintln!("{stdout}\n{stderr}");
        std::panic::resume_unwind(failure);
    }
    assert!(
        status.success(),
        "run.sh {args:?} failed ({status}):\n{stdout}\n{stderr}"
    );
    let text = std::fs::read_to_string(summary_dir.path().join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json ({e}):\n{stdout}\n{stderr}"));
    let summary: serde_json::Value = serde_json::from_str(&text).expect("summary.json is JSON");
    let mut metrics = BTreeMap::new();
    for entry in std::fs::read_dir(summary_dir.path().join("metrics")).expect("metrics dir") {
        let path = entry.expect("dir entry").path();
        let pod = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("pod name")
            .to_owned();
        metrics.insert(pod, std::fs::read_to_string(&path).expect("metrics file"));
    }
    Run {
        stdout,
        summary,
        metrics,
    }
}

/// A file in `dir` for the demo's `name` stream.
fn log(dir: &tempfile::TempDir, name: &str) -> std::fs::File {
    std::fs::File::create(dir.path().join(format!("run.{name}"))).expect("demo log file")
}

const SERVICE_PODS: [&str; 6] = [
    "users",
    "products-1",
    "products-2",
    "cart",
    "orders-1",
    "orders-2",
];

/// What the demo must show in either mode: every journey and call succeeded, and
/// every replica of every service served traffic over mTLS only.
fn assert_the_shop_worked(run: &Run) {
    let summary = &run.summary;
    let journeys = &summary["journeys"];
    assert!(
        journeys["ok"].as_u64() > Some(0),
        "no journey succeeded: {summary:#}\n{}",
        run.stdout
    );
    assert_eq!(
        journeys["failed"].as_u64(),
        Some(0),
        "failed journeys: {summary:#}\n{}",
        run.stdout
    );
    for service in ["users", "products", "orders", "cart"] {
        let calls = &summary["calls"][service];
        assert!(
            calls["ok"].as_u64() > Some(0),
            "no call to {service}: {summary:#}"
        );
        assert_eq!(calls["failed"].as_u64(), Some(0), "{service}: {summary:#}");
    }
    for pod in SERVICE_PODS {
        let metrics = run
            .metrics
            .get(pod)
            .unwrap_or_else(|| panic!("no metrics from {pod}'s sidecar"));
        let over_tls = sum(
            metrics,
            "weft_requests_total",
            &["direction=\"inbound\"", "tls=\"true\""],
        );
        let plaintext = sum(
            metrics,
            "weft_requests_total",
            &["direction=\"inbound\"", "tls=\"false\""],
        );
        assert!(over_tls > 0.0, "{pod} served nothing over mTLS:\n{metrics}");
        assert_eq!(plaintext, 0.0, "{pod} served plaintext:\n{metrics}");
    }
    let shopper = run.metrics.get("shopper").expect("the shopper's metrics");
    assert!(
        sum(
            shopper,
            "weft_tls_connections_total",
            &["direction=\"outbound\""]
        ) > 0.0,
        "the shopper's sidecar made no mTLS connection:\n{shopper}"
    );
    let by_replica = &summary["orders_by_replica"];
    for replica in ["orders-1", "orders-2"] {
        assert!(
            by_replica[replica].as_u64() > Some(0),
            "{replica} took no order: {summary:#}"
        );
    }
}

/// Nothing the demo started is left: no namespace, no process, no rule in the host's
/// own tables (compared with `before`), no run directory.
fn assert_nothing_left(iptables_before: &str) {
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains("weft-demo-"),
        "namespaces left:\n{namespaces}"
    );
    let bin = bin_dir();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // The demo's namespaces and run directory, not any process that merely
        // names a `weft-demo.lock` (the lock that serializes demo runs).
        let demo = cmdline.contains("weft-demo-") || cmdline.contains("weft-demo/");
        assert!(
            !(demo || cmdline.contains(&format!("{}/weft-shop", bin.display()))),
            "process {} left: {cmdline}",
            entry.file_name().to_string_lossy()
        );
    }
    assert_eq!(iptables(), iptables_before, "the host's iptables changed");
    let run_dir = std::env::temp_dir().join("weft-demo");
    assert!(!run_dir.exists(), "{} left", run_dir.display());
}

/// The host namespace's rules, without counters.
fn iptables() -> String {
    let output = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_owned() + "\n")
        .collect()
}

#[test]
fn the_demo_serves_the_shop_through_the_mesh_and_loses_nothing_when_a_replica_dies() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = iptables();
    let run = run_demo(&["--duration", "20", "--chaos"]);
    assert_eq!(
        run.summary["capture"].as_bool(),
        Some(true),
        "as root the demo captures traffic with iptables:\n{}",
        run.stdout
    );
    assert_the_shop_worked(&run);
    let chaos: Vec<&str> = run.summary["chaos"]
        .as_array()
        .expect("chaos events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        chaos.iter().any(|e| e.contains("SIGKILL orders-2"))
            && chaos.iter().any(|e| e.contains("orders-2 is back")),
        "the replica was not killed and brought back: {chaos:?}\n{}",
        run.stdout
    );
    // The table showed the replica leave and return.
    let orders_endpoints: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("shop/orders "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let left = orders_endpoints.iter().position(|e| *e == "1");
    assert!(
        left.is_some_and(|at| orders_endpoints[at..].contains(&"2")),
        "orders' endpoints never went 2 -> 1 -> 2 in the table: {orders_endpoints:?}\n{}",
        run.stdout
    );
    let first = run.summary["seconds_to_first_success"].as_f64();
    assert!(first.is_some(), "{:#}", run.summary);
    assert_nothing_left(&before);
}

/// Where the demo's control plane listens without capture (deploy/demo/run.sh).
const DEMO_CONTROL_PLANE: &str = "127.0.0.1:17010";

/// `weftctl explain` of the shopper's checkout (`POST /orders`), from the demo's
/// control plane, with `extra` arguments.
fn explain_checkout(source: &str, extra: &[&str]) -> String {
    let mut args = vec!["explain", source, "http://orders.shop/orders", "-X", "POST"];
    args.extend_from_slice(extra);
    weftctl_ok(DEMO_CONTROL_PLANE, &args, None)
}

/// While the demo runs: `weftctl explain` names the route of orders (from
/// deploy/demo/routes.yaml), its backend, the policy that admits the shopper and
/// both replicas (registered by their proxies), from the control plane and from the
/// shopper's own proxy. After a route change both answer with the new rule; the new
/// route still sends every request to orders, so the shop goes on working.
fn explain_the_checkout_and_change_its_route() {
    const WAIT: Duration = Duration::from_secs(60);
    let shopper = wait_for("the shopper's proxy in the status", WAIT, || {
        let output = weftctl(DEMO_CONTROL_PLANE, &["status", "-o", "json"], None);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let proxies = status.as_array()?;
        let shopper = proxies.iter().find(|p| p["id"] == "shopper")?;
        shopper["adminAddress"].as_str().map(str::to_owned)
    });
    let expected = [
        "service  shop/orders port 80 (by hostname)",
        "outcome  forwarded",
        "route    HTTPRoute shop/orders-rollout rule 0 (stable), producer route",
        "match    path prefix /",
        "timeouts request 5000ms",
        "backend  shop/orders:80  weight 100 (100%)",
        "authz    allowed by shop/orders-callers",
        "healthy   zone eu-west-1a",
        "healthy   zone eu-west-1b",
    ];
    // From the control plane's view, then the shopper's proxy explaining for its
    // own workload: the same answer, once both replicas are in.
    let replicas = |text: &String| text.matches("  endpoint ").count() == 2;
    for extra in [&[][..], &["--proxy", &shopper]] {
        let source = if extra.is_empty() {
            "shop/shopper"
        } else {
            "self"
        };
        let text = wait_for("both orders replicas in the view", WAIT, || {
            let mut args = vec!["explain", source, "http://orders.shop/orders", "-X", "POST"];
            args.extend_from_slice(extra);
            let output = weftctl(DEMO_CONTROL_PLANE, &args, None);
            Some(String::from_utf8_lossy(&output.stdout).into_owned()).filter(replicas)
        });
        for line in expected {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    // Checkouts get a rule of their own.
    let route = std::fs::read_to_string(repo().join("deploy/demo/routes.yaml"))
        .expect("routes.yaml")
        .replace(
            "  rules:\n",
            "  rules:\n  - name: checkout\n    matches: [{path: {type: Exact, value: /orders}, method: POST}]\n    backendRefs: [{name: orders, weight: 100}]\n",
        );
    weftctl_ok(DEMO_CONTROL_PLANE, &["apply", "-f", "-"], Some(&route));
    let changed = "route    HTTPRoute shop/orders-rollout rule 0 (checkout), producer route";
    let text = explain_checkout("shop/shopper", &[]);
    assert!(text.contains(changed), "{text}");
    assert!(
        text.contains("match    path = /orders, method POST"),
        "{text}"
    );
    wait_for("the shopper's proxy to take the new route", WAIT, || {
        explain_checkout("self", &["--proxy", &shopper])
            .contains(changed)
            .then_some(())
    });
    // Another path keeps the old rule.
    let other = weftctl_ok(
        DEMO_CONTROL_PLANE,
        &["explain", "shop/shopper", "http://orders.shop/orders/7"],
        None,
    );
    assert!(other.contains("rule 1 (stable)"), "{other}");
}

#[test]
fn without_capture_the_demo_uses_explicit_upstream_ports() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = iptables();
    let run = run_demo_with(
        &["--duration", "12", "--no-capture"],
        explain_the_checkout_and_change_its_route,
    );
    assert_eq!(run.summary["capture"].as_bool(), Some(false));
    assert!(
        run.stdout.contains("no capture"),
        "it says so:\n{}",
        run.stdout
    );
    assert_the_shop_worked(&run);
    assert_nothing_left(&before);
}

fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML"))
        .collect()
}

fn field<'a>(value: &'a serde_yaml::Value, path: &[&str]) -> &'a serde_yaml::Value {
    path.iter().fold(value, |v, key| &v[*key])
}

#[test]
fn the_kubernetes_twin_runs_the_same_shop_from_the_same_mesh_config() {
    let demo = repo().join("deploy/demo");
    let kustomization = &documents(&demo.join("kustomization.yaml"))[0];
    // The mesh config is the local demo's file, not a copy.
    let files = field(kustomization, &["configMapGenerator"])[0]["files"]
        .as_sequence()
        .expect("configMapGenerator files");
    assert_eq!(files, &[serde_yaml::Value::from("shop.yaml")]);

    let mesh = documents(&demo.join("shop.yaml"));
    let manifests = documents(&demo.join("k8s/shop.yaml"));
    let of_kind = |docs: &'_ [serde_yaml::Value], kind: &str| -> Vec<serde_yaml::Value> {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .cloned()
            .collect()
    };
    let services = of_kind(&mesh, "Service");
    assert_eq!(services.len(), 4);
    let accounts: Vec<String> = of_kind(&manifests, "ServiceAccount")
        .iter()
        .filter_map(|a| a["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for service in &services {
        let name = service["metadata"]["name"].as_str().expect("name");
        // Its Kubernetes Service has the virtual IP the mesh config declares.
        let k8s_service = of_kind(&manifests, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no Kubernetes Service {name}"));
        assert_eq!(
            k8s_service["spec"]["clusterIP"], service["spec"]["virtualIPs"][0],
            "{name}"
        );
        // Its Deployment says nothing about Weft: the namespace's label asks for
        // injection, and the proxy finds its Service in the EndpointSlices.
        let deployment = of_kind(&manifests, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let template = field(&deployment, &["spec", "template", "metadata"]);
        assert!(
            template["annotations"].is_null(),
            "{name}: {:?}",
            template["annotations"]
        );
    }
    // Every identity the policies allow is a service account of the twin.
    for policy in of_kind(&mesh, "AuthorizationPolicy") {
        for allowed in policy["spec"]["allow"].as_sequence().expect("allow") {
            let account = allowed
                .as_str()
                .and_then(|id| id.strip_prefix("spiffe://cluster.local/ns/shop/sa/"))
                .expect("a shop identity");
            assert!(accounts.iter().any(|a| a == account), "{account}");
        }
    }
    // The shop's namespace asks for injection, and what the webhook would add to each
    // Deployment (the same code, offline) is the native sidecar and the init step.
    let namespace = of_kind(&manifests, "Namespace");
    assert_eq!(
        namespace[0]["metadata"]["labels"]["weft.io/inject"].as_str(),
        Some("enabled")
    );
    let output = std::process::Command::new(weft_e2e::bin("weftctl"))
        .arg("inject")
        .arg("-f")
        .arg(demo.join("k8s/shop.yaml"))
        .output()
        .expect("run weftctl inject");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        report.matches(" injected").count(),
        of_kind(&manifests, "Deployment").len(),
        "{report}"
    );
    let injected = String::from_utf8_lossy(&output.stdout);
    for document in serde_yaml::Deserializer::from_str(injected.as_ref()) {
        let document = serde_yaml::Value::deserialize(document).expect("YAML");
        if document["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let inits = field(&document, &["spec", "template", "spec", "initContainers"]);
        let names: Vec<&str> = inits
            .as_sequence()
            .expect("init containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["weft-init", "weft-proxy"], "{document:?}");
        assert_eq!(inits[1]["restartPolicy"].as_str(), Some("Always"));
    }
}

/// One instant query to the demo's Prometheus: its result vector.
fn prometheus_query(query: &str) -> Option<Vec<serde_json::Value>> {
    let output = Command::new("curl")
        .args(["-fsS", "--get", "--data-urlencode"])
        .arg(format!("query={query}"))
        .arg(format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query"))
        .output()
        .ok()?;
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    assert_eq!(answer["status"], "success", "{query}: {answer}");
    answer["data"]["result"].as_array().cloned()
}

/// The demo's Prometheus, as `--observe` prints it.
const PROMETHEUS_PORT: u16 = 19090;

/// A sample's service label and value.
fn by_service(result: &[serde_json::Value]) -> BTreeMap<String, f64> {
    result
        .iter()
        .filter_map(|s| {
            let service = s["metric"]["service"].as_str()?.to_owned();
            let value = s["value"][1].as_str()?.parse().ok()?;
            Some((service, value))
        })
        .collect()
}

#[test]
fn with_observe_a_real_prometheus_records_the_shop_s_golden_signals() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::Duration;
    use weft_e2e::wait_for;

    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let before = iptables();
    // A process group of its own: the test stops it as Ctrl-C would.
    let mut demo = Command::new("bash")
        .arg(repo().join("deploy/demo/run.sh"))
        .args(["--observe", "--duration", "120", "--bin-dir"])
        .arg(bin_dir())
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start deploy/demo/run.sh --observe");
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = demo.stdout.take().expect("the demo's stdout");
    let reader = {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut text = output.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        })
    };
    let printed = || output.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_for(
        "the demo to start Prometheus",
        Duration::from_secs(120),
        || {
            let text = printed();
            assert!(!text.contains("== stopping"), "the demo stopped:\n{text}");
            text.contains(&format!(
                "== Prometheus on http://127.0.0.1:{PROMETHEUS_PORT}"
            ))
            .then_some(())
        },
    );

    // Every sidecar scraped, and the callers' success rate of each of the four
    // services recorded by weft-recording.yml: the shop loses nothing, so 100%.
    let services = ["shop/cart", "shop/orders", "shop/products", "shop/users"];
    let success = wait_for(
        "the recorded success rate of the four services",
        Duration::from_secs(90),
        || {
            let up = prometheus_query("up{job=\"weft-proxies\"} == 1")?;
            let rates = by_service(&prometheus_query(
                "weft:success_rate:ratio_rate1m{direction=\"outbound\"}",
            )?);
            (up.len() == 7 && services.iter().all(|s| rates.contains_key(*s))).then_some(rates)
        },
    );
    for service in services {
        assert_eq!(success[service], 1.0, "{service}: {success:?}");
    }
    let requests = by_service(
        &prometheus_query("weft:requests:rate1m{direction=\"outbound\"}").expect("request rates"),
    );
    for service in services {
        assert!(requests[service] > 0.5, "{service}: {requests:?}");
    }
    let p99 = by_service(
        &prometheus_query("weft:request_duration_seconds:p99_1m{direction=\"outbound\"}")
            .expect("latency"),
    );
    for service in services {
        assert!(
            p99[service] > 0.0 && p99[service] < 1.0,
            "{service}: {p99:?}"
        );
    }
    // The alerting rules loaded and evaluate cleanly; nothing fires on a healthy shop.
    let rules = Command::new("curl")
        .args(["-fsS"])
        .arg(format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/rules"))
        .output()
        .expect("curl the rules");
    let rules: serde_json::Value = serde_json::from_slice(&rules.stdout).expect("rules JSON");
    let all: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(all.len(), 19, "{rules:#}");
    for rule in &all {
        assert_ne!(rule["health"], "err", "{rule:#}");
        if rule["type"] == "alerting" {
            assert_eq!(rule["state"], "inactive", "{rule:#}");
        }
    }
    // The Grafana dashboard's queries all run, and its golden-signal panels show data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/observability/grafana/weft-mesh.json"))
            .expect("the dashboard"),
    )
    .expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$service", ".+")
                .replace("$direction", "outbound");
            let result = prometheus_query(&expr).expect("the panel's query runs");
            let golden = ["Request rate", "Success rate", "Certificate time left"];
            if golden.contains(&panel["title"].as_str().unwrap_or_default()) {
                assert!(!result.is_empty(), "{:?}: {expr} is empty", panel["title"]);
            }
        }
    }

    the_dashboard_s_tap_view_streams_the_shop_s_requests();
    the_dashboard_shows_the_shop_and_a_killed_replica_turns_red();

    // Stop it as Ctrl-C does; it tears everything down, Prometheus included.
    let group = demo.id().to_string();
    Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .expect("kill -INT");
    let status = demo.wait().expect("wait for the demo");
    reader.join().expect("the reader thread");
    let text = printed();
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains("== stopped"), "{text}");
    assert_nothing_left(&before);
}

/// The demo's `weftctl dashboard`, as `--observe` prints it.
const DASHBOARD_PORT: u16 = 50750;

/// The page as headless Chromium renders it (its script run, its first poll
/// answered): the DOM, serialized.
fn dashboard_dom(hash: &str) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("http://127.0.0.1:{DASHBOARD_PORT}/{hash}"))
        .output()
        .expect("run chromium (Debian package chromium)");
    assert!(output.status.success(), "chromium: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every start tag of a serialized DOM: its name and attributes.
fn tags(dom: &str) -> Vec<(String, BTreeMap<String, String>)> {
    dom.split('<')
        .filter_map(|tag| tag.split_once('>').map(|(inside, _)| inside))
        .filter_map(|inside| {
            let (name, mut rest) = inside.split_once(' ').unwrap_or((inside, ""));
            let mut attributes = BTreeMap::new();
            while let Some((attribute, after)) = rest.split_once("=\"") {
                let (value, next) = after.split_once('"')?;
                attributes.insert(attribute.trim().to_owned(), value.replace("&amp;", "&"));
                rest = next;
            }
            Some((name.to_owned(), attributes))
        })
        .collect()
}

/// The attributes of every element whose class list has `class`.
fn elements(dom: &str, class: &str) -> Vec<BTreeMap<String, String>> {
    tags(dom)
        .into_iter()
        .map(|(_, attributes)| attributes)
        .filter(|a| {
            a.get("class")
                .is_some_and(|c| c.split(' ').any(|c| c == class))
        })
        .collect()
}

fn number(attributes: &BTreeMap<String, String>, name: &str) -> f64 {
    attributes
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {attributes:?}"))
}

/// The dashboard's live tap view on the running demo, in headless Chromium over
/// its DevTools protocol (`tests/scripts/dashboard-tap.mjs`): rows of the shop's
/// requests stream in with method, path, status and latency; a proxy's own view
/// shows its rows only; the page keeps at most its bound; leaving the view closes
/// the stream. A screenshot is kept in `target/test-artifacts/dashboard-tap.png`.
fn the_dashboard_s_tap_view_streams_the_shop_s_requests() {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("dashboard-tap.png");
    let output = Command::new("node")
        .arg("--experimental-websocket")
        .arg(repo().join("tests/scripts/dashboard-tap.mjs"))
        .arg(format!("http://127.0.0.1:{DASHBOARD_PORT}/"))
        .arg("10")
        .arg(&shot)
        .output()
        .expect("run node");
    assert!(output.status.success(), "{output:?}");
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let text = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or("").to_owned();
    let all = seen["all"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in the tap view: {seen}"));
    let bound = seen["max_rows"].as_u64().expect("the row bound");
    assert!(all.len() >= 10 && all.len() as u64 <= bound, "{seen}");
    for row in all {
        assert!(
            ["GET", "POST", "PUT", "DELETE"].contains(&text(row, "method").as_str()),
            "{row}"
        );
        assert!(text(row, "path").starts_with('/'), "{row}");
        let status: u16 = text(row, "status").parse().unwrap_or(0);
        assert!((100..600).contains(&status), "{row}");
        let latency: f64 = text(row, "latencyMs").parse().unwrap_or(-1.0);
        assert!(latency > 0.0 && latency < 5000.0, "{row}");
    }
    let shop = ["shop/cart", "shop/orders", "shop/products", "shop/users"];
    assert!(
        all.iter()
            .any(|r| shop.contains(&text(r, "service").as_str()) && text(r, "status") == "200"),
        "no answered request of the shop: {seen}"
    );
    // One proxy's page: its requests only.
    let proxy = text(&seen, "proxy");
    let one = seen["one"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows for {proxy}: {seen}"));
    assert!(one.iter().all(|r| text(r, "proxy") == proxy), "{seen}");
    assert_eq!(seen["after_leaving"], "closed", "{seen}");
    let png = std::fs::read(&shot).expect("the tap view's screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{} bytes", png.len());
    eprintln!(
        "tap view: {} rows, then {} of {proxy}; first: {}",
        all.len(),
        one.len(),
        all[0]
    );
}

/// Issue 19's dashboard checks, on the running demo: the graph has the shop's
/// four services and their callers' edges, its numbers agree with `weftctl top -o
/// json`, a screenshot is kept, and a killed replica's proxy turns red.
fn the_dashboard_shows_the_shop_and_a_killed_replica_turns_red() {
    use std::time::{Duration, Instant};
    use weft_e2e::wait_for;

    let services = ["shop/cart", "shop/orders", "shop/products", "shop/users"];
    let dom = wait_for("the graph with its edges", Duration::from_secs(30), || {
        let dom = dashboard_dom("");
        let edges = elements(&dom, "edge");
        (edges.len() >= 7).then_some(dom)
    });
    let nodes = elements(&dom, "node");
    for service in services {
        let node = nodes
            .iter()
            .find(|n| n["data-name"] == service)
            .unwrap_or_else(|| panic!("no node {service}: {nodes:?}"));
        assert_eq!(node["data-kind"], "service");
        assert!(
            node["class"].contains(" ok"),
            "{service} is not green: {node:?}"
        );
    }
    let mut edges: Vec<(String, String)> = elements(&dom, "edge")
        .iter()
        .map(|e| (e["data-source"].clone(), e["data-destination"].clone()))
        .collect();
    edges.sort();
    let expected = [
        ("shop/cart", "shop/products"),
        ("shop/orders", "shop/products"),
        ("shop/orders", "shop/users"),
        ("shopper", "shop/cart"),
        ("shopper", "shop/orders"),
        ("shopper", "shop/products"),
        ("shopper", "shop/users"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(edges, expected);
    // The shop speaks mTLS: every edge names the identity that answered it, the
    // service's own (as its sidecar registered it), and each service its callers.
    for edge in elements(&dom, "edge") {
        let account = edge["data-destination"].replace("shop/", "/ns/shop/sa/");
        assert!(
            edge["data-dst-identities"].starts_with("spiffe://")
                && edge["data-dst-identities"].ends_with(&account),
            "{edge:?}"
        );
    }
    let callers: Vec<_> = tags(&dom)
        .into_iter()
        .filter_map(|(_, a)| a.get("data-client-identities").cloned())
        .collect();
    assert!(
        callers.len() >= 4 && callers.iter().all(|c| c.contains("spiffe://")),
        "{callers:?}"
    );

    // The same numbers as weftctl top: both are rates over a couple of seconds of a
    // steady shopper, so they agree within a quarter.
    let top = Command::new("ip")
        .args(["netns", "exec", "weft-demo-control-plane"])
        .arg(bin_dir().join("weftctl"))
        .args(["--control-plane", "10.77.0.2:15010", "top", "-o", "json"])
        .args(["--namespace", "shop", "--count", "1", "--interval", "2s"])
        .output()
        .expect("weftctl top");
    let frame: serde_json::Value = serde_json::from_slice(&top.stdout).expect("top's JSON");
    let dom = dashboard_dom("");
    let rows = elements(&dom, "node");
    for service in services {
        let row = frame["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|r| r["service"] == service)
            .unwrap_or_else(|| panic!("{service} not in top: {frame}"));
        let top_rps = row["rps"].as_f64().expect("rps");
        let node = rows
            .iter()
            .find(|n| n["data-name"] == service)
            .expect("the node");
        let page_rps = number(node, "data-rps");
        assert!(
            (page_rps - top_rps).abs() <= 0.25 * top_rps + 1.0,
            "{service}: the page says {page_rps} rps, top {top_rps}"
        );
        assert_eq!(
            number(node, "data-success"),
            row["success"].as_f64().expect("success")
        );
    }

    // A screenshot, kept as the test's artifact.
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("dashboard.png");
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--window-size=1300,1150", "--virtual-time-budget=4000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{DASHBOARD_PORT}/"))
        .output()
        .expect("chromium --screenshot");
    assert!(status.status.success(), "{status:?}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // orders-2 dies as a node would (app and sidecar, SIGKILL): its proxy turns red.
    let pids = Command::new("ip")
        .args(["netns", "pids", "weft-demo-orders-2"])
        .output()
        .expect("ip netns pids");
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    assert!(!pids.trim().is_empty(), "orders-2 runs nothing");
    let killed = Instant::now();
    Command::new("kill")
        .arg("-KILL")
        .args(pids.split_whitespace())
        .status()
        .expect("kill");
    let row = wait_for(
        "orders-2's proxy to turn red",
        Duration::from_secs(30),
        || {
            let dom = dashboard_dom("");
            elements(&dom, "state-down")
                .into_iter()
                .find(|r| r.get("data-proxy").is_some_and(|p| p == "orders-2"))
        },
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "red after {took:?}");
    assert_eq!(row["data-workload"], "shop/orders");
    // Its page says why.
    let page = dashboard_dom("#proxy/orders-2");
    assert!(
        page.contains("data-state=\"down\""),
        "orders-2's page does not say it is down:\n{page}"
    );
    eprintln!("orders-2 shown down {took:?} after it was killed");
}
