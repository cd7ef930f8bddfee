//! Restore drills, run by the BackupPolicy controller: on the policy's `drill.schedule`, or when
//! `homelab.io/drill-now=<token>` appears on the policy or on a database, each database using the
//! policy is restored into a throw-away cluster (`{app}-drill-{n}`, owned by the policy, labelled
//! `homelab.io/restore-drill=<database>`, no WAL archiving: it reads the source's archive and never
//! writes to it, and it never touches the production cluster). The drill succeeds when
//! CloudNativePG reports the cluster `Ready`, fails when that takes longer than `drill.timeout`;
//! the outcome goes into `status.drills` and the cluster is deleted (CloudNativePG's PVCs are
//! owned by it and follow through the garbage collector).
//!
//! Nothing is kept only in memory, so an operator restart mid-drill resumes the same drill:
//! - the drill cluster itself carries its start time, trigger and expected recovery point as
//!   annotations, so a drill cluster without a status record is adopted, never duplicated;
//! - a `Running` record whose cluster is gone is settled as failed, never restarted;
//! - a cluster is deleted only after its final record is stored, so a restart between the two
//!   finds a finished record and deletes the leftover cluster;
//! - `drill-now` tokens already acted on are remembered in the policy's annotation
//!   [`ANNOTATION_DRILL_HANDLED`].

use std::collections::BTreeMap;

use homelab_api::backup_policy::{BackupPolicyStatus, DrillOutcome, DrillRecord, DrillSpec};
use homelab_api::conditions::{self, Observed, Status};
use homelab_api::{AppDatabase, BackupPolicy, naming};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::schedule::{self, Schedule};
use super::{Context, Error, child_ready_condition, object_reference};
use crate::kubernetes::children::OwnedChild;

const CNPG_API: &str = "postgresql.cnpg.io/v1";

/// On a drill cluster: when the drill started (RFC 3339).
pub const ANNOTATION_DRILL_STARTED: &str = "homelab.io/drill-started";
/// On a drill cluster: what started it (`schedule`, or `drill-now=<token>`).
pub const ANNOTATION_DRILL_TRIGGER: &str = "homelab.io/drill-trigger";
/// On a drill cluster: the newest point the source had archived when the drill started (the
/// point the restore recovers to).
pub const ANNOTATION_DRILL_RECOVERY_POINT: &str = "homelab.io/drill-recovery-point";
/// On the BackupPolicy: the `drill-now` tokens already acted on, as a JSON object from database
/// name (or `*` for the policy's own annotation) to token.
pub const ANNOTATION_DRILL_HANDLED: &str = "homelab.io/drill-now-handled";

/// How often a running drill is looked at even without events.
const RUNNING_POLL: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// The key of the policy's own `drill-now` token in [`ANNOTATION_DRILL_HANDLED`].
const POLICY_TOKEN_KEY: &str = "*";

/// What one pass over the drills decided.
pub struct DrillPass {
    /// `DrillSucceeded`, when drills are configured.
    pub condition: Option<Observed>,
    /// When to look again (a drill times out, or the next one is due).
    pub wake: Option<jiff::Timestamp>,
}

