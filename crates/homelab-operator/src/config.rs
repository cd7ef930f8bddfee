//! Operator configuration from command-line flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Settings of `homelab-operator run`. Every flag can also be set by the environment variable
/// named in its help text.
#[derive(Args, Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch (comma-separated). All namespaces when empty.
    #[arg(long, env = "HOMELAB_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Settings that shape what is rendered.
    #[command(flatten)]
    pub render: RenderFlags,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "HOMELAB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "HOMELAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "HOMELAB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease (defaults to the pod's namespace, or `default`).
    #[arg(long, env = "HOMELAB_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Identity of this replica in leader election (defaults to the pod or host name).
    #[arg(long, env = "HOMELAB_POD_NAME")]
    pub identity: Option<String>,

    /// How long a leader's Lease is valid without renewal, in seconds.
    #[arg(long, env = "HOMELAB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// How often every resource is reconciled even when nothing changed, in seconds.
    #[arg(long, env = "HOMELAB_RESYNC_SECONDS", default_value_t = 3600)]
    pub resync_seconds: u64,

    /// Manage the Azure side of databases (Key Vault password, backup container, SAS token).
    /// Without it, those must exist already.
    #[arg(long, env = "HOMELAB_AZURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub azure: bool,

    /// Azure settings (identity, cloud, retries, SAS signing) as a YAML file; workload identity
    /// in the public cloud when unset. See docs/azure.md.
    #[arg(long, env = "HOMELAB_AZURE_CONFIG")]
    pub azure_config: Option<std::path::PathBuf>,

    /// How often to check whether missing custom resource definitions (CloudNativePG, External
    /// Secrets Operator, …) have been installed, in seconds.
    #[arg(long, env = "HOMELAB_DISCOVERY_INTERVAL_SECONDS", default_value_t = 30)]
    pub discovery_interval_seconds: u64,

    /// Reconciles running at once, per kind.
    #[arg(long, env = "HOMELAB_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
}

/// Parses a `RunConfig` from command-line style arguments (program name not included), with
/// every unspecified setting at its default.
#[derive(clap::Parser)]
struct Standalone {
    #[command(flatten)]
    config: RunConfig,
}

impl RunConfig {
    pub fn from_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let argv = std::iter::once(std::ffi::OsString::from("homelab-operator"))
            .chain(args.into_iter().map(Into::into));
        Standalone::try_parse_from(argv).map(|s| s.config)
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(10))
    }

    /// The rendering defaults this configuration implies.
    pub fn render_config(&self) -> homelab_render::OperatorConfig {
        self.render.render_config()
    }
}

/// The settings that change what the operator renders, shared by `run` and `render` so that
/// `render -f` prints what the controllers would apply.
#[derive(Args, Clone, Debug)]
pub struct RenderFlags {
    /// External Secrets Operator ClusterSecretStore used when a resource names none.
    #[arg(
        long,
        env = "HOMELAB_DEFAULT_SECRET_STORE",
        default_value = "azure-keyvault"
    )]
    pub default_secret_store: String,

    /// cert-manager ClusterIssuer used for Ingress TLS when a HomelabApp names none.
    #[arg(
        long,
        env = "HOMELAB_CLUSTER_ISSUER",
        default_value = "letsencrypt-prod"
    )]
    pub cluster_issuer: String,

    /// Namespace of the ingress controller (or Gateway) pods, admitted by app NetworkPolicies.
    #[arg(
        long,
        env = "HOMELAB_INGRESS_NAMESPACE",
        default_value = "ingress-nginx"
    )]
    pub ingress_namespace: String,

    /// Labels of the ingress controller (or Gateway proxy) pods, `key=value` comma-separated,
    /// admitted by app NetworkPolicies in the ingress namespace; every pod of that namespace when
    /// empty. MicroK8s: `app.kubernetes.io/name=traefik`.
    #[arg(long, env = "HOMELAB_INGRESS_POD_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub ingress_pod_labels: Vec<(String, String)>,

    /// Labels the Prometheus to scrape the databases selects PodMonitors by, `key=value`
    /// comma-separated. MicroK8s' observability addon: `release=kube-prom-stack`.
    #[arg(long, env = "HOMELAB_MONITOR_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub monitor_labels: Vec<(String, String)>,
}

impl RenderFlags {
    /// The rendering defaults these flags imply.
    pub fn render_config(&self) -> homelab_render::OperatorConfig {
        let mut config = homelab_render::OperatorConfig::default();
        config.default_secret_store.name = self.default_secret_store.clone();
        config.default_cluster_issuer = self.cluster_issuer.clone();
        config.ingress_namespace = self.ingress_namespace.clone();
        config.ingress_pod_labels = self.ingress_pod_labels.iter().cloned().collect();
        config.monitor_labels = self.monitor_labels.iter().cloned().collect();
        config
    }
}

/// `key=value`, with a key and value Kubernetes accepts in labels.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    let (key, value) = (key.trim(), value.trim());
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid_name = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !valid_name(name) || key.len() > 253 {
        return Err(format!("{key:?} is not a valid label key"));
    }
    if !value.is_empty() && !valid_name(value) {
        return Err(format!("{value:?} is not a valid label value"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
