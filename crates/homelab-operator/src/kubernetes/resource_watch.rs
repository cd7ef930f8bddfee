//! One watch per custom resource kind, shared by the controllers: the owning controller's cache
//! and trigger, plus copies of every change for the controllers that map it to their own
//! objects. Cached objects are kept without `managedFields` and kubectl's last-applied copy,
//! which the operator never reads and which are often as large as the rest of the object.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The copy of the whole object `kubectl apply` keeps; the operator never reads it.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A change passed on to another controller; `deleted` tells a deletion from an update.
#[derive(Clone, Debug)]
pub struct Change<K> {
    pub object: Arc<K>,
    pub deleted: bool,
}

/// A watched custom resource kind.
pub struct ResourceWatch<K: Resource<DynamicType = ()> + 'static> {
    /// The cache of every object of the kind.
    pub store: Store<DeserializeGuard<K>>,
    /// The owning controller's trigger: every object added or changed.
    pub trigger: std::pin::Pin<
        Box<dyn Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send + 'static>,
    >,
    /// Copies of every change, one stream per other controller.
    pub changes: Vec<UnboundedReceiverStream<Change<DeserializeGuard<K>>>>,
}

/// Starts watching `api`, passing every change on to `others` other controllers.
pub fn watch<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    others: usize,
) -> ResourceWatch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = reflector::store::Writer::default();
    let store = writer.as_reader();
    let mut senders = Vec::with_capacity(others);
    let mut changes = Vec::with_capacity(others);
    for _ in 0..others {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        changes.push(UnboundedReceiverStream::new(rx));
    }
    let mut listed_once = false;
    let trigger = watcher(api, config)
        .default_backoff()
        .modify(|guard: &mut DeserializeGuard<K>| {
            let metadata = guard.meta_mut();
            metadata.managed_fields = None;
            if let Some(annotations) = metadata.annotations.as_mut() {
                annotations.remove(LAST_APPLIED_ANNOTATION);
            }
        })
        .reflect(writer)
        .inspect(move |event| {
            let (object, deleted) = match event {
                Ok(watcher::Event::Apply(object)) => (object, false),
                // Every controller reconciles all of its objects when it starts, so the first
                // list tells the others nothing; a re-list after a watch failure may.
                Ok(watcher::Event::InitApply(object)) if listed_once => (object, false),
                Ok(watcher::Event::Delete(object)) => (object, true),
                Ok(watcher::Event::InitDone) => {
                    listed_once = true;
                    return;
                }
                _ => return,
            };
            let object = Arc::new(object.clone());
            for tx in &senders {
                // A closed receiver means that controller has stopped: nothing to tell it.
                let _ = tx.send(Change {
                    object: object.clone(),
                    deleted,
                });
            }
        })
        .applied_objects()
        .boxed();
    ResourceWatch {
        store,
        trigger,
        changes,
    }
}

/// Passes on only the changes whose `relevant` part differs from the last one seen for that
/// object (and every deletion), so that a controller is not woken by changes it does not read.
pub fn only_relevant<K, R>(
    changes: impl Stream<Item = Change<DeserializeGuard<K>>> + Send + 'static,
    relevant: impl Fn(&DeserializeGuard<K>) -> R + Send + 'static,
) -> impl Stream<Item = Change<DeserializeGuard<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    R: Hash,
{
    let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
    changes.filter(move |change| {
        let meta = change.object.meta();
        let key = ObjectRef::<K>::new(meta.name.as_deref().unwrap_or_default())
            .within(meta.namespace.as_deref().unwrap_or_default());
        let pass = if change.deleted {
            seen.remove(&key);
            true
        } else {
            let mut hasher = DefaultHasher::new();
            relevant(&change.object).hash(&mut hasher);
            let fingerprint = hasher.finish();
            seen.insert(key, fingerprint) != Some(fingerprint)
        };
        futures::future::ready(pass)
    })
}

/// Which object it is (uid), which spec (generation), and whether it is being deleted.
pub type SpecIdentity = (Option<String>, Option<i64>, bool);

/// The part of a custom resource its spec consumers read: which object it is, its spec
/// (by generation) and whether it is being deleted.
pub fn spec_identity<K: Resource>(guard: &DeserializeGuard<K>) -> SpecIdentity {
    let meta = guard.meta();
    (
        meta.uid.clone(),
        meta.generation,
        meta.deletion_timestamp.is_some(),
    )
}
