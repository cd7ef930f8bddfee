//! Leader election on a `coordination.k8s.io` Lease: with two replicas, only the holder runs the
//! controllers; the other waits and takes over when the Lease expires.

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// Name of the Lease.
pub const LEASE_NAME: &str = "homelab-operator-leader";

/// Starts competing for the Lease. The returned channel is `true` while this replica leads.
pub async fn elect(
    client: Client,
    namespace: &str,
    identity: &str,
    duration_seconds: u64,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let duration = duration_seconds.max(3);
    let grace = (duration / 3).max(1);
    let params = LeaseParams::new(identity, duration, grace);
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_create_mode(LeaseCreateMode::AutoCreate)
        .with_parameters(params)
        .build()
        .await?;
    let (receiver, _task) = manager.watch().await;
    Ok(receiver)
}
