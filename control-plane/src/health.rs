//! Active health checks of statically declared endpoints.
//!
//! A registered workload's endpoint is checked by its own proxy, which reports the
//! verdict on its stream. An endpoint declared with `weftctl apply` has no proxy of
//! its own, so when its service declares a `healthCheck` the control plane runs that
//! check against the endpoint's address and port. The verdicts are published as the
//! set of unhealthy endpoints, which [`crate::view`] applies to the served
//! Endpoints (the stored resource stays as the operator wrote it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_proto::model::{self, Health, HealthCheck};
use weft_proto::probe::{self, Verdict};
use weft_proto::resource::Kind;
use weft_proto::v1;

use crate::store::{Contents, Store};

/// An endpoint of a service: (`namespace/name`, address).
pub type Target = (String, SocketAddr);

/// The declared endpoints the control plane's checks find unhealthy.
pub type Unhealthy = Arc<BTreeSet<Target>>;

struct Checked {
    check: HealthCheck,
    verdict: Verdict,
    due: Instant,
}

/// Checks every declared endpoint of every service with a health check, following
/// store changes, until the store goes away.
pub async fn run(store: Arc<dyn Store>, unhealthy: watch::Sender<Unhealthy>) {
    let mut revision = store.revision();
    let mut checked: BTreeMap<Target, Checked> = BTreeMap::new();
    let mut refresh = true;
    loop {
        if refresh {
            match store.contents().await {
                Ok(contents) => retarget(&mut checked, &contents),
                Err(e) => tracing::warn!(error = %e, "reading the store for health checks failed"),
            }
            publish(&checked, &unhealthy);
            refresh = false;
        }
        let next = checked.values().map(|c| c.due).min();
        tokio::select! {
            changed = revision.changed() => {
                if changed.is_err() {
                    return;
                }
                refresh = true;
            }
            () = sleep_until(next) => {
                check_due(&mut checked).await;
                publish(&checked, &unhealthy);
            }
        }
    }
}

async fn sleep_until(next: Option<Instant>) {
    match next {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the checks that are due, concurrently; each is bounded by its timeout.
async fn check_due(checked: &mut BTreeMap<Target, Checked>) {
    let now = Instant::now();
    let due: Vec<(Target, HealthCheck)> = checked
        .iter()
        .filter(|(_, c)| c.due <= now)
        .map(|(target, c)| (target.clone(), c.check.clone()))
        .collect();
    let results = futures::future::join_all(due.into_iter().map(|(target, check)| async move {
        let outcome =
            match tokio::time::timeout(check.timeout, probe::run(&check.probe, target.1)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
            };
        (target, outcome)
    }))
    .await;
    for (target, outcome) in results {
        let Some(entry) = checked.get_mut(&target) else {
            continue;
        };
        entry.due = Instant::now() + entry.check.interval;
        if entry
            .verdict
            .record(&entry.check, outcome.is_ok())
            .is_some()
        {
            match outcome {
                Ok(()) => {
                    tracing::info!(service = %target.0, endpoint = %target.1, "declared endpoint healthy again")
                }
                Err(reason) => {
                    tracing::warn!(service = %target.0, endpoint = %target.1, %reason, "declared endpoint unhealthy")
                }
            }
        }
    }
}

/// Follows the store: new targets are checked at once, removed ones forgotten, and
/// a target whose check changed starts over.
fn retarget(checked: &mut BTreeMap<Target, Checked>, contents: &Contents) {
    let mut checks: BTreeMap<&str, HealthCheck> = BTreeMap::new();
    for record in contents.records.iter().filter(|r| r.kind == Kind::Service) {
        let Ok(message) = v1::Service::decode(record.body.as_slice()) else {
            continue;
        };
        if let Some(check) = model::Service::try_from(&message)
            .ok()
            .and_then(|s| s.health_check)
        {
            checks.insert(record.name.as_str(), check);
        }
    }
    let mut wanted: BTreeMap<Target, HealthCheck> = BTreeMap::new();
    for record in contents
        .records
        .iter()
        .filter(|r| r.kind == Kind::Endpoints)
    {
        let Some(check) = checks.get(record.name.as_str()) else {
            continue;
        };
        let Ok(message) = v1::Endpoints::decode(record.body.as_slice()) else {
            continue;
        };
        let Ok(endpoints) = model::Endpoints::try_from(&message) else {
            continue;
        };
        for endpoint in endpoints.endpoints {
            // Declared unhealthy by the operator: nothing to find out.
            if endpoint.health == Health::Healthy {
                wanted.insert((record.name.clone(), endpoint.address), check.clone());
            }
        }
    }
    checked.retain(|target, c| wanted.get(target) == Some(&c.check));
    let now = Instant::now();
    for (target, check) in wanted {
        checked.entry(target).or_insert_with(|| Checked {
            check,
            verdict: Verdict::default(),
            due: now,
        });
    }
}

fn publish(checked: &BTreeMap<Target, Checked>, unhealthy: &watch::Sender<Unhealthy>) {
    let now: BTreeSet<Target> = checked
        .iter()
        .filter(|(_, c)| !c.verdict.is_healthy())
        .map(|(target, _)| target.clone())
        .collect();
    unhealthy.send_if_modified(|current| {
        if **current == now {
            return false;
        }
        *current = Arc::new(now);
        true
    });
}
