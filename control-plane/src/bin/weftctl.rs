//! `weftctl`: the operators' CLI of the Weft control plane (its Admin gRPC API).
//!
//! This file is the edge: flags, the calls, and turning errors into `weftctl: <message>`
//! and an exit code (1 for a failed command, 2 for a usage error, from clap). What to
//! print and how to read documents lives in `weft_control_plane::cli`, with its tests.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_control_plane::cli::client::{self, CliError};
use weft_control_plane::cli::document::{self, Document, DEFAULT_NAMESPACE};
use weft_control_plane::cli::top::run;
use weft_control_plane::cli::{check, dashboard, identity, resources, status, tap, Format};
use weft_control_plane::identity::parse_duration;
use weft_control_plane::inject::{manifests, pod, Settings};
use weft_proto::model::validate_host_port;
use weft_proto::resource::Kind;
use weft_proto::v1;
use weft_proto::v1::apply_result::Outcome;

#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about = "Drive the Weft control plane")]
struct Args {
    /// The control plane's gRPC address: host:port or http://host:port.
    #[arg(
        long,
        global = true,
        env = "WEFT_CONTROL_PLANE",
        default_value = "127.0.0.1:15010"
    )]
    control_plane: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the resources of a YAML file (documents separated by `---`),
    /// all in one atomic request.
    Apply {
        /// The file to read, or `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// List resources of a kind, or show one.
    Get {
        /// service (services, svc), endpoints (ep), trustbundle (tb),
        /// authorizationpolicy (authz), httproute or grpcroute.
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        /// `name` (in namespace default) or `namespace/name`.
        name: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Delete one resource.
    Delete {
        /// service (services, svc), endpoints (ep), authorizationpolicy (authz),
        /// httproute or grpcroute.
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        /// `name` (in namespace default) or `namespace/name`.
        name: String,
    },
    /// The connected proxies: sync state, acknowledged/latest version per type
    /// (SERVICES, ENDPOINTS), pending pushes, and the message of any NACK.
    Status {
        /// `table` or `json`.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Live golden metrics per service (RPS, success rate, P50/P99 latency, share of
    /// mTLS traffic, healthy endpoints), read from the proxies' /metrics.
    #[command(alias = "stat")]
    Top {
        /// Only the services of this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Time between frames (`500ms`, `1s`, `5s`).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many frames (default: until Ctrl-C).
        #[arg(long, conflicts_with = "once", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Print one frame and stop (`--count 1`).
        #[arg(long)]
        once: bool,
        /// `table` or `json` (one object per frame per line).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Scrape these proxies' admin addresses (host:port, repeatable) instead of
        /// every proxy the control plane lists; the control plane is then not used.
        #[arg(long = "proxy", value_name = "HOST:PORT")]
        proxies: Vec<String>,
        /// How long one scrape of a proxy's /metrics may take.
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// The requests proxies serve, live, one line each (like `linkerd viz tap`),
    /// read from their admin /tap: time, proxy, direction, method, authority and
    /// path, status, latency, service, endpoint, route, retries, mTLS, source.
    Tap {
        /// Tap the proxies of this namespace's workloads.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Tap the proxies of this service's workloads (`namespace/name`, or a name).
        #[arg(long)]
        service: Option<String>,
        /// Only requests to this service (`namespace/name`, or a name).
        #[arg(long, value_name = "SERVICE")]
        to: Option<String>,
        /// Only requests whose path starts with this.
        #[arg(long)]
        path: Option<String>,
        /// Only requests with this method.
        #[arg(long)]
        method: Option<String>,
        /// At most this many events a second from each proxy; the rest are dropped
        /// there (and counted in weft_tap_events_dropped_total).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max_rps: u32,
        /// Stop after this many events (default: until Ctrl-C).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// `table` (one line of text per event) or `json` (the proxies' lines).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Tap these proxies' admin addresses (host:port, repeatable) instead of
        /// those the control plane lists; the control plane is then not used.
        #[arg(long = "proxy", value_name = "HOST:PORT")]
        proxies: Vec<String>,
        /// The proxies' --tap-token, needed from anywhere but their loopback.
        #[arg(long, env = "WEFT_TAP_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// A local web page of the mesh: the service graph with rate, success and
    /// latency per edge, golden metrics per service, and a page per proxy (sync
    /// state, config version, NACKs, certificate, endpoint states), and a live tap
    /// view. Reads what `top`, `status` and `tap` read; works offline.
    Dashboard {
        /// Where the page is served; loopback unless you mean to share it.
        #[arg(long, default_value = "127.0.0.1:50750")]
        listen: std::net::SocketAddr,
        /// Only the services of this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Time between refreshes (`1s`, `2s`, `5s`).
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Show these proxies' admin addresses (host:port, repeatable) instead of
        /// every proxy the control plane lists.
        #[arg(long = "proxy", value_name = "HOST:PORT")]
        proxies: Vec<String>,
        /// How long one scrape of a proxy's /metrics may take.
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// The proxies' --tap-token, for the live tap view when the dashboard is
        /// not on their loopback.
        #[arg(long, env = "WEFT_TAP_TOKEN", hide_env_values = true)]
        tap_token: Option<String>,
    },
    /// What the mesh does with one request from SOURCE to DESTINATION, and why: the
    /// service, the route and match, the backends and their weights, the timeouts and
    /// retries in force, the policy that decides, and the endpoints with their state.
    Explain {
        /// Who calls: NAMESPACE/SERVICE_ACCOUNT, a SPIFFE ID, NAMESPACE alone for a
        /// caller without an identity, or `self` for the workload of --proxy.
        source: String,
        /// http://HOST[:PORT]/PATH[?QUERY] or grpc://HOST[:PORT]/package.Service/Method;
        /// HOST is a service's host name or virtual IP.
        destination: String,
        /// Read this proxy's /config_dump (its admin address, host:port) instead of
        /// the control plane's resources.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "config_dump")]
        proxy: Option<String>,
        /// Read a saved /config_dump.
        #[arg(long, value_name = "FILE")]
        config_dump: Option<PathBuf>,
        /// A request header, NAME:VALUE (repeatable).
        #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// The request method (default GET, POST for grpc://).
        #[arg(short = 'X', long = "request", value_name = "METHOD")]
        method: Option<String>,
        /// `table` (readable text) or `json`.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Join tokens: what a proxy presents (--identity-token) to get its certificate.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The mesh's certificate authority: its roots, and root rotation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the CustomResourceDefinitions of Weft's kinds (ServicePolicy,
    /// AuthorizationPolicy), as in deploy/kubernetes/base/crds.yaml; the control plane
    /// is not used.
    Crds,
    /// Add the Weft sidecar to the pods of Kubernetes manifests (Pods, Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Lists; several
    /// documents), as the injection webhook does, and print them; offline.
    Inject {
        /// The file to read, or `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// The injector's settings (the `config.yaml` of the ConfigMap weft-injector);
        /// default: the defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The namespace of objects that do not name theirs.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The control plane's namespace, never injected.
        #[arg(long, default_value = "weft")]
        weft_namespace: String,
    },
    /// Check Weft on the current Kubernetes cluster (kubeconfig as kubectl finds it)
    /// and its control plane (--control-plane): API version, CRDs, replicas, RBAC,
    /// the webhook's configuration, caBundle and certificate, the injector's settings
    /// and each namespace's injection. Exits 1 if anything fails.
    Check {
        /// The control plane's namespace.
        #[arg(long, default_value = "weft")]
        weft_namespace: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a token for one identity and prints it (only this once) on stdout.
    Create {
        #[arg(long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long, default_value = "default")]
        service_account: String,
        /// How long the token may be used (`30m`, `24h`, `7d`); default 24h.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Lists tokens by id, with their identity and state; never their secrets.
    List,
    /// Revokes a token by id: proxies can no longer use it to get or renew certificates.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// The trust domain and roots, and which root signs.
    Status,
    /// Starts a root rotation: a new root signs new certificates, and both roots are
    /// trusted until `finish-rotation`.
    Rotate,
    /// Ends a rotation: only the new root stays trusted. Run it once every proxy has
    /// renewed (one --cert-ttl after `rotate` at most).
    FinishRotation,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::parse(text).ok_or_else(|| {
        format!("unknown kind {text:?} (expected service (svc), endpoints (ep), trustbundle (tb), authorizationpolicy (authz), httproute or grpcroute)")
    })
}

/// `kind/namespace/name`, as kubectl prints `service/orders`.
fn label(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.as_str().to_ascii_lowercase())
}

/// The full name the server will use: a bare name is in namespace `default`.
fn full_name(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{DEFAULT_NAMESPACE}/{name}")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weftctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), CliError> {
    // Read and parse input before connecting: a bad file is reported even when the
    // control plane is down, and nothing is sent.
    let documents = match &args.command {
        Command::Apply { file } => Some(read_documents(file)?),
        _ => None,
    };
    if let Command::Status {
        output: Format::Yaml,
    } = args.command
    {
        return Err(CliError::Input(
            "status prints a table or json, not yaml".to_owned(),
        ));
    }
    if let Command::Top { .. } = args.command {
        return top(args).await;
    }
    if let Command::Dashboard { .. } = args.command {
        return dashboard(args).await;
    }
    if let Command::Tap { .. } = args.command {
        return tap(args).await;
    }
    if let Command::Inject {
        file,
        config,
        namespace,
        weft_namespace,
    } = &args.command
    {
        return inject(file, config.as_ref(), namespace, weft_namespace);
    }
    if let Command::Check { weft_namespace } = &args.command {
        return check(&args.control_plane, weft_namespace).await;
    }
    if let Command::Explain { .. } = args.command {
        return explain(args).await;
    }
    if let Command::Crds = args.command {
        // Rendered from the types this weftctl was built with; a schema that is not
        // structural is a bug caught by weft-proto's tests, reported here all the same.
        let text = weft_proto::crd::crds_yaml().map_err(|e| CliError::Input(e.to_string()))?;
        print!("{text}");
        return Ok(());
    }
    let mut admin = client::connect(&args.control_plane).await?;
    match args.command {
        Command::Apply { .. } => {
            let resources = documents
                .unwrap_or_default()
                .iter()
                .map(Document::to_resource)
                .collect();
            let response = admin
                .apply(v1::ApplyRequest { resources })
                .await?
                .into_inner();
            for result in response.results {
                let kind = Kind::from_type_url(&result.type_url);
                let what = match kind {
                    Some(kind) => label(kind, &result.name),
                    None => format!("{}/{}", result.type_url, result.name),
                };
                let outcome = match Outcome::try_from(result.outcome) {
                    Ok(Outcome::Created) => "created",
                    Ok(Outcome::Updated) => "configured",
                    Ok(Outcome::Unchanged) => "unchanged",
                    Ok(Outcome::Unspecified) | Err(_) => "applied",
                };
                println!("{what} {outcome}");
            }
        }
        Command::Get { kind, name, output } => {
            let type_url = kind.type_url().to_owned();
            let stored = match &name {
                Some(name) => vec![admin
                    .get(v1::GetRequest {
                        type_url,
                        name: name.clone(),
                    })
                    .await?
                    .into_inner()],
                None => {
                    admin
                        .list(v1::ListRequest {
                            type_url,
                            served: false,
                        })
                        .await?
                        .into_inner()
                        .resources
                }
            };
            let documents = stored
                .iter()
                .map(Document::from_resource)
                .collect::<Result<Vec<_>, _>>()
                .map_err(CliError::Input)?;
            if documents.is_empty() && output == Format::Table {
                let plural = match kind {
                    Kind::Service => "services",
                    Kind::Endpoints => "endpoints",
                    Kind::TrustBundle => "trust bundles",
                    Kind::AuthorizationPolicy => "authorization policies",
                    Kind::HttpRoute => "HTTP routes",
                    Kind::GrpcRoute => "gRPC routes",
                };
                eprintln!("No {plural} found.");
                return Ok(());
            }
            let text = resources::render(kind, &documents, output, name.is_some())
                .map_err(CliError::Input)?;
            print!("{text}");
        }
        Command::Delete { kind, name } => {
            admin
                .delete(v1::DeleteRequest {
                    type_url: kind.type_url().to_owned(),
                    name: name.clone(),
                })
                .await?;
            println!("{} deleted", label(kind, &full_name(&name)));
        }
        // Returned above, before connecting.
        Command::Top { .. }
        | Command::Dashboard { .. }
        | Command::Tap { .. }
        | Command::Crds
        | Command::Inject { .. }
        | Command::Check { .. }
        | Command::Explain { .. } => {}
        Command::Token(command) => token(&mut admin, command).await?,
        Command::Ca(command) => {
            let status = match command {
                CaCommand::Status => admin.get_ca(v1::GetCaRequest {}).await?,
                CaCommand::Rotate => admin.rotate_ca(v1::RotateCaRequest {}).await?,
                CaCommand::FinishRotation => {
                    admin
                        .finish_ca_rotation(v1::FinishCaRotationRequest {})
                        .await?
                }
            }
            .into_inner();
            print!("{}", identity::ca_table(&status, unix_now()).render());
        }
        Command::Status { output } => {
            let listed = admin
                .list_proxies(v1::ListProxiesRequest {})
                .await?
                .into_inner();
            let (proxies, current) = (&listed.proxies, &listed.control_plane_build);
            match output {
                Format::Json => {
                    let text = serde_json::to_string_pretty(&status::to_json(proxies, current))
                        .map_err(|e| CliError::Input(e.to_string()))?;
                    println!("{text}");
                }
                _ if proxies.is_empty() => eprintln!("No proxies connected."),
                _ => print!("{}", status::table(proxies, current, unix_now()).render()),
            }
        }
    }
    Ok(())
}

/// The proxies to read: the `--proxy` addresses, else every proxy the control
/// plane lists.
async fn targets(control_plane: &str, proxies: Vec<String>) -> Result<run::Targets, CliError> {
    for proxy in &proxies {
        validate_host_port("--proxy", proxy).map_err(|e| CliError::Input(e.to_string()))?;
    }
    Ok(if proxies.is_empty() {
        run::Targets::ControlPlane {
            admin: client::connect(control_plane).await?,
            address: control_plane.to_owned(),
            last: Vec::new(),
        }
    } else {
        run::Targets::Fixed(proxies)
    })
}

/// `weftctl tap`: with `--proxy`, no control plane is contacted.
async fn tap(args: Args) -> Result<(), CliError> {
    let Command::Tap {
        namespace,
        service,
        to,
        path,
        method,
        max_rps,
        count,
        output,
        proxies,
        token,
    } = args.command
    else {
        return Ok(());
    };
    let output = match output {
        Format::Table => tap::stream::Output::Text,
        Format::Json => tap::stream::Output::Json,
        Format::Yaml => {
            return Err(CliError::Input(
                "tap prints text or json, not yaml".to_owned(),
            ))
        }
    };
    for proxy in &proxies {
        validate_host_port("--proxy", proxy).map_err(|e| CliError::Input(e.to_string()))?;
    }
    let proxies = if proxies.is_empty() {
        let mut admin = client::connect(&args.control_plane).await?;
        let listed = admin
            .list_proxies(v1::ListProxiesRequest {})
            .await?
            .into_inner()
            .proxies;
        tap::chosen(&listed, namespace.as_deref(), service.as_deref())
    } else {
        proxies
    };
    let options = tap::stream::Options {
        filter: tap::Filter {
            service: to,
            path,
            method,
            max_rps: Some(max_rps),
        },
        count,
        output,
        token,
    };
    tap::stream::run(proxies, options).await
}

/// `weftctl dashboard`: serves until Ctrl-C.
async fn dashboard(args: Args) -> Result<(), CliError> {
    let Command::Dashboard {
        listen,
        namespace,
        interval,
        proxies,
        timeout,
        tap_token,
    } = args.command
    else {
        return Ok(());
    };
    let targets = targets(&args.control_plane, proxies).await?;
    let options = dashboard::Options {
        listen,
        namespace,
        interval,
        timeout,
        tap_token,
    };
    dashboard::run(targets, options).await
}

/// `weftctl top`: with `--proxy`, no control plane is contacted.
async fn top(args: Args) -> Result<(), CliError> {
    let Command::Top {
        namespace,
        interval,
        count,
        once,
        output,
        proxies,
        timeout,
    } = args.command
    else {
        return Ok(());
    };
    let output = match output {
        Format::Table => run::Output::Table,
        Format::Json => run::Output::Json,
        Format::Yaml => {
            return Err(CliError::Input(
                "top prints a table or json, not yaml".to_owned(),
            ))
        }
    };
    let targets = targets(&args.control_plane, proxies).await?;
    let options = run::Options {
        namespace,
        interval,
        count: if once { Some(1) } else { count },
        output,
        timeout,
    };
    run::run(targets, options).await
}

async fn token(
    admin: &mut v1::admin_client::AdminClient<tonic::transport::Channel>,
    command: TokenCommand,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            namespace,
            service_account,
            ttl,
        } => {
            let response = admin
                .create_token(v1::CreateTokenRequest {
                    namespace,
                    service_account,
                    ttl_seconds: ttl.map(|d| d.as_secs().max(1)).unwrap_or(0),
                })
                .await?
                .into_inner();
            // The secret alone on stdout, so `$(weftctl token create ...)` captures it;
            // what it is for goes to stderr.
            if let Some(token) = &response.token {
                eprintln!(
                    "token {} for {}/{} (shown once; revoke with `weftctl token revoke {}`)",
                    token.id, token.namespace, token.service_account, token.id
                );
            }
            println!("{}", response.secret);
        }
        TokenCommand::List => {
            let tokens = admin
                .list_tokens(v1::ListTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            if tokens.is_empty() {
                eprintln!("No tokens.");
            } else {
                print!("{}", identity::tokens_table(&tokens, unix_now()).render());
            }
        }
        TokenCommand::Revoke { id } => {
            let token = admin
                .revoke_token(v1::RevokeTokenRequest { id })
                .await?
                .into_inner();
            println!("token {} revoked", token.id);
        }
    }
    Ok(())
}

/// Reads a file, or standard input for `-`; the name to report it by, and its text.
fn read_input(file: &PathBuf) -> Result<(String, String), CliError> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Input(format!("cannot read standard input: {e}")))?;
        Ok(("standard input".to_owned(), text))
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", file.display())))?;
        Ok((file.display().to_string(), text))
    }
}

/// `weftctl inject`: the injected manifests on stdout, what happened to each object
/// on stderr.
fn inject(
    file: &PathBuf,
    config: Option<&PathBuf>,
    namespace: &str,
    weft_namespace: &str,
) -> Result<(), CliError> {
    let settings = match config {
        Some(path) => {
            let (source, text) = read_input(path)?;
            Settings::parse(&text).map_err(|e| CliError::Input(format!("{source}: {e}")))?
        }
        None => Settings::default(),
    };
    let (source, text) = read_input(file)?;
    let (out, reports) = manifests::inject_manifests(&text, namespace, weft_namespace, &settings)
        .map_err(|e| CliError::Input(format!("{source}: {e}")))?;
    print!("{out}");
    for report in reports {
        let what = match report.outcome {
            pod::Outcome::Injected => "injected".to_owned(),
            pod::Outcome::Reordered => "proxy moved back in front".to_owned(),
            pod::Outcome::Skipped(why) => format!("left alone: {why}"),
        };
        eprintln!("{} {what}", report.object);
    }
    Ok(())
}

/// `weftctl check`: one line per check; an error (exit 1) if any failed.
async fn check(control_plane: &str, weft_namespace: &str) -> Result<(), CliError> {
    let kube = kube::Client::try_default()
        .await
        .map_err(|e| CliError::Input(format!("no Kubernetes configuration: {e}")))?;
    let webhook = match client::connect(control_plane).await {
        Ok(mut admin) => admin
            .get_webhook(v1::GetWebhookRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|status| format!("{control_plane}: {}", status.message())),
        Err(error) => Err(error.to_string()),
    };
    let install = check::Install {
        namespace: weft_namespace.to_owned(),
        ..check::Install::default()
    };
    let lines = check::run(&kube, &install, webhook, unix_now()).await;
    for line in &lines {
        println!("{line}");
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    if failed > 0 {
        return Err(CliError::Input(format!(
            "{failed} of {} checks failed",
            lines.len()
        )));
    }
    Ok(())
}

fn read_documents(file: &PathBuf) -> Result<Vec<Document>, CliError> {
    let (source, text) = read_input(file)?;
    document::parse(&text).map_err(|e| CliError::Input(format!("{source}: {e}")))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `explain`: reads the mesh from a proxy, a saved dump or the control plane, then
/// explains offline.
async fn explain(args: Args) -> Result<(), CliError> {
    use weft_control_plane::cli::explain::{self, Mesh, Request, Source};
    use weft_proto::model::TrustDomain;

    let Command::Explain {
        source,
        destination,
        proxy,
        config_dump,
        headers,
        method,
        output,
    } = args.command
    else {
        return Ok(());
    };
    if output == Format::Yaml {
        return Err(CliError::Input(
            "explain prints text or json, not yaml".to_owned(),
        ));
    }
    let request = Request::parse(&destination, method.as_deref(), &headers)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let dump = match (&proxy, &config_dump) {
        (Some(address), _) => {
            let timeout = std::time::Duration::from_secs(5);
            let text =
                weft_control_plane::cli::top::scrape::fetch(address, "/config_dump", timeout)
                    .await
                    .map_err(|e| CliError::Input(format!("proxy {address}: {e}")))?;
            Some(text)
        }
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?,
        ),
        (None, None) => None,
    };
    let mesh = match dump {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Input(format!("the config dump is not JSON: {e}")))?;
            Mesh::from_config_dump(&value)
        }
        None => {
            let mut admin = client::connect(&args.control_plane).await?;
            let mut resources = Vec::new();
            for kind in Kind::ALL {
                let type_url = kind.type_url().to_owned();
                // As served to proxies: with the registered endpoints and their health.
                let request = v1::ListRequest {
                    type_url,
                    served: true,
                };
                let listed = admin.list(request).await?.into_inner();
                resources.extend(listed.resources);
            }
            Mesh::from_resources(&resources)
        }
    }
    .map_err(|e| CliError::Input(e.to_string()))?;
    let source = if source == "self" {
        mesh.local_identity.clone().ok_or_else(|| {
            CliError::Input(
                "`self` needs --proxy or --config-dump of a proxy with an identity".to_owned(),
            )
        })?
    } else {
        source
    };
    let trust_domain = match &mesh.trust_domain {
        Some(domain) => domain.clone(),
        None => TrustDomain::new("cluster.local").map_err(|e| CliError::Input(e.to_string()))?,
    };
    let source =
        Source::parse(&source, &trust_domain).map_err(|e| CliError::Input(e.to_string()))?;
    let explanation = explain::explain(&mesh, &source, &request);
    match output {
        Format::Json => {
            let text = serde_json::to_string_pretty(&explanation)
                .map_err(|e| CliError::Input(e.to_string()))?;
            println!("{text}");
        }
        _ => print!("{}", explain::render(&explanation)),
    }
    Ok(())
}
