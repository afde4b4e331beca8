//! Failover against the availability model the mesh exists for: n replicas, each
//! up with probability p, give a client behind perfect failover A = 1 − (1 − p)ⁿ.
//! Real `weft-test-app` replicas are switched from outside (connects refused and
//! open connections cut, 503 to everything, or silence) while steady load goes
//! through a real client proxy; every request is counted against what perfect
//! failover would have served on the states actually drawn.
//!
//! Run with `--nocapture` to see the tables the tests print.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_e2e::load::{Load, Options, Report};
use weft_e2e::web::Mesh;
use weft_e2e::{free_port, loopback, wait_for};

/// How a replica behaves, switched through its `--control` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Connects refused, open connections cut.
    Down,
    /// 503 to every request.
    Failing,
    /// Reads requests and never answers.
    Stalled,
}

impl State {
    fn command(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Failing => "fail 503",
            State::Stalled => "stall",
        }
    }
}

/// The control connections of a mesh's apps, in the same order.
struct Switches(Vec<BufReader<TcpStream>>);

impl Switches {
    fn connect(controls: &[SocketAddr]) -> Switches {
        Switches(
            controls
                .iter()
                .map(|addr| {
                    let stream = TcpStream::connect(addr).expect("control port");
                    stream.set_nodelay(true).expect("nodelay");
                    BufReader::new(stream)
                })
                .collect(),
        )
    }

    /// Puts replica `i` in `state`, returning once the app says it is in effect.
    fn set(&mut self, i: usize, state: State) {
        let control = &mut self.0[i];
        writeln!(control.get_mut(), "{}", state.command()).expect("control write");
        let mut answer = String::new();
        control.read_line(&mut answer).expect("control read");
        assert_eq!(answer.trim(), "ok", "replica {i} refused {state:?}");
    }
}

/// Starts `n` controllable replicas behind a client proxy, `spec` added to the
/// service's.
fn mesh(n: usize, spec: &str) -> (Mesh, Switches) {
    let controls: Vec<SocketAddr> = (0..n).map(|_| loopback(free_port())).collect();
    let flags: Vec<[String; 2]> = controls
        .iter()
        .map(|c| ["--control".to_owned(), c.to_string()])
        .collect();
    let names: Vec<String> = (1..=n).map(|i| format!("web-{i}")).collect();
    let flag_refs: Vec<[&str; 2]> = flags
        .iter()
        .map(|[a, b]| [a.as_str(), b.as_str()])
        .collect();
    let apps: Vec<(&str, &[&str])> = names
        .iter()
        .zip(&flag_refs)
        .map(|(name, flags)| (name.as_str(), &flags[..]))
        .collect();
    let mesh = Mesh::start(&apps, spec);
    let switches = Switches::connect(&controls);
    (mesh, switches)
}

fn load(mesh: &Mesh, rate: u32) -> Load {
    Load::start(
        mesh.listen,
        Options {
            rate,
            // Enough connections that a request held by a stalled replica (up to
            // its per-try timeout) does not slow the others down.
            connections: 16,
            ..Options::default()
        },
    )
}

/// Waits until the load has run past `at` (from its start).
fn wait_until_load_at(load: &Load, at: Duration) {
    wait_for("the load's clock", at + Duration::from_secs(30), || {
        (load.elapsed() >= at).then_some(())
    });
}

const SLOT: Duration = Duration::from_secs(1);
const SLOTS: usize = 30;

