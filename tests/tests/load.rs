//! The chaos tests' tools checked on their own: the sample app fails exactly the
//! share it is told to, and the load generator counts every outcome.

use std::time::Duration;

use weft_e2e::load::{Load, Options};
use weft_e2e::mesh::App;

#[test]
fn the_load_counts_every_outcome_of_a_misbehaving_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::start(dir.path(), "flaky-1", &["--fail-ratio", "0.5"]);
    let load = Load::start(
        app.addr,
        Options {
            rate: 400,
            connections: 2,
            ..Options::default()
        },
    );
    load.wait_for_successes(100, Duration::from_secs(20));
    let report = load.stop();
    assert!(report.sent() >= 200, "{}", report.summary());
    let failed = report.failed();
    // Every other request fails, counted as what the app answered.
    assert!(
        failed.len().abs_diff(report.succeeded()) <= 2,
        "{}",
        report.summary()
    );
    assert!(
        failed.iter().all(|o| o.result == Ok(503)),
        "{}",
        report.summary()
    );
    assert_eq!(report.by_server().get("flaky-1"), Some(&report.sent()));

    let health = dir.path().join("down");
    let app = App::start(
        dir.path(),
        "health-1",
        &["--unhealthy-file", &health.display().to_string()],
    );
    assert_eq!(weft_e2e::http_get(app.addr, "/health").expect("GET").0, 200);
    std::fs::write(&health, "").expect("write");
    assert_eq!(weft_e2e::http_get(app.addr, "/health").expect("GET").0, 503);
}
