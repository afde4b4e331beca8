//! A pod's life as the kubelet drives it, advanced a small step per call so that no
//! pod waits on another's init container or startup probe:
//!
//! 1. Init containers one at a time, in order. A plain one must exit 0 before the next
//!    starts. A native sidecar (`restartPolicy: Always`) keeps running, and the next
//!    starts once its startup probe has passed, or at once without one (KEP-753).
//! 2. Then every regular container. Exits are restarted as the restart policy says
//!    (sidecars always); a startup or liveness probe past its failureThreshold kills
//!    the container, which then restarts the same way. Readiness and liveness probes
//!    begin once the startup probe has passed.
//! 3. Under restartPolicy Never or OnFailure, once every regular container is done:
//!    SIGTERM to the sidecars in reverse order, SIGKILL after the grace period, and
//!    the pod ends Succeeded (every regular container exited 0) or Failed; the
//!    sidecars' exit codes do not count.

use std::time::Instant;

use rustix::process::Signal;

use super::container::ContainerKind;
use super::pod::{Node, RestartPolicy, RunningPod, Stage};
use super::probe::{self, Verdict};

/// How long a container whose start failed (no binary for its image, ...) waits
/// before the next try.
const START_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Tends every container of the pod, then moves the pod on as far as it can go now.
pub fn advance(pod: &mut RunningPod, node: &Node<'_>, log: &dyn Fn(&str)) {
    if matches!(pod.stage, Stage::Done { .. }) {
        return;
    }
    for index in 0..pod.containers.len() {
        tend(pod, index, node, log);
    }
    while step(pod, node, log) {}
}

/// One container: see its exit, start it when due, run its due probes.
fn tend(pod: &mut RunningPod, index: usize, node: &Node<'_>, log: &dyn Fn(&str)) {
    let ending = matches!(pod.stage, Stage::Ending { .. });
    let c = &mut pod.containers[index];
    if let Some(code) = c.see_exit() {
        log(&format!(
            "{}/{}/{}: exited {code}",
            pod.namespace, pod.name, c.spec.name
        ));
        pod.dirty = true;
        if !ending && !c.stopping && pod.restart_policy.restarts(c.kind, code) {
            // Restarted on a later pass, once this exit has been reported.
            c.start_at = Some(Instant::now() + c.backoff());
        }
        return;
    }
    if let Some(at) = c.start_at {
        if ending {
            c.start_at = None;
        } else if Instant::now() >= at {
            launch(pod, index, node, log);
        }
        return;
    }
    if c.is_running() {
        run_probes(pod, index, node, log);
    }
}

/// Starts (or restarts) container `index`; a failure is reported as the container's
/// waiting reason and tried again after START_RETRY.
fn launch(pod: &mut RunningPod, index: usize, node: &Node<'_>, log: &dyn Fn(&str)) {
    let spec = pod.containers[index].spec.clone();
    let tag = format!("{}/{}/{}", pod.namespace, pod.name, spec.name);
    let spawned = pod.spawn(node, &spec);
    let c = &mut pod.containers[index];
    match spawned {
        Ok(process) => {
            let again = c.process.is_some();
            c.begin_run(process);
            log(&format!(
                "{tag}: {}",
                if again { "restarted" } else { "started" }
            ));
            pod.dirty = true;
        }
        Err(e) => {
            let message = format!("{e:#}");
            if c.start_error.as_ref() != Some(&message) {
                log(&format!("{tag}: cannot start: {message}"));
                c.start_error = Some(message);
                pod.dirty = true;
            }
            c.start_at = Some(Instant::now() + START_RETRY);
        }
    }
}

/// The container's due probes: startup until it passes, then readiness and liveness.
fn run_probes(pod: &mut RunningPod, index: usize, node: &Node<'_>, log: &dyn Fn(&str)) {
    let Some(netns) = pod.sandbox.as_ref().map(|s| &s.netns) else {
        return;
    };
    let now = Instant::now();
    let cap = node.probe_period_cap;
    let (namespace, name) = (&pod.namespace, &pod.name);
    let c = &mut pod.containers[index];
    // Only for the log: not formatted on every pass.
    let tag = |container: &str| format!("{namespace}/{name}/{container}");
    let mut kill = false;
    if c.startup.due(now) {
        let startup = c.spec.startup_probe.clone().unwrap_or_default();
        let result = probe::run(&startup, &c.spec, netns, pod.ip, node.rt);
        match c.startup.record(&startup, result.is_ok(), cap) {
            Verdict::Pass => {
                log(&format!("{}: startup probe passed", tag(&c.spec.name)));
                c.startup_passed();
                pod.dirty = true;
            }
            Verdict::Fail => {
                let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
                log(&format!(
                    "{}: startup probe failed ({error}): killing it",
                    tag(&c.spec.name)
                ));
                kill = true;
            }
            Verdict::Undecided => {}
        }
    }
    if c.readiness.due(now) {
        let readiness = c.spec.readiness_probe.clone().unwrap_or_default();
        let result = probe::run(&readiness, &c.spec, netns, pod.ip, node.rt);
        match c.readiness.record(&readiness, result.is_ok(), cap) {
            Verdict::Pass if !c.ready => {
                c.ready = true;
                pod.dirty = true;
            }
            Verdict::Fail if c.ready => {
                if let Err(e) = result {
                    log(&format!("{}: readiness failed: {e:#}", tag(&c.spec.name)));
                }
                c.ready = false;
                pod.dirty = true;
            }
            _ => {}
        }
    }
    if c.liveness.due(now) {
        let liveness = c.spec.liveness_probe.clone().unwrap_or_default();
        let result = probe::run(&liveness, &c.spec, netns, pod.ip, node.rt);
        if c.liveness.record(&liveness, result.is_ok(), cap) == Verdict::Fail {
            log(&format!(
                "{}: liveness probe failed: killing it",
                tag(&c.spec.name)
            ));
            kill = true;
        }
    }
    if kill {
        // Its exit is seen on the next pass and restarted as the restart policy says.
        if let Some(process) = c.process.as_mut() {
            process.kill();
        }
    }
}