/// Advances every drill of `policy`: settles running ones, starts due ones, removes finished
/// clusters, and updates `status.drills`, `lastDrillOutcome` and the drill gauges.
pub async fn reconcile(
    policy: &BackupPolicy,
    ctx: &Context,
    status: &mut BackupPolicyStatus,
    now: jiff::Timestamp,
) -> Result<DrillPass, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let stored: Vec<DrillRecord> = policy
        .status
        .as_ref()
        .map(|s| s.drills.clone())
        .unwrap_or_default();
    let clusters: Vec<OwnedChild> = ctx
        .children
        .owned_by(
            &namespace,
            policy.meta().uid.as_deref().unwrap_or_default(),
            &format!("BackupPolicy/{name}"),
        )
        .into_iter()
        .filter(|c| c.kind == "Cluster" && c.object.labels().contains_key(naming::LABEL_DRILL))
        .collect();

    // Clusters whose final record is already stored: what is left of a finished drill.
    let mut requeue_soon = false;
    for cluster in &clusters {
        let finished = stored
            .iter()
            .any(|r| r.cluster == cluster.object.name_any() && r.outcome != DrillOutcome::Running);
        if finished && cluster.object.metadata.deletion_timestamp.is_none() {
            tracing::info!(cluster = %cluster.object.name_any(), "deleting a finished drill cluster");
            ctx.children.delete(cluster).await?;
        }
    }

    let reference = object_reference(policy);
    let Some(drill) = policy.spec.drill.as_ref() else {
        // Drills were turned off: a drill still running is ended, not left behind.
        let mut records = stored.clone();
        let ended = settle_orphans(
            ctx,
            &reference,
            &clusters,
            &mut records,
            &std::collections::BTreeSet::new(),
            "restore drills were turned off in the policy (spec.drill removed) while this drill ran",
            now,
        )
        .await;
        status.last_drill_outcome = records
            .iter()
            .max_by_key(|r| r.started.0)
            .map(|r| outcome_text(r.outcome).to_string());
        status.drills = records;
        return Ok(DrillPass {
            condition: None,
            wake: (ended || requeue_soon).then(|| now + jiff::SignedDuration::from_secs(1)),
        });
    };
    let timeout = parse_timeout(&drill.timeout)?;
    let cron = Schedule::parse(&drill.schedule)
        .map_err(|e| Error::InvalidSpec(format!("spec.drill.schedule: {e}")))?;
    // Read from the API, not the AppDatabase controller's cache: this reconcile may have been
    // triggered by this controller's own watch of AppDatabases (a new drill-now token, a first
    // backup) before that other cache has seen the change, and nothing would trigger it again.
    let database_api: Api<kube::core::error_boundary::DeserializeGuard<AppDatabase>> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let databases: Vec<std::sync::Arc<AppDatabase>> = database_api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|g| g.0.ok())
        .filter(|db| {
            db.spec
                .backup
                .as_ref()
                .is_some_and(|b| b.policy_ref.name == name)
        })
        .map(std::sync::Arc::new)
        .collect();

    let handled_before = handled_tokens(policy);
    let mut handled = handled_before.clone();
    let policy_token = token(policy.annotations());
    let mut records = stored.clone();
    let mut wake: Option<jiff::Timestamp> = None;
    let drilled: std::collections::BTreeSet<String> =
        databases.iter().map(|db| db.name_any()).collect();
    if settle_orphans(
        ctx,
        &reference,
        &clusters,
        &mut records,
        &drilled,
        "the database no longer uses this BackupPolicy (or was deleted) while this drill ran",
        now,
    )
    .await
    {
        requeue_soon = true;
    }

    for db in &databases {
        let db_name = db.name_any();
        let db_token = token(db.annotations());
        let pending_tokens = {
            let mut t = Vec::new();
            if let Some(tok) = &db_token
                && handled.get(&db_name) != Some(tok)
            {
                t.push((db_name.clone(), tok.clone()));
            }
            if let Some(tok) = &policy_token
                && handled.get(POLICY_TOKEN_KEY) != Some(tok)
                // The policy's token is handled per database once all have acted on it.
                && handled.get(&format!("{POLICY_TOKEN_KEY}{db_name}")) != Some(tok)
            {
                t.push((format!("{POLICY_TOKEN_KEY}{db_name}"), tok.clone()));
            }
            t
        };

        // A drill in progress: its cluster exists and has no final record.
        let mut active: Vec<&OwnedChild> = clusters
            .iter()
            .filter(|c| c.object.labels().get(naming::LABEL_DRILL) == Some(&db_name))
            .filter(|c| {
                !records
                    .iter()
                    .any(|r| r.cluster == c.object.name_any() && r.outcome != DrillOutcome::Running)
            })
            .collect();
        active.sort_by_key(|c| started_at(&c.object));
        if let Some(cluster) = active.first() {
            for extra in active.iter().skip(1) {
                // Never expected: only one drill is started at a time. Keep the oldest.
                tracing::warn!(cluster = %extra.object.name_any(), "deleting a second drill cluster of one database");
                ctx.children.delete(extra).await?;
            }
            let hint = failing_backups(db);
            let settled = settle(
                cluster,
                &db_name,
                &mut records,
                timeout,
                hint.as_deref(),
                now,
            );
            match settled {
                Settled::Running { deadline } => {
                    // Also look again soon: not every change that ends a drill reaches this
                    // controller as an event (a database leaving the policy maps to no
                    // policy any more). Looking costs no writes.
                    wake = earliest(wake, Some(deadline.min(now + RUNNING_POLL)));
                }
                Settled::Finished(record) => {
                    requeue_soon = true;
                    publish_outcome(ctx, &reference, &record, &drill.timeout).await;
                }
            }
            for (key, tok) in pending_tokens {
                handled.insert(key, tok);
            }
            continue;
        }

        // A running record without its cluster.
        if let Some(record) = records
            .iter_mut()
            .find(|r| r.database == db_name && r.outcome == DrillOutcome::Running)
        {
            let api: Api<DynamicObject> = Api::namespaced_with(
                ctx.client.clone(),
                &namespace,
                &homelab_render::kinds::CLUSTER.api_resource(),
            );
            if api.get_opt(&record.cluster).await?.is_some() {
                // Created a moment ago; the cache has not seen it yet.
                requeue_soon = true;
                continue;
            }
            record.outcome = DrillOutcome::Failed;
            record.finished = Some(Time(now));
            record.message = Some(format!(
                "the drill cluster {} was deleted before CloudNativePG reported it ready",
                record.cluster
            ));
            let record = record.clone();
            publish_outcome(ctx, &reference, &record, &drill.timeout).await;
            continue;
        }

        // Is a drill due?
        let trigger = if let Some((_, tok)) = pending_tokens.first() {
            Some(format!("{}={tok}", naming::ANNOTATION_DRILL_NOW))
        } else {
            // Runs that fell while the last drill was still going are skipped, not queued up.
            let anchor = records
                .iter()
                .filter(|r| r.database == db_name)
                .map(|r| {
                    r.finished
                        .as_ref()
                        .map_or(r.started.0, |f| f.0.max(r.started.0))
                })
                .max()
                .unwrap_or_else(|| {
                    let policy_created = policy.meta().creation_timestamp.as_ref().map(|t| t.0);
                    let db_created = db.meta().creation_timestamp.as_ref().map(|t| t.0);
                    policy_created.max(db_created).unwrap_or(now)
                });
            match schedule::next_due(&cron, anchor) {
                Some(due) if due <= now => Some("schedule".to_string()),
                due => {
                    wake = earliest(wake, due);
                    None
                }
            }
        };
        let Some(trigger) = trigger else {
            continue;
        };
        let record = start(policy, db, ctx, &records, &trigger, now).await?;
        match record.outcome {
            DrillOutcome::Running => {
                ctx.events
                    .publish(
                        &reference,
                        false,
                        "DrillStarted",
                        "Drill",
                        format!(
                            "restore drill of AppDatabase {db_name} started ({trigger}): restoring into the throw-away cluster {}",
                            record.cluster
                        ),
                    )
                    .await;
                wake = earliest(wake, record.started.0.checked_add(timeout).ok());
            }
            _ => publish_outcome(ctx, &reference, &record, &drill.timeout).await,
        }
        records.insert(0, record);
        for (key, tok) in pending_tokens {
            handled.insert(key, tok);
        }
    }

    // The policy's own token is handled once every database has acted on it.
    if let Some(tok) = &policy_token
        && databases
            .iter()
            .all(|db| handled.get(&format!("{POLICY_TOKEN_KEY}{}", db.name_any())) == Some(tok))
    {
        handled.retain(|k, _| !k.starts_with(POLICY_TOKEN_KEY));
        handled.insert(POLICY_TOKEN_KEY.to_string(), tok.clone());
    }
    if handled != handled_before {
        remember_tokens(policy, ctx, &handled).await?;
    }

    records = trim(records, drill);
    status.last_drill_outcome = records
        .iter()
        .max_by_key(|r| r.started.0)
        .map(|r| outcome_text(r.outcome).to_string());
    status.drills = records;
    export_metrics(ctx, &namespace, &databases, &status.drills);
    if requeue_soon {
        wake = earliest(wake, Some(now + jiff::SignedDuration::from_secs(1)));
    }
    Ok(DrillPass {
        condition: Some(drill_condition(&databases, &status.drills)),
        wake,
    })
}

