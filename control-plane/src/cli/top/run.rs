//! The `weftctl top` loop: find the targets, scrape them all at once every
//! interval, print a frame per round after the first, until the count is reached
//! or Ctrl-C.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weft_proto::v1;
use weft_proto::v1::admin_client::AdminClient;

use super::{parse, render_table, rfc3339, scrape, Frame, Scraped, Top, Unreachable};
use crate::cli::client::CliError;

/// Where the proxies to scrape come from.
pub enum Targets {
    /// `--proxy` addresses: no control plane needed.
    Fixed(Vec<String>),
    /// Every proxy the control plane lists with an admin address, asked anew each
    /// round so proxies that come and go are followed.
    ControlPlane {
        admin: AdminClient<Channel>,
        address: String,
        last: Vec<String>,
    },
}

/// One round's targets: each proxy's admin address, the workload behind it, and
/// (from a control plane) the proxies' sync status.
#[derive(Default)]
pub struct Listed {
    pub targets: Vec<String>,
    /// By target: the workload's `namespace/service`, else the proxy's id.
    pub sources: BTreeMap<String, String>,
    /// Empty with `--proxy` targets.
    pub proxies: Vec<v1::ProxyStatus>,
    /// The control plane's build, to tell outdated proxies.
    pub control_plane_build: String,
    /// Whether `proxies` is this round's answer: false when the control plane did
    /// not answer and the last targets stand in.
    pub fresh: bool,
}

impl Targets {
    /// This round's targets; a control plane that stops answering leaves the last
    /// list in use and is named among the unreachable.
    pub async fn list(&mut self, unreachable: &mut Vec<Unreachable>) -> Result<Listed, CliError> {
        let (admin, address, last) = match self {
            Targets::Fixed(targets) => {
                return Ok(Listed {
                    targets: targets.clone(),
                    fresh: true,
                    ..Listed::default()
                })
            }
            Targets::ControlPlane {
                admin,
                address,
                last,
            } => (admin, address, last),
        };
        match admin.list_proxies(v1::ListProxiesRequest {}).await {
            Ok(response) => {
                let response = response.into_inner();
                let mut sources = BTreeMap::new();
                for proxy in &response.proxies {
                    if !proxy.admin_address.is_empty() {
                        sources.insert(proxy.admin_address.clone(), workload_name(proxy));
                    }
                }
                let listed = Listed {
                    targets: sources.keys().cloned().collect(),
                    sources,
                    proxies: response.proxies,
                    control_plane_build: response.control_plane_build,
                    fresh: true,
                };
                *last = listed.targets.clone();
                Ok(listed)
            }
            Err(status) if !last.is_empty() => {
                unreachable.push(Unreachable {
                    target: format!("control plane {address}"),
                    error: status.message().to_owned(),
                });
                Ok(Listed {
                    targets: last.clone(),
                    ..Listed::default()
                })
            }
            Err(status) => Err(CliError::Server(status)),
        }
    }
}

/// The workload a proxy stands for in the service graph: its service, else (a
/// client only, like the demo's shopper) its id.
pub fn workload_name(proxy: &v1::ProxyStatus) -> String {
    match &proxy.workload {
        Some(w) if !w.service.is_empty() => format!("{}/{}", w.namespace, w.service),
        _ => proxy.id.clone(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub struct Options {
    pub namespace: Option<String>,
    pub interval: Duration,
    /// Frames to print; `None`: until Ctrl-C.
    pub count: Option<u64>,
    pub output: Output,
    pub timeout: Duration,
}

/// Runs until `count` frames are printed or Ctrl-C (both a success).
pub async fn run(mut targets: Targets, options: Options) -> Result<(), CliError> {
    tokio::select! {
        result = frames(&mut targets, &options) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn frames(targets: &mut Targets, options: &Options) -> Result<(), CliError> {
    let mut top = Top::default();
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let terminal = std::io::stdout().is_terminal();
    let namespace = options.namespace.as_deref();
    let mut printed = 0;
    // The first round only gives the counters to diff against.
    let mut first = true;
    loop {
        ticker.tick().await;
        let mut unreachable = Vec::new();
        let listed = targets.list(&mut unreachable).await?;
        let round = scrape_all(&listed.targets, options.timeout).await;
        let mut frame = top.frame(rfc3339(unix_now()), round, &listed.sources, namespace);
        if std::mem::take(&mut first) {
            continue;
        }
        unreachable.append(&mut frame.unreachable);
        frame.unreachable = unreachable;
        print(&frame, options.output, terminal)?;
        printed += 1;
        if options.count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
    }
}

pub async fn scrape_all(
    targets: &[String],
    timeout: Duration,
) -> Vec<(String, Result<Scraped, String>)> {
    let scrapes = targets.iter().map(|target| async move {
        let text = scrape::scrape(target, timeout).await;
        let at = Instant::now();
        let result = text.and_then(|text| {
            parse::parse(&text)
                .map(|samples| Scraped { at, samples })
                .map_err(|e| format!("bad /metrics: {e}"))
        });
        (target.clone(), result)
    });
    futures::future::join_all(scrapes).await
}

fn print(frame: &Frame, output: Output, terminal: bool) -> Result<(), CliError> {
    let text = match output {
        Output::Json => {
            let line = serde_json::to_string(frame).map_err(|e| CliError::Input(e.to_string()))?;
            format!("{line}\n")
        }
        // A terminal shows one frame in place; a pipe or file gets them in turn.
        Output::Table if terminal => {
            format!("\x1b[H\x1b[2J{}\n{}", frame.time, render_table(frame))
        }
        Output::Table => format!("{}\n{}\n", frame.time, render_table(frame)),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Input(format!("writing to standard output: {e}")))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
