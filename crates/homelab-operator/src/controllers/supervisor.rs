//! Starts the three controllers and keeps them running. It discovers which custom resource
//! kinds are installed, watches only those, and restarts the controllers when that set changes,
//! so a CRD installed after the operator is picked up without a restart of the process.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use homelab_api::{AppDatabase, BackupPolicy, HomelabApp, naming};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Context, app_database, backup_policy, error_policy, homelab_app};
use crate::config::RunConfig;
use crate::health::Health;
use crate::kubernetes::capabilities::{Capabilities, Needed};
use crate::kubernetes::children::{ChildEvent, Children};
use crate::kubernetes::events::Events;
use crate::kubernetes::resource_watch::{self, SpecIdentity};
use crate::metrics::Metrics;

/// Everything the operator needs, with who provides it.
pub fn needed_kinds() -> Vec<Needed> {
    let mut needed: Vec<Needed> = vec![
        Needed {
            resource: ApiResource::erase::<AppDatabase>(&()),
            provider: "the homelab-operator CRDs (crds/ or the Helm chart)",
            required: true,
        },
        Needed {
            resource: ApiResource::erase::<BackupPolicy>(&()),
            provider: "the homelab-operator CRDs (crds/ or the Helm chart)",
            required: true,
        },
        Needed {
            resource: ApiResource::erase::<HomelabApp>(&()),
            provider: "the homelab-operator CRDs (crds/ or the Helm chart)",
            required: true,
        },
    ];
    for kind in homelab_render::child_kinds() {
        let resource = kind.api_resource();
        let (provider, required) = match resource.group.as_str() {
            "postgresql.cnpg.io" => ("CloudNativePG 1.26 or later", true),
            "barmancloud.cnpg.io" => ("the Barman Cloud Plugin for CloudNativePG", true),
            "external-secrets.io" => ("External Secrets Operator 0.17 or later (v1 API)", true),
            "monitoring.coreos.com" => ("the Prometheus Operator CRDs", false),
            "gateway.networking.k8s.io" => ("the Gateway API standard CRDs", false),
            _ => ("Kubernetes", true),
        };
        needed.push(Needed {
            resource,
            provider,
            required,
        });
    }
    needed
}

/// Runs the controllers until `stop` turns true.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    azure: Option<Arc<crate::azure::AzureSide>>,
    mut stop: watch::Receiver<bool>,
) {
    let needed = needed_kinds();
    loop {
        if *stop.borrow() {
            return;
        }
        let capabilities = match Capabilities::discover(&client, &needed).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "cannot discover installed kinds; retrying");
                health.set_problem(Some(format!("cannot reach the Kubernetes API: {err}")));
                if wait_or_stop(&mut stop, Duration::from_secs(5)).await {
                    return;
                }
                continue;
            }
        };
        if let Some(message) = capabilities.missing_message(|_| true) {
            tracing::warn!("{message}");
        }
        health.set_capabilities(&capabilities);
        let (restart_tx, restart_rx) = watch::channel(false);
        let watcher_task = tokio::spawn(watch_capabilities(
            client.clone(),
            needed.clone(),
            capabilities.clone(),
            Duration::from_secs(config.discovery_interval_seconds.max(1)),
            restart_tx,
        ));
        run_once(
            client.clone(),
            config.clone(),
            metrics.clone(),
            health.clone(),
            capabilities,
            azure.clone(),
            stop.clone(),
            restart_rx,
        )
        .await;
        watcher_task.abort();
        health.set_running(false);
    }
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

async fn watch_capabilities(
    client: Client,
    needed: Vec<Needed>,
    current: Capabilities,
    interval: Duration,
    restart: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(interval).await;
        match Capabilities::discover(&client, &needed).await {
            Ok(found) if found.available != current.available => {
                tracing::info!(
                    "the set of installed custom resource definitions changed; restarting the controllers"
                );
                let _ = restart.send(true);
                return;
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "discovery failed"),
        }
    }
}