/// Ends the drills of databases that are no longer drilled by this policy (`keep` names those
/// that are): each is recorded `Failed` with `reason`; their clusters are deleted on the next
/// pass, once the record is stored. Returns whether anything changed.
async fn settle_orphans(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    clusters: &[OwnedChild],
    records: &mut Vec<DrillRecord>,
    keep: &std::collections::BTreeSet<String>,
    reason: &str,
    now: jiff::Timestamp,
) -> bool {
    let mut ended = Vec::new();
    for cluster in clusters {
        let Some(db) = cluster.object.labels().get(naming::LABEL_DRILL) else {
            continue;
        };
        let name = cluster.object.name_any();
        if keep.contains(db) {
            continue;
        }
        match records.iter_mut().find(|r| r.cluster == name) {
            Some(r) if r.outcome != DrillOutcome::Running => {}
            Some(r) => {
                r.outcome = DrillOutcome::Failed;
                r.finished = Some(Time(now));
                r.message = Some(reason.to_string());
                ended.push(r.clone());
            }
            None => {
                let record = DrillRecord {
                    database: db.clone(),
                    cluster: name,
                    started: Time(started_at(&cluster.object).unwrap_or(now)),
                    finished: Some(Time(now)),
                    outcome: DrillOutcome::Failed,
                    recovery_seconds: None,
                    data_loss_seconds: None,
                    message: Some(reason.to_string()),
                };
                records.insert(0, record.clone());
                ended.push(record);
            }
        }
    }
    // Running records of such databases whose cluster is gone.
    for r in records.iter_mut() {
        if r.outcome == DrillOutcome::Running
            && !keep.contains(&r.database)
            && !clusters.iter().any(|c| c.object.name_any() == r.cluster)
        {
            r.outcome = DrillOutcome::Failed;
            r.finished = Some(Time(now));
            r.message = Some(reason.to_string());
            ended.push(r.clone());
        }
    }
    for record in &ended {
        publish_outcome(ctx, reference, record, "").await;
    }
    !ended.is_empty()
}

