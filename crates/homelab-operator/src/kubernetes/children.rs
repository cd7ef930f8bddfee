//! Caches of the objects the operator created, one per child kind and watched namespace, and the
//! apply path that goes through them: an object is sent with server-side apply only when the
//! live copy lacks something the operator wants, so an unchanged world costs no writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use homelab_api::naming;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::diff::Digest;
use super::resource_version_number;
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
    #[error("applying {kind} {name}: {}", super::describe(source))]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {}", super::describe(source))]
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

/// A child as the operator keeps it: what the controllers read of it (the operator's own labels
/// and annotations, its timestamps, and the status of the kinds whose status they read) and a
/// [`Digest`] of the rest, which is all the apply decision needs. Name and namespace are the keys
/// it is stored under; [`CachedChild::to_object`] gives it back as an object.
#[derive(Debug)]
struct CachedChild {
    resource_version: Option<u64>,
    labels: Box<[(Box<str>, Box<str>)]>,
    annotations: Box<[(Box<str>, Box<str>)]>,
    created: Option<Time>,
    deleting: Option<Time>,
    status: Option<Box<serde_json::Value>>,
    /// Keys of the owner index this child is listed under.
    owners: Box<[Box<str>]>,
    digest: Digest,
}

impl CachedChild {
    fn to_object(&self, namespace: &str, name: &str) -> DynamicObject {
        let map = |pairs: &[(Box<str>, Box<str>)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let mut data = serde_json::Map::new();
        if let Some(status) = &self.status {
            data.insert("status".into(), status.as_ref().clone());
        }
        DynamicObject {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                resource_version: self.resource_version.map(|v| v.to_string()),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                creation_timestamp: self.created.clone(),
                deletion_timestamp: self.deleting.clone(),
                ..Default::default()
            },
            data: serde_json::Value::Object(data),
        }
    }
}

/// The cached children of one kind in one namespace, with an index by owner.
#[derive(Default)]
struct NamespaceChildren {
    objects: HashMap<Box<str>, CachedChild>,
    /// Owner uid (controller ownerReference) or `Kind/name` (owner annotation) → the names of
    /// the children it owns.
    owners: HashMap<Box<str>, Vec<Box<str>>>,
}

impl NamespaceChildren {
    fn upsert(&mut self, name: &str, child: CachedChild) {
        self.remove(name);
        for owner in child.owners.iter() {
            self.owners
                .entry(owner.clone())
                .or_default()
                .push(name.into());
        }
        self.objects.insert(name.into(), child);
    }

    fn remove(&mut self, name: &str) -> Option<CachedChild> {
        let old = self.objects.remove(name)?;
        for owner in old.owners.iter() {
            if let Some(names) = self.owners.get_mut(owner) {
                names.retain(|n| n.as_ref() != name);
                if names.is_empty() {
                    self.owners.remove(owner);
                }
            }
        }
        Some(old)
    }
}

/// One kind's objects in one watch scope.
#[derive(Default)]
struct StoreState {
    namespaces: HashMap<Box<str>, NamespaceChildren>,
    /// Objects of a re-list in progress; they replace `namespaces` when the list is complete.
    relisting: Option<HashMap<Box<str>, NamespaceChildren>>,
    /// Resource versions at which children were seen deleted, so that the answer to an apply
    /// that crossed a deletion does not bring the child back into the cache.
    deleted: HashMap<(Box<str>, Box<str>), u64>,
}

/// Whether `candidate` is known to be older than `cached`.
fn is_older(candidate: Option<u64>, cached: Option<u64>) -> bool {
    matches!((candidate, cached), (Some(a), Some(b)) if a < b)
}

/// Bound of remembered deletions; beyond it they are forgotten at once (a rare, harmless reset).
const REMEMBERED_DELETIONS: usize = 4096;

impl StoreState {
    fn get(&self, namespace: &str, name: &str) -> Option<&CachedChild> {
        self.namespaces.get(namespace)?.objects.get(name)
    }

    fn upsert(&mut self, namespace: &str, name: &str, child: CachedChild) {
        self.namespaces
            .entry(namespace.into())
            .or_default()
            .upsert(name, child);
    }

