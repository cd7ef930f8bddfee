//! The HomelabApp controller: the app's workload, its exposure, its secrets and its database
//! wiring.

use std::collections::BTreeSet;
use std::sync::Arc;

use homelab_api::conditions::{self, Observed, Status};
use homelab_api::homelab_app::HomelabAppStatus;
use homelab_api::reasons::Reason;
use homelab_api::{HomelabApp, naming};
use kube::api::{Api, DynamicObject};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::{Context, Error, child_ready_condition, now, object_reference, type_of};
use crate::kubernetes::status;

pub const KIND: &str = "HomelabApp";

pub async fn reconcile(
    guard: Arc<DeserializeGuard<HomelabApp>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let app = match &guard.0 {
        Ok(app) => app,
        Err(invalid) => return super::report_invalid::<HomelabApp>(invalid, &ctx).await,
    };
    if app.meta().deletion_timestamp.is_some() {
        // Every child carries an ownerReference: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.start_reconcile(KIND);
    ctx.caches_ready().await;
    let namespace = app.namespace().unwrap_or_default();
    let api: Api<HomelabApp> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{KIND}/{namespace}/{}", app.name_any());

    match converge(app, &ctx).await {
        Ok(observed) => {
            ctx.record_success(&key);
            // A database the operator has not reconciled yet has nothing to report, and its
            // first status wakes this app again: publishing "not reconciled yet" now would only
            // be replaced a moment later.
            if !database_not_reconciled_yet(app, &ctx) {
                write_status(app, &api, &ctx, observed).await?;
            }
            Ok(Action::requeue(ctx.config.resync()))
        }
        Err(err) => {
            let observed = (
                vec![Observed::new(
                    conditions::READY,
                    Status::False,
                    err.reason(),
                    err.to_string(),
                )],
                app.status.clone().unwrap_or_default(),
            );
            write_status(app, &api, &ctx, observed).await?;
            if err.is_transient() {
                Err(err)
            } else {
                Ok(Action::requeue(ctx.config.resync()))
            }
        }
    }
}

type ObservedApp = (Vec<Observed>, HomelabAppStatus);

fn database_not_reconciled_yet(app: &HomelabApp, ctx: &Context) -> bool {
    let Some(binding) = &app.spec.database else {
        return false;
    };
    let namespace = app.namespace().unwrap_or_default();
    ctx.database(&namespace, &binding.database_ref.name)
        .is_some_and(|db| db.status.is_none())
}

async fn converge(app: &HomelabApp, ctx: &Context) -> Result<ObservedApp, Error> {
    let namespace = app.namespace().unwrap_or_default();

    let database = match &app.spec.database {
        Some(binding) => {
            let name = &binding.database_ref.name;
            let db = ctx
                .database(&namespace, name)
                .ok_or_else(|| Error::MissingReference {
                    kind: super::error::ReferencedKind::AppDatabase,
                    name: name.clone(),
                    namespace: namespace.clone(),
                })?;
            Some(db)
        }
        None => None,
    };
    let facts = homelab_render::HomelabAppFacts {
        database: database
            .as_deref()
            .map(|db| homelab_render::DatabaseFacts::from_app_database(db, &ctx.render)),
    };
    let desired = homelab_render::render_homelab_app(app, &facts, &ctx.render)?;

    let mut missing = BTreeSet::new();
    let mut applies = Vec::new();
    for object in &desired {
        let (api_version, kind) = type_of(object);
        if !ctx.children.has_kind(&api_version, &kind) {
            missing.insert(format!("{kind} ({api_version})"));
            continue;
        }
        applies.push(ctx.children.apply(object));
    }
    for outcome in futures::future::join_all(applies).await {
        outcome?;
    }
    prune(app, &desired, ctx).await?;

    let (mut observed, status) = observe(app, ctx, database.as_deref());
    if !missing.is_empty() {
        let message = ctx
            .capabilities
            .missing_message(|kind| missing.contains(kind))
            .unwrap_or_else(|| "required custom resource definitions are not installed".into());
        conditions::set(
            &mut observed,
            Observed::new(
                conditions::READY,
                Status::False,
                Reason::CRDNotInstalled,
                message,
            ),
        );
    }
    Ok((observed, status))
}

async fn prune(app: &HomelabApp, desired: &[DynamicObject], ctx: &Context) -> Result<(), Error> {
    let namespace = app.namespace().unwrap_or_default();
    let uid = app.meta().uid.clone().unwrap_or_default();
    let owner_key = format!("{KIND}/{}", app.name_any());
    // Under Retain a claim whose volume left the spec keeps its data.
    let retain_claims = app.spec.deletion_policy == homelab_api::common::DeletionPolicy::Retain;
    super::prune_children(ctx, &namespace, &uid, &owner_key, desired, |child| {
        retain_claims && child.kind == "PersistentVolumeClaim"
    })
    .await
}

fn observe(
    app: &HomelabApp,
    ctx: &Context,
    database: Option<&homelab_api::AppDatabase>,
) -> ObservedApp {
    let namespace = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let deployment = ctx.children.get("apps/v1", "Deployment", &namespace, &name);
    let available_replicas = deployment
        .as_deref()
        .and_then(|d| d.data.pointer("/status/availableReplicas"))
        .and_then(|v| v.as_i64())
        .unwrap_or(0) as i32;
    let wanted = app.spec.replicas;
    let available = if deployment.is_none() {
        Observed::new(
            conditions::AVAILABLE,
            Status::False,
            Reason::DeploymentMissing,
            format!("the Deployment {name} does not exist yet"),
        )
    } else if available_replicas >= wanted {
        Observed::new(
            conditions::AVAILABLE,
            Status::True,
            Reason::MinimumReplicasAvailable,
            format!("{available_replicas}/{wanted} replicas available"),
        )
    } else {
        Observed::new(
            conditions::AVAILABLE,
            Status::False,
            Reason::ReplicasUnavailable,
            format!(
                "{available_replicas}/{wanted} replicas available: check the pods' events and logs"
            ),
        )
    };
    let mut specific = vec![available];

    if let Some(db) = database {
        let db_ready = db
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
        let secret = ctx.children.get(
            "external-secrets.io/v1",
            "ExternalSecret",
            &namespace,
            &naming::app_database_secret(&name),
        );
        let synced = secret.as_deref().and_then(child_ready_condition);
        specific.push(match (db_ready, synced) {
            (true, Some((true, _, _))) => Observed::new(
                conditions::DATABASE_READY,
                Status::True,
                Reason::DatabaseReady,
                format!(
                    "AppDatabase {} is ready and its credentials are synced",
                    db.name_any()
                ),
            ),
            (false, _) => {
                let reason = db
                    .status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, conditions::READY))
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_else(|| "not reconciled yet".into());
                Observed::new(
                    conditions::DATABASE_READY,
                    Status::False,
                    Reason::DatabaseNotReady,
                    format!("AppDatabase {} is not ready ({reason})", db.name_any()),
                )
            }
            (true, _) => Observed::new(
                conditions::DATABASE_READY,
                Status::Unknown,
                Reason::WaitingForExternalSecrets,
                format!(
                    "waiting for External Secrets Operator to sync {}",
                    naming::app_database_secret(&name)
                ),
            ),
        });
    }
    if !app.spec.secrets.is_empty() {
        let secret = ctx.children.get(
            "external-secrets.io/v1",
            "ExternalSecret",
            &namespace,
            &naming::app_secrets(&name),
        );
        specific.push(match secret.as_deref().and_then(child_ready_condition) {
            Some((true, _, _)) => Observed::new(
                conditions::SECRETS_READY,
                Status::True,
                Reason::SecretsSynced,
                "the app's secrets are synced from Key Vault",
            ),
            Some((false, reason, message)) => Observed::new(
                conditions::SECRETS_READY,
                Status::False,
                Reason::SecretsNotSynced,
                format!(
                    "External Secrets Operator cannot sync the app's secrets: {reason}: {message}"
                ),
            ),
            None => Observed::new(
                conditions::SECRETS_READY,
                Status::Unknown,
                Reason::WaitingForExternalSecrets,
                "waiting for External Secrets Operator to sync the app's secrets",
            ),
        });
    }
    let ready = conditions::summarize(&specific, "the app is available");
    let mut all = vec![ready];
    all.extend(specific);

    let url = app
        .spec
        .ingress
        .as_ref()
        .map(|i| {
            let scheme = if i.tls.enabled { "https" } else { "http" };
            format!("{scheme}://{}{}", i.host, i.path)
        })
        .or_else(|| {
            app.spec
                .route
                .as_ref()
                .map(|r| format!("https://{}{}", r.hostname, r.path))
        });
    let status = HomelabAppStatus {
        url,
        available_replicas: deployment.as_ref().map(|_| available_replicas),
        database_host: database
            .zip(app.spec.database.as_ref())
            .map(|(db, binding)| {
                homelab_render::app::database_host(
                    binding,
                    db.app_name(),
                    &db.namespace().unwrap_or_default(),
                )
            }),
        ..app.status.clone().unwrap_or_default()
    };
    (all, status)
}

async fn write_status(
    app: &HomelabApp,
    api: &Api<HomelabApp>,
    ctx: &Context,
    (observed, mut status): ObservedApp,
) -> Result<(), Error> {
    let current = ctx.status_writes.previous(app, app.status.as_ref());
    let previous = current.clone().unwrap_or_default();
    status.observed_generation = app.meta().generation;
    status.conditions = conditions::merge(
        &previous.conditions,
        &observed,
        app.meta().generation,
        &now(),
    );
    if status::patch_if_changed(api, &ctx.status_writes, app, current.as_ref(), &status).await? {
        ctx.metrics
            .status_patches
            .get_or_create(&crate::metrics::KindLabels { kind: KIND })
            .inc();
        super::publish_transitions(
            &ctx.events,
            &object_reference(app),
            &previous.conditions,
            &status.conditions,
        )
        .await;
    }
    Ok(())
}