/// One run of flapping replicas: each of `n` replicas is independently up with
/// probability `p` in each slot, down otherwise. Returns (model, measured,
/// slots with every replica down).
fn flap(n: usize, p: f64, seed: u64) -> (f64, f64, usize) {
    let (mesh, mut switches) = mesh(
        n,
        "  retries: {retryOn: [connect-failure, reset, 5xx], maxRetries: 2}",
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let slots: Vec<Vec<bool>> = (0..SLOTS)
        .map(|_| (0..n).map(|_| rng.random_bool(p)).collect())
        .collect();
    let load = load(&mesh, 200);
    // A settled second before the first slot, so that it measures failover, not
    // start-up.
    let start = SLOT;
    let mut current = vec![true; n];
    // When each slot actually began, as the load's clock reads it: the model is
    // judged on the states as they were, including the switching time.
    let mut began = Vec::with_capacity(SLOTS);
    for (s, states) in slots.iter().enumerate() {
        wait_until_load_at(&load, start + SLOT * s as u32);
        began.push(load.elapsed());
        for (i, up) in states.iter().enumerate() {
            if *up != current[i] {
                switches.set(i, if *up { State::Up } else { State::Down });
                current[i] = *up;
            }
        }
    }
    wait_until_load_at(&load, start + SLOT * SLOTS as u32);
    let end = load.elapsed();
    let report = load.stop();
    // Perfect failover serves every request sent while some replica is up.
    let slot_of = |at: Duration| began.iter().rposition(|b| *b <= at);
    let (mut counted, mut savable, mut served) = (0usize, 0usize, 0usize);
    for outcome in &report.outcomes {
        let Some(slot) = slot_of(outcome.at).filter(|_| outcome.at < end) else {
            continue;
        };
        counted += 1;
        savable += usize::from(slots[slot].iter().any(|up| *up));
        served += usize::from(outcome.ok());
    }
    let all_down = slots.iter().filter(|s| s.iter().all(|up| !up)).count();
    let model = savable as f64 / counted as f64;
    let measured = served as f64 / counted as f64;
    print_failures(&format!("p={p}"), &report);
    (model, measured, all_down)
}

fn print_failures(run: &str, report: &Report) {
    let mut kinds = std::collections::BTreeMap::new();
    for failed in report.failed() {
        let kind = match &failed.result {
            Ok(status) => status.to_string(),
            Err(e) => e.clone(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    println!("  {run}: failures by kind {kinds:?}");
}

#[test]
fn flapping_replicas_are_served_as_well_as_the_model_allows() {
    let n = 3;
    let mut rows = Vec::new();
    for (p, seed) in [(0.6, 15), (0.8, 16)] {
        let model_formula = 1.0 - (1.0f64 - p).powi(n as i32);
        let (model, measured, all_down) = flap(n, p, seed);
        rows.push((p, model_formula, model, measured, all_down));
    }
    println!("availability: n={n}, {SLOTS} slots of {SLOT:?}, 200 req/s");
    println!("  p     1-(1-p)^n  model on drawn slots  measured  slots all down");
    for (p, formula, model, measured, all_down) in &rows {
        println!(
            "  {p:.1}   {formula:.4}     {model:.4}                {measured:.4}    {all_down}"
        );
    }
    for (p, _, model, measured, _) in rows {
        assert!(
            measured >= model - 0.005,
            "p={p}: measured {measured:.4} is below the model {model:.4} minus 0.5 points"
        );
    }
}

/// k of 4 replicas fail hard one after another, each a different way, until one
/// healthy replica remains: for every policy, with default outlier settings,
/// at least 99.5% of requests succeed.
#[test]
fn one_healthy_replica_serves_while_the_others_fail_every_way() {
    let phases = [(State::Down, 0), (State::Failing, 1), (State::Stalled, 2)];
    let mut rows = Vec::new();
    for policy in ["p2c_ewma", "round_robin", "random", "weighted"] {
        let (mesh, mut switches) = mesh(
            4,
            &format!(
                "  loadBalancer: {policy}
  retries: {{retryOn: [connect-failure, reset, 5xx], perTryTimeoutMs: 300}}"
            ),
        );
        let load = load(&mesh, 150);
        let mut began = Vec::new();
        for (k, (state, replica)) in phases.iter().enumerate() {
            wait_until_load_at(&load, Duration::from_millis(1_500) * (k as u32 + 1));
            began.push(load.elapsed());
            switches.set(*replica, *state);
        }
        wait_until_load_at(&load, Duration::from_millis(9_000));
        let report = load.stop();
        print_failures(policy, &report);
        // Success per phase: k replicas failing (0 to 3).
        let mut phase_ratios = Vec::new();
        for k in 0..=phases.len() {
            let from = if k == 0 { Duration::ZERO } else { began[k - 1] };
            let to = began.get(k).copied().unwrap_or(Duration::MAX);
            let in_phase: Vec<_> = report
                .outcomes
                .iter()
                .filter(|o| o.at >= from && o.at < to)
                .collect();
            let ok = in_phase.iter().filter(|o| o.ok()).count();
            phase_ratios.push(ok as f64 / in_phase.len().max(1) as f64);
        }
        let served_by_last = report.by_server().get("web-4").copied().unwrap_or(0);
        rows.push((
            policy,
            report.sent(),
            report.success_ratio(),
            phase_ratios,
            served_by_last,
        ));
    }
    println!("k of 4 failing (down, then 503, then stalled), 150 req/s, per-try timeout 300 ms");
    for (policy, sent, ratio, phases, last) in &rows {
        println!("  {policy:<12} sent {sent:>5}  success {ratio:.4}  by k {phases:.4?}  web-4 served {last}");
    }
    for (policy, _, ratio, _, _) in rows {
        assert!(
            ratio >= 0.995,
            "{policy}: success {ratio:.4} is below 99.5%"
        );
    }
}

/// Three of four replicas fail the same way at once (all down, all answering 503,
/// all stalled): the one healthy replica serves ≥ 99.5% of requests, under every
/// policy, with default outlier settings.
#[test]
fn three_of_four_failing_the_same_way_leave_one_to_serve_everything() {
    let mut rows = Vec::new();
    for state in [State::Down, State::Failing, State::Stalled] {
        for policy in ["p2c_ewma", "round_robin", "random", "weighted"] {
            let (mesh, mut switches) = mesh(
                4,
                &format!(
                    "  loadBalancer: {policy}
  retries: {{retryOn: [connect-failure, reset, 5xx], perTryTimeoutMs: 300}}"
                ),
            );
            let load = load(&mesh, 150);
            wait_until_load_at(&load, Duration::from_millis(1_000));
            for replica in 0..3 {
                switches.set(replica, state);
            }
            // The failures a way of failing costs are paid at the switch, before
            // outlier detection has seen five in a row; six seconds after it is the
            // steady state the ratio is about.
            wait_until_load_at(&load, Duration::from_millis(7_000));
            let report = load.stop();
            print_failures(&format!("{state:?} {policy}"), &report);
            rows.push((state, policy, report.sent(), report.success_ratio()));
        }
    }
    println!("3 of 4 failing the same way, 150 req/s, per-try timeout 300 ms");
    for (state, policy, sent, ratio) in &rows {
        println!("  {state:<8?} {policy:<12} sent {sent:>4}  success {ratio:.4}");
    }
    for (state, policy, _, ratio) in rows {
        assert!(
            ratio >= 0.995,
            "{state:?} {policy}: success {ratio:.4} is below 99.5%"
        );
    }
}
