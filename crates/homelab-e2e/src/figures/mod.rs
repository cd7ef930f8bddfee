//! Figures measured on the data plane, each against a floor measured in the same run:
//! [`ready`] (an AppDatabase to Ready against its Cluster and ExternalSecret applied by hand),
//! [`restore`] (the RTO of a restore against CloudNativePG recovering from the same archive with
//! a hand-written Cluster) and [`rpo`] (the RPO drills measure under a steady write load, against
//! the bound `walArchiveTimeout` sets).

pub mod ready;
pub mod restore;
pub mod rpo;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

pub use ready::{ReadyRound, time_to_ready};
pub use restore::{RestoreRound, restore_rto};
pub use rpo::{RpoDrill, drill_rpo};

const POLL: Duration = Duration::from_millis(200);

fn api(
    client: &kube::Client,
    namespace: &str,
    gvk: (&str, &str, &str),
    plural: &str,
) -> Api<DynamicObject> {
    let (group, version, kind) = gvk;
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
    )
}

fn databases(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    api(
        client,
        namespace,
        ("homelab.io", "v1alpha1", "AppDatabase"),
        "appdatabases",
    )
}

fn clusters(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    api(
        client,
        namespace,
        ("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

fn external_secrets(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    api(
        client,
        namespace,
        ("external-secrets.io", "v1", "ExternalSecret"),
        "externalsecrets",
    )
}

fn condition_true(object: &DynamicObject, type_: &str) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// Whether CloudNativePG reports Cluster `name` healthy with one ready instance.
async fn cluster_healthy(api: &Api<DynamicObject>, name: &str) -> bool {
    api.get(name).await.is_ok_and(|c| {
        c.data["status"]["phase"] == "Cluster in healthy state"
            && c.data["status"]["readyInstances"] == 1
    })
}

/// Polls `ready` every [`POLL`] until it holds, for at most `limit`; the time since `start`.
async fn until<F, Fut>(
    what: &str,
    start: Instant,
    limit: Duration,
    mut ready: F,
) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = start + limit;
    loop {
        if ready().await {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes `name` through `api` and waits until `namespace` has no pods left that match the
/// label selector `pods` (all of them when it is empty).
async fn clear(
    client: &kube::Client,
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    pods_selector: &str,
) -> Result<()> {
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {namespace}/{name}"))?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    until(
        &format!("no pods left in {namespace} (selector {pods_selector:?})"),
        Instant::now(),
        crate::patience(),
        || {
            let pods = pods.clone();
            async move {
                pods.list(&ListParams::default().labels(pods_selector))
                    .await
                    .is_ok_and(|l| l.items.is_empty())
            }
        },
    )
    .await?;
    Ok(())
}

/// The random end of a test namespace's name, to make app names unique to a run: Key Vault
/// keeps a deleted database's secrets soft-deleted, and a second run reusing the name would find
/// them (and be refused, as the operator never overwrites or silently recovers a credential).
fn run_suffix(namespace: &str) -> String {
    namespace.rsplit('-').next().unwrap_or_default().to_string()
}

/// The median of `values`.
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}