fn main_api<K>(client: &Client, config: &RunConfig) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match config.namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    capabilities: Capabilities,
    azure: Option<Arc<crate::azure::AzureSide>>,
    stop: watch::Receiver<bool>,
    restart: watch::Receiver<bool>,
) {
    let child_resources: Vec<ApiResource> = homelab_render::child_kinds()
        .iter()
        .map(|k| k.api_resource())
        .filter(|r| capabilities.has(&r.api_version, &r.kind))
        .collect();
    let (children, mut subscribers) = Children::start(
        client.clone(),
        metrics.clone(),
        &child_resources,
        &config.namespaces,
        3,
    );
    // Reconciles compare desired objects with these caches: they must be filled first, or a
    // restart would re-apply everything.
    tokio::select! {
        _ = children.wait_until_ready() => {},
        _ = wait_for_stop(stop.clone(), restart.clone()) => return,
    }
    let policy_children = subscribers.pop().unwrap_or_default();
    let app_children = subscribers.pop().unwrap_or_default();
    let database_children = subscribers.pop().unwrap_or_default();

    let watcher_config = watcher::Config::default()
        .any_semantic()
        .page_size(crate::kubernetes::children::LIST_PAGE_SIZE);
    let controller_config = ControllerConfig::default().concurrency(config.concurrency);

    // One watch per kind; the other controllers get copies of its changes.
    let databases = resource_watch::watch(
        main_api::<DeserializeGuard<AppDatabase>>(&client, &config),
        watcher_config.clone(),
        2,
    );
    let policies = resource_watch::watch(
        main_api::<DeserializeGuard<BackupPolicy>>(&client, &config),
        watcher_config.clone(),
        1,
    );
    let apps = resource_watch::watch(
        main_api::<DeserializeGuard<HomelabApp>>(&client, &config),
        watcher_config,
        0,
    );
    let database_store = databases.store.clone();
    let policy_store = policies.store.clone();
    let app_store = apps.store.clone();

    let events = Events::new(client.clone(), config.identity.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
        events,
        children.clone(),
        capabilities,
        database_store.clone(),
        policy_store.clone(),
        app_store.clone(),
        azure,
    ));

    let shutdown = {
        let mut stop = stop.clone();
        let mut restart = restart.clone();
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {},
                _ = restart.wait_for(|r| *r) => {},
            }
        }
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let mut database_changes = databases.changes.into_iter();
    let mut policy_changes = policies.changes.into_iter();
    let (Some(databases_for_apps), Some(databases_for_policies), Some(policies_for_databases)) = (
        database_changes.next(),
        database_changes.next(),
        policy_changes.next(),
    ) else {
        tracing::error!("the custom resource watches were started without their change feeds");
        return;
    };

    // AppDatabase: its children, and the BackupPolicy it names (its spec only: the policy's
    // status is the policy's own business).
    let mut database_controller = Controller::for_stream(databases.trigger, database_store.clone())
        .with_config(controller_config.clone());
    for (resource, rx) in database_children {
        database_controller = database_controller.watches_stream_with(
            child_stream(rx),
            |child| owner_of::<AppDatabase>(&child),
            resource,
        );
    }
    let dbs_for_policy = database_store.clone();
    let database_controller = database_controller
        .watches_shared_stream(
            resource_watch::only_relevant(policies_for_databases, resource_watch::spec_identity)
                .map(|change| change.object),
            move |policy| databases_using_policy(&dbs_for_policy, &policy),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            app_database::reconcile,
            |obj, err, ctx| error_policy(app_database::KIND, &obj, err, &ctx),
            ctx.clone(),
        )
        .for_each(log_result);

    // HomelabApp: its children, and the AppDatabase it uses (its spec and readiness).
    let mut app_controller = Controller::for_stream(apps.trigger, app_store.clone())
        .with_config(controller_config.clone());
    for (resource, rx) in app_children {
        app_controller = app_controller.watches_stream_with(
            child_stream(rx),
            |child| owner_of::<HomelabApp>(&child),
            resource,
        );
    }
    let apps_for_db = app_store.clone();
    let app_controller = app_controller
        .watches_shared_stream(
            resource_watch::only_relevant(databases_for_apps, database_readiness)
                .map(|change| change.object),
            move |db| apps_using_database(&apps_for_db, &db),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            homelab_app::reconcile,
            |obj, err, ctx| error_policy(homelab_app::KIND, &obj, err, &ctx),
            ctx.clone(),
        )
        .for_each(log_result);

    // BackupPolicy: the databases that use it (their status too: backups and drills), and its
    // drill clusters.
    let mut policy_controller = Controller::for_stream(policies.trigger, policy_store.clone())
        .with_config(controller_config);
    for (resource, rx) in policy_children {
        policy_controller = policy_controller.watches_stream_with(
            child_stream(rx),
            |child| owner_of::<BackupPolicy>(&child),
            resource,
        );
    }
    let database_gauges = metrics.databases.clone();
    let policy_controller = policy_controller
        .watches_shared_stream(
            databases_for_policies
                .inspect(move |change| forget_deleted_database(&database_gauges, change))
                .map(|change| change.object),
            |db| policy_of_database(&db),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            backup_policy::reconcile,
            |obj, err, ctx| error_policy(backup_policy::KIND, &obj, err, &ctx),
            ctx.clone(),
        )
        .for_each(log_result);

    health.set_running(true);
    tracing::info!("controllers started");
    futures::join!(database_controller, app_controller, policy_controller);
    tracing::info!("controllers stopped");
}

