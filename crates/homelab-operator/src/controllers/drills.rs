//! Restore drills, run by the BackupPolicy controller: on the policy's `drill.schedule`, or when
//! `homelab.io/drill-now=<token>` appears on the policy or on a database, each database using the
//! policy is restored into a throw-away cluster (`{app}-drill-{n}`, owned by the policy, labelled
//! `homelab.io/restore-drill=<database>`, no WAL archiving: it reads the source's archive and never
//! writes to it, and it never touches the production cluster). Once CloudNativePG reports it
//! `Ready`, a Job (`{app}-drill-{n}-verify`) logs into the restored database with the source's
//! own credentials and reports what it holds: its tables, the newest heartbeat the heartbeat
//! writer left in it, and the answer to the database's `drillQuery`. The drill fails when the
//! restored database is empty, the heartbeat is missing, the query fails, or all this takes
//! longer than `drill.timeout`; otherwise its RPO (start − newest heartbeat) and RTO (start →
//! the verification's answer) are held to `drill.objectives` (`Succeeded` or `ObjectiveMissed`).
//! The outcome goes into `status.drills` and the cluster is deleted (CloudNativePG's PVCs are
//! owned by it and follow through the garbage collector; the Job is deleted after it).
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
use homelab_api::reasons::Reason;
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
    /// The first step that failed, for one database. The other databases' drills went on and
    /// everything decided is in the status; the caller writes it and then returns this error.
    pub error: Option<Error>,
}

/// Ends this database's part of the pass when `result` is an error, recording it in `failures`
/// so that the other databases' drills go on and what was decided for them is still written.
macro_rules! or_next_database {
    ($failures:ident, $database:expr, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(err) => {
                $failures.push(($database.clone(), Error::from(err)));
                continue;
            }
        }
    };
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
    let owned: Vec<OwnedChild> = ctx
        .children
        .owned_by(
            &namespace,
            policy.meta().uid.as_deref().unwrap_or_default(),
            &format!("BackupPolicy/{name}"),
        )
        .into_iter()
        .filter(|c| c.object.labels().contains_key(naming::LABEL_DRILL))
        .collect();
    let (clusters, jobs): (Vec<OwnedChild>, Vec<OwnedChild>) =
        owned.into_iter().partition(|c| c.kind == "Cluster");
    let jobs: Vec<OwnedChild> = jobs.into_iter().filter(|c| c.kind == "Job").collect();

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
    // Verification Jobs whose drill cluster is gone (its pods follow through the garbage
    // collector).
    for job in &jobs {
        let orphaned = !clusters
            .iter()
            .any(|c| naming::drill_verification(&c.object.name_any()) == job.object.name_any());
        if orphaned && job.object.metadata.deletion_timestamp.is_none() {
            ctx.children.delete(job).await?;
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
            error: None,
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
    let mut failures: Vec<(String, Error)> = Vec::new();
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
                or_next_database!(failures, db_name, ctx.children.delete(extra).await);
            }
            let hint = failing_backups(db);
            let verification =
                if child_ready_condition(&cluster.object).is_some_and(|(ready, _, _)| ready) {
                    or_next_database!(
                        failures,
                        db_name,
                        observe_verification(ctx, &namespace, &cluster.object.name_any()).await
                    )
                } else {
                    Verification::NotStarted
                };
            let judgement = or_next_database!(failures, db_name, Judgement::new(drill, timeout));
            let settled = settle(
                cluster,
                &db_name,
                &mut records,
                &judgement,
                hint.as_deref(),
                &verification,
                now,
            );
            match settled {
                Settled::Verify => {
                    or_next_database!(
                        failures,
                        db_name,
                        start_verification(policy, db, ctx, &cluster.object.name_any()).await
                    );
                    ctx.events
                        .publish(
                            &reference,
                            false,
                            "DrillRestored",
                            "Drill",
                            format!(
                                "restore drill of AppDatabase {db_name}: CloudNativePG reported {} ready; checking the restored data with the Job {}",
                                cluster.object.name_any(),
                                naming::drill_verification(&cluster.object.name_any())
                            ),
                        )
                        .await;
                    wake = earliest(wake, Some(now + jiff::SignedDuration::from_secs(5)));
                }
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
            if or_next_database!(failures, db_name, api.get_opt(&record.cluster).await).is_some() {
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
        let record = or_next_database!(
            failures,
            db_name,
            start(policy, db, ctx, &records, &trigger, now).await
        );
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
    let mut error = None;
    if handled != handled_before
        && let Err(err) = remember_tokens(policy, ctx, &handled).await
    {
        error = Some(err);
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
    let condition = match failures.first() {
        Some(_) => blocked_condition(&failures),
        None => drill_condition(&databases, &status.drills),
    };
    Ok(DrillPass {
        condition: Some(condition),
        wake,
        error: failures.into_iter().map(|(_, err)| err).next().or(error),
    })
}

/// `DrillSucceeded` when a drill could not be started, checked or cleaned up: the first
/// failure's reason, and every failing database with what failed.
fn blocked_condition(failures: &[(String, Error)]) -> Observed {
    let reason = failures
        .first()
        .map_or(Reason::DrillFailed, |(_, err)| err.reason());
    let each = failures
        .iter()
        .map(|(database, err)| format!("AppDatabase {database}: {err}"))
        .collect::<Vec<_>>()
        .join("; ");
    Observed::new(
        conditions::DRILL_SUCCEEDED,
        Status::False,
        reason,
        format!(
            "a restore drill could not go on ({each}); it is tried again, and the other databases' drills go on"
        ),
    )
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
                let mut record =
                    running_record(db, &name, started_at(&cluster.object).unwrap_or(now));
                record.finished = Some(Time(now));
                record.outcome = DrillOutcome::Failed;
                record.message = Some(reason.to_string());
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
    Running {
        deadline: jiff::Timestamp,
    },
    /// The cluster is restored: its data is to be checked.
    Verify,
    Finished(DrillRecord),
}

/// What is known of a drill's verification Job.
#[derive(Debug)]
enum Verification {
    /// No Job yet.
    NotStarted,
    /// The Job exists and has not answered.
    Pending,
    /// The Job's pod reported what it found, at `at`.
    Answered {
        report: homelab_render::VerificationReport,
        at: jiff::Timestamp,
    },
    /// The Job ended without a report.
    Failed { message: String },
}

/// What a drill is held to: its timeout, and the policy's objectives.
struct Judgement {
    timeout: jiff::SignedDuration,
    rpo: Option<u64>,
    rto: Option<u64>,
    objectives: String,
}

impl Judgement {
    fn new(drill: &DrillSpec, timeout: jiff::SignedDuration) -> Result<Self, Error> {
        let objective = |field: &str, value: &str| {
            homelab_render::units::seconds(value).ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "spec.drill.objectives.{field} {value:?} must be seconds, minutes or hours (such as 5m)"
                ))
            })
        };
        Ok(Self {
            timeout,
            rpo: Some(objective("rpo", &drill.objectives.rpo)?),
            rto: Some(objective("rto", &drill.objectives.rto)?),
            objectives: format!("RPO {}, RTO {}", drill.objectives.rpo, drill.objectives.rto),
        })
    }
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

