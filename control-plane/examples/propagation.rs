//! Benchmark: config propagation and control-plane memory per connected proxy.
//!
//! Starts the real `weft-control-plane` binary (built next to this example), loads
//! SERVICES services with ENDPOINTS endpoints each, connects N simulated proxies (one
//! discovery stream and one TCP connection each, all in this process; they decode
//! every push and ACK it at once), then times Admin writes until every proxy has
//! ACKed the change. Reports p50/p99/max of write-to-ACK and the control plane's
//! resident memory per connected proxy.
//!
//! Run with `bench/propagation.sh` (release build, open-file limit raised), or:
//! `cargo run --release -p weft-control-plane --example propagation -- 1 100 1000`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::resource::{to_any, Kind};
use weft_proto::v1;
use weft_proto::v1::admin_client::AdminClient;
use weft_proto::v1::discovery_client::DiscoveryClient;
use weft_proto::v1::discovery_request::Request as Req;

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let counts = if counts.is_empty() {
        vec![1, 100, 1000]
    } else {
        counts
    };
    println!(
        "mesh: {SERVICES} services x {ENDPOINTS} endpoints ({} resources); debounce: control-plane default",
        SERVICES * 2
    );
    println!("| proxies | writes | p50 write->ACK | p99 write->ACK | max | initial sync of all proxies | CP RSS before | CP RSS with proxies | per proxy | CP RSS after they left |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        run(n).await?;
    }
    Ok(())
}