enum Settled {
    Running { deadline: jiff::Timestamp },
    Finished(DrillRecord),
}

/// CloudNativePG's phase of a cluster whose instance-creation (here: recovery) Job gave up.
const PHASE_UNRECOVERABLE: &str = "Cluster is unrecoverable and needs manual intervention";

/// What the source database's own `BackupReady` says when it is `False`: a drill that cannot
/// restore usually fails for the reason the source's archiving fails (the same ObjectStore and SAS
/// token), and that condition names what to check.
fn failing_backups(db: &AppDatabase) -> Option<String> {
    let condition = db
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::BACKUP_READY && c.status == "False")?;
    Some(format!(
        "the source database's backups are failing too ({}: {})",
        condition.reason, condition.message
    ))
}

/// Looks at a drill cluster: `Ready` → succeeded; CloudNativePG giving up on the recovery, or
/// past the timeout → failed (with `hint`, what is known about the source's archive, appended);
/// else running. Updates (or, after a restart that lost it, re-creates) its record.
fn settle(
    cluster: &OwnedChild,
    db_name: &str,
    records: &mut Vec<DrillRecord>,
    timeout: jiff::SignedDuration,
    hint: Option<&str>,
    now: jiff::Timestamp,
) -> Settled {
    let name = cluster.object.name_any();
    let started = started_at(&cluster.object).unwrap_or(now);
    let index = match records.iter().position(|r| r.cluster == name) {
        Some(i) => i,
        None => {
            records.insert(
                0,
                DrillRecord {
                    database: db_name.to_string(),
                    cluster: name.clone(),
                    started: Time(started),
                    finished: None,
                    outcome: DrillOutcome::Running,
                    recovery_seconds: None,
                    data_loss_seconds: None,
                    message: None,
                },
            );
            0
        }
    };
    let record = &mut records[index];
    let deadline = started.checked_add(timeout).unwrap_or(started);
    let ready = child_ready_condition(&cluster.object);
    if let Some((true, _, _)) = ready {
        // CloudNativePG's own timestamp of the transition to Ready, so a restart of the
        // operator does not stretch the measured recovery time.
        let ready_at = ready_transition(&cluster.object)
            .unwrap_or(now)
            .max(started);
        record.outcome = DrillOutcome::Succeeded;
        record.finished = Some(Time(ready_at));
        record.recovery_seconds = Some(ready_at.duration_since(started).as_secs());
        record.data_loss_seconds = recovery_point(&cluster.object)
            .map(|point| started.duration_since(point).as_secs().max(0));
        record.message = Some(format!(
            "CloudNativePG reported the restored cluster ready after {}s",
            ready_at.duration_since(started).as_secs()
        ));
        return Settled::Finished(record.clone());
    }
    let status = |field: &str| {
        cluster
            .object
            .data
            .pointer(&format!("/status/{field}"))
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
    };
    let phase = status("phase");
    let hint = hint.map(|h| format!("; {h}")).unwrap_or_default();
    if phase == Some(PHASE_UNRECOVERABLE) {
        record.outcome = DrillOutcome::Failed;
        record.finished = Some(Time(now));
        record.message = Some(format!(
            "CloudNativePG could not restore the backup into {name}: {}{hint}",
            status("phaseReason").unwrap_or(PHASE_UNRECOVERABLE)
        ));
        return Settled::Finished(record.clone());
    }
    if now >= deadline {
        record.outcome = DrillOutcome::Failed;
        record.finished = Some(Time(now));
        record.message = Some(format!(
            "timed out: CloudNativePG did not report the restored cluster {name} ready within the drill timeout (last phase: {}){hint}",
            phase.unwrap_or("no phase reported")
        ));
        return Settled::Finished(record.clone());
    }
    Settled::Running {
        deadline: deadline + jiff::SignedDuration::from_secs(1),
    }
}