/// Looks at a drill: the cluster `Ready` and the verification answered → judged by
/// [`judge`]; `Ready` without a verification → [`Settled::Verify`]; CloudNativePG giving up on
/// the recovery, or past the timeout → failed (with `hint`, what is known about the source's
/// archive, appended); else running. Updates (or, after a restart that lost it, re-creates) its
/// record.
fn settle(
    cluster: &OwnedChild,
    db_name: &str,
    records: &mut Vec<DrillRecord>,
    judgement: &Judgement,
    hint: Option<&str>,
    verification: &Verification,
    now: jiff::Timestamp,
) -> Settled {
    let name = cluster.object.name_any();
    let started = started_at(&cluster.object).unwrap_or(now);
    let index = match records.iter().position(|r| r.cluster == name) {
        Some(i) => i,
        None => {
            records.insert(0, running_record(db_name, &name, started));
            0
        }
    };
    let record = &mut records[index];
    let deadline = started.checked_add(judgement.timeout).unwrap_or(started);
    let ready = child_ready_condition(&cluster.object);
    if let Some((true, _, _)) = ready {
        match verification {
            Verification::Answered { report, at } => {
                judge(record, report, started, *at, judgement);
                return Settled::Finished(record.clone());
            }
            Verification::Failed { message } => {
                return failed(
                    record,
                    now,
                    format!(
                        "CloudNativePG restored {name}, but its verification Job {} ended without checking the data: {message}",
                        naming::drill_verification(&name)
                    ),
                );
            }
            Verification::NotStarted if now < deadline => return Settled::Verify,
            Verification::NotStarted | Verification::Pending => {
                if now >= deadline {
                    return failed(
                        record,
                        now,
                        format!(
                            "timed out: CloudNativePG restored {name}, but its data was not verified within the drill timeout (the Job {} did not answer)",
                            naming::drill_verification(&name)
                        ),
                    );
                }
                return Settled::Running {
                    deadline: deadline + jiff::SignedDuration::from_secs(1),
                };
            }
        }
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
        return failed(
            record,
            now,
            format!(
                "CloudNativePG could not restore the backup into {name}: {}{hint}",
                status("phaseReason").unwrap_or(PHASE_UNRECOVERABLE)
            ),
        );
    }
    if now >= deadline {
        return failed(
            record,
            now,
            format!(
                "timed out: CloudNativePG did not report the restored cluster {name} ready within the drill timeout (last phase: {}){hint}",
                phase.unwrap_or("no phase reported")
            ),
        );
    }
    Settled::Running {
        deadline: deadline + jiff::SignedDuration::from_secs(1),
    }
}

