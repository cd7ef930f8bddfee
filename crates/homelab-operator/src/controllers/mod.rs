//! The three controllers and what they share. Every reconcile has the same shape:
//! dereference (fetch what the resource points to) → validate and render (pure, in
//! `homelab-render`) → apply (only what changed) → prune (children no longer wanted) → status
//! (written only when it changed) → Events on transitions.

pub mod app_database;
pub mod backup_policy;
pub mod backups;
pub mod drills;
pub mod error;
pub mod finalizer;
pub mod homelab_app;
pub mod schedule;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use homelab_api::{AppDatabase, BackupPolicy, HomelabApp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::config::RunConfig;
use crate::kubernetes::capabilities::Capabilities;
use crate::kubernetes::children::Children;
use crate::kubernetes::events::Events;
use crate::metrics::{ErrorLabels, Metrics};
pub use error::Error;

/// Everything a reconcile needs, shared by all reconciles of one run of the controllers.
pub struct Context {
    pub client: Client,
    pub config: RunConfig,
    pub render: homelab_render::OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub children: Children,
    pub capabilities: Capabilities,
    pub databases: Store<DeserializeGuard<AppDatabase>>,
    pub policies: Store<DeserializeGuard<BackupPolicy>>,
    pub apps: Store<DeserializeGuard<HomelabApp>>,
    /// The Azure side of databases; `None` when disabled.
    pub azure: Option<Arc<crate::azure::AzureSide>>,
    /// Consecutive transient failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Status writes not yet seen by the caches.
    pub status_writes: crate::kubernetes::status::StatusWrites,
    /// Key Vault URLs of External Secrets stores, with when they were read.
    vault_urls: Mutex<HashMap<String, (String, jiff::Timestamp)>>,
}

impl Context {
    /// The image the existing Cluster of `app` runs (CloudNativePG's `status.image`), which the
    /// database's data was written with.
    pub fn cluster_image(&self, namespace: &str, app: &str) -> Option<String> {
        self.children
            .get(
                "postgresql.cnpg.io/v1",
                "Cluster",
                namespace,
                &homelab_api::naming::cluster(app),
            )
            .and_then(|cluster| {
                cluster
                    .data
                    .pointer("/status/image")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        config: RunConfig,
        metrics: Arc<Metrics>,
        events: Events,
        children: Children,
        capabilities: Capabilities,
        databases: Store<DeserializeGuard<AppDatabase>>,
        policies: Store<DeserializeGuard<BackupPolicy>>,
        apps: Store<DeserializeGuard<HomelabApp>>,
        azure: Option<Arc<crate::azure::AzureSide>>,
    ) -> Self {
        let render = config.render_config();
        Self {
            client,
            config,
            render,
            metrics,
            events,
            children,
            capabilities,
            databases,
            policies,
            apps,
            azure,
            failures: Mutex::new(HashMap::new()),
            status_writes: Default::default(),
            vault_urls: Mutex::new(HashMap::new()),
        }
    }

    /// The Key Vault URL behind an External Secrets store (its `spec.provider.azurekv.vaultUrl`),
    /// re-read at most once an hour.
    pub async fn vault_url(
        &self,
        store: &homelab_api::common::SecretStoreRef,
        namespace: &str,
    ) -> Result<String, Error> {
        use homelab_api::common::SecretStoreKind;
        use kube::api::{Api, DynamicObject};
        use kube::core::{ApiResource, GroupVersionKind};
        let (kind, plural) = match store.kind {
            SecretStoreKind::ClusterSecretStore => ("ClusterSecretStore", "clustersecretstores"),
            SecretStoreKind::SecretStore => ("SecretStore", "secretstores"),
        };
        let key = match store.kind {
            SecretStoreKind::ClusterSecretStore => format!("{kind}/{}", store.name),
            SecretStoreKind::SecretStore => format!("{kind}/{namespace}/{}", store.name),
        };
        let now = jiff::Timestamp::now();
        if let Ok(cache) = self.vault_urls.lock()
            && let Some((url, read_at)) = cache.get(&key)
            && now.duration_since(*read_at) < jiff::SignedDuration::from_hours(1)
        {
            return Ok(url.clone());
        }
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("external-secrets.io", "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = match store.kind {
            SecretStoreKind::ClusterSecretStore => Api::all_with(self.client.clone(), &resource),
            SecretStoreKind::SecretStore => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
        };
        let object = api.get_opt(&store.name).await?.ok_or_else(|| {
            Error::SecretStore(format!(
                "the {kind} {:?} does not exist: create it (provider azurekv) or name another store in spec.credentials.secretStoreRef",
                store.name
            ))
        })?;
        let url = object
            .data
            .pointer("/spec/provider/azurekv/vaultUrl")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Error::SecretStore(format!(
                    "the {kind} {:?} is not an Azure Key Vault store (spec.provider.azurekv.vaultUrl is missing): the operator writes generated credentials to the vault this store reads",
                    store.name
                ))
            })?
            .trim_end_matches('/')
            .to_string();
        if let Ok(mut cache) = self.vault_urls.lock() {
            cache.insert(key, (url.clone(), now));
        }
        Ok(url)
    }

    /// Waits until the caches of all three kinds have listed once, so that a reconcile never
    /// mistakes a cache still filling for a missing reference (which would write a false
    /// status after every restart).
    pub async fn caches_ready(&self) {
        // Each wait is bounded and repeated: a waiter that registered before the store became
        // ready is not always woken, but a fresh wait on a ready store returns at once.
        for _ in 0..120 {
            let all = async {
                let _ = self.databases.wait_until_ready().await;
                let _ = self.policies.wait_until_ready().await;
                let _ = self.apps.wait_until_ready().await;
            };
            if tokio::time::timeout(std::time::Duration::from_millis(500), all)
                .await
                .is_ok()
            {
                return;
            }
        }
        tracing::warn!("caches are still filling after a minute; reconciling anyway");
    }

