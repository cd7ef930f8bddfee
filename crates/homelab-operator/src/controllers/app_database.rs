//! The AppDatabase controller: a CloudNativePG cluster with its credentials, backups and monitoring.

use std::collections::BTreeSet;
use std::sync::Arc;

use homelab_api::app_database::{AppDatabaseStatus, BackupStatus, Endpoints};
use homelab_api::common::DeletionPolicy;
use homelab_api::conditions::{self, Observed, Status};
use homelab_api::reasons::Reason;
use homelab_api::{AppDatabase, naming};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use homelab_render::{PolicyFacts, RestoreSourceFacts};

use super::{Context, Error, finalizer, now, object_reference, type_of};
use crate::controllers::child_ready_condition;
use crate::kubernetes::status;

pub const KIND: &str = "AppDatabase";

const CNPG_API: &str = "postgresql.cnpg.io/v1";
const BARMAN_API: &str = "barmancloud.cnpg.io/v1";
const ESO_API: &str = "external-secrets.io/v1";

pub async fn reconcile(
    guard: Arc<DeserializeGuard<AppDatabase>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let db = match &guard.0 {
        Ok(db) => db,
        Err(invalid) => return super::report_invalid::<AppDatabase>(invalid, &ctx).await,
    };
    let _timer = ctx.metrics.start_reconcile(KIND);
    ctx.caches_ready().await;
    let namespace = db.namespace().unwrap_or_default();
    let api: Api<AppDatabase> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{KIND}/{namespace}/{}", db.name_any());

    if db.meta().deletion_timestamp.is_some() {
        return cleanup(db, &api, &ctx).await;
    }
    // The Azure side lives outside the cluster's garbage collection: the finalizer that removes
    // it must be on the object before any of it exists. Without the Azure side there is nothing
    // to finalize (every child either carries an ownerReference or is data the policy keeps), so
    // no finalizer is added: it would cost a write per database and hold a deletion up for as
    // long as the operator is down.
    if ctx.azure.is_some() {
        finalizer::ensure(&api, db).await?;
    }
    let converged = converge(db, &ctx).await;

    let (observed, action) = match converged {
        Ok(converged) => {
            let next_check = match (converged.next_azure_check, converged.next_backup_check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let requeue = requeue_after(&ctx, next_check);
            match converged.azure_error {
                Some(err) if err.is_transient() => {
                    // Report the outage, then let the error policy back off (honouring
                    // Retry-After).
                    write_status(db, &api, &ctx, converged.observed).await?;
                    return Err(err);
                }
                Some(_) => (converged.observed, Action::requeue(ctx.config.resync())),
                None => {
                    ctx.record_success(&key);
                    (converged.observed, Action::requeue(requeue))
                }
            }
        }
        Err(err) if !err.is_transient() => {
            let observed = blocked(db, &err);
            (observed, Action::requeue(ctx.config.resync()))
        }
        Err(err) => {
            // Report the failure, then let the error policy back off.
            let observed = blocked(db, &err);
            write_status(db, &api, &ctx, observed).await?;
            return Err(err);
        }
    };
    write_status(db, &api, &ctx, observed).await?;
    Ok(action)
}

fn requeue_after(ctx: &Context, next_azure_check: Option<jiff::Timestamp>) -> std::time::Duration {
    let resync = ctx.config.resync();
    match next_azure_check {
        Some(at) => {
            let until = at.duration_since(jiff::Timestamp::now());
            let until = std::time::Duration::try_from(until).unwrap_or_default();
            until.clamp(std::time::Duration::from_secs(1), resync)
        }
        None => resync,
    }
}

/// The outcome of one pass: what the children report, and what the Azure side did.
struct Converged {
    observed: ObservedDatabase,
    /// An Azure failure, reported in conditions; the children were still applied.
    azure_error: Option<Error>,
    next_azure_check: Option<jiff::Timestamp>,
    /// When `BackupReady` flips on its own as time passes (see `backups::next_flip`).
    next_backup_check: Option<jiff::Timestamp>,
}

/// What one successful pass observed, turned into status.
struct ObservedDatabase {
    conditions: Vec<Observed>,
    status: AppDatabaseStatus,
}

fn blocked(db: &AppDatabase, err: &Error) -> ObservedDatabase {
    let ready = Observed::new(
        conditions::READY,
        Status::False,
        err.reason(),
        err.to_string(),
    );
    ObservedDatabase {
        conditions: vec![ready],
        status: AppDatabaseStatus {
            cluster: Some(naming::cluster(db.app_name())),
            ..db.status.clone().unwrap_or_default()
        },
    }
}

/// Resolves references, renders, makes sure the Azure side exists, applies and prunes; returns
/// what the children report.
async fn converge(db: &AppDatabase, ctx: &Context) -> Result<Converged, Error> {
    let namespace = db.namespace().unwrap_or_default();
    let app = db.app_name().to_string();

    // Dereference.
    let policy: Option<PolicyFacts> = match &db.spec.backup {
        Some(backup) => {
            let name = backup.policy_ref.name.clone();
            let policy = ctx
                .policy(&namespace, &name)
                .ok_or_else(|| Error::MissingReference {
                    kind: super::error::ReferencedKind::BackupPolicy,
                    name: name.clone(),
                    namespace: namespace.clone(),
                })?;
            Some(PolicyFacts {
                name,
                spec: policy.spec.clone(),
            })
        }
        None => None,
    };
    let restore_source = match db.spec.restore.as_ref() {
        Some(restore) => Some(resolve_restore_source(db, restore, ctx, &namespace)?),
        None => None,
    };
    let server_name = homelab_render::facts::server_name(db);
    if let Some(policy) = &policy {
        check_backup_destination(db, ctx, &policy.spec)?;
    }

    // Render.
    let running_image = ctx.cluster_image(&namespace, &app).or_else(|| {
        db.spec
            .restore
            .as_ref()
            .and_then(|r| r.from.app_database.as_ref())
            .and_then(|source| ctx.database(&namespace, source))
            .and_then(|source| ctx.cluster_image(&namespace, source.app_name()))
    });
    let facts = homelab_render::AppDatabaseFacts {
        policy: policy.clone(),
        server_name: server_name.clone(),
        restore_source,
        running_image,
    };
    let mut desired = homelab_render::render_app_database(db, &facts, &ctx.render)?;

    // A restore creates its cluster only when the target lies inside the source's window.
    let restore_check = super::backups::check_restore(
        db,
        ctx,
        &namespace,
        ctx.children
            .get(CNPG_API, "Cluster", &namespace, &naming::cluster(&app))
            .is_some(),
        jiff::Timestamp::now(),
    );
    if restore_check.as_ref().is_some_and(|c| !c.allow_cluster) {
        desired.retain(|o| type_of(o).1 != "Cluster");
    }

    // Growing volumes on a storage class that cannot expand them would leave CloudNativePG
    // failing to resize the claims, with nothing to see on the AppDatabase: the Cluster keeps its
    // size and the AppDatabase says why.
    let volumes_held =
        hold_back_unexpandable_growth(db, ctx, &namespace, &app, &mut desired).await?;

    // The Azure side first: the ExternalSecrets read what it creates.
    let (azure, mut azure_error) = match ensure_azure(db, ctx, &namespace, policy.as_ref()).await {
        Ok(ensured) => (ensured, None),
        Err(err) => (None, Some(err)),
    };
    // What reached the archive, read from the archive.
    let mut wal_probe = None;
    if azure_error.is_none()
        && let (Some(side), Some(policy)) = (&ctx.azure, &policy)
    {
        match probe_archive(db, ctx, side, &namespace, &server_name, policy).await {
            Ok(probe) => wal_probe = Some(probe),
            Err(err) => azure_error = Some(err),
        }
    }

    let cluster_name = naming::cluster(&app);
    let cluster_existed = ctx
        .children
        .get(CNPG_API, "Cluster", &namespace, &cluster_name)
        .is_some();

    // Apply what is installed; remember what is not.
    let mut missing_kinds = BTreeSet::new();
    let mut applied = Vec::new();
    for object in &desired {
        let (api_version, kind) = type_of(object);
        if !ctx.children.has_kind(&api_version, &kind) {
            missing_kinds.insert(format!("{kind} ({api_version})"));
            continue;
        }
        applied.push(ctx.children.apply(object));
    }
    let outcomes = futures::future::join_all(applied).await;
    for outcome in outcomes {
        outcome?;
    }
    prune(db, &desired, ctx).await?;
    let on_demand_backups =
        super::backups::on_demand_backups(db, ctx, &namespace, policy.is_some()).await?;
    let cluster_rendered = desired.iter().any(|o| type_of(o).1 == "Cluster");
    if !cluster_existed && cluster_rendered && ctx.children.has_kind(CNPG_API, "Cluster") {
        ctx.events
            .publish(
                &object_reference(db),
                false,
                "ClusterCreated",
                "Apply",
                format!(
                    "created the CloudNativePG cluster {cluster_name} ({} instance(s)); clients connect to {}",
                    db.spec.instances,
                    naming::read_write_host(&app, &namespace)
                ),
            )
            .await;
    }

    // Observe.
    let archived = match &wal_probe {
        Some(probe) => probe
            .newest
            .as_ref()
            .map(|n| (Time(n.archived_at), n.segment.to_string())),
        // Azure did not answer: the last listing stands.
        None => previous_archive_facts(db, &server_name),
    };
    let mut observed = observe(
        db,
        ctx,
        &app,
        &namespace,
        &server_name,
        policy.as_ref(),
        BackupEvidence {
            archived,
            on_demand: &on_demand_backups,
        },
    );
    let names = facts.database_names(db);
    observed.status.database = Some(names.database);
    observed.status.owner = Some(names.owner);
    observed.status.on_demand_backups = on_demand_backups;
    let restore_recheck = restore_check.as_ref().and_then(|c| c.recheck_at);
    if let Some(check) = restore_check {
        // The restore comes before the cluster: a held-back restore is why Ready is False.
        observed.conditions.insert(1, check.condition);
        let ready = summarize(&observed.conditions);
        conditions::set(&mut observed.conditions, ready);
    }
    if let Some(cluster) = desired.iter().find(|o| type_of(o).1 == "Cluster") {
        let size = |field: &str| {
            cluster
                .data
                .pointer(&format!("/spec/{field}/size"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        observed.status.volume_sizes = Some(homelab_api::app_database::VolumeSizes {
            storage: size("storage"),
            wal_storage: size("walStorage"),
        });
    }
    if let Some(held) = volumes_held {
        // Asked for what the storage cannot give: that is why Ready is False, first of all.
        observed.conditions.insert(1, held);
        let ready = summarize(&observed.conditions);
        conditions::set(&mut observed.conditions, ready);
    }
    let live_cluster = ctx
        .children
        .get(CNPG_API, "Cluster", &namespace, &cluster_name);
    super::backups::export_metrics(
        ctx,
        db,
        observed.status.backup.as_ref(),
        policy.as_ref().map(|p| &p.spec),
        live_cluster.as_deref(),
    );
    let next_backup_check = match (&policy, observed.status.backup.as_ref()) {
        (Some(policy), Some(backup)) => super::backups::next_flip(
            backup,
            live_cluster.as_deref(),
            &policy.spec,
            jiff::Timestamp::now(),
        ),
        _ => None,
    };
    let next_backup_check = [next_backup_check, restore_recheck]
        .into_iter()
        .flatten()
        .min();
    if let Some((ensured, resources)) = &azure {
        let recorded = db
            .status
            .as_ref()
            .and_then(|s| s.azure.clone())
            .unwrap_or_default();
        observed.status.azure = Some(recorded.merged(resources));
        observed.status.password_origin = Some(ensured.password_origin.to_string());
        if let Some(backup) = observed.status.backup.as_mut() {
            backup.sas_expires = ensured
                .sas_expires
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        }
    }
    if let Some(err) = &azure_error {
        report_azure_failure(&mut observed, err);
    }
    if !missing_kinds.is_empty() {
        let message = ctx
            .capabilities
            .missing_message(|kind| missing_kinds.contains(kind))
            .unwrap_or_else(|| "required custom resource definitions are not installed".into());
        conditions::set(
            &mut observed.conditions,
            Observed::new(
                conditions::READY,
                Status::False,
                Reason::CRDNotInstalled,
                message,
            ),
        );
    }
    Ok(Converged {
        observed,
        azure_error,
        next_azure_check: [
            azure.map(|(a, _)| a.next_check),
            wal_probe.map(|p| p.next_probe),
        ]
        .into_iter()
        .flatten()
        .min(),
        next_backup_check,
    })
}

/// Holds back a `storage` or `walStorage` size larger than the one the existing cluster was
/// given (`status.volumeSizes`) when the volumes' storage class does not allow expansion, and
/// returns the condition saying so.
async fn hold_back_unexpandable_growth(
    db: &AppDatabase,
    ctx: &Context,
    namespace: &str,
    app: &str,
    desired: &mut [DynamicObject],
) -> Result<Option<Observed>, Error> {
    let cluster_exists = ctx
        .children
        .get(CNPG_API, "Cluster", namespace, &naming::cluster(app))
        .is_some();
    let recorded = db.status.as_ref().and_then(|s| s.volume_sizes.clone());
    let (true, Some(recorded)) = (cluster_exists, recorded) else {
        return Ok(None);
    };
    let Some(wanted) = desired.iter_mut().find(|o| type_of(o).1 == "Cluster") else {
        return Ok(None);
    };
    let mut held = Vec::new();
    for (field, running) in [
        ("storage", recorded.storage),
        ("walStorage", recorded.wal_storage),
    ] {
        let size_at = format!("/spec/{field}/size");
        let asked = wanted
            .data
            .pointer(&size_at)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let (Some(running), Some(asked)) = (running, asked) else {
            continue;
        };
        let grows = matches!(
            (
                homelab_render::units::mebibytes(&running),
                homelab_render::units::mebibytes(&asked)
            ),
            (Some(running), Some(asked)) if asked > running
        );
        if !grows {
            continue;
        }
        let class = wanted
            .data
            .pointer(&format!("/spec/{field}/storageClass"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if let Some(class) = unexpandable_class(ctx, class.as_deref()).await? {
            if let Some(size) = wanted.data.pointer_mut(&size_at) {
                *size = running.clone().into();
            }
            held.push(format!(
                "spec.{field}.size asks for {asked} but StorageClass {class} does not allow volume expansion (allowVolumeExpansion is not true), so the cluster keeps {running}"
            ));
        }
    }
    Ok((!held.is_empty()).then(|| {
        Observed::new(
            conditions::VOLUMES_READY,
            Status::False,
            Reason::StorageCannotExpand,
            format!(
                "{}. Move the data to a larger volume by restoring into a new AppDatabase with the larger size, or use a storage class that can expand",
                held.join("; ")
            ),
        )
    }))
}

/// The name of the storage class of volumes that name `class` (the cluster's default class when
/// `None`), if it does not allow expansion.
async fn unexpandable_class(ctx: &Context, class: Option<&str>) -> Result<Option<String>, Error> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let found = match class {
        Some(name) => api.get_opt(name).await?,
        None => api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|c| {
                c.annotations()
                    .get("storageclass.kubernetes.io/is-default-class")
                    .is_some_and(|v| v == "true")
            }),
    };
    Ok(found
        .filter(|c| c.allow_volume_expansion != Some(true))
        .map(|c| c.name_any()))
}

/// Fails when another AppDatabase already archives to the same container under the same server
/// name (the same app name in two namespaces, with one storage account): the second cluster's
/// WAL archiving would fail, and nothing is created for it until the destinations differ.
fn check_backup_destination(
    db: &AppDatabase,
    ctx: &Context,
    policy: &homelab_api::backup_policy::BackupPolicySpec,
) -> Result<(), Error> {
    use super::backups::{BackupDestination, destination_taken_by};
    let destination = BackupDestination::of(db, policy);
    let databases = ctx.databases.state();
    let others = databases.iter().filter_map(|guard| {
        let other = guard.0.as_ref().ok()?;
        let policy_ref = &other.spec.backup.as_ref()?.policy_ref.name;
        let other_policy = ctx.policy(&other.namespace()?, policy_ref)?;
        let other_destination = BackupDestination::of(other, &other_policy.spec);
        Some((other, other_destination))
    });
    match destination_taken_by(db, &destination, others) {
        Some(holder) => Err(Error::BackupDestinationInUse {
            container: destination.container,
            service_url: destination.service_url,
            server_name: destination.server_name,
            holder,
        }),
        None => Ok(()),
    }
}

/// Ensures the password, container and SAS token in Azure. `None` when the Azure side is
/// disabled.
async fn ensure_azure(
    db: &AppDatabase,
    ctx: &Context,
    namespace: &str,
    policy: Option<&PolicyFacts>,
) -> Result<
    Option<(
        crate::azure::Ensured,
        homelab_api::app_database::AzureResources,
    )>,
    Error,
> {
    let Some(azure) = &ctx.azure else {
        return Ok(None);
    };
    let inputs = azure_inputs(db, ctx, namespace, policy).await?;
    let key = format!("{namespace}/{}", db.name_any());
    let ensured = azure.ensure(&key, &inputs, jiff::Timestamp::now()).await?;
    Ok(Some((ensured, inputs.resources())))
}

/// Lists the database's archive for its newest WAL segment (see [`crate::azure::AzureSide::probe_wal`]).
async fn probe_archive(
    db: &AppDatabase,
    ctx: &Context,
    side: &crate::azure::AzureSide,
    namespace: &str,
    server_name: &str,
    policy: &PolicyFacts,
) -> Result<crate::azure::WalProbe, Error> {
    let azure_storage = &policy.spec.storage.azure;
    let last_backup = ctx
        .children
        .get(
            BARMAN_API,
            "ObjectStore",
            namespace,
            &naming::backup_object_store(db.app_name()),
        )
        .and_then(|store| {
            store
                .data
                .pointer(&format!(
                    "/status/serverRecoveryWindow/{server_name}/lastSuccessfulBackupTime"
                ))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
    let archive = crate::azure::WalArchive {
        service_url: azure_storage.service_url(),
        container: naming::container(&azure_storage.container_template, db.app_name()),
        server_name: server_name.to_string(),
        last_backup,
    };
    let known = previous_archive_facts(db, server_name)
        .and_then(|(_, segment)| homelab_azure::WalSegment::parse(&segment));
    Ok(side
        .probe_wal(
            &format!("{namespace}/{}", db.name_any()),
            &archive,
            known,
            super::backups::archive_max_age(&policy.spec),
            jiff::Timestamp::now(),
        )
        .await?)
}

/// The newest archived segment the status last named, if it was this server's.
fn previous_archive_facts(db: &AppDatabase, server_name: &str) -> Option<(Time, String)> {
    let backup = db.status.as_ref()?.backup.as_ref()?;
    if backup.server_name.as_deref() != Some(server_name) {
        return None;
    }
    Some((
        backup.last_archived_wal.clone()?,
        backup.last_archived_wal_segment.clone()?,
    ))
}

/// Where the Azure side of a database lives: the vault behind its External Secrets store, the
/// password secret, and (with a policy) the backup container and its SAS secret.
async fn azure_inputs(
    db: &AppDatabase,
    ctx: &Context,
    namespace: &str,
    policy: Option<&PolicyFacts>,
) -> Result<crate::azure::DatabaseInputs, Error> {
    let app = db.app_name();
    let store = db
        .spec
        .credentials
        .secret_store_ref
        .clone()
        .unwrap_or_else(|| ctx.render.default_secret_store.clone());
    let vault_url = ctx.vault_url(&store, namespace).await?;
    let backup = policy.map(|policy| {
        let azure_storage = &policy.spec.storage.azure;
        crate::azure::BackupInputs {
            service_url: azure_storage.service_url(),
            container: naming::container(&azure_storage.container_template, app),
            sas_secret: match azure_storage.credentials.mode {
                homelab_api::backup_policy::CredentialsMode::SasToken => {
                    Some(naming::default_sas_key_vault_secret(app))
                }
                homelab_api::backup_policy::CredentialsMode::InheritFromAzureAD => None,
            },
            sas_lifetime: crate::azure::parse_validity(&azure_storage.credentials.sas_validity)
                .unwrap_or(std::time::Duration::from_secs(30 * 86_400)),
        }
    });
    let restore_archive = match db
        .spec
        .restore
        .as_ref()
        .and_then(|r| r.from.archive.as_ref())
    {
        Some(archive) => {
            let policy = ctx
                .policy(namespace, &archive.policy_ref.name)
                .ok_or_else(|| Error::MissingReference {
                    kind: super::error::ReferencedKind::BackupPolicy,
                    name: archive.policy_ref.name.clone(),
                    namespace: namespace.to_string(),
                })?;
            let azure_storage = &policy.spec.storage.azure;
            match azure_storage.credentials.mode {
                homelab_api::backup_policy::CredentialsMode::SasToken => {
                    Some(crate::azure::BackupInputs {
                        service_url: azure_storage.service_url(),
                        container: archive.container.clone(),
                        sas_secret: Some(naming::restore_sas_secret(app)),
                        sas_lifetime: std::time::Duration::from_secs(7 * 86_400),
                    })
                }
                homelab_api::backup_policy::CredentialsMode::InheritFromAzureAD => None,
            }
        }
        None => None,
    };
    Ok(crate::azure::DatabaseInputs {
        vault_url,
        password_secret: db.key_vault_password_secret(),
        backup,
        restore_archive,
    })
}

/// Puts an Azure failure on the condition it concerns and on `Ready`.
fn report_azure_failure(observed: &mut ObservedDatabase, err: &Error) {
    let blob = matches!(
        err,
        Error::Azure(
            homelab_azure::AzureError::Unreachable {
                service: homelab_azure::Service::BlobStorage,
                ..
            } | homelab_azure::AzureError::Throttled {
                service: homelab_azure::Service::BlobStorage,
                ..
            } | homelab_azure::AzureError::Forbidden {
                service: homelab_azure::Service::BlobStorage,
                ..
            } | homelab_azure::AzureError::Unauthenticated {
                service: homelab_azure::Service::BlobStorage,
                ..
            } | homelab_azure::AzureError::Service {
                service: homelab_azure::Service::BlobStorage,
                ..
            }
        )
    );
    let type_ = if blob {
        conditions::STORAGE_READY
    } else {
        conditions::CREDENTIALS_READY
    };
    let failed = Observed::new(type_, Status::False, err.reason(), err.to_string());
    conditions::set(&mut observed.conditions, failed.clone());
    conditions::set(
        &mut observed.conditions,
        Observed::new(
            conditions::READY,
            Status::False,
            failed.reason,
            failed.message,
        ),
    );
}

fn resolve_restore_source(
    db: &AppDatabase,
    restore: &homelab_api::app_database::RestoreSpec,
    ctx: &Context,
    namespace: &str,
) -> Result<RestoreSourceFacts, Error> {
    if let Some(source_name) = &restore.from.app_database {
        if source_name == &db.name_any() {
            return Err(Error::InvalidSpec(
                "spec.restore.from.appDatabase names this AppDatabase itself".into(),
            ));
        }
        let source =
            ctx.database(namespace, source_name)
                .ok_or_else(|| Error::MissingReference {
                    kind: super::error::ReferencedKind::AppDatabase,
                    name: source_name.clone(),
                    namespace: namespace.to_string(),
                })?;
        if source.spec.backup.is_none() {
            return Err(Error::InvalidSpec(format!(
                "AppDatabase {source_name:?} has no backup policy, so it has no backups to restore"
            )));
        }
        Ok(RestoreSourceFacts::ObjectStore {
            name: naming::backup_object_store(source.app_name()),
            server_name: homelab_render::facts::server_name(&source),
            names: source.published_names(),
        })
    } else if let Some(archive) = &restore.from.archive {
        let policy = ctx
            .policy(namespace, &archive.policy_ref.name)
            .ok_or_else(|| Error::MissingReference {
                kind: super::error::ReferencedKind::BackupPolicy,
                name: archive.policy_ref.name.clone(),
                namespace: namespace.to_string(),
            })?;
        Ok(RestoreSourceFacts::Archive {
            policy: Box::new(PolicyFacts {
                name: policy.name_any(),
                spec: policy.spec.clone(),
            }),
            names: RestoreSourceFacts::archive_names(archive, db),
        })
    } else {
        Err(Error::InvalidSpec(
            "spec.restore.from must name an appDatabase or an archive".into(),
        ))
    }
}

/// Deletes children this AppDatabase owns that are no longer desired. Drill clusters belong to
/// the BackupPolicy controller, and on-demand Backups are records of what was asked for: both
/// stay.
async fn prune(db: &AppDatabase, desired: &[DynamicObject], ctx: &Context) -> Result<(), Error> {
    let namespace = db.namespace().unwrap_or_default();
    let uid = db.meta().uid.clone().unwrap_or_default();
    let owner_key = format!("{KIND}/{}", db.name_any());
    super::prune_children(ctx, &namespace, &uid, &owner_key, desired, |child| {
        child.object.labels().contains_key(naming::LABEL_DRILL)
            || (child.kind == "Backup"
                && child
                    .object
                    .annotations()
                    .contains_key(naming::ANNOTATION_BACKUP_NOW))
    })
    .await
}

/// What the operator found of a database's backups itself, beside the plugin's recovery window.
struct BackupEvidence<'a> {
    /// The newest WAL segment in the container, and when it was uploaded.
    archived: Option<(Time, String)>,
    /// The database's on-demand backups, as reported in its status.
    on_demand: &'a [homelab_api::app_database::OnDemandBackup],
}

fn observe(
    db: &AppDatabase,
    ctx: &Context,
    app: &str,
    namespace: &str,
    server_name: &str,
    policy: Option<&PolicyFacts>,
    evidence: BackupEvidence<'_>,
) -> ObservedDatabase {
    let BackupEvidence {
        archived,
        on_demand,
    } = evidence;
    let cluster_name = naming::cluster(app);
    let cluster = ctx
        .children
        .get(CNPG_API, "Cluster", namespace, &cluster_name);
    let credentials = ctx.children.get(
        ESO_API,
        "ExternalSecret",
        namespace,
        &naming::credentials_secret(app),
    );

    let cluster_ready = match cluster.as_deref() {
        None => Observed::new(
            conditions::CLUSTER_READY,
            Status::False,
            Reason::ClusterNotFound,
            format!("the CloudNativePG cluster {cluster_name} does not exist yet"),
        ),
        Some(cluster) => cluster_condition(cluster, db.spec.instances),
    };
    let credentials_ready = match credentials.as_deref().and_then(child_ready_condition) {
        Some((true, _, _)) => Observed::new(
            conditions::CREDENTIALS_READY,
            Status::True,
            Reason::CredentialsSynced,
            format!(
                "Secret {} is synced from Key Vault secret {}",
                naming::credentials_secret(app),
                db.key_vault_password_secret()
            ),
        ),
        Some((false, reason, message)) => Observed::new(
            conditions::CREDENTIALS_READY,
            Status::False,
            Reason::CredentialsNotSynced,
            format!(
                "External Secrets Operator cannot sync {}: {reason}: {message}",
                naming::credentials_secret(app)
            ),
        ),
        None => Observed::new(
            conditions::CREDENTIALS_READY,
            Status::Unknown,
            Reason::WaitingForExternalSecrets,
            format!(
                "waiting for External Secrets Operator to sync {} from Key Vault secret {}",
                naming::credentials_secret(app),
                db.key_vault_password_secret()
            ),
        ),
    };

    let mut specific = vec![cluster_ready, credentials_ready];
    let mut backup_status = BackupStatus {
        server_name: Some(server_name.to_string()),
        ..BackupStatus::default()
    };
    if let Some(PolicyFacts { spec: policy, .. }) = policy {
        let container = naming::container(&policy.storage.azure.container_template, app);
        backup_status.container = Some(container.clone());
        let object_store = ctx.children.get(
            BARMAN_API,
            "ObjectStore",
            namespace,
            &naming::backup_object_store(app),
        );
        specific.push(match object_store {
            Some(_) => Observed::new(
                conditions::STORAGE_READY,
                Status::True,
                Reason::ObjectStoreReady,
                format!("backups go to Blob container {container}"),
            ),
            None => Observed::new(
                conditions::STORAGE_READY,
                Status::False,
                Reason::ObjectStoreMissing,
                format!(
                    "the ObjectStore {} does not exist yet",
                    naming::backup_object_store(app)
                ),
            ),
        });
        if let Some(window) = object_store.as_deref().and_then(|o| {
            o.data
                .pointer(&format!("/status/serverRecoveryWindow/{server_name}"))
        }) {
            backup_status.first_recoverability_point =
                time_field(window, "firstRecoverabilityPoint");
            backup_status.last_successful_backup = time_field(window, "lastSuccessfulBackupTime");
            backup_status.last_failed_backup = time_field(window, "lastFailedBackupTime");
        }
        (
            backup_status.first_recoverability_point,
            backup_status.last_successful_backup,
        ) = super::backups::known_backups(
            backup_status.first_recoverability_point.take(),
            backup_status.last_successful_backup.take(),
            on_demand,
        );
        if let Some((at, segment)) = archived {
            backup_status.last_archived_wal = Some(at);
            backup_status.last_archived_wal_segment = Some(segment);
        }
        specific.push(super::backups::backup_health(
            &backup_status,
            cluster.as_deref(),
            policy,
            jiff::Timestamp::now(),
        ));
    }

    let ready = summarize(&specific);
    let mut all = vec![ready];
    all.extend(specific);
    ObservedDatabase {
        conditions: all,
        status: AppDatabaseStatus {
            cluster: Some(cluster_name),
            endpoints: Some(Endpoints {
                read_write: naming::read_write_host(app, namespace),
                read: format!(
                    "{}.{namespace}.svc.cluster.local",
                    naming::read_service(app)
                ),
                pooler: db
                    .spec
                    .pooler
                    .as_ref()
                    .map(|_| format!("{}.{namespace}.svc.cluster.local", naming::pooler(app))),
                port: 5432,
            }),
            credentials_secret: Some(naming::credentials_secret(app)),
            key_vault_secret: Some(db.key_vault_password_secret()),
            backup: Some(backup_status),
            ..db.status.clone().unwrap_or_default()
        },
    }
}

/// `Ready` is `True` when the cluster, its credentials and its backup storage are in place and
/// backups are not failing. A database still waiting for its first backup is ready. Taken from
/// the other conditions of `observed` (a `Ready` among them is skipped): the first that blocks
/// gives its reason and message, so conditions listed earlier take precedence.
fn summarize(observed: &[Observed]) -> Observed {
    let blocking = observed
        .iter()
        .filter(|c| c.type_ != conditions::READY)
        .find(|c| match c.type_ {
            conditions::BACKUP_READY => c.status == Status::False,
            _ => c.status != Status::True,
        });
    match blocking {
        Some(c) => Observed::new(
            conditions::READY,
            if c.status == Status::Unknown {
                Status::Unknown
            } else {
                Status::False
            },
            c.reason,
            c.message.clone(),
        ),
        None => Observed::new(
            conditions::READY,
            Status::True,
            Reason::Ready,
            "the database is ready",
        ),
    }
}

fn cluster_condition(cluster: &DynamicObject, instances: i32) -> Observed {
    let phase = cluster
        .data
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let ready_instances = cluster
        .data
        .pointer("/status/readyInstances")
        .and_then(|p| p.as_i64())
        .unwrap_or(0);
    match child_ready_condition(cluster) {
        Some((true, _, _)) => Observed::new(
            conditions::CLUSTER_READY,
            Status::True,
            Reason::ClusterHealthy,
            format!("{ready_instances}/{instances} instances ready"),
        ),
        Some((false, reason, message)) => Observed::new(
            conditions::CLUSTER_READY,
            Status::False,
            Reason::ClusterNotHealthy,
            format!(
                "CloudNativePG reports {}: {reason} {message} ({ready_instances}/{instances} instances ready)",
                if phase.is_empty() { "not ready" } else { phase }
            ),
        ),
        None => Observed::new(
            conditions::CLUSTER_READY,
            Status::Unknown,
            Reason::ClusterCreating,
            format!(
                "waiting for CloudNativePG to report on the cluster{}",
                if phase.is_empty() {
                    String::new()
                } else {
                    format!(" (phase: {phase})")
                }
            ),
        ),
    }
}

fn time_field(
    value: &serde_json::Value,
    field: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    value
        .get(field)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

async fn write_status(
    db: &AppDatabase,
    api: &Api<AppDatabase>,
    ctx: &Context,
    observed: ObservedDatabase,
) -> Result<(), Error> {
    let current = ctx.status_writes.previous(db, db.status.as_ref());
    let previous = current.clone().unwrap_or_default();
    let mut status = observed.status;
    status.observed_generation = db.meta().generation;
    status.conditions = conditions::merge(
        &previous.conditions,
        &observed.conditions,
        db.meta().generation,
        &now(),
    );
    let changed =
        status::patch_if_changed(api, &ctx.status_writes, db, current.as_ref(), &status).await?;
    if changed {
        ctx.metrics
            .status_patches
            .get_or_create(&crate::metrics::KindLabels { kind: KIND })
            .inc();
        super::publish_transitions(
            &ctx.events,
            &object_reference(db),
            &previous.conditions,
            &status.conditions,
        )
        .await;
    }
    Ok(())
}

fn deletion_held_message(err: &Error) -> String {
    format!(
        "cannot delete the Azure side of this database ({err}); the AppDatabase stays until it can — or set deletionPolicy: Retain to keep the Azure data and let it go"
    )
}

/// While a failing cleanup holds the finalizer, `Ready` says why (the Event alone is gone after
/// an hour). A status write that fails is only logged: the reconcile error is reported anyway.
async fn report_deletion_held(
    db: &AppDatabase,
    api: &Api<AppDatabase>,
    ctx: &Context,
    err: &Error,
    message: &str,
) {
    let current = ctx.status_writes.previous(db, db.status.as_ref());
    let mut status = current.clone().unwrap_or_default();
    conditions::set_written(
        &mut status.conditions,
        &Observed::new(conditions::READY, Status::False, err.reason(), message),
        db.meta().generation,
        &now(),
    );
    if let Err(write) =
        status::patch_if_changed(api, &ctx.status_writes, db, current.as_ref(), &status).await
    {
        tracing::warn!(error = %write, "could not report why deleting is held up");
    }
}

async fn cleanup(db: &AppDatabase, api: &Api<AppDatabase>, ctx: &Context) -> Result<Action, Error> {
    if !finalizer::has_finalizer(db) {
        return Ok(Action::await_change());
    }
    let app = db.app_name();
    let reference = object_reference(db);
    ctx.metrics
        .databases
        .forget(&db.namespace().unwrap_or_default(), &db.name_any());
    match db.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.events
                .publish(
                    &reference,
                    false,
                    "DataRetained",
                    "Delete",
                    format!(
                        "deletionPolicy is Retain: kept the CloudNativePG cluster {} and its volumes, the ObjectStore {}, the backup container and the Key Vault secrets; re-create the AppDatabase to adopt them again",
                        naming::cluster(app),
                        naming::backup_object_store(app)
                    ),
                )
                .await;
        }
        DeletionPolicy::Delete => {
            let namespace = db.namespace().unwrap_or_default();
            let uid = db.meta().uid.clone().unwrap_or_default();
            let owner_key = format!("{KIND}/{}", db.name_any());
            for child in ctx.children.owned_by(&namespace, &uid, &owner_key) {
                ctx.children.delete(&child).await?;
            }
            let mut kept: Vec<String> = Vec::new();
            let mut deleted = vec![format!(
                "the CloudNativePG cluster {} and its backup configuration",
                naming::cluster(app)
            )];
            if let Some(azure) = &ctx.azure {
                // What was recorded when it was ensured; a database from before the record is
                // worked out from its current references, as it was ensured.
                let resources = match db.status.as_ref().and_then(|s| s.azure.clone()) {
                    Some(recorded) => recorded,
                    None => {
                        let policy = db.spec.backup.as_ref().and_then(|b| {
                            ctx.policy(&namespace, &b.policy_ref.name)
                                .map(|p| PolicyFacts {
                                    name: b.policy_ref.name.clone(),
                                    spec: p.spec.clone(),
                                })
                        });
                        azure_inputs(db, ctx, &namespace, policy.as_ref())
                            .await?
                            .resources()
                    }
                };
                let outcome = match azure.delete_recorded(&resources).await {
                    Ok(outcome) => outcome,
                    Err(err) => {
                        let err = Error::from(err);
                        let message = deletion_held_message(&err);
                        report_deletion_held(db, api, ctx, &err, &message).await;
                        ctx.events
                            .publish(&reference, true, err.reason().as_str(), "Delete", message)
                            .await;
                        return Err(err);
                    }
                };
                azure.forget(&format!("{namespace}/{}", db.name_any()));
                for container in &outcome.containers {
                    deleted.push(format!(
                        "the Blob container {} ({})",
                        container.name, container.service_url
                    ));
                }
                for secret in &outcome.secrets {
                    deleted.push(format!(
                        "the Key Vault secret {} ({})",
                        secret.name, secret.vault_url
                    ));
                }
                kept.extend(outcome.kept_secrets.iter().map(|secret| {
                    format!(
                        "the Key Vault secret {} ({}): the operator did not create it, or it was gone",
                        secret.name, secret.vault_url
                    )
                }));
            }
            ctx.events
                .publish(
                    &reference,
                    false,
                    "DataDeleted",
                    "Delete",
                    if kept.is_empty() {
                        format!("deletionPolicy is Delete: deleted {}", deleted.join(", "))
                    } else {
                        format!(
                            "deletionPolicy is Delete: deleted {}; kept {}",
                            deleted.join(", "),
                            kept.join(", ")
                        )
                    },
                )
                .await;
        }
    }
    finalizer::remove(api, db).await?;
    Ok(Action::await_change())
}
