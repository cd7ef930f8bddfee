//! Caches of the objects the operator created, one per child kind and watched namespace, and the
//! apply path that goes through them: an object is sent with server-side apply only when the
//! live copy lacks something the operator wants, so an unchanged world costs no writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use homelab_api::naming;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::diff::is_subset;
use crate::metrics::{ApplyLabels, Metrics};

/// Annotation holding a fingerprint of what the operator last wanted in an object. When the
/// desired object changes (including a field being dropped), the fingerprint changes and the
/// object is applied again.
pub const DESIRED_HASH_ANNOTATION: &str = "homelab.io/desired-hash";

/// Label selector of every object the operator creates.
pub fn managed_selector() -> String {
    format!("{}={}", naming::LABEL_MANAGED_BY, naming::MANAGED_BY)
}

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The live object already had everything; no request was sent.
    Unchanged,
    /// The object was created or updated.
    Applied,
}

/// Why applying or pruning a child failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("{kind} is not a kind the operator manages")]
    UnknownKind { kind: String },
    #[error("rendered {kind} has no name")]
    Unnamed { kind: String },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ChildError {
    /// Whether the apiserver refused the object itself (invalid, or unknown fields under strict
    /// validation): retrying the same object cannot help. Server-side apply reports unknown
    /// fields and wrong types as a 500 "failed to create typed patch object"
    /// (kubernetes/kubernetes#139253), so that message counts as a refusal too.
    pub fn is_rejection(&self) -> bool {
        match self {
            ChildError::Apply {
                source: kube::Error::Api(status),
                ..
            } => {
                status.code == 422
                    || status.code == 400
                    || (status.code == 500
                        && status
                            .message
                            .contains("failed to create typed patch object"))
            }
            _ => false,
        }
    }

    /// The apiserver's HTTP status, when the failure came from it.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            ChildError::Apply { source, .. } | ChildError::Delete { source, .. } => match source {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            _ => None,
        }
    }
}

type KindKey = (String, String); // (apiVersion, kind)

struct KindCache {
    resource: ApiResource,
    /// One store for all namespaces (key `None`) or one per watched namespace.
    stores: HashMap<Option<String>, Store<DynamicObject>>,
}

/// Caches of every child kind that is installed, shared by the controllers.
#[derive(Clone)]
pub struct Children {
    client: Client,
    metrics: Arc<Metrics>,
    kinds: Arc<HashMap<KindKey, KindCache>>,
}

/// A cached child with its kind. Objects from a list response carry no `apiVersion`/`kind` of
/// their own, so the kind comes from the cache that holds them.
#[derive(Clone, Debug)]
pub struct OwnedChild {
    pub api_version: String,
    pub kind: String,
    pub object: Arc<DynamicObject>,
}

/// A change to a child object, fed to the controllers as a trigger.
pub type ChildEvent = Result<DynamicObject, watcher::Error>;

/// One controller's feeds of child changes, one per kind.
pub type Subscription = Vec<(ApiResource, mpsc::UnboundedReceiver<ChildEvent>)>;

impl Children {
    /// Starts a watch per kind and namespace (all namespaces when `namespaces` is empty), label-
    /// selected to the operator's own objects. Each change is sent to `subscribers` receivers per
    /// kind, so that several controllers can be triggered by one watch.
    pub fn start(
        client: Client,
        metrics: Arc<Metrics>,
        resources: &[ApiResource],
        namespaces: &[String],
        subscribers: usize,
    ) -> (Self, Vec<Subscription>) {
        let mut kinds = HashMap::new();
        let mut receivers: Vec<Subscription> = (0..subscribers).map(|_| Vec::new()).collect();
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        for resource in resources {
            let mut stores = HashMap::new();
            for scope in &scopes {
                let api: Api<DynamicObject> = match scope {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
                    None => Api::all_with(client.clone(), resource),
                };
                let writer = reflector::store::Writer::new(resource.clone());
                let reader = writer.as_reader();
                let config = watcher::Config::default()
                    .labels(&managed_selector())
                    .any_semantic();
                let keep_status = STATUS_READ.contains(&resource.kind.as_str());
                let stream = reflector::reflector(
                    writer,
                    watcher(api, config)
                        .modify(move |object: &mut DynamicObject| slim(object, keep_status)),
                )
                .default_backoff()
                .touched_objects();
                let mut senders = Vec::with_capacity(subscribers);
                for subscriber in receivers.iter_mut() {
                    let (tx, rx) = mpsc::unbounded_channel();
                    senders.push(tx);
                    subscriber.push((resource.clone(), rx));
                }
                tokio::spawn(fan_out(stream, senders));
                stores.insert(scope.clone(), reader);
            }
            kinds.insert(
                (resource.api_version.clone(), resource.kind.clone()),
                KindCache {
                    resource: resource.clone(),
                    stores,
                },
            );
        }
        (
            Self {
                client,
                metrics,
                kinds: Arc::new(kinds),
            },
            receivers,
        )
    }

    /// Waits until every cache has listed its objects once.
    pub async fn wait_until_ready(&self) {
        for cache in self.kinds.values() {
            for store in cache.stores.values() {
                // An error here means the writer was dropped: the watch task ended, which only
                // happens at shutdown.
                let _ = store.wait_until_ready().await;
            }
        }
    }

    fn store_for(&self, cache: &KindCache, namespace: &str) -> Option<Store<DynamicObject>> {
        cache
            .stores
            .get(&None)
            .or_else(|| cache.stores.get(&Some(namespace.to_string())))
            .cloned()
    }