/// Moves the pod to its next stage if it can; true when something changed (call again).
fn step(pod: &mut RunningPod, node: &Node<'_>, log: &dyn Fn(&str)) -> bool {
    match pod.stage {
        Stage::Initializing { next } => {
            let Some(c) = pod
                .containers
                .get(next)
                .filter(|c| c.kind != ContainerKind::Regular)
            else {
                // Every init container is done: the regular ones start together.
                pod.stage = Stage::Running;
                pod.dirty = true;
                for index in next..pod.containers.len() {
                    launch(pod, index, node, log);
                }
                return true;
            };
            if c.process.is_none() && c.start_at.is_none() {
                launch(pod, next, node, log);
                return pod.containers[next].process.is_some();
            }
            let done = match c.kind {
                ContainerKind::Sidecar => c.started(),
                _ => c.terminated.is_some_and(|t| t.exit_code == 0),
            };
            if done {
                pod.stage = Stage::Initializing { next: next + 1 };
                return true;
            }
            if c.kind == ContainerKind::Init && c.finished() {
                log(&format!(
                    "{}/{}: init container {} failed under restartPolicy Never",
                    pod.namespace, pod.name, c.spec.name
                ));
                begin_end(pod, false);
                return true;
            }
            false
        }
        Stage::Running => {
            if pod.restart_policy == RestartPolicy::Always {
                return false;
            }
            let mut regular = pod
                .containers
                .iter()
                .filter(|c| c.kind == ContainerKind::Regular);
            if !regular.all(|c| c.finished()) {
                return false;
            }
            let succeeded = pod
                .containers
                .iter()
                .filter(|c| c.kind == ContainerKind::Regular)
                .all(|c| c.terminated.is_some_and(|t| t.exit_code == 0));
            log(&format!(
                "{}/{}: every container is done ({}): stopping the sidecars",
                pod.namespace,
                pod.name,
                if succeeded { "succeeded" } else { "failed" }
            ));
            begin_end(pod, succeeded);
            true
        }
        Stage::Ending {
            succeeded,
            deadline,
        } => end_step(pod, succeeded, deadline, log),
        Stage::Done { .. } => false,
    }
}

fn begin_end(pod: &mut RunningPod, succeeded: bool) {
    pod.stage = Stage::Ending {
        succeeded,
        deadline: Instant::now() + pod.grace_period(),
    };
    pod.dirty = true;
}

/// The sidecars stop from the last one declared to the first, each getting SIGTERM
/// once the ones after it have exited; at the deadline everything left is killed.
fn end_step(pod: &mut RunningPod, succeeded: bool, deadline: Instant, log: &dyn Fn(&str)) -> bool {
    let past = Instant::now() >= deadline;
    for c in &mut pod.containers {
        if past && c.is_running() {
            log(&format!(
                "{}/{}/{}: still running at the end of the grace period: killing it",
                pod.namespace, pod.name, c.spec.name
            ));
            if let Some(process) = c.process.as_mut() {
                process.kill();
            }
        }
        if c.see_exit().is_some() {
            pod.dirty = true;
        }
    }
    // Every exit is seen above: a process without one still runs.
    let last_running = pod
        .containers
        .iter_mut()
        .rev()
        .find(|c| c.process.is_some() && c.terminated.is_none());
    match last_running {
        Some(c) => {
            if !c.stopping {
                c.stopping = true;
                if let Some(process) = c.process.as_mut() {
                    process.signal(Signal::TERM);
                }
            }
            false
        }
        None => {
            log(&format!(
                "{}/{}: {}",
                pod.namespace,
                pod.name,
                if succeeded { "Succeeded" } else { "Failed" }
            ));
            pod.stage = Stage::Done { succeeded };
            pod.dirty = true;
            true
        }
    }
}
