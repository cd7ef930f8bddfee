//! What the apiserver holds, seen through watches (no polling load on the apiserver): the three
//! CR kinds and the operator's children in one namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use homelab_api::{AppDatabase, BackupPolicy, HomelabApp};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// One object as last seen.
pub type Seen = Arc<DynamicObject>;

/// A change seen by a watch, with the moment it arrived.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: String,
    pub object: Seen,
    pub at: Instant,
}

type Objects = HashMap<(String, String), Seen>;

/// Watches of one namespace, kept in memory.
pub struct Observer {
    objects: Arc<Mutex<Objects>>,
    changes: broadcast::Sender<Change>,
    tasks: Vec<JoinHandle<()>>,
    gone: Arc<AtomicUsize>,
}

const MANAGED: &str = "app.kubernetes.io/managed-by=homelab-operator";

impl Observer {
    /// Starts watches of the CR kinds and of `child_kinds` (those labelled as the operator's) in
    /// `namespace`.
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        child_kinds: &BTreeMap<(String, String), ApiResource>,
    ) -> Self {
        let objects = Arc::new(Mutex::new(Objects::new()));
        let (changes, _) = broadcast::channel(1 << 16);
        let gone = Arc::new(AtomicUsize::new(0));
        let mut watched: Vec<(String, ApiResource, Option<&str>)> = vec![
            (
                "AppDatabase".into(),
                ApiResource::erase::<AppDatabase>(&()),
                None,
            ),
            (
                "HomelabApp".into(),
                ApiResource::erase::<HomelabApp>(&()),
                None,
            ),
            (
                "BackupPolicy".into(),
                ApiResource::erase::<BackupPolicy>(&()),
                None,
            ),
        ];
        for ((_, kind), resource) in child_kinds {
            watched.push((kind.clone(), resource.clone(), Some(MANAGED)));
        }
        let tasks = watched
            .into_iter()
            .map(|(kind, resource, selector)| {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &resource);
                let mut config = watcher::Config::default();
                if let Some(selector) = selector {
                    config = config.labels(selector);
                }
                let objects = objects.clone();
                let changes = changes.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    let mut stream = watcher(api, config).default_backoff().boxed();
                    let mut relist: Option<Vec<Seen>> = None;
                    while let Some(event) = stream.next().await {
                        let event = match event {
                            Ok(event) => event,
                            Err(error) => {
                                if is_gone(&error) {
                                    gone.fetch_add(1, Ordering::Relaxed);
                                }
                                continue;
                            }
                        };
                        let at = Instant::now();
                        let mut objects = match objects.lock() {
                            Ok(objects) => objects,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        match event {
                            watcher::Event::Init => relist = Some(Vec::new()),
                            watcher::Event::InitApply(object) => {
                                if let Some(list) = relist.as_mut() {
                                    list.push(Arc::new(object));
                                }
                            }
                            watcher::Event::InitDone => {
                                objects.retain(|(k, _), _| *k != kind);
                                for object in relist.take().unwrap_or_default() {
                                    let name = object.metadata.name.clone().unwrap_or_default();
                                    objects.insert((kind.clone(), name), object);
                                }
                            }
                            watcher::Event::Apply(object) => {
                                let name = object.metadata.name.clone().unwrap_or_default();
                                let object = Arc::new(object);
                                objects.insert((kind.clone(), name), object.clone());
                                let _ = changes.send(Change {
                                    kind: kind.clone(),
                                    object,
                                    at,
                                });
                            }
                            watcher::Event::Delete(object) => {
                                let name = object.metadata.name.clone().unwrap_or_default();
                                objects.remove(&(kind.clone(), name));
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            objects,
            changes,
            tasks,
            gone,
        }
    }

    /// How many times a watch was told `410 Gone`: its resourceVersion is older than what the
    /// apiserver's watch cache holds, so it lists its objects again (after its backoff).
    pub fn watch_gone(&self) -> usize {
        self.gone.load(Ordering::Relaxed)
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The object last seen, if any.
    pub fn get(&self, kind: &str, name: &str) -> Option<Seen> {
        self.lock()
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        match self.objects.lock() {
            Ok(objects) => objects,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// What is still missing for convergence: CRs whose status has not observed their generation
    /// and expected children not seen. Empty when converged.
    pub fn pending(&self, pairs: usize, expected: &BTreeSet<(String, String)>) -> Pending {
        let objects = self.lock();
        let mut pending = Pending::default();
        let mut crs = 0;
        for ((kind, name), object) in objects.iter() {
            if !matches!(kind.as_str(), "AppDatabase" | "HomelabApp" | "BackupPolicy") {
                continue;
            }
            crs += 1;
            let observed = object.data["status"]["observedGeneration"].as_i64();
            if observed != object.metadata.generation {
                pending.unobserved.push(format!("{kind}/{name}"));
            }
        }
        pending.missing_crs = (2 * pairs + 1).saturating_sub(crs);
        pending.missing_children = expected
            .iter()
            .filter(|key| !objects.contains_key(*key))
            .map(|(k, n)| format!("{k}/{n}"))
            .collect();
        pending
    }

    /// Polls the in-memory view until converged; the time from `since`.
    pub async fn wait_converged(
        &self,
        pairs: usize,
        expected: &BTreeSet<(String, String)>,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration> {
        loop {
            let pending = self.pending(pairs, expected);
            if pending.is_empty() {
                return Ok(since.elapsed());
            }
            if since.elapsed() > timeout {
                bail!("not converged after {timeout:?}: {pending}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the in-memory view until every expected child has been seen, regardless of the
    /// CRs' status (the floor writes none); the time from `since`.
    pub async fn wait_children(
        &self,
        expected: &BTreeSet<(String, String)>,
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration> {
        loop {
            let missing = {
                let objects = self.lock();
                expected
                    .iter()
                    .filter(|key| !objects.contains_key(*key))
                    .count()
            };
            if missing == 0 {
                return Ok(since.elapsed());
            }
            if since.elapsed() > timeout {
                bail!("{missing} children not seen after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The CRs of `kind` currently seen.
    pub fn all(&self, kind: &str) -> Vec<Seen> {
        self.lock()
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }
}

/// Whether a watch error is `410 Gone`, as an event of the stream or as the answer to the
/// request that starts a watch.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::InitialListFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What keeps a namespace from being converged.
#[derive(Debug, Default)]
pub struct Pending {
    pub missing_crs: usize,
    pub unobserved: Vec<String>,
    pub missing_children: Vec<String>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.missing_crs == 0 && self.unobserved.is_empty() && self.missing_children.is_empty()
    }
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CRs not seen, {} CRs without observedGeneration == generation (e.g. {:?}), {} children missing (e.g. {:?})",
            self.missing_crs,
            self.unobserved.len(),
            self.unobserved.iter().take(3).collect::<Vec<_>>(),
            self.missing_children.len(),
            self.missing_children.iter().take(3).collect::<Vec<_>>()
        )
    }
}