struct ControlPlane {
    child: Child,
    _data: tempfile::TempDir,
    addr: SocketAddr,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/propagation -> target/<profile>/weft-control-plane
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?;
    let path = dir.join("weft-control-plane");
    if !path.exists() {
        return Err(format!(
            "{} missing: build the workspace's binaries first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

async fn start_control_plane() -> Result<ControlPlane, Error> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = tempfile::tempdir()?;
    // Pinned apart from the simulated proxies (this process runs on the other CPU, see
    // bench/propagation.sh), as the control plane and the proxies would be on separate
    // machines.
    let mut command = match std::env::var("BENCH_CONTROL_PLANE_CPU") {
        Ok(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(cpu).arg(binary()?);
            taskset
        }
        // A profiler to run the control plane under (e.g. `heaptrack`); RSS is then
        // the wrapper's, so only its own report is meaningful.
        Err(_) => match std::env::var("BENCH_CONTROL_PLANE_WRAPPER") {
            Ok(wrapper) => {
                let mut words = wrapper.split_whitespace();
                let mut command = Command::new(words.next().ok_or("empty wrapper")?);
                command.args(words).arg(binary()?);
                command
            }
            Err(_) => Command::new(binary()?),
        },
    };
    let child = command
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--log")
        .arg("warn")
        .args(
            std::env::var("BENCH_DEBOUNCE_MS")
                .map(|ms| vec!["--debounce-ms".to_owned(), ms])
                .unwrap_or_default(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err("control plane did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(ControlPlane {
        child,
        _data: data,
        addr,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn service(i: usize) -> v1::Resource {
    let message = v1::Service {
        namespace: "bench".into(),
        name: format!("svc-{i}"),
        ports: vec![v1::ServicePort {
            name: "http".into(),
            port: 80,
            protocol: "http1".into(),
        }],
        virtual_ips: vec![format!("10.96.{}.{}", i / 250, i % 250 + 1)],
        hostnames: vec![format!("svc-{i}.bench")],
        load_balancer: String::new(),
        mtls: String::new(),
        ..Default::default()
    };
    v1::Resource {
        name: String::new(),
        version: 0,
        body: Some(to_any(Kind::Service, &message)),
    }
}

fn endpoints(i: usize, generation: usize) -> v1::Resource {
    let message = v1::Endpoints {
        namespace: "bench".into(),
        name: format!("svc-{i}"),
        endpoints: (0..ENDPOINTS)
            .map(|e| v1::Endpoint {
                address: format!("10.{}.{}.{}", 1 + i / 250, i % 250, e + 1),
                port: 8080 + (generation % 1000) as u32,
                port_name: "http".into(),
                weight: 1,
                locality: Some(v1::Locality {
                    region: "eu".into(),
                    zone: format!("eu-{}", e % 3),
                }),
                labels: Default::default(),
                health: String::new(),
                identity: String::new(),
            })
            .collect(),
    };
    v1::Resource {
        name: String::new(),
        version: 0,
        body: Some(to_any(Kind::Endpoints, &message)),
    }
}

/// A simulated proxy: decodes every push, ACKs it, and reports when it receives the
/// watched resource with the watched content (the port of its endpoints).
async fn simulated_proxy(
    id: usize,
    addr: SocketAddr,
    mut watched: watch::Receiver<(String, u32)>,
    reports: mpsc::UnboundedSender<(usize, Instant)>,
) -> Result<(), Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    tx.send(v1::DiscoveryRequest {
        request: Some(Req::Hello(v1::Hello {
            node: Some(v1::Node {
                id: format!("sim-{id}"),
                workload: None,
                build: "bench".into(),
                admin_address: String::new(),
            }),
            known: vec![],
            subscriptions: vec![],
        })),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut received = 0;
    while let Some(response) = inbound.message().await? {
        let mut decoded = 0usize;
        let (name, port) = watched.borrow_and_update().clone();
        let mut hit = false;
        for resource in &response.resources {
            let Some(body) = &resource.body else { continue };
            match Kind::from_type_url(&body.type_url) {
                Some(Kind::Service) => {
                    decoded += v1::Service::decode(body.value.as_slice())?.ports.len();
                }
                Some(Kind::Endpoints) => {
                    let message = v1::Endpoints::decode(body.value.as_slice())?;
                    decoded += message.endpoints.len();
                    hit |= resource.name == name
                        && message.endpoints.first().map(|e| e.port) == Some(port);
                }
                Some(
                    Kind::TrustBundle
                    | Kind::AuthorizationPolicy
                    | Kind::HttpRoute
                    | Kind::GrpcRoute,
                )
                | None => {}
            }
        }
        std::hint::black_box(decoded);
        tx.send(v1::DiscoveryRequest {
            request: Some(Req::Ack(v1::Ack {
                nonce: response.nonce,
            })),
        })
        .await?;
        let now = Instant::now();
        let before = received;
        received += response.resources.len();
        if before < SERVICES * 2 && received >= SERVICES * 2 {
            let _ = reports.send((usize::MAX, now)); // holds the whole mesh
        }
        if hit {
            let _ = reports.send((id, now));
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(proxies: usize) -> Result<(), Error> {
    let cp = start_control_plane().await?;
    let mut admin = AdminClient::connect(format!("http://{}", cp.addr)).await?;
    for chunk in (0..SERVICES).collect::<Vec<_>>().chunks(100) {
        let mut resources: Vec<v1::Resource> = chunk.iter().map(|i| service(*i)).collect();
        resources.extend(chunk.iter().map(|i| endpoints(*i, 0)));
        admin.apply(v1::ApplyRequest { resources }).await?;
    }
    // Let the view settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(cp.child.id());

    let (watch_tx, watch_rx) = watch::channel((String::new(), 0u32));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(proxies);
    for id in 0..proxies {
        let (addr, watched, reports) = (cp.addr, watch_rx.clone(), report_tx.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = simulated_proxy(id, addr, watched, reports).await {
                eprintln!("simulated proxy {id}: {e}");
            }
        }));
    }
    let mut synced = 0;
    while synced < proxies {
        match tokio::time::timeout(Duration::from_secs(120), reports.recv()).await? {
            Some((usize::MAX, _)) => synced += 1,
            Some(_) => {}
            None => return Err("reports closed".into()),
        }
    }
    let initial_sync = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with = rss_kib(cp.child.id());
    if let Some(secs) = std::env::var("BENCH_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // Time to look at the control plane from outside (smaps, gdb, perf).
        eprintln!(
            "control plane pid {} with {proxies} proxies; holding {secs} s",
            cp.child.id()
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    let writes = match proxies {
        0..=10 => 200,
        11..=200 => 50,
        _ => 20,
    };
    let mut samples = Vec::with_capacity(writes * proxies);
    for w in 0..writes {
        let target = w % SERVICES;
        // Published before the write, so no push can arrive unrecognised.
        watch_tx.send_replace((
            format!("bench/svc-{target}"),
            8080 + ((w + 1) % 1000) as u32,
        ));
        let start = Instant::now();
        admin
            .apply(v1::ApplyRequest {
                resources: vec![endpoints(target, w + 1)],
            })
            .await?;
        let first_sample = samples.len();
        let mut seen = vec![false; proxies];
        let mut count = 0;
        while count < proxies {
            let (id, at) = tokio::time::timeout(Duration::from_secs(30), reports.recv())
                .await?
                .ok_or("reports closed")?;
            if id < proxies && !seen[id] {
                seen[id] = true;
                count += 1;
                samples.push(at.duration_since(start));
            }
        }
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let slowest = samples[first_sample..]
                .iter()
                .max()
                .copied()
                .unwrap_or_default();
            eprintln!("write {w}: every proxy had it after {}", ms(slowest));
        }
    }
    samples.sort();
    // Memory the proxies leave behind shows what the allocator keeps from the bursts.
    for task in &tasks {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_after = rss_kib(cp.child.id());
    println!(
        "| {proxies} | {writes} | {} | {} | {} | {} | {} MiB | {} MiB | {:.1} KiB | {} MiB |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
        ms(initial_sync),
        rss_before / 1024,
        rss_with / 1024,
        rss_with.saturating_sub(rss_before) as f64 / proxies.max(1) as f64,
        rss_after / 1024,
    );
    Ok(())
}