    /// The cached copy of a child.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let cache = self
            .kinds
            .get(&(api_version.to_string(), kind.to_string()))?;
        let store = self.store_for(cache, namespace)?;
        store.get(&ObjectRef::new_with(name, cache.resource.clone()).within(namespace))
    }

    /// Every cached child in `namespace` whose owner (by ownerReference uid, or by
    /// the owner annotation for children kept outside garbage collection) is `owner_uid` /
    /// `owner_key`.
    pub fn owned_by(&self, namespace: &str, owner_uid: &str, owner_key: &str) -> Vec<OwnedChild> {
        let mut found = Vec::new();
        for cache in self.kinds.values() {
            let Some(store) = self.store_for(cache, namespace) else {
                continue;
            };
            for object in store.state() {
                if object.namespace().as_deref() != Some(namespace) {
                    continue;
                }
                let by_ref = object
                    .owner_references()
                    .iter()
                    .any(|r| r.uid == owner_uid && r.controller == Some(true));
                let by_annotation = object
                    .annotations()
                    .get(naming::ANNOTATION_OWNER)
                    .is_some_and(|owner| owner == owner_key);
                if by_ref || by_annotation {
                    found.push(OwnedChild {
                        kind: cache.resource.kind.clone(),
                        api_version: cache.resource.api_version.clone(),
                        object,
                    });
                }
            }
        }
        found
    }

    /// Whether a kind is installed (and so cached).
    pub fn has_kind(&self, api_version: &str, kind: &str) -> bool {
        self.kinds
            .contains_key(&(api_version.to_string(), kind.to_string()))
    }

    /// Applies `desired` unless the cached live copy already matches it.
    pub async fn apply(&self, desired: &DynamicObject) -> Result<ApplyOutcome, ChildError> {
        let (api_version, kind) = type_of(desired);
        let cache = self
            .kinds
            .get(&(api_version.clone(), kind.clone()))
            .ok_or_else(|| ChildError::UnknownKind { kind: kind.clone() })?;
        let name = desired
            .metadata
            .name
            .clone()
            .ok_or_else(|| ChildError::Unnamed { kind: kind.clone() })?;
        let namespace = desired.metadata.namespace.clone().unwrap_or_default();
        let mut desired = desired.clone();
        let fingerprint = fingerprint(&desired).map_err(|source| ChildError::Serialize {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
        desired
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(DESIRED_HASH_ANNOTATION.to_string(), fingerprint);
        let desired_json =
            serde_json::to_value(&desired).map_err(|source| ChildError::Serialize {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        let kind_label = static_kind(&kind);
        if let Some(live) = self.get(&api_version, &kind, &namespace, &name) {
            let live_json = serde_json::to_value(live.as_ref()).unwrap_or_default();
            if is_subset(&strip_type(desired_json.clone()), &live_json) {
                self.metrics
                    .child_applies
                    .get_or_create(&ApplyLabels {
                        kind: kind_label,
                        outcome: "unchanged",
                    })
                    .inc();
                return Ok(ApplyOutcome::Unchanged);
            }
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &cache.resource);
        let params = PatchParams::apply(naming::FIELD_MANAGER)
            .force()
            .validation_strict();
        api.patch(&name, &params, &Patch::Apply(&desired_json))
            .await
            .map_err(|source| ChildError::Apply {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        self.metrics
            .child_applies
            .get_or_create(&ApplyLabels {
                kind: kind_label,
                outcome: "applied",
            })
            .inc();
        Ok(ApplyOutcome::Applied)
    }

    /// Deletes a child. A child that is already gone is not an error.
    pub async fn delete(&self, child: &OwnedChild) -> Result<(), ChildError> {
        let kind = child.kind.clone();
        let Some(cache) = self.kinds.get(&(child.api_version.clone(), kind.clone())) else {
            return Err(ChildError::UnknownKind { kind });
        };
        let name = child.object.name_any();
        let namespace = child.object.namespace().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &cache.resource);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(ChildError::Delete { kind, name, source }),
        }
    }
}

/// Child kinds whose status the controllers read; the status of every other kind is not kept.
const STATUS_READ: [&str; 5] = [
    "Cluster",
    "ExternalSecret",
    "Deployment",
    "ObjectStore",
    "Backup",
];

/// Drops what the operator never reads from a cached child: `managedFields` (often larger than
/// the object itself) and, for kinds whose status nobody reads, the status.
fn slim(object: &mut DynamicObject, keep_status: bool) {
    object.metadata.managed_fields = None;
    if !keep_status && let Some(map) = object.data.as_object_mut() {
        map.remove("status");
    }
}

async fn fan_out(
    stream: impl Stream<Item = Result<DynamicObject, watcher::Error>>,
    senders: Vec<mpsc::UnboundedSender<ChildEvent>>,
) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(object) => {
                for tx in &senders {
                    let _ = tx.send(Ok(object.clone()));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "watch of child objects failed; retrying");
            }
        }
    }
}

fn type_of(object: &DynamicObject) -> (String, String) {
    object
        .types
        .as_ref()
        .map(|t| (t.api_version.clone(), t.kind.clone()))
        .unwrap_or_default()
}

fn strip_type(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    value
}

/// FNV-1a over the canonical JSON of the object: stable across processes and releases.
fn fingerprint(object: &DynamicObject) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(object)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Metric label for a child kind: a fixed set, so the label stays bounded.
fn static_kind(kind: &str) -> &'static str {
    match kind {
        "Cluster" => "Cluster",
        "ObjectStore" => "ObjectStore",
        "ScheduledBackup" => "ScheduledBackup",
        "Backup" => "Backup",
        "Pooler" => "Pooler",
        "PodMonitor" => "PodMonitor",
        "ExternalSecret" => "ExternalSecret",
        "Deployment" => "Deployment",
        "Service" => "Service",
        "Ingress" => "Ingress",
        "HTTPRoute" => "HTTPRoute",
        "NetworkPolicy" => "NetworkPolicy",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        _ => "other",
    }
}
