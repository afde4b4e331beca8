//! From snapshot to tracers: each tracing service's share and its collector's
//! queue, rebuilt by the registry on every snapshot (a push turns tracing on, off,
//! or to another share or collector for the next request).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::local::Local;
use crate::snapshot::Snapshot;

use super::{Collectors, Recorder, Tracer};

/// Tracers by service (`namespace/name`, as the metrics' `service` label).
pub type Tracers = HashMap<String, Arc<Tracer>>;

/// Every service that traces and names a collector (its own or the control
/// plane's default). One without a collector is skipped: its headers pass as if
/// it did not trace.
pub fn build(snapshot: &Snapshot, recorder: &Recorder, collectors: &Collectors) -> Tracers {
    let mut tracers = Tracers::new();
    for (name, view) in &snapshot.services {
        let Some(tracing) = &view.service.telemetry.tracing else {
            continue;
        };
        if tracing.collector.is_empty() {
            tracing::debug!(service = %name, "tracing on without a collector: no spans");
            continue;
        }
        if let Some(queue) = collectors.queue(&tracing.collector, recorder) {
            let tracer = Tracer::new(tracing.sampling, queue);
            tracers.insert(name.to_string(), Arc::new(tracer));
        }
    }
    tracers
}

/// Who this proxy's spans say recorded them: its workload's service (`--service`,
/// else the first it learned it serves), else its node id.
pub fn recorder(config: &Config, local: &Local) -> Recorder {
    if let Some(workload) = &config.workload {
        return Recorder {
            service: workload.service.clone(),
            namespace: config.namespace.clone(),
        };
    }
    match local.services().into_iter().next() {
        Some(name) => Recorder {
            service: name.name.clone(),
            namespace: name.namespace.clone(),
        },
        None => Recorder {
            service: config.node_id.clone(),
            namespace: config.namespace.clone(),
        },
    }
}
