//! One container of a pod as the played kubelet tracks it across its runs: its
//! process (none until first started), the current run's start, startup and end, the
//! previous run's end (the API's `lastState`), restarts, and its probe schedules.
//!
//! Restarts back off as the kubelet's CrashLoopBackOff does, ten times faster: the
//! first restart at once, then 1 s, 2 s, 4 s ... up to 30 s between runs that each
//! lasted under a minute; a longer run starts the count again.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Probe};

use super::daemon::Daemon;
use super::probe::{self, Schedule};

/// Which list of the pod spec a container comes from, and how it behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// An `initContainers` entry: runs to completion before the next one starts.
    Init,
    /// An `initContainers` entry with `restartPolicy: Always` (a native sidecar): keeps
    /// running; the next one starts once its startup probe has passed.
    Sidecar,
    /// A `containers` entry.
    Regular,
}

/// The first delay between quick crashes, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run at least this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// How one run of a container ended.
#[derive(Debug, Clone, Copy)]
pub struct Terminated {
    /// The exit status, or 128 + the signal number when a signal killed it.
    pub exit_code: i32,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

#[derive(Debug)]
pub struct RunningContainer {
    pub spec: Container,
    pub kind: ContainerKind,
    /// The current (or last) run's process; None until first started.
    pub process: Option<Daemon>,
    pub restarts: i32,
    /// When the current run started.
    pub started_at: Option<SystemTime>,
    /// When the current run's startup probe passed (its start, without one).
    pub startup_passed_at: Option<SystemTime>,
    pub ready: bool,
    /// How the current run ended (None while it runs).
    pub terminated: Option<Terminated>,
    /// How the run before the current one ended.
    pub last_terminated: Option<Terminated>,
    /// When to start it (again): set at an exit the restart policy restarts, or after
    /// a failed start.
    pub start_at: Option<Instant>,
    /// Why the last start failed (reported as `waiting`).
    pub start_error: Option<String>,
    /// SIGTERM sent as part of the pod's end: no restart any more.
    pub stopping: bool,
    pub startup: Schedule,
    pub readiness: Schedule,
    pub liveness: Schedule,
    /// The current run's start, for initialDelaySeconds.
    run_began: Instant,
    /// Runs in a row that ended before BACKOFF_RESET.
    quick_exits: u32,
}

impl RunningContainer {
    pub fn new(spec: &Container, kind: ContainerKind) -> RunningContainer {
        RunningContainer {
            spec: spec.clone(),
            kind,
            process: None,
            restarts: 0,
            started_at: None,
            startup_passed_at: None,
            ready: false,
            terminated: None,
            last_terminated: None,
            start_at: None,
            start_error: None,
            stopping: false,
            startup: Schedule::default(),
            readiness: Schedule::default(),
            liveness: Schedule::default(),
            run_began: Instant::now(),
            quick_exits: 0,
        }
    }

    /// Takes a freshly started process as the container's current run: a restart when
    /// it ran before. The startup probe begins after its initialDelaySeconds; without
    /// one, the container counts as started at once.
    pub fn begin_run(&mut self, process: Daemon) {
        if self.process.is_some() {
            self.restarts += 1;
        }
        if let Some(ended) = self.terminated.take() {
            self.last_terminated = Some(ended);
        }
        let now = Instant::now();
        self.process = Some(process);
        self.started_at = Some(SystemTime::now());
        self.run_began = now;
        self.startup_passed_at = None;
        self.ready = false;
        self.start_at = None;
        self.start_error = None;
        self.readiness.end();
        self.liveness.end();
        match self.spec.startup_probe.clone() {
            Some(startup) => self.startup.begin(now + probe::initial_delay(&startup)),
            None => self.startup_passed(),
        }
    }

    /// The startup probe passed (or there is none): readiness and liveness probes
    /// begin, at the container's start plus their initialDelaySeconds at the earliest.
    pub fn startup_passed(&mut self) {
        let now = Instant::now();
        self.startup_passed_at = Some(SystemTime::now());
        self.startup.end();
        let first = |probe: &Probe| (self.run_began + probe::initial_delay(probe)).max(now);
        match self.spec.readiness_probe.clone() {
            Some(readiness) => self.readiness.begin(first(&readiness)),
            None => self.ready = true,
        }
        if let Some(liveness) = self.spec.liveness_probe.clone() {
            self.liveness.begin(first(&liveness));
        }
    }

    /// Sees the current run's exit (once): records it and stops probing. Returns the
    /// exit code the first time.
    pub fn see_exit(&mut self) -> Option<i32> {
        let process = self.process.as_mut()?;
        if self.terminated.is_some() || process.is_running() {
            return None;
        }
        let exit_code = process.exit_code().unwrap_or(-1);
        self.terminated = Some(Terminated {
            exit_code,
            started_at: self.started_at.unwrap_or_else(SystemTime::now),
            finished_at: SystemTime::now(),
        });
        self.ready = false;
        self.startup.end();
        self.readiness.end();
        self.liveness.end();
        if self.run_began.elapsed() < BACKOFF_RESET {
            self.quick_exits += 1;
        } else {
            self.quick_exits = 0;
        }
        Some(exit_code)
    }

    /// How long to wait before restarting after the exit just seen.
    pub fn backoff(&self) -> Duration {
        match self.quick_exits {
            0 | 1 => Duration::ZERO,
            n => BACKOFF_FIRST
                .saturating_mul(1 << (n - 2).min(16))
                .min(BACKOFF_MAX),
        }
    }

    /// Whether the current run's process is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Daemon::is_running)
    }

    /// Running, and past its startup probe (the API's `started`).
    pub fn started(&self) -> bool {
        self.process.is_some() && self.terminated.is_none() && self.startup_passed_at.is_some()
    }

    /// Exited, and no restart is coming.
    pub fn finished(&self) -> bool {
        self.terminated.is_some() && self.start_at.is_none()
    }
}