    /// Stores a child seen by the watch, unless the cache already holds a newer copy of it (the
    /// answer to an apply can arrive before the watch events leading up to it).
    fn upsert_watched(&mut self, namespace: &str, name: &str, child: CachedChild) {
        if self
            .get(namespace, name)
            .is_some_and(|cached| is_older(child.resource_version, cached.resource_version))
        {
            return;
        }
        self.deleted.remove(&(namespace.into(), name.into()));
        self.upsert(namespace, name, child);
    }

    /// Stores the answer to an apply, unless the cache already holds a newer copy or the child
    /// was deleted after that answer was written.
    fn upsert_applied(&mut self, namespace: &str, name: &str, child: CachedChild) {
        let version = child.resource_version;
        let deleted_since = self
            .deleted
            .get(&(namespace.into(), name.into()))
            .is_some_and(|deleted| version.is_none_or(|v| v <= *deleted));
        let newer_cached = self
            .get(namespace, name)
            .is_some_and(|cached| !is_older(cached.resource_version, version));
        if deleted_since || newer_cached {
            return;
        }
        self.upsert(namespace, name, child);
    }

    fn remove_watched(&mut self, namespace: &str, name: &str, version: Option<u64>) {
        if let Some(children) = self.namespaces.get_mut(namespace) {
            children.remove(name);
            if children.objects.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
        if let Some(version) = version {
            if self.deleted.len() >= REMEMBERED_DELETIONS {
                self.deleted.clear();
            }
            self.deleted
                .insert((namespace.into(), name.into()), version);
        }
    }

    fn insert_listed(&mut self, namespace: &str, name: &str, child: CachedChild) {
        self.relisting
            .get_or_insert_with(HashMap::new)
            .entry(namespace.into())
            .or_default()
            .upsert(name, child);
    }

    fn finish_list(&mut self) {
        let mut namespaces = self.relisting.take().unwrap_or_default();
        for children in namespaces.values_mut() {
            children.objects.shrink_to_fit();
            children.owners.shrink_to_fit();
        }
        self.namespaces = namespaces;
    }
}

/// The cache of one kind in one watch scope, filled by its watch.
struct ChildStore {
    state: RwLock<StoreState>,
    listed: watch::Sender<bool>,
    /// Whether the controllers read this kind's status.
    keep_status: bool,
}

impl ChildStore {
    fn new(keep_status: bool) -> Self {
        Self {
            state: RwLock::new(StoreState::default()),
            listed: watch::Sender::new(false),
            keep_status,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreState> {
        // A poisoned lock means a panic while updating the index; the data is still usable.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StoreState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores what an apply answered, so that the reconcile that applied it (and the next ones)
    /// see the child before its watch event arrives.
    fn remember_applied(&self, object: &DynamicObject) {
        let (namespace, name) = key_of(object);
        let child = cache_entry(object, self.keep_status);
        self.write().upsert_applied(&namespace, &name, child);
    }

    /// Applies one watch event; returns the object to pass on as a trigger, if any.
    fn apply_event(&self, event: watcher::Event<DynamicObject>) -> Option<DynamicObject> {
        match event {
            watcher::Event::Init => {
                self.write().relisting = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(object) => {
                let (namespace, name) = key_of(&object);
                let child = cache_entry(&object, self.keep_status);
                self.write().insert_listed(&namespace, &name, child);
                // The first list comes before the controllers run, and they reconcile every
                // custom resource when they start: triggers for it would only queue up. A later
                // re-list (after a watch failure) may carry changes nobody was told about.
                self.listed.borrow().then(|| trigger_of(object))
            }
            watcher::Event::InitDone => {
                self.write().finish_list();
                self.listed.send_replace(true);
                None
            }
            watcher::Event::Apply(object) => {
                let (namespace, name) = key_of(&object);
                let child = cache_entry(&object, self.keep_status);
                self.write().upsert_watched(&namespace, &name, child);
                Some(trigger_of(object))
            }
            watcher::Event::Delete(object) => {
                let (namespace, name) = key_of(&object);
                self.write()
                    .remove_watched(&namespace, &name, resource_version_number(&object));
                Some(trigger_of(object))
            }
        }
    }
}

fn key_of(object: &DynamicObject) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// What the controllers need of a changed child to find its owner: name, namespace, owner
/// references and annotations.
fn trigger_of(object: DynamicObject) -> DynamicObject {
    let metadata = object.metadata;
    DynamicObject {
        types: None,
        metadata: kube::api::ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            owner_references: metadata.owner_references,
            annotations: metadata.annotations.map(|mut annotations| {
                annotations.retain(|key, _| key == naming::ANNOTATION_OWNER);
                annotations
            }),
            ..Default::default()
        },
        data: serde_json::Value::Null,
    }
}

/// Turns a watched object into what the cache keeps of it.
fn cache_entry(object: &DynamicObject, keep_status: bool) -> CachedChild {
    let digest = serde_json::to_value(object)
        .map(|value| Digest::of_live(&value))
        .unwrap_or_default();
    let ours = |map: Option<&BTreeMap<String, String>>| -> Box<[(Box<str>, Box<str>)]> {
        map.into_iter()
            .flatten()
            .filter(|(key, _)| is_kept_annotation(key))
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect()
    };
    let mut owners: Vec<Box<str>> = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str().into())
        .collect();
    if let Some(owner) = object.annotations().get(naming::ANNOTATION_OWNER) {
        owners.push(owner.as_str().into());
    }
    CachedChild {
        resource_version: resource_version_number(object),
        labels: ours(object.metadata.labels.as_ref()),
        annotations: ours(object.metadata.annotations.as_ref()),
        created: object.metadata.creation_timestamp.clone(),
        deleting: object.metadata.deletion_timestamp.clone(),
        status: if keep_status {
            object.data.get("status").cloned().map(Box::new)
        } else {
            None
        },
        owners: owners.into_boxed_slice(),
        digest,
    }
}

/// Whether the controllers may read a label or annotation of a child: the operator's own
/// (owner, on-demand backup token, drill marks and times), except the fingerprint that the
/// digest already covers.
fn is_kept_annotation(key: &str) -> bool {
    key.starts_with(naming::ANNOTATION_PREFIX) && key != DESIRED_HASH_ANNOTATION
}

struct KindCache {
    resource: ApiResource,
    /// One store for all namespaces (key `None`) or one per watched namespace.
    stores: HashMap<Option<String>, Arc<ChildStore>>,
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
                let config = watcher::Config::default()
                    .labels(&managed_selector())
                    .any_semantic()
                    .page_size(LIST_PAGE_SIZE);
                let keep_status = STATUS_READ.contains(&resource.kind.as_str());
                let store = Arc::new(ChildStore::new(keep_status));
                let mut senders = Vec::with_capacity(subscribers);
                for subscriber in receivers.iter_mut() {
                    let (tx, rx) = mpsc::unbounded_channel();
                    senders.push(tx);
                    subscriber.push((resource.clone(), rx));
                }
                let stream = watcher(api, config).default_backoff();
                tokio::spawn(fill(stream, store.clone(), senders));
                stores.insert(scope.clone(), store);
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
                let mut listed = store.listed.subscribe();
                // An error here means the sender was dropped, which only happens at shutdown.
                let _ = listed.wait_for(|listed| *listed).await;
            }
        }
    }