/// Creates the drill cluster for `db` and returns its `Running` record, or a `Failed` record
/// without a cluster when there is nothing to restore yet.
async fn start(
    policy: &BackupPolicy,
    db: &AppDatabase,
    ctx: &Context,
    records: &[DrillRecord],
    trigger: &str,
    now: jiff::Timestamp,
) -> Result<DrillRecord, Error> {
    let db_name = db.name_any();
    let sequence = records
        .iter()
        .filter(|r| r.database == db_name)
        .filter_map(|r| r.cluster.rsplit('-').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let cluster = naming::drill_cluster(db.app_name(), sequence);
    let backup = db.status.as_ref().and_then(|s| s.backup.as_ref());
    let last_backup = backup
        .and_then(|b| b.last_successful_backup.as_ref())
        .map(|t| t.0);
    let mut record = DrillRecord {
        database: db_name.clone(),
        cluster: cluster.clone(),
        started: Time(now),
        finished: None,
        outcome: DrillOutcome::Running,
        recovery_seconds: None,
        data_loss_seconds: None,
        message: None,
    };
    if last_backup.is_none() || !ctx.children.has_kind(CNPG_API, "Cluster") {
        record.outcome = DrillOutcome::Failed;
        record.finished = Some(Time(now));
        record.message = Some(format!(
            "AppDatabase {db_name} has no completed base backup to restore yet (status.backup.lastSuccessfulBackup is empty); no drill cluster was created"
        ));
        return Ok(record);
    }
    let recovery_point = backup
        .and_then(|b| b.last_archived_wal.as_ref())
        .map(|t| t.0)
        .max(last_backup);
    let facts = homelab_render::DrillFacts {
        sequence,
        server_name: super::app_database::server_name(db),
        source_image: super::app_database::cluster_image(
            ctx,
            &db.namespace().unwrap_or_default(),
            db.app_name(),
        ),
    };
    let mut object = homelab_render::render_restore_drill(policy, db, &facts, &ctx.render)
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let annotations = object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_DRILL_STARTED.into(), now.to_string());
    annotations.insert(ANNOTATION_DRILL_TRIGGER.into(), trigger.to_string());
    if let Some(point) = recovery_point {
        annotations.insert(ANNOTATION_DRILL_RECOVERY_POINT.into(), point.to_string());
    }
    ctx.children.apply(&object).await?;
    Ok(record)
}

