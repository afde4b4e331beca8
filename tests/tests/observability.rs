//! deploy/observability, checked by Prometheus' own tool: the recording and alerting
//! rules load (`promtool check rules`), their unit tests pass (`promtool test rules`:
//! success rates, SLO and certificate alerts on synthetic series), and the demo's
//! scrape config is valid. The Grafana dashboard is valid JSON whose queries use only
//! the recorded signals and the proxies' own series. The same config and rules run
//! against the live demo in `demo.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("deploy/observability")
}

/// Runs promtool in `dir`; its output on failure.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (Debian package prometheus)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_load_and_their_unit_tests_pass() {
    let dir = observability();
    let checked = promtool(
        &dir.join("rules"),
        &["check", "rules", "weft-recording.yml", "weft-alerts.yml"],
    );
    assert!(checked.contains("SUCCESS: 12 rules found"), "{checked}");
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(
        &dir.join("rules/tests"),
        &["test", "rules", "weft-rules.test.yml"],
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(
        &dir.join("prometheus"),
        &["check", "config", "prometheus-demo.yml"],
    );
}

/// The names a dashboard query may use: recorded signals (`weft:...`) and the
/// proxies' series as their README table lists them.
fn known_names(dir: &Path) -> Vec<String> {
    let rules = std::fs::read_to_string(dir.join("rules/weft-recording.yml")).expect("rules");
    let recorded = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned);
    let readme = std::fs::read_to_string(dir.join("../../README.md")).expect("README");
    let documented = readme
        .split('`')
        .filter(|w| w.starts_with("weft_"))
        .map(|w| w.split('{').next().unwrap_or(w).to_owned());
    recorded.chain(documented).collect()
}

#[test]
fn the_grafana_dashboard_queries_known_series() {
    let dir = observability();
    let text = std::fs::read_to_string(dir.join("grafana/weft-mesh.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let known = known_names(&dir);
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            queries += 1;
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("weft_") || w.starts_with("weft:"))
                .collect();
            assert!(!names.is_empty(), "{expr} queries nothing of Weft's");
            for name in names {
                assert!(
                    known.iter().any(|k| k == name),
                    "panel {:?} queries {name}, neither recorded nor a proxy metric in the README",
                    panel["title"]
                );
            }
        }
    }
    assert!(queries >= 8, "{queries} queries");
}