/// Ends a drill as failed, now, for `message`.
fn failed(record: &mut DrillRecord, now: jiff::Timestamp, message: String) -> Settled {
    record.outcome = DrillOutcome::Failed;
    record.finished = Some(Time(now));
    record.message = Some(message);
    Settled::Finished(record.clone())
}

fn running_record(db_name: &str, cluster: &str, started: jiff::Timestamp) -> DrillRecord {
    DrillRecord {
        database: db_name.to_string(),
        cluster: cluster.to_string(),
        started: Time(started),
        finished: None,
        outcome: DrillOutcome::Running,
        recovery_seconds: None,
        data_loss_seconds: None,
        newest_heartbeat: None,
        tables: None,
        message: None,
    }
}

/// Judges what the verification found in the restored database: it must have answered, hold
/// tables, hold a heartbeat when one was looked for, and pass the user's query; then the RPO
/// (start − newest heartbeat) and RTO (start → answer) are held to the objectives.
fn judge(
    record: &mut DrillRecord,
    report: &homelab_render::VerificationReport,
    started: jiff::Timestamp,
    answered: jiff::Timestamp,
    judgement: &Judgement,
) {
    let answered = answered.max(started);
    let rto = answered.duration_since(started).as_secs();
    record.finished = Some(Time(answered));
    record.recovery_seconds = Some(rto);
    record.tables = report.tables;
    record.newest_heartbeat = report.heartbeat.map(Time);
    record.data_loss_seconds = report
        .heartbeat
        .map(|beat| started.duration_since(beat).as_secs().max(0));
    let error = |step: &str| {
        report
            .errors
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, e)| e.clone())
    };
    let failure = if let Some(e) = error("connect") {
        Some(format!(
            "the restored database could not be queried with the source's credentials: {e}"
        ))
    } else if report.tables.is_none() {
        Some("the verification reported no table count".to_string())
    } else if report.tables == Some(0) {
        Some("the restored database is empty: it has no tables".to_string())
    } else if report.heartbeat_checked && report.heartbeat.is_none() {
        Some(match error("heartbeat") {
            Some(e) => format!(
                "the restored database has no heartbeat ({e}): the archive ends before the heartbeat writer's first write"
            ),
            None => {
                "the restored database has no heartbeat: homelab.heartbeat is empty".to_string()
            }
        })
    } else if let Some(e) = error("query") {
        Some(format!(
            "the drill query failed in the restored database: {e}"
        ))
    } else {
        report
            .query
            .as_deref()
            .filter(|v| *v != "t" && *v != "true")
            .map(|value| {
                format!("the drill query returned {value:?} in the restored database, not true")
            })
    };
    if let Some(failure) = failure {
        record.outcome = DrillOutcome::Failed;
        record.message = Some(failure);
        return;
    }
    let measured = format!(
        "restored and verified in {rto}s (RTO){}",
        record
            .data_loss_seconds
            .map(|s| format!(", newest heartbeat {s}s before the drill started (RPO)"))
            .unwrap_or_default()
    );
    let mut missed = Vec::new();
    if let (Some(rpo), Some(objective)) = (record.data_loss_seconds, judgement.rpo)
        && u64::try_from(rpo).unwrap_or(0) > objective
    {
        missed.push(format!(
            "RPO {rpo}s is beyond the objective of {objective}s"
        ));
    }
    if let Some(objective) = judgement.rto
        && u64::try_from(rto).unwrap_or(0) > objective
    {
        missed.push(format!(
            "RTO {rto}s is beyond the objective of {objective}s"
        ));
    }
    if missed.is_empty() {
        record.outcome = DrillOutcome::Succeeded;
        record.message = Some(format!(
            "{measured}, within the objectives ({})",
            judgement.objectives
        ));
    } else {
        record.outcome = DrillOutcome::ObjectiveMissed;
        record.message = Some(format!("{measured}; {}", missed.join("; ")));
    }
}

