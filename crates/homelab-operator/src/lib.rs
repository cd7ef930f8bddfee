//! homelab-operator: one binary reconciling `HomelabApp`, `AppDatabase` and `BackupPolicy`.
//!
//! Layout: [`controllers`] wire the pure renderers of `homelab-render` to the cluster through the
//! adapters in [`kubernetes`]; [`run`] starts them with leader election, metrics and health
//! endpoints.

pub mod azure;
pub mod cli;
pub mod config;
pub mod controllers;
pub mod health;
pub mod http;
pub mod kubernetes;
pub mod leader;
pub mod metrics;
pub mod telemetry;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::RunConfig;
use crate::health::Health;
use crate::metrics::Metrics;

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot build a Kubernetes client (in a pod: check the ServiceAccount; outside: check KUBECONFIG): {0}"
    )]
    Client(#[from] kube::Error),
    #[error(
        "watching several namespaces ({0}) is not supported: give one namespace, or none to watch all"
    )]
    TooManyNamespaces(String),
    #[error("Azure configuration: {0}")]
    AzureConfig(String),
    #[error("cannot join leader election on Lease {namespace}/{name}: {source}")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// Runs the operator until `shutdown` resolves, with Azure clients built from the
/// configuration.
pub async fn run(
    config: RunConfig,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let azure = if config.azure {
        let azure_config = match &config.azure_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StartError::AzureConfig(format!("cannot read {}: {e}", path.display()))
                })?;
                serde_norway::from_str(&text)
                    .map_err(|e| StartError::AzureConfig(format!("{}: {e}", path.display())))?
            }
            None => homelab_azure::AzureConfig::default(),
        };
        Some(
            homelab_azure::AzureClients::new(azure_config)
                .map_err(|e| StartError::AzureConfig(e.to_string()))?,
        )
    } else {
        None
    };
    run_with(config, client, azure, shutdown).await
}

/// Runs the operator until `shutdown` resolves, with the given Azure clients (`None` disables
/// the Azure side).
pub async fn run_with(
    config: RunConfig,
    client: kube::Client,
    azure: Option<homelab_azure::AzureClients>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    if config.namespaces.len() > 1 {
        return Err(StartError::TooManyNamespaces(config.namespaces.join(",")));
    }
    let metrics = Arc::new(Metrics::default());
    let azure = azure.map(|clients| Arc::new(azure::AzureSide::new(clients, metrics.clone())));
    let health = Arc::new(Health::default());
    let http = tokio::spawn(http::serve(
        config.http_addr,
        metrics.clone(),
        health.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisor = async {
        if config.leader_election {
            let namespace = config
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".to_string());
            let identity = identity(&config);
            let mut leading = leader::elect(
                client.clone(),
                &namespace,
                &identity,
                config.lease_duration_seconds,
            )
            .await
            .map_err(|source| StartError::LeaderElection {
                namespace: namespace.clone(),
                name: leader::LEASE_NAME.to_string(),
                source,
            })?;
            tracing::info!(%identity, lease = %format!("{namespace}/{}", leader::LEASE_NAME), "joined leader election");
            loop {
                health.set_standby(!*leading.borrow());
                if *stop_rx.borrow() {
                    return Ok(());
                }
                if *leading.borrow() {
                    metrics.leader.set(1);
                    tracing::info!(%identity, "became the leader; starting controllers");
                    let (lost_tx, lost_rx) = watch::channel(false);
                    let mut stop_watch = stop_rx.clone();
                    let mut leading_watch = leading.clone();
                    let forward = async move {
                        tokio::select! {
                            _ = stop_watch.wait_for(|s| *s) => {},
                            _ = leading_watch.wait_for(|l| !*l) => {},
                        }
                        let _ = lost_tx.send(true);
                    };
                    let controllers = controllers::supervisor::run(
                        client.clone(),
                        config.clone(),
                        metrics.clone(),
                        health.clone(),
                        azure.clone(),
                        lost_rx,
                    );
                    tokio::join!(forward, controllers);
                    metrics.leader.set(0);
                    tracing::info!(%identity, "no longer the leader; controllers stopped");
                }
                let mut stop_watch = stop_rx.clone();
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() { return Ok(()) },
                    _ = stop_watch.wait_for(|s| *s) => return Ok(()),
                }
            }
        } else {
            metrics.leader.set(1);
            controllers::supervisor::run(
                client.clone(),
                config.clone(),
                metrics.clone(),
                health.clone(),
                azure.clone(),
                stop_rx.clone(),
            )
            .await;
            Ok(())
        }
    };
    let result = tokio::select! {
        result = supervisor => result,
        _ = async {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            // Give the controllers a moment to finish in-flight reconciles.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        } => Ok(()),
    };
    http.abort();
    result
}

fn identity(config: &RunConfig) -> String {
    config
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("homelab-operator-{}", std::process::id()))
}
