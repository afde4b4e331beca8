//! `weft-probe`: runs the HTTP/1.1 edge probe (`weft_e2e::probe`) against one or
//! more proxies that forward to its recorder, and prints one Markdown table with a
//! column per proxy (what the client saw, requests forwarded, verdict), then the
//! problems behind each failing verdict.
//!
//! ```text
//! weft-probe --recorder 127.0.0.1:24000 --proxy weft=127.0.0.1:24001,live=127.0.0.1:24002 \
//!            --proxy haproxy=127.0.0.1:24003 [--timeouts-ms 1000] [--margin-ms 1500]
//! ```
//! Every proxy must send all requests of its listener to the recorder's address,
//! and cut idle clients, stalled request bodies and silent upstreams after the
//! `--timeouts-ms` given (for the stall cases' verdicts).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use weft_e2e::probe::{self, cases, recorder::Recorder, Target, Timeouts};

struct Options {
    recorder: SocketAddr,
    targets: Vec<Target>,
    timeout: Duration,
    margin: Duration,
    parallel: usize,
    /// Only the cases whose name contains this.
    only: Option<String>,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        recorder: SocketAddr::from(([127, 0, 0, 1], 0)),
        targets: Vec::new(),
        timeout: Duration::from_millis(1000),
        margin: Duration::from_millis(1500),
        parallel: 8,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let millis = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--recorder" => {
                options.recorder = value.parse().map_err(|e| format!("--recorder: {e}"))?
            }
            "--proxy" => options.targets.push(target(&value)?),
            "--timeouts-ms" => options.timeout = millis(&value)?,
            "--margin-ms" => options.margin = millis(&value)?,
            "--parallel" => {
                options.parallel = value.parse().map_err(|e| format!("--parallel: {e}"))?
            }
            "--only" => options.only = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.targets.is_empty() {
        return Err("give at least one --proxy NAME=ADDR[,live=ADDR]".into());
    }
    Ok(options)
}

fn target(spec: &str) -> Result<Target, String> {
    let mut parts = spec.split(',');
    let (name, addr) = parts
        .next()
        .and_then(|p| p.split_once('='))
        .ok_or_else(|| format!("--proxy {spec:?}: expected NAME=ADDR"))?;
    let mut target = Target {
        name: name.into(),
        addr: addr.parse().map_err(|e| format!("--proxy {spec:?}: {e}"))?,
        live: None,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("live", addr)) => {
                target.live = Some(addr.parse().map_err(|e| format!("--proxy {spec:?}: {e}"))?)
            }
            _ => return Err(format!("--proxy {spec:?}: unknown {part:?}")),
        }
    }
    Ok(target)
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("weft-probe: {e}");
            return ExitCode::from(64);
        }
    };
    let recorder = match Recorder::bind(options.recorder) {
        Ok(recorder) => recorder,
        Err(e) => {
            eprintln!("weft-probe: recorder on {}: {e}", options.recorder);
            return ExitCode::FAILURE;
        }
    };
    let timeouts = Timeouts {
        idle: options.timeout,
        request_body: options.timeout,
        response_idle: options.timeout,
        margin: options.margin,
    };
    let cases: Vec<_> = cases::all()
        .into_iter()
        .filter(|case| {
            options
                .only
                .as_ref()
                .is_none_or(|only| case.name.contains(only.as_str()))
        })
        .collect();
    let results: Vec<_> = options
        .targets
        .iter()
        .map(|target| {
            eprintln!(
                "weft-probe: {} cases against {} ({})",
                cases.len(),
                target.name,
                target.addr
            );
            probe::run(&cases, target, &recorder, &timeouts, options.parallel)
        })
        .collect();
    print!("| case |");
    for target in &options.targets {
        print!(" {0}: client saw | {0} |", target.name);
    }
    println!();
    println!("|---|{}", "---|---|".repeat(options.targets.len()));
    for (index, case) in cases.iter().enumerate() {
        print!("| {} |", case.name);
        for outcomes in &results {
            let (saw, verdict) = probe::summary(&outcomes[index]);
            let verdict = if verdict == "ok" { "ok" } else { "**fail**" };
            print!(" {saw} | {verdict} |");
        }
        println!();
    }
    println!();
    for (target, outcomes) in options.targets.iter().zip(&results) {
        let failed: Vec<_> = cases
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| !outcome.problems.is_empty())
            .collect();
        println!(
            "{}: {} of {} cases pass",
            target.name,
            cases.len() - failed.len(),
            cases.len()
        );
        for (case, outcome) in failed {
            println!("- {}: {}", case.name, outcome.problems.join("; "));
        }
    }
    for problem in probe::unattributed(&recorder) {
        println!("- unattributed: {problem}");
    }
    ExitCode::SUCCESS
}