/// Reads the verification Job of `cluster` and its pod's termination message.
async fn observe_verification(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Verification, Error> {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    let name = naming::drill_verification(cluster);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(job) = jobs.get_opt(&name).await? else {
        return Ok(Verification::NotStarted);
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={name}")),
        )
        .await?;
    for pod in &listed.items {
        let terminated = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        if let Some(terminated) = terminated {
            let at = terminated
                .finished_at
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(jiff::Timestamp::now);
            if terminated.exit_code == 0 {
                return Ok(Verification::Answered {
                    report: homelab_render::VerificationReport::parse(
                        terminated.message.as_deref().unwrap_or_default(),
                    ),
                    at,
                });
            }
            return Ok(Verification::Failed {
                message: format!(
                    "its container exited with code {} ({}){}",
                    terminated.exit_code,
                    terminated.reason.as_deref().unwrap_or("no reason given"),
                    terminated
                        .message
                        .as_deref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ),
            });
        }
    }
    let failed = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    Ok(match failed {
        Some(c) => Verification::Failed {
            message: format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.as_deref().unwrap_or("the Job failed")
            ),
        },
        None => Verification::Pending,
    })
}

/// Creates the verification Job of a restored drill cluster.
async fn start_verification(
    policy: &BackupPolicy,
    db: &AppDatabase,
    ctx: &Context,
    cluster: &str,
) -> Result<(), Error> {
    let facts = drill_facts(db, ctx, 0);
    let job = homelab_render::render_drill_verification(policy, db, &facts, cluster, &ctx.render)?;
    ctx.children.apply(&job).await?;
    Ok(())
}