async fn publish_outcome(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    record: &DrillRecord,
    timeout: &str,
) {
    let (warning, reason, note) = match record.outcome {
        DrillOutcome::Succeeded => (
            false,
            "DrillSucceeded",
            format!(
                "restore drill of AppDatabase {} succeeded: the cluster {} was healthy after {}s (RTO achieved){}; deleting it",
                record.database,
                record.cluster,
                record.recovery_seconds.unwrap_or_default(),
                record
                    .data_loss_seconds
                    .map(|s| format!(
                        ", recovering to a point {s}s before the drill started (RPO achieved)"
                    ))
                    .unwrap_or_default()
            ),
        ),
        DrillOutcome::Failed
            if record
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("timed out")) =>
        {
            (
                true,
                "DrillTimedOut",
                format!(
                    "restore drill of AppDatabase {} timed out after {timeout}: {}; deleting the cluster",
                    record.database,
                    record.message.as_deref().unwrap_or_default()
                ),
            )
        }
        DrillOutcome::Failed => (
            true,
            "DrillFailed",
            format!(
                "restore drill of AppDatabase {} failed: {}",
                record.database,
                record.message.as_deref().unwrap_or_default()
            ),
        ),
        DrillOutcome::Running => return,
    };
    ctx.events
        .publish(reference, warning, reason, "Drill", note)
        .await;
}

/// `DrillSucceeded`: the last finished drill of every database using the policy.
fn drill_condition(databases: &[std::sync::Arc<AppDatabase>], records: &[DrillRecord]) -> Observed {
    let mut failed = Vec::new();
    let mut succeeded = Vec::new();
    let mut missing = Vec::new();
    for db in databases {
        let name = db.name_any();
        let last = records
            .iter()
            .filter(|r| r.database == name && r.outcome != DrillOutcome::Running)
            .max_by_key(|r| r.started.0);
        match last {
            Some(r) if r.outcome == DrillOutcome::Succeeded => succeeded.push(format!(
                "{name} in {}s",
                r.recovery_seconds.unwrap_or_default()
            )),
            Some(r) => failed.push(format!(
                "{name} ({})",
                r.message.as_deref().unwrap_or("failed")
            )),
            None => missing.push(name),
        }
    }
    if !failed.is_empty() {
        return Observed::new(
            conditions::DRILL_SUCCEEDED,
            Status::False,
            "DrillFailed",
            format!("the last restore drill failed for {}", failed.join("; ")),
        );
    }
    if succeeded.is_empty() {
        return Observed::new(
            conditions::DRILL_SUCCEEDED,
            Status::Unknown,
            "NoDrillYet",
            "no restore drill has finished yet",
        );
    }
    let mut message = format!(
        "the last restore drill succeeded for {}",
        succeeded.join(", ")
    );
    if !missing.is_empty() {
        message.push_str(&format!("; not drilled yet: {}", missing.join(", ")));
    }
    Observed::new(
        conditions::DRILL_SUCCEEDED,
        Status::True,
        "DrillsSucceeded",
        message,
    )
}

/// Keeps the newest `drill.history` records per database, newest first.
fn trim(mut records: Vec<DrillRecord>, drill: &DrillSpec) -> Vec<DrillRecord> {
    records.sort_by(|a, b| {
        b.started
            .0
            .cmp(&a.started.0)
            .then(a.database.cmp(&b.database))
    });
    let keep = usize::try_from(drill.history.max(1)).unwrap_or(1);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    records.retain(|r| {
        let count = counts.entry(r.database.clone()).or_insert(0);
        *count += 1;
        *count <= keep
    });
    records
}

fn export_metrics(
    ctx: &Context,
    namespace: &str,
    databases: &[std::sync::Arc<AppDatabase>],
    records: &[DrillRecord],
) {
    for db in databases {
        let name = db.name_any();
        let finished: Vec<&DrillRecord> = records
            .iter()
            .filter(|r| r.database == name && r.outcome != DrillOutcome::Running)
            .collect();
        let last = finished.iter().max_by_key(|r| r.started.0);
        let last_success = finished
            .iter()
            .filter(|r| r.outcome == DrillOutcome::Succeeded)
            .max_by_key(|r| r.started.0);
        ctx.metrics.databases.set_drill(
            namespace,
            &name,
            last.map(|r| r.outcome == DrillOutcome::Succeeded),
            last_success
                .and_then(|r| r.recovery_seconds)
                .map(|s| s as f64),
        );
    }
}