    fn store_for<'a>(&self, cache: &'a KindCache, namespace: &str) -> Option<&'a ChildStore> {
        cache
            .stores
            .get(&None)
            .or_else(|| cache.stores.get(&Some(namespace.to_string())))
            .map(Arc::as_ref)
    }

    /// The cached copy of a child: its metadata, and its status for the kinds whose status the
    /// controllers read.
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
        let state = store.read();
        state
            .get(namespace, name)
            .map(|child| Arc::new(child.to_object(namespace, name)))
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
            let state = store.read();
            let Some(children) = state.namespaces.get(namespace) else {
                continue;
            };
            let mut names: Vec<&str> = [owner_uid, owner_key]
                .iter()
                .filter(|owner| !owner.is_empty())
                .filter_map(|owner| children.owners.get(*owner))
                .flatten()
                .map(|name| name.as_ref())
                .collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                if let Some(child) = children.objects.get(name) {
                    found.push(OwnedChild {
                        kind: cache.resource.kind.clone(),
                        api_version: cache.resource.api_version.clone(),
                        object: Arc::new(child.to_object(namespace, name)),
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
        let unchanged = self.store_for(cache, &namespace).is_some_and(|store| {
            store
                .read()
                .get(&namespace, &name)
                .is_some_and(|live| live.digest.contains(&desired_json))
        });
        if unchanged {
            self.metrics
                .child_applies
                .get_or_create(&ApplyLabels {
                    kind: kind_label,
                    outcome: "unchanged",
                })
                .inc();
            return Ok(ApplyOutcome::Unchanged);
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &cache.resource);
        let params = PatchParams::apply(naming::FIELD_MANAGER)
            .force()
            .validation_strict();
        let applied = api
            .patch(&name, &params, &Patch::Apply(&desired_json))
            .await
            .map_err(|source| ChildError::Apply {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        if let Some(store) = self.store_for(cache, &namespace) {
            store.remember_applied(&applied);
        }
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

/// Objects per list page when a watch (re)starts. A page is parsed whole before its objects
/// are cached one by one, and every kind lists at once on start-up: small pages keep that burst
/// from setting the process's peak memory.
pub const LIST_PAGE_SIZE: u32 = 50;

/// Child kinds whose status the controllers read; the status of every other kind is not kept.
const STATUS_READ: [&str; 5] = [
    "Cluster",
    "ExternalSecret",
    "Deployment",
    "ObjectStore",
    "Backup",
];

/// Keeps one kind's cache filled from its watch, and passes every change on to the controllers.
async fn fill(
    stream: impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
    store: Arc<ChildStore>,
    senders: Vec<mpsc::UnboundedSender<ChildEvent>>,
) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if let Some(object) = store.apply_event(event) {
                    for tx in &senders {
                        let _ = tx.send(Ok(object.clone()));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn child(name: &str, version: &str, owner_uid: Option<&str>, replicas: i64) -> DynamicObject {
        let mut object = DynamicObject {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            data: json!({"spec": {"replicas": replicas}, "status": {"ready": true}}),
        };
        if let Some(uid) = owner_uid {
            object.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "homelab.io/v1alpha1".into(),
                kind: "HomelabApp".into(),
                name: "owner".into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]);
        }
        object
    }

    fn entry(object: &DynamicObject) -> CachedChild {
        cache_entry(object, true)
    }

    fn wants_two_replicas(state: &StoreState, name: &str) -> Option<bool> {
        state
            .get("ns", name)
            .map(|c| c.digest.contains(&json!({"spec": {"replicas": 2}})))
    }

    #[test]
    fn an_apply_answer_is_not_replaced_by_older_watch_events() {
        let mut state = StoreState::default();
        state.upsert_applied("ns", "a", entry(&child("a", "20", None, 2)));
        state.upsert_watched("ns", "a", entry(&child("a", "10", None, 1)));
        assert_eq!(wants_two_replicas(&state, "a"), Some(true));
        state.upsert_watched("ns", "a", entry(&child("a", "30", None, 1)));
        assert_eq!(wants_two_replicas(&state, "a"), Some(false));
    }

    #[test]
    fn an_apply_answer_older_than_the_cache_or_a_deletion_is_dropped() {
        let mut state = StoreState::default();
        state.upsert_watched("ns", "a", entry(&child("a", "30", None, 1)));
        state.upsert_applied("ns", "a", entry(&child("a", "20", None, 2)));
        assert_eq!(wants_two_replicas(&state, "a"), Some(false));

        state.remove_watched("ns", "b", Some(50));
        state.upsert_applied("ns", "b", entry(&child("b", "40", None, 2)));
        assert_eq!(wants_two_replicas(&state, "b"), None);
        state.upsert_applied("ns", "b", entry(&child("b", "60", None, 2)));
        assert_eq!(wants_two_replicas(&state, "b"), Some(true));
    }

    #[test]
    fn the_owner_index_follows_updates_and_deletions() {
        let mut state = StoreState::default();
        state.upsert_watched("ns", "a", entry(&child("a", "1", Some("uid-1"), 1)));
        let owned = |state: &StoreState, owner: &str| {
            state
                .namespaces
                .get("ns")
                .and_then(|c| c.owners.get(owner))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(owned(&state, "uid-1"), vec![Box::<str>::from("a")]);
        state.upsert_watched("ns", "a", entry(&child("a", "2", Some("uid-2"), 1)));
        assert!(owned(&state, "uid-1").is_empty());
        assert_eq!(owned(&state, "uid-2"), vec![Box::<str>::from("a")]);
        state.remove_watched("ns", "a", Some(3));
        assert!(state.namespaces.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_cache_when_complete() {
        let mut state = StoreState::default();
        state.upsert_watched("ns", "gone", entry(&child("gone", "1", Some("uid-1"), 1)));
        state.relisting = Some(HashMap::new());
        state.insert_listed("ns", "kept", entry(&child("kept", "2", Some("uid-1"), 2)));
        // Until the list is complete, readers see the previous contents.
        assert!(state.get("ns", "gone").is_some());
        state.finish_list();
        assert!(state.get("ns", "gone").is_none());
        assert_eq!(wants_two_replicas(&state, "kept"), Some(true));
        assert_eq!(state.namespaces["ns"].owners["uid-1"].len(), 1);
    }

    #[test]
    fn cached_children_keep_what_the_controllers_read() {
        let mut object = child("a", "1", Some("uid-1"), 2);
        object.metadata.annotations = Some(BTreeMap::from([
            (
                naming::ANNOTATION_OWNER.to_string(),
                "AppDatabase/x".to_string(),
            ),
            (DESIRED_HASH_ANNOTATION.to_string(), "abc".to_string()),
            ("other.example/note".to_string(), "x".to_string()),
        ]));
        object.metadata.labels = Some(BTreeMap::from([
            (naming::LABEL_DRILL.to_string(), "db".to_string()),
            (
                naming::LABEL_MANAGED_BY.to_string(),
                naming::MANAGED_BY.to_string(),
            ),
        ]));
        object.metadata.managed_fields = Some(vec![Default::default()]);
        let cached = cache_entry(&object, true);
        assert_eq!(
            cached.owners.as_ref(),
            &[Box::<str>::from("uid-1"), Box::<str>::from("AppDatabase/x")]
        );
        let back = cached.to_object("ns", "a");
        assert_eq!(back.data, json!({"status": {"ready": true}}));
        assert_eq!(back.metadata.resource_version.as_deref(), Some("1"));
        assert!(back.metadata.managed_fields.is_none());
        let annotations = back.annotations();
        assert!(annotations.contains_key(naming::ANNOTATION_OWNER));
        assert!(!annotations.contains_key(DESIRED_HASH_ANNOTATION));
        assert!(!annotations.contains_key("other.example/note"));
        assert_eq!(
            back.labels().get(naming::LABEL_DRILL).map(String::as_str),
            Some("db")
        );
        assert!(cached.digest.contains(&json!({
            "metadata": {"annotations": {DESIRED_HASH_ANNOTATION: "abc"}},
            "spec": {"replicas": 2},
        })));
        let without_status = cache_entry(&object, false).to_object("ns", "a");
        assert_eq!(without_status.data, json!({}));
    }

    #[test]
    fn triggers_carry_only_what_finds_the_owner() {
        let mut object = child("a", "1", Some("uid-1"), 2);
        object.metadata.annotations = Some(BTreeMap::from([
            (
                naming::ANNOTATION_OWNER.to_string(),
                "AppDatabase/x".to_string(),
            ),
            (DESIRED_HASH_ANNOTATION.to_string(), "abc".to_string()),
        ]));
        let trigger = trigger_of(object);
        assert_eq!(trigger.owner_references().len(), 1);
        assert_eq!(trigger.annotations().len(), 1);
        assert_eq!(trigger.data, serde_json::Value::Null);
    }
}