fn drill_facts(db: &AppDatabase, ctx: &Context, sequence: u64) -> homelab_render::DrillFacts {
    homelab_render::DrillFacts {
        sequence,
        server_name: homelab_render::facts::server_name(db),
        source_image: ctx.cluster_image(&db.namespace().unwrap_or_default(), db.app_name()),
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
    let mut record = running_record(&db_name, &cluster, now);
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
    let facts = drill_facts(db, ctx, sequence);
    let mut object = homelab_render::render_restore_drill(policy, db, &facts, &ctx.render)?;
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
                "restore drill of AppDatabase {} succeeded: {}; deleting the cluster {}",
                record.database,
                record.message.as_deref().unwrap_or_default(),
                record.cluster,
            ),
        ),
        DrillOutcome::ObjectiveMissed => (
            true,
            "DrillObjectiveMissed",
            format!(
                "restore drill of AppDatabase {} restored the data but missed an objective: {}; deleting the cluster {}",
                record.database,
                record.message.as_deref().unwrap_or_default(),
                record.cluster,
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
    let mut missed = Vec::new();
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
            Some(r) if r.outcome == DrillOutcome::ObjectiveMissed => missed.push(format!(
                "{name} ({})",
                r.message.as_deref().unwrap_or("objective missed")
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
            Reason::DrillFailed,
            format!("the last restore drill failed for {}", failed.join("; ")),
        );
    }
    if !missed.is_empty() {
        return Observed::new(
            conditions::DRILL_SUCCEEDED,
            Status::False,
            Reason::DrillObjectiveMissed,
            format!(
                "the last restore drill restored the data but missed the policy's objectives for {}",
                missed.join("; ")
            ),
        );
    }
    if succeeded.is_empty() {
        return Observed::new(
            conditions::DRILL_SUCCEEDED,
            Status::Unknown,
            Reason::NoDrillYet,
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
        Reason::DrillsSucceeded,
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
        let verified = |r: &&&DrillRecord| {
            matches!(
                r.outcome,
                DrillOutcome::Succeeded | DrillOutcome::ObjectiveMissed
            )
        };
        let last_verified = finished.iter().filter(verified).max_by_key(|r| r.started.0);
        ctx.metrics.databases.set_drill(
            namespace,
            &name,
            crate::metrics::DrillFigures {
                succeeded: last.map(|r| verified(&r)),
                recovery_seconds: last_verified
                    .and_then(|r| r.recovery_seconds)
                    .map(|s| s as f64),
                data_loss_seconds: last_verified
                    .and_then(|r| r.data_loss_seconds)
                    .map(|s| s as f64),
                objectives_met: last_verified.map(|r| r.outcome == DrillOutcome::Succeeded),
            },
        );
    }
}

fn outcome_text(outcome: DrillOutcome) -> &'static str {
    match outcome {
        DrillOutcome::Running => "Running",
        DrillOutcome::Succeeded => "Succeeded",
        DrillOutcome::ObjectiveMissed => "ObjectiveMissed",
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
            outcome,
            recovery_seconds: Some(10),
            ..running_record(db, cluster, started.parse().unwrap())
        }
    }

    fn drill_spec(history: i32) -> DrillSpec {
        serde_json::from_value(serde_json::json!({
            "schedule": "0 4 * * 0", "timeout": "30m", "history": history
        }))
        .unwrap()
    }

    #[test]
    fn history_is_kept_per_database_newest_first() {
        let drill = drill_spec(2);
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

    fn judged(message: &str, started: &str, answered: &str) -> DrillRecord {
        let judgement =
            Judgement::new(&drill_spec(3), jiff::SignedDuration::from_mins(30)).unwrap();
        let mut record = running_record("wiki", "wiki-drill-1", started.parse().unwrap());
        judge(
            &mut record,
            &homelab_render::VerificationReport::parse(message),
            started.parse().unwrap(),
            answered.parse().unwrap(),
            &judgement,
        );
        record
    }

    fn epoch(at: &str) -> i64 {
        at.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn a_drill_with_data_and_a_recent_heartbeat_succeeds_with_rpo_and_rto() {
        let beat = epoch("2026-12-01T03:58:30Z");
        let record = judged(
            &format!("tables=12\nheartbeat={beat}\nquery=t\n"),
            "2026-12-01T04:00:00Z",
            "2026-12-01T04:03:20Z",
        );
        assert_eq!(record.outcome, DrillOutcome::Succeeded, "{record:?}");
        assert_eq!(record.data_loss_seconds, Some(90));
        assert_eq!(record.recovery_seconds, Some(200));
        assert_eq!(record.tables, Some(12));
        assert_eq!(record.newest_heartbeat.map(|t| t.0.as_second()), Some(beat));
    }

    #[test]
    fn a_drill_beyond_an_objective_is_not_a_success() {
        let beat = epoch("2026-12-01T03:50:00Z");
        let record = judged(
            &format!("tables=1\nheartbeat={beat}\n"),
            "2026-12-01T04:00:00Z",
            "2026-12-01T04:01:00Z",
        );
        assert_eq!(record.outcome, DrillOutcome::ObjectiveMissed);
        let message = record.message.unwrap();
        assert!(
            message.contains("RPO 600s is beyond the objective of 300s"),
            "{message}"
        );
        let slow = judged(
            &format!("tables=1\nheartbeat={}\n", epoch("2026-12-01T03:59:00Z")),
            "2026-12-01T04:00:00Z",
            "2026-12-01T04:11:00Z",
        );
        assert_eq!(slow.outcome, DrillOutcome::ObjectiveMissed);
        assert!(
            slow.message
                .unwrap()
                .contains("RTO 660s is beyond the objective of 600s")
        );
    }

    #[test]
    fn a_drill_without_the_data_fails_and_says_what_is_missing() {
        let cases = [
            ("tables=0\nheartbeat=\n", "the restored database is empty"),
            ("tables=5\nheartbeat=\n", "homelab.heartbeat is empty"),
            (
                "tables=5\nheartbeat_error=ERROR:  relation \"homelab.heartbeat\" does not exist\n",
                "the archive ends before the heartbeat writer's first write",
            ),
            (
                "tables=5\nheartbeat=1764561500\nquery=f\n",
                "the drill query returned \"f\"",
            ),
            (
                "tables=5\nheartbeat=1764561500\nquery_error=ERROR:  relation \"notes\" does not exist\n",
                "the drill query failed in the restored database: ERROR:  relation \"notes\"",
            ),
            (
                "error=psql: error: FATAL:  password authentication failed for user \"wiki\"\n",
                "could not be queried with the source's credentials",
            ),
            ("", "no table count"),
        ];
        for (message, expected) in cases {
            let record = judged(message, "2026-12-01T04:00:00Z", "2026-12-01T04:01:00Z");
            assert_eq!(record.outcome, DrillOutcome::Failed, "{message}");
            let text = record.message.unwrap();
            assert!(text.contains(expected), "{message:?} gave {text:?}");
        }
    }

    #[test]
    fn without_a_heartbeat_a_drill_needs_only_tables_and_measures_no_rpo() {
        let record = judged("tables=2\n", "2026-12-01T04:00:00Z", "2026-12-01T04:01:00Z");
        assert_eq!(record.outcome, DrillOutcome::Succeeded);
        assert_eq!(record.data_loss_seconds, None);
        assert_eq!(record.recovery_seconds, Some(60));
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