fn outcome_text(outcome: DrillOutcome) -> &'static str {
    match outcome {
        DrillOutcome::Running => "Running",
        DrillOutcome::Succeeded => "Succeeded",
        DrillOutcome::Failed => "Failed",
    }
}

fn earliest(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn token(annotations: &BTreeMap<String, String>) -> Option<String> {
    annotations
        .get(naming::ANNOTATION_DRILL_NOW)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn handled_tokens(policy: &BackupPolicy) -> BTreeMap<String, String> {
    policy
        .annotations()
        .get(ANNOTATION_DRILL_HANDLED)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

async fn remember_tokens(
    policy: &BackupPolicy,
    ctx: &Context,
    handled: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let api: Api<BackupPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let value = serde_json::to_string(handled).unwrap_or_default();
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_DRILL_HANDLED: value}}});
    let params = PatchParams {
        field_manager: Some(naming::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(&policy.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn started_at(cluster: &DynamicObject) -> Option<jiff::Timestamp> {
    cluster
        .annotations()
        .get(ANNOTATION_DRILL_STARTED)
        .and_then(|s| s.parse().ok())
        .or_else(|| cluster.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn recovery_point(cluster: &DynamicObject) -> Option<jiff::Timestamp> {
    cluster
        .annotations()
        .get(ANNOTATION_DRILL_RECOVERY_POINT)
        .and_then(|s| s.parse().ok())
}

fn ready_transition(cluster: &DynamicObject) -> Option<jiff::Timestamp> {
    cluster
        .data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
        .and_then(|c| super::backups::time_field(c, "lastTransitionTime"))
}

/// `drill.timeout`: minutes (`m`) or hours (`h`).
fn parse_timeout(text: &str) -> Result<jiff::SignedDuration, Error> {
    let invalid = || {
        Error::InvalidSpec(format!(
            "spec.drill.timeout {text:?} must be a number of minutes (such as 30m) or hours (such as 2h)"
        ))
    };
    let text = text.trim();
    let (number, unit) = text.split_at(text.len().checked_sub(1).ok_or_else(invalid)?);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "m" => Ok(jiff::SignedDuration::from_mins(number)),
        "h" => Ok(jiff::SignedDuration::from_hours(number)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(db: &str, cluster: &str, started: &str, outcome: DrillOutcome) -> DrillRecord {
        DrillRecord {
            database: db.into(),
            cluster: cluster.into(),
            started: Time(started.parse().unwrap()),
            finished: None,
            outcome,
            recovery_seconds: Some(10),
            data_loss_seconds: None,
            message: None,
        }
    }

    #[test]
    fn history_is_kept_per_database_newest_first() {
        let drill = DrillSpec {
            schedule: "0 4 * * 0".into(),
            timeout: "30m".into(),
            history: 2,
        };
        let records = vec![
            record(
                "a",
                "a-drill-1",
                "2026-11-01T00:00:00Z",
                DrillOutcome::Failed,
            ),
            record(
                "a",
                "a-drill-3",
                "2026-11-03T00:00:00Z",
                DrillOutcome::Succeeded,
            ),
            record(
                "b",
                "b-drill-1",
                "2026-11-01T00:00:00Z",
                DrillOutcome::Succeeded,
            ),
            record(
                "a",
                "a-drill-2",
                "2026-11-02T00:00:00Z",
                DrillOutcome::Succeeded,
            ),
        ];
        let kept: Vec<String> = trim(records, &drill)
            .into_iter()
            .map(|r| r.cluster)
            .collect();
        assert_eq!(kept, ["a-drill-3", "a-drill-2", "b-drill-1"]);
    }

    #[test]
    fn timeouts_are_minutes_or_hours() {
        assert_eq!(
            parse_timeout("30m").unwrap(),
            jiff::SignedDuration::from_mins(30)
        );
        assert_eq!(
            parse_timeout("2h").unwrap(),
            jiff::SignedDuration::from_hours(2)
        );
        assert!(parse_timeout("2d").is_err());
        assert!(parse_timeout("").is_err());
    }
}