    /// A valid AppDatabase from the cache.
    pub fn database(&self, namespace: &str, name: &str) -> Option<Arc<AppDatabase>> {
        lookup(&self.databases, namespace, name)
    }

    /// A valid BackupPolicy from the cache.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<Arc<BackupPolicy>> {
        lookup(&self.policies, namespace, name)
    }

    fn record_success(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    fn next_failure(&self, key: &str) -> u32 {
        match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_string()).or_insert(0);
                *count = count.saturating_add(1);
                *count - 1
            }
            Err(_) => 0,
        }
    }
}

fn lookup<K>(store: &Store<DeserializeGuard<K>>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    let guard = store.get(&ObjectRef::new(name).within(namespace))?;
    guard.0.as_ref().ok().map(|k| Arc::new(k.clone()))
}

/// What happens after a failed reconcile: transient errors back off exponentially (capped at
/// five minutes); permanent ones wait for a change, re-checked slowly.
pub fn error_policy<K>(
    kind: &'static str,
    object: &DeserializeGuard<K>,
    error: &Error,
    ctx: &Context,
) -> Action
where
    K: kube::Resource,
{
    let metadata = match &object.0 {
        Ok(k) => k.meta().clone(),
        Err(invalid) => invalid.metadata.clone(),
    };
    let key = format!(
        "{kind}/{}/{}",
        metadata.namespace.unwrap_or_default(),
        metadata.name.unwrap_or_default()
    );
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            kind,
            reason: error.reason().as_str(),
        })
        .inc();
    if error.is_transient() {
        let delay =
            error::backoff(ctx.next_failure(&key)).max(error.retry_after().unwrap_or_default());
        tracing::warn!(object = %key, reason = error.reason().as_str(), error = %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    } else {
        tracing::info!(object = %key, reason = error.reason().as_str(), error = %error, "reconcile blocked until the resource changes");
        Action::requeue(ctx.config.resync())
    }
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// An ObjectReference for Events.
pub fn object_reference<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// Reads `status.conditions[type=Ready]` of a child, as ESO, CNPG and most controllers report it.
pub fn child_ready_condition(object: &kube::api::DynamicObject) -> Option<(bool, String, String)> {
    let conditions = object.data.get("status")?.get("conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
    let status = ready.get("status").and_then(|s| s.as_str()) == Some("True");
    let reason = ready
        .get("reason")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string();
    let message = ready
        .get("message")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string();
    Some((status, reason, message))
}

/// Reports a resource that cannot be read with the current schema (for example one stored under
/// an older version): a Warning Event, and no further work until it changes. Other resources
/// are unaffected.
pub async fn report_invalid<K: kube::Resource<DynamicType = ()>>(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    tracing::warn!(
        kind = %K::kind(&()),
        name = meta.name.as_deref().unwrap_or_default(),
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        error = %invalid.error,
        "resource cannot be read with the current schema"
    );
    ctx.events
        .publish(
            &reference,
            true,
            "InvalidSpec",
            "Reconcile",
            format!(
                "the resource cannot be read: {}; re-apply it so the current schema validates it",
                invalid.error
            ),
        )
        .await;
    Ok(Action::await_change())
}

/// Publishes an Event for each condition whose status flipped.
pub async fn publish_transitions(
    events: &Events,
    reference: &ObjectReference,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    current: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) {
    for condition in current {
        // Only a flip is an event: a condition seen for the first time is in the status already,
        // and publishing it would double the writes of every new resource.
        let Some(before) = previous.iter().find(|p| p.type_ == condition.type_) else {
            continue;
        };
        if before.status == condition.status {
            continue;
        }
        let warning = condition.status == "False";
        let reason = if condition.status == "True" {
            condition.type_.clone()
        } else {
            condition.reason.clone()
        };
        events
            .publish(
                reference,
                warning,
                &reason,
                "Reconcile",
                format!(
                    "{} is {}: {}",
                    condition.type_, condition.status, condition.message
                ),
            )
            .await;
    }
}

/// `(apiVersion, kind)` of a rendered object.
pub fn type_of(object: &kube::api::DynamicObject) -> (String, String) {
    object
        .types
        .as_ref()
        .map(|t| (t.api_version.clone(), t.kind.clone()))
        .unwrap_or_default()
}

/// Deletes the children of an owner (`{Kind}/{name}`, uid) that `desired` no longer contains,
/// except those `keep` vouches for. Children are found through the caches' owner index, so this
/// costs a lookup per child kind, not a scan.
pub async fn prune_children(
    ctx: &Context,
    namespace: &str,
    owner_uid: &str,
    owner_key: &str,
    desired: &[kube::api::DynamicObject],
    keep: impl Fn(&crate::kubernetes::children::OwnedChild) -> bool,
) -> Result<(), Error> {
    use kube::ResourceExt;
    let wanted: std::collections::BTreeSet<(String, String)> = desired
        .iter()
        .map(|o| (type_of(o).1, o.name_any()))
        .collect();
    for child in ctx.children.owned_by(namespace, owner_uid, owner_key) {
        if wanted.contains(&(child.kind.clone(), child.object.name_any())) || keep(&child) {
            continue;
        }
        tracing::info!(kind = %child.kind, name = %child.object.name_any(), "deleting a child that is no longer wanted");
        ctx.children.delete(&child).await?;
    }
    Ok(())
}
