//! The `rotor` command line: the operator (`run`) and tools around it.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rotor::api::{ROTATE_ANNOTATION, SecretRotation};
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
    /// Print the version.
    Version,
}

/// How to reach the cluster: the usual kubeconfig resolution, kubectl-style flags.
#[derive(Args, Clone, Debug)]
struct ClusterArgs {
    /// Namespace (default: the kubeconfig context's; for `run`, all namespaces).
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
    /// How many SecretRotations are reconciled at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
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
    /// Retries of a provider call after 429, 5xx or a transport error.
    #[arg(long, default_value_t = 4)]
    http_max_retries: u32,
    /// First retry backoff (doubles per retry, with jitter), e.g. 500ms.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    http_backoff: Duration,
    /// Longest wait between two attempts; a longer Retry-After fails the attempt.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", rotor::api::crd_yaml()),
        Command::Version => println!("rotor {}", env!("CARGO_PKG_VERSION")),
        Command::Run(args) => run(args).await?,
        Command::Rotate { name, cluster } => rotate(&name, &cluster).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log_level)?;
    let client = client(&args.cluster).await?;
    let settings = rotor::controller::Settings {
        namespace: args.cluster.namespace.clone(),
        concurrency: args.concurrency,
        instance: std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok()),
        http: rotor::providers::HttpSettings {
            allow_private_endpoints: args.allow_private_endpoints,
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
    rotor::controller::run(client, settings).await?;
    Ok(())
}

async fn rotate(name: &str, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let client = client(cluster).await?;
    let ns = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<SecretRotation> = Api::namespaced(client, &ns);
    let token = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let patch = serde_json::json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: token } } });
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("setting {ROTATE_ANNOTATION} on {ns}/{name}"))?;
    println!("secretrotation.rotor.dev/{name} rotation requested ({ROTATE_ANNOTATION}={token})");
    Ok(())
}

async fn client(args: &ClusterArgs) -> anyhow::Result<Client> {
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
    Ok(Client::try_from(config)?)
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