async fn wait_for_stop(mut stop: watch::Receiver<bool>, mut restart: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {},
        _ = restart.wait_for(|r| *r) => {},
    }
}

fn child_stream(
    rx: tokio::sync::mpsc::UnboundedReceiver<ChildEvent>,
) -> impl futures::Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static {
    UnboundedReceiverStream::new(rx)
}

fn log_result<K, E: std::fmt::Display>(
    result: Result<(ObjectRef<K>, kube::runtime::controller::Action), E>,
) -> futures::future::Ready<()>
where
    K: Resource,
    K::DynamicType: std::fmt::Debug,
{
    if let Err(err) = result {
        tracing::debug!(error = %err, "reconcile did not complete");
    }
    futures::future::ready(())
}

/// The custom resource a child belongs to: its controller ownerReference, or the owner
/// annotation of children kept outside garbage collection.
fn owner_of<K>(child: &DynamicObject) -> Option<ObjectRef<DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()>,
{
    let namespace = child.namespace()?;
    let kind = K::kind(&());
    if let Some(owner) = child.owner_references().iter().find(|r| {
        r.controller == Some(true) && r.kind == kind && r.api_version == K::api_version(&())
    }) {
        return Some(ObjectRef::new(&owner.name).within(&namespace));
    }
    let annotation = child.annotations().get(naming::ANNOTATION_OWNER)?;
    let (owner_kind, name) = annotation.split_once('/')?;
    (owner_kind == kind).then(|| ObjectRef::new(name).within(&namespace))
}

fn databases_using_policy(
    store: &Store<DeserializeGuard<AppDatabase>>,
    policy: &DeserializeGuard<BackupPolicy>,
) -> Vec<ObjectRef<DeserializeGuard<AppDatabase>>> {
    let (name, namespace) = (policy.name_any(), policy.namespace().unwrap_or_default());
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|db| db.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|db| {
            let by_backup = db
                .spec
                .backup
                .as_ref()
                .is_some_and(|b| b.policy_ref.name == name);
            let by_restore = db
                .spec
                .restore
                .as_ref()
                .and_then(|r| r.from.archive.as_ref())
                .is_some_and(|a| a.policy_ref.name == name);
            by_backup || by_restore
        })
        .map(|db| ObjectRef::new(&db.name_any()).within(&namespace))
        .collect()
}

/// Status, reason and message of a Ready condition.
type Readiness = (String, String, String);

/// What a HomelabApp reads of its AppDatabase: its spec and whether (and why not) it is ready.
fn database_readiness(db: &DeserializeGuard<AppDatabase>) -> (SpecIdentity, Option<Readiness>) {
    let ready = db.0.as_ref().ok().and_then(|db| {
        let status = db.status.as_ref()?;
        let ready =
            homelab_api::conditions::find(&status.conditions, homelab_api::conditions::READY)?;
        Some((
            ready.status.clone(),
            ready.reason.clone(),
            ready.message.clone(),
        ))
    });
    (resource_watch::spec_identity(db), ready)
}

fn apps_using_database(
    store: &Store<DeserializeGuard<HomelabApp>>,
    db: &DeserializeGuard<AppDatabase>,
) -> Vec<ObjectRef<DeserializeGuard<HomelabApp>>> {
    let (name, namespace) = (db.name_any(), db.namespace().unwrap_or_default());
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|app| app.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|app| {
            app.spec
                .database
                .as_ref()
                .is_some_and(|d| d.database_ref.name == name)
        })
        .map(|app| ObjectRef::new(&app.name_any()).within(&namespace))
        .collect()
}

/// A deleted database takes its metric series with it. Without the Azure side an AppDatabase
/// carries no finalizer, so its own controller never sees the deletion.
fn forget_deleted_database(
    gauges: &crate::metrics::DatabaseGauges,
    change: &resource_watch::Change<DeserializeGuard<AppDatabase>>,
) {
    if change.deleted {
        let meta = change.object.meta();
        gauges.forget(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
    }
}

fn policy_of_database(
    db: &DeserializeGuard<AppDatabase>,
) -> Option<ObjectRef<DeserializeGuard<BackupPolicy>>> {
    let db = db.0.as_ref().ok()?;
    let namespace = db.namespace()?;
    let policy = &db.spec.backup.as_ref()?.policy_ref.name;
    Some(ObjectRef::new(policy).within(&namespace))
}
