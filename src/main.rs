//! The `rotor` command line: the operator (`run`) and tools around it.

use anyhow::Context as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rotor::api::{ROTATE_ANNOTATION, SecretRotation};
use rotor::cli::{Output, OutputArgs, Scope};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "rotor",
    version,
    about = "Rotates credentials with zero downtime, as a Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Run the controller (in a cluster, or against your kubeconfig).
    Run(RunArgs),
    /// Print the SecretRotation CRD as YAML.
    Crd,
    /// Ask for one rotation now by setting the rotor.dev/rotate annotation.
    Rotate {
        /// Name of the SecretRotation.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show each SecretRotation's status: phase, readiness, rotations, next rotation.
    Status {
        /// Only this SecretRotation.
        name: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long, conflicts_with = "name")]
        all_namespaces: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show what the controller would do for each SecretRotation; changes nothing.
    Plan {
        /// Only this SecretRotation.
        name: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long, conflicts_with = "name")]
        all_namespaces: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Emergency: issue and activate a new credential, then revoke both old slots at
    /// once (sets the rotor.dev/revoke annotation).
    Revoke {
        /// Name of the SecretRotation.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the audit trail of a SecretRotation (never values).
    Audit {
        /// Name of the SecretRotation.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Manage the escrow's key-encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the client version and the version of the operator in the cluster (its
    /// Deployment's image tag, looked for in --namespace or in every namespace).
    Version {
        /// Only the client version; no cluster needed.
        #[arg(long)]
        client: bool,
        /// The label selector of the operator's Deployment.
        #[arg(short = 'l', long, default_value = rotor::cli::version::SELECTOR)]
        selector: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print a shell completion script, e.g. `source <(rotor completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a KEK version and re-wrap every data key with it (ciphertexts untouched).
    Rotate {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// How to reach the cluster: the usual kubeconfig resolution, kubectl-style flags.
#[derive(Args, Clone, Debug)]
struct ClusterArgs {
    /// Namespace (default: the kubeconfig context's; for `run`, all namespaces, or a
    /// comma-separated list).
    #[arg(short = 'n', long, env = "ROTOR_NAMESPACE")]
    namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many SecretRotations are reconciled at once (the work waits on vendors, not
    /// on CPU), per watched namespace with --namespace. Watching all namespaces, one
    /// namespace gets at most a quarter of them (at least one).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "ROTOR_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. info or rotor=debug.
    #[arg(long, default_value = "info", env = "ROTOR_LOG")]
    log_level: String,
    /// Allow provider endpoints (HTTP APIs and database hosts) that resolve to
    /// loopback, private or link-local addresses. Off by default: a tenant must not use
    /// rotor to reach services inside the cluster network.
    #[arg(long, env = "ROTOR_ALLOW_PRIVATE_ENDPOINTS")]
    allow_private_endpoints: bool,
    /// Allow provider endpoints in this internal address block although
    /// --allow-private-endpoints is off, e.g. 10.20.0.0/16 for a vendor inside the
    /// cluster network while 169.254.169.254 stays refused. Repeatable.
    #[arg(long = "allow-private-cidr", value_name = "CIDR", value_parser = clap::value_parser!(rotor::providers::endpoint::Cidr))]
    allow_private_cidrs: Vec<rotor::providers::endpoint::Cidr>,
    /// The longest one provider call (issue, test, revoke or list) may take as a whole,
    /// retries and waiting for a Convox rack included.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    provider_timeout: Duration,
    /// Retries of a provider call after 429, 5xx or a transport error.
    #[arg(long, default_value_t = 4)]
    http_max_retries: u32,
    /// First retry backoff (doubles per retry, with jitter), e.g. 500ms.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    http_backoff: Duration,
    /// Longest wait between two attempts; a longer Retry-After fails the attempt. At
    /// least 2s (how long the first request to an endpoint is given to learn its rate
    /// limit while the others wait).
    #[arg(long, default_value = "60s", value_parser = parse_max_wait)]
    http_max_wait: Duration,
    /// Timeout of one provider HTTP request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    http_timeout: Duration,
    /// How often to poll a system that is updating (a Convox rack).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// How long to wait for such an update.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    update_timeout: Duration,
    /// How long the escrow keeps a revoked credential's entry before cleanup deletes it.
    // `--vault-retention`, its name before the escrow, is still accepted (hidden).
    #[arg(long, alias = "vault-retention", default_value = "24h", value_parser = humantime::parse_duration)]
    escrow_retention: Duration,
    /// How often each resource's orphan sweep runs besides the one after every
    /// rotation and the first after start; 0s: only after rotations.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
    /// How long after a rotation its consumers are restarted: SecretRotations that
    /// rotate the same workload within this window cause one rollout, not one each
    /// (single-phase rotations restart at once).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    consumer_restart_delay: Duration,
    /// How often a consumer's rollout is looked at while rotor waits for it.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    consumer_poll_interval: Duration,
    /// Every SecretRotation is looked at within this interval even when nothing is due
    /// and no watch event came — the safety net for a change a watch missed; 0s: never.
    #[arg(long, default_value = "10h", value_parser = humantime::parse_duration)]
    resync_interval: Duration,
    /// Client-side limit on Kubernetes API requests per second (0: none — the API
    /// server's priority and fairness queues what it cannot take). Every request is
    /// counted in rotor_kube_requests_total{verb,resource}.
    #[arg(long, default_value_t = 0.0, env = "ROTOR_KUBE_QPS")]
    kube_qps: f64,
    /// With --kube-qps: how many requests may go at once before the limit applies.
    #[arg(long, default_value_t = 100, env = "ROTOR_KUBE_BURST")]
    kube_burst: u32,
    /// Address of the admin server (/metrics, /livez, /readyz); "off" disables it.
    #[arg(long, default_value = "0.0.0.0:8080", env = "ROTOR_METRICS_ADDRESS")]
    metrics_address: String,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "ROTOR_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease, in the operator's namespace (POD_NAMESPACE, default rotor-system).
    #[arg(long, default_value = "rotor-leader")]
    lease_name: String,
    /// How long a lease is valid without renewal: a standby takes over at most this long
    /// after the leader dies.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
}

/// `--http-max-wait`: a duration of at least [`rotor::providers::HttpSettings::MIN_MAX_WAIT`].
fn parse_max_wait(value: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    let min = rotor::providers::HttpSettings::MIN_MAX_WAIT;
    if wait < min {
        return Err(format!(
            "at least {} (the first request to an endpoint is given that long to learn its rate limit)",
            humantime::format_duration(min)
        ));
    }
    Ok(wait)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Called as `kubectl rotor` (a kubectl-rotor link on PATH), help says so.
    let argv0 = std::env::args_os().next();
    let matches = rotor::cli::named_for(Cli::command(), argv0.as_deref()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Crd => print!("{}", rotor::api::crd_yaml()),
        Command::Completion { shell } => {
            print!("{}", rotor::cli::completion(shell, &mut Cli::command()))
        }
        Command::Version {
            client: client_only,
            selector,
            output,
            cluster,
        } => version(client_only, &selector, output.output, &cluster).await?,
        Command::Status {
            name,
            all_namespaces,
            output,
            cluster,
        } => status(name.as_deref(), all_namespaces, output.output, &cluster).await?,
        Command::Run(args) => run(args).await?,
        Command::Rotate { name, cluster } => {
            annotate(&name, &cluster, ROTATE_ANNOTATION, "rotation").await?
        }
        Command::Revoke { name, cluster } => {
            annotate(
                &name,
                &cluster,
                rotor::api::REVOKE_ANNOTATION,
                "emergency revoke",
            )
            .await?
        }
        Command::Audit {
            name,
            output,
            cluster,
        } => audit(&name, output.output, &cluster).await?,
        Command::Keys {
            command: KeysCommand::Rotate { cluster },
        } => keys_rotate(&cluster).await?,
        Command::Plan {
            name,
            all_namespaces,
            output,
            cluster,
        } => plan(name.as_deref(), all_namespaces, output.output, &cluster).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log_level)?;
    // A panic's message may quote a value (a secret, a vendor's body): log where it
    // happened, never what it said. A panicking reconcile is caught and retried.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (message withheld: it may quote a value)");
    }));
    let health = rotor::admin::Health::default();
    let config = config(&args.cluster).await?;
    let client = rotor::kube_client::build(
        config.clone(),
        health.metrics.clone(),
        rotor::kube_client::RateLimit {
            qps: args.kube_qps.max(0.0),
            burst: args.kube_burst,
        },
    )?;
    // The Lease never waits behind the reconciles' requests in a client-side limit: a
    // late renewal would cost the lease (and every tenant a failover).
    let lease_client = rotor::kube_client::build(
        config,
        health.metrics.clone(),
        rotor::kube_client::RateLimit { qps: 0.0, burst: 0 },
    )?;
    if args.metrics_address != "off" {
        let addr: std::net::SocketAddr =
            args.metrics_address.parse().context("--metrics-address")?;
        let listener_health = health.clone();
        tokio::spawn(async move {
            if let Err(e) = rotor::admin::serve(addr, listener_health).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }
    let settings = rotor::controller::Settings {
        namespaces: args
            .cluster
            .namespace
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        concurrency: args.concurrency,
        instance: std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|n| !n.is_empty()),
        operator_namespace: operator_namespace(),
        vault_retention: args.escrow_retention,
        sweep_interval: args.sweep_interval,
        consumer_restart_delay: args.consumer_restart_delay,
        consumer_poll_interval: args.consumer_poll_interval.max(Duration::from_secs(1)),
        resync_interval: args.resync_interval,
        http: rotor::providers::HttpSettings {
            allow_private_endpoints: args.allow_private_endpoints,
            allow_private_cidrs: args.allow_private_cidrs.clone(),
            provider_timeout: args.provider_timeout,
            max_retries: args.http_max_retries,
            backoff_base: args.http_backoff,
            max_wait: args.http_max_wait,
            timeout: args.http_timeout,
            poll_interval: args.poll_interval,
            update_timeout: args.update_timeout,
        },
    };
    if args.allow_private_endpoints {
        tracing::warn!(
            "--allow-private-endpoints: provider endpoints may reach loopback and private addresses"
        );
    }
    // Before the Lease (which lives in the operator namespace): setup errors with a
    // clear fix (that namespace missing, the CRD not served, Secrets not to be listed
    // or watched), not something to retry; a standby fails as early as a leader.
    rotor::controller::preflight(&client, &settings).await?;
    if !args.leader_elect {
        rotor::controller::run(client, settings, health).await?;
        return Ok(());
    }
    let lease = rotor::leader::LeaseSettings {
        namespace: operator_namespace(),
        name: args.lease_name.clone(),
        identity: settings
            .instance
            .clone()
            .unwrap_or_else(|| format!("rotor-{}", std::process::id())),
        duration_secs: args.lease_duration_seconds.max(3),
        grace_secs: (args.lease_duration_seconds / 3).max(1),
    };
    // A standby is ready: a rolling update must not wait for it to become leader.
    health.set_ready(true);
    let holding = tokio::select! {
        held = rotor::leader::acquire(lease_client, &lease) => held.context("leader election")?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    health.set_ready(false);
    tokio::select! {
        result = rotor::controller::run(client, settings, health) => result?,
        _ = rotor::leader::lost(holding) => {
            tracing::error!("lost the leader lease; exiting so a standby takes over");
            std::process::exit(1);
        }
    }
    Ok(())
}

/// The operator's own namespace (KEK Secret, Lease): POD_NAMESPACE, else rotor-system.
fn operator_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "rotor-system".into())
}

async fn annotate(
    name: &str,
    cluster: &ClusterArgs,
    annotation: &str,
    what: &str,
) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let ns = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<SecretRotation> = Api::namespaced(client, &ns);
    let token = format!(
        "{}{}",
        rotor::api::ROTATE_TOKEN_PREFIX,
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let patch = serde_json::json!({ "metadata": { "annotations": { annotation: token } } });
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("setting {annotation} on {ns}/{name}"))?;
    println!("secretrotation.rotor.dev/{name} {what} requested ({annotation}={token})");
    Ok(())
}

async fn audit(name: &str, output: Output, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let ns = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let rows = rotor::cli::audit::rows(&client, &ns, name).await?;
    print!("{}", rotor::cli::audit::render(&rows, output)?);
    if rows.is_empty() && output == Output::Table {
        eprintln!("No audit records for {ns}/{name}.");
    }
    Ok(())
}

async fn keys_rotate(cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let ns = cluster.namespace.clone().unwrap_or_else(operator_namespace);
    let report = rotor::vault::rotate_keys(&client, &ns).await?;
    for failure in &report.failures {
        eprintln!("rotor keys rotate: not re-wrapped: {failure}");
    }
    println!(
        "KEK v{} added to {ns}/{}; {} data keys re-wrapped, {} failed",
        report.version,
        rotor::vault::KEK_SECRET,
        report.rewrapped,
        report.failures.len()
    );
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} data keys or escrows could not be re-wrapped with KEK v{} (listed above); they still need the older KEK versions: keep them",
            report.failures.len(),
            report.version
        );
    }
    Ok(())
}

async fn plan(
    name: Option<&str>,
    all_namespaces: bool,
    output: Output,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let scope = scope(all_namespaces, cluster, &client);
    let rows = rotor::cli::plan::rows(client, &scope, name).await?;
    let text = rotor::cli::plan::render(&rows, output, &scope, chrono::Utc::now())?;
    print_list(&text, rows.is_empty(), output, &scope);
    Ok(())
}

async fn status(
    name: Option<&str>,
    all_namespaces: bool,
    output: Output,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let scope = scope(all_namespaces, cluster, &client);
    let rows = rotor::cli::status::rows(&client, &scope, name).await?;
    let text = rotor::cli::status::render(&rows, output, &scope, chrono::Utc::now())?;
    print_list(&text, rows.is_empty(), output, &scope);
    Ok(())
}

/// `rotor version`: the client's version always; the operator's unless --client. Like
/// `kubectl version`, a cluster that cannot be reached fails the command (after the
/// client version is printed); a cluster without a rotor Deployment only says so.
async fn version(
    client_only: bool,
    selector: &str,
    output: Output,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    use rotor::cli::version::{Server, lookup, render};
    let server = if client_only {
        Server::NotAsked
    } else {
        match client(cluster).await {
            Ok(client) => lookup(&client, cluster.namespace.as_deref(), selector).await,
            Err(e) => Server::Unreachable(format!("{e:#}")),
        }
    };
    print!("{}", render(&server, output)?);
    match server.notice() {
        Some(notice) if matches!(server, Server::Unreachable(_)) => anyhow::bail!(notice),
        Some(notice) => eprintln!("{notice}"),
        None => {}
    }
    Ok(())
}

/// One namespace (-n, else the kubeconfig context's), or all of them.
fn scope(all_namespaces: bool, cluster: &ClusterArgs, client: &Client) -> Scope {
    if all_namespaces {
        return Scope::All;
    }
    Scope::Namespace(
        cluster
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
    )
}

/// A list of SecretRotations on stdout; an empty table is said on stderr, as kubectl
/// says it.
fn print_list(text: &str, empty: bool, output: Output, scope: &Scope) {
    print!("{text}");
    if empty && output == Output::Table {
        match scope.namespace() {
            Some(ns) => eprintln!("No SecretRotations found in namespace {ns}."),
            None => eprintln!("No SecretRotations found."),
        }
    }
}

async fn client(args: &ClusterArgs) -> anyhow::Result<Client> {
    Ok(Client::try_from(config(args).await?)?)
}

async fn config(args: &ClusterArgs) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(config)
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("--log-level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_max_wait_below_the_probe_is_refused() {
        let parse = |wait: &str| {
            Cli::try_parse_from(["rotor", "run", "--http-max-wait", wait]).map(|cli| {
                match cli.command {
                    Command::Run(args) => args.http_max_wait,
                    _ => unreachable!("parsed as run"),
                }
            })
        };
        for low in ["0s", "1s", "1999ms"] {
            let err = parse(low).expect_err("refused").to_string();
            assert!(err.contains("at least 2s"), "{low}: {err}");
        }
        assert_eq!(parse("2s").ok(), Some(Duration::from_secs(2)));
        assert!(parse("soon").is_err());
    }
}
