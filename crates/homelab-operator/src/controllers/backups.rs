//! The AppDatabase's backup side: point-in-time restore checks, on-demand backups and backup
//! health. Called from the AppDatabase controller; everything here either is pure (given the
//! current time) or goes through the child caches, so an unchanged world costs no writes.

use homelab_api::app_database::{AppDatabase, BackupStatus, OnDemandBackup};
use homelab_api::backup_policy::BackupPolicySpec;
use homelab_api::conditions::{self, Observed, Status};
use homelab_api::naming;
use homelab_api::reasons::Reason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};

use super::schedule::{self, Schedule};
use super::{Context, Error, object_reference};
use crate::metrics::BackupFigures;

const CNPG_API: &str = "postgresql.cnpg.io/v1";
const BARMAN_API: &str = "barmancloud.cnpg.io/v1";

/// How many on-demand backups `status.onDemandBackups` keeps.
pub const ON_DEMAND_HISTORY: usize = 5;

/// Whether a restore may create its cluster.
pub struct RestoreCheck {
    pub condition: Observed,
    /// `false`: the Cluster must not be created (it would fail).
    pub allow_cluster: bool,
    /// When to look again, for a restore held back by something that resolves by itself (the
    /// source's first base backup): nothing of this database changes when the source's
    /// ObjectStore reports its window, so no event would wake it.
    pub recheck_at: Option<jiff::Timestamp>,
}

/// How often a restore waiting for its source's first base backup looks again.
pub const RESTORE_RECHECK: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Checks `spec.restore` before the restored cluster exists: the target time must not lie in the
/// future (the schema cannot say, CEL has no clock) and must lie inside the source's recovery
/// window, from its first recoverability point (reported by the source's `ObjectStore` under its
/// server name) until now. Once the cluster exists the restore has happened and is not checked
/// again (retention moves the window on).
pub fn check_restore(
    db: &AppDatabase,
    ctx: &Context,
    namespace: &str,
    cluster_exists: bool,
    now: jiff::Timestamp,
) -> Option<RestoreCheck> {
    let restore = db.spec.restore.as_ref()?;
    let target = restore.target_time.as_ref().map(|t| t.0);
    let target_text = target
        .map(|t| format!("to {t}"))
        .unwrap_or_else(|| "to the latest archived point".to_string());
    let server_name = homelab_render::facts::server_name(db);

    // Where the source's recovery window is reported.
    let (source, store_name, source_server) = if let Some(source) = &restore.from.app_database {
        let source_db = ctx.database(namespace, source);
        let store = source_db
            .as_ref()
            .map(|s| naming::backup_object_store(s.app_name()));
        let server = source_db
            .as_ref()
            .map(|s| homelab_render::facts::server_name(s));
        (format!("AppDatabase {source}"), store, server)
    } else if let Some(archive) = &restore.from.archive {
        (
            format!(
                "archive {}/{} (container/server)",
                archive.container, archive.server_name
            ),
            Some(naming::restore_object_store(db.app_name())),
            Some(archive.server_name.clone()),
        )
    } else {
        return None;
    };

    if cluster_exists {
        return Some(RestoreCheck {
            condition: Observed::new(
                conditions::RESTORE_READY,
                Status::True,
                Reason::Restored,
                format!(
                    "the cluster was created from the backups of {source}, recovering {target_text}; it archives under the new server name {server_name}"
                ),
            ),
            allow_cluster: true,
            recheck_at: None,
        });
    }
    let blocked = |reason: Reason, message: String| RestoreCheck {
        condition: Observed::new(conditions::RESTORE_READY, Status::False, reason, message),
        allow_cluster: false,
        recheck_at: None,
    };
    if let Some(target) = target
        && target > now
    {
        return Some(blocked(
            Reason::TargetTimeInFuture,
            format!(
                "spec.restore.targetTime {target} lies in the future: a restore can only reach a point that is already archived. No cluster was created; re-create the AppDatabase with a targetTime in the past (spec.restore is immutable)"
            ),
        ));
    }
    let window = match (&store_name, &source_server) {
        (Some(store), Some(server)) => ctx
            .children
            .get(BARMAN_API, "ObjectStore", namespace, store)
            .and_then(|o| {
                o.data
                    .pointer("/status/serverRecoveryWindow")?
                    .get(server.as_str())
                    .cloned()
            }),
        _ => None,
    };
    // A source AppDatabase reports what it knows of its backups, the plugin's window and its own
    // completed on-demand backups (see `known_backups`); an archive only has the window.
    let source_first = restore
        .from
        .app_database
        .as_ref()
        .and_then(|source| ctx.database(namespace, source))
        .and_then(|s| {
            s.status
                .as_ref()?
                .backup
                .as_ref()?
                .first_recoverability_point
                .clone()
        })
        .map(|t| t.0);
    let first = window
        .as_ref()
        .and_then(|w| time_field(w, "firstRecoverabilityPoint"))
        .or(source_first);
    match (first, restore.from.app_database.is_some()) {
        (None, true) => Some(RestoreCheck {
            recheck_at: now.checked_add(RESTORE_RECHECK).ok(),
            ..blocked(
                Reason::SourceHasNoBackup,
                format!(
                    "{source} has no base backup to restore yet (its ObjectStore {} reports no recovery window for server {}); the cluster is created once a base backup exists",
                    store_name.unwrap_or_default(),
                    source_server.unwrap_or_default()
                ),
            )
        }),
        // An archive read through its own read-only ObjectStore: the Barman Cloud Plugin reports
        // no window for it until a cluster uses it, so only the clock check above applies.
        (None, false) => Some(RestoreCheck {
            condition: Observed::new(
                conditions::RESTORE_READY,
                Status::True,
                Reason::RestoreStarting,
                format!(
                    "restoring from {source} {target_text}; its recovery window is not reported, so CloudNativePG checks the target; the cluster archives under the new server name {server_name}"
                ),
            ),
            allow_cluster: true,
            recheck_at: None,
        }),
        (Some(first), _) => match target {
            Some(target) if target < first => Some(blocked(
                Reason::TargetTimeBeforeRecoveryWindow,
                format!(
                    "spec.restore.targetTime {target} is before the first recoverability point {first} of {source}: backups that old are no longer kept. No cluster was created; re-create the AppDatabase with a targetTime after {first}"
                ),
            )),
            _ => Some(RestoreCheck {
                condition: Observed::new(
                    conditions::RESTORE_READY,
                    Status::True,
                    Reason::RestoreStarting,
                    format!(
                        "restoring from {source} {target_text} (recoverable from {first}); the cluster archives under the new server name {server_name}"
                    ),
                ),
                allow_cluster: true,
                recheck_at: None,
            }),
        },
    }
}

/// Creates the `Backup` asked for by `homelab.io/backup-now=<token>` (once per token), and
/// reports every on-demand backup, newest first. Publishes an Event when one completes or fails.
pub async fn on_demand_backups(
    db: &AppDatabase,
    ctx: &Context,
    namespace: &str,
    has_policy: bool,
) -> Result<Vec<OnDemandBackup>, Error> {
    let previous = db
        .status
        .as_ref()
        .map(|s| s.on_demand_backups.clone())
        .unwrap_or_default();
    let uid = db.uid().unwrap_or_default();
    let owner_key = format!(
        "{}/{}",
        homelab_api::reasons::Kind::AppDatabase.as_str(),
        db.name_any()
    );
    let mut backups: Vec<(Option<jiff::Timestamp>, OnDemandBackup)> = ctx
        .children
        .owned_by(namespace, &uid, &owner_key)
        .into_iter()
        .filter(|c| c.kind == "Backup")
        .filter_map(|c| {
            let token = c
                .object
                .annotations()
                .get(naming::ANNOTATION_BACKUP_NOW)?
                .clone();
            let created = c.object.metadata.creation_timestamp.as_ref().map(|t| t.0);
            Some((created, backup_entry(&token, &c.object)))
        })
        .collect();

    let token = db
        .annotations()
        .get(naming::ANNOTATION_BACKUP_NOW)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if let Some(token) = token {
        let known = previous.iter().any(|b| b.token == token)
            || backups.iter().any(|(_, b)| b.token == token);
        if !known {
            if has_policy && ctx.children.has_kind(CNPG_API, "Backup") {
                let backup = homelab_render::render_on_demand_backup(db, &token, &ctx.render)?;
                ctx.children.apply(&backup).await?;
                ctx.events
                    .publish(
                        &object_reference(db),
                        false,
                        "BackupRequested",
                        "Backup",
                        format!(
                            "created the on-demand Backup {} for {}={token}",
                            backup.name_any(),
                            naming::ANNOTATION_BACKUP_NOW
                        ),
                    )
                    .await;
                backups.push((
                    Some(jiff::Timestamp::now()),
                    OnDemandBackup {
                        token: token.clone(),
                        backup: backup.name_any(),
                        phase: "Pending".into(),
                        started: None,
                        stopped: None,
                        error: None,
                    },
                ));
            } else {
                backups.push((
                    Some(jiff::Timestamp::now()),
                    OnDemandBackup {
                        token: token.clone(),
                        backup: naming::on_demand_backup(db.app_name(), &token),
                        phase: "Failed".into(),
                        started: None,
                        stopped: None,
                        error: Some(
                            "the database has no backup policy (spec.backup.policyRef), so it has nowhere to back up to; no Backup was created"
                                .into(),
                        ),
                    },
                ));
            }
        }
    }
    // Backups whose object is gone keep their last reported state.
    for old in &previous {
        if !backups.iter().any(|(_, b)| b.token == old.token) {
            backups.push((None, old.clone()));
        }
    }
    // Newest first: objects by creation time (whole seconds, so ties put a token status does
    // not know yet first and otherwise keep the order status already has), then entries
    // remembered from status in their order. The order is deterministic, so an unchanged world
    // writes no status.
    let order: Vec<String> = previous.iter().map(|b| b.token.clone()).collect();
    // A token status does not know yet is the newest request.
    let position = |t: &str| order.iter().position(|o| o == t).map_or(-1, |p| p as i64);
    backups.sort_by(|(a_time, a), (b_time, b)| {
        let by_time = match (a_time, b_time) {
            (Some(a), Some(b)) => b.cmp(a),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_time
            .then_with(|| position(&a.token).cmp(&position(&b.token)))
            .then_with(|| a.token.cmp(&b.token))
    });
    let list: Vec<OnDemandBackup> = backups
        .into_iter()
        .map(|(_, b)| b)
        .take(ON_DEMAND_HISTORY)
        .collect();

    for backup in &list {
        let before = previous.iter().find(|p| p.token == backup.token);
        if before.is_some_and(|p| p.phase == backup.phase) {
            continue;
        }
        let (warning, reason, note) = match backup.phase.as_str() {
            "Completed" => (
                false,
                "OnDemandBackupCompleted",
                format!(
                    "the on-demand backup {} ({}={}) completed",
                    backup.backup,
                    naming::ANNOTATION_BACKUP_NOW,
                    backup.token
                ),
            ),
            "Failed" => (
                true,
                "OnDemandBackupFailed",
                format!(
                    "the on-demand backup {} ({}={}) failed: {}",
                    backup.backup,
                    naming::ANNOTATION_BACKUP_NOW,
                    backup.token,
                    backup
                        .error
                        .as_deref()
                        .unwrap_or("CloudNativePG gave no reason")
                ),
            ),
            _ => continue,
        };
        ctx.events
            .publish(&object_reference(db), warning, reason, "Backup", note)
            .await;
    }
    Ok(list)
}

/// One on-demand backup as CloudNativePG reports it in the `Backup`'s status.
fn backup_entry(token: &str, backup: &DynamicObject) -> OnDemandBackup {
    let status = backup.data.get("status");
    let text = |field: &str| {
        status
            .and_then(|s| s.get(field))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let phase = match text("phase").as_deref() {
        Some("completed") => "Completed",
        Some("failed") => "Failed",
        None | Some("") | Some("pending") => "Pending",
        Some(_) => "Running",
    };
    OnDemandBackup {
        token: token.to_string(),
        backup: backup.name_any(),
        phase: phase.to_string(),
        started: status.and_then(|s| time_field(s, "startedAt")).map(Time),
        stopped: status.and_then(|s| time_field(s, "stoppedAt")).map(Time),
        error: text("error").filter(|e| !e.is_empty()),
    }
}

/// The base backups a database is known to have, as `(first recoverability point, last
/// successful backup)`: the Barman Cloud Plugin's recovery window, completed by the database's
/// own completed on-demand backups. The plugin refreshes its window after each backup by
/// updating the ObjectStore as it read it when the backup began, without retrying on a
/// conflict; when the ObjectStore changed meanwhile (the plugin's own catalog maintenance writes
/// it every five minutes) that refresh is lost until the next maintenance. A completed Backup is
/// evidence of its own, so a restore or a drill right after `backup-now` does not wait for it.
pub fn known_backups(
    window_first: Option<Time>,
    window_last: Option<Time>,
    on_demand: &[OnDemandBackup],
) -> (Option<Time>, Option<Time>) {
    let completed: Vec<jiff::Timestamp> = on_demand
        .iter()
        .filter(|b| b.phase == "Completed")
        .filter_map(|b| b.stopped.as_ref().map(|t| t.0))
        .collect();
    let first = window_first.or_else(|| completed.iter().min().copied().map(Time));
    let last = window_last
        .map(|t| t.0)
        .into_iter()
        .chain(completed.iter().copied())
        .max()
        .map(Time);
    (first, last)
}

/// WAL archiving as the Cluster's `ContinuousArchiving` condition reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WalArchiving {
    /// `archive_command` succeeded last.
    Working,
    /// Archiving has failed since this moment (Unix seconds).
    FailingSince(f64),
}

/// WAL archiving as the Cluster's `ContinuousArchiving` condition reports it: CloudNativePG's
/// instance manager sets it `False` on the first failed `archive_command` and `True` again on the
/// next success, and only the flips move `lastTransitionTime`. It says whether archiving fails,
/// and since when; what reached the archive, and when, is read from the archive itself
/// (`status.backup.lastArchivedWal`, see [`homelab_azure::newest_archived_wal`]).
pub fn wal_archiving(
    cluster: Option<&DynamicObject>,
) -> Option<(WalArchiving, jiff::Timestamp, String)> {
    let condition = cluster?
        .data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("ContinuousArchiving"))?;
    let since = time_field(condition, "lastTransitionTime")?;
    let message = condition
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    match condition.get("status").and_then(|s| s.as_str()) {
        Some("True") => Some((WalArchiving::Working, since, message)),
        Some("False") => Some((
            WalArchiving::FailingSince(since.as_millisecond() as f64 / 1000.0),
            since,
            message,
        )),
        _ => None,
    }
}

/// How old the newest segment in the archive may grow while archiving works, when that can be
/// known: only a database that is written to archives, so only one with the heartbeat writer
/// (drills with a `heartbeatInterval`) has a bound. It writes every heartbeat interval, and
/// PostgreSQL switches to a new segment `walArchiveTimeout` after the last switch once anything
/// was written; a minute more covers the upload and the probe.
pub fn archive_max_age(policy: &BackupPolicySpec) -> Option<jiff::SignedDuration> {
    let heartbeat = policy.drill.as_ref().and_then(|drill| {
        homelab_render::units::heartbeat_interval(&drill.heartbeat_interval)
            .ok()
            .flatten()
    })?;
    let timeout = rpo(policy)?;
    let heartbeat = jiff::SignedDuration::from_secs(i64::try_from(heartbeat).ok()?);
    Some(timeout + heartbeat + jiff::SignedDuration::from_mins(1))
}

/// Returns the `BackupReady` condition: `False` when WAL archiving fails (reason
/// `WALArchivingStale` once it has failed for longer than the policy's `walArchiveTimeout`, the
/// RPO), when the newest segment in the archive (`lastArchivedWal`) is older than
/// [`archive_max_age`] allows, when the last base backup attempt failed, or when the last base
/// backup is older than the schedule allows ([`schedule::stale_at`]).
pub fn backup_health(
    backup: &BackupStatus,
    cluster: Option<&DynamicObject>,
    policy: &BackupPolicySpec,
    now: jiff::Timestamp,
) -> Observed {
    let wal = wal_archiving(cluster);
    let last_backup = backup.last_successful_backup.as_ref().map(|t| t.0);
    let rpo = rpo(policy);
    if let Some((WalArchiving::FailingSince(_), since, message)) = &wal {
        let message = if message.is_empty() {
            "CloudNativePG gives no reason"
        } else {
            message.as_str()
        };
        let stale = rpo.is_some_and(|rpo| now.duration_since(*since) > rpo);
        return Observed::new(
            conditions::BACKUP_READY,
            Status::False,
            if stale {
                Reason::WALArchivingStale
            } else {
                Reason::WALArchivingFailing
            },
            format!(
                "WAL archiving has failed since {since}{}: {message}; check the SAS token and the storage account",
                if stale {
                    format!(
                        ", longer than the policy's walArchiveTimeout of {}: a restore now would lose more than the RPO allows",
                        policy.wal_archive_timeout
                    )
                } else {
                    String::new()
                }
            ),
        );
    }
    if let (Some(max_age), Some(archived), Some(segment)) = (
        archive_max_age(policy),
        backup.last_archived_wal.as_ref(),
        backup.last_archived_wal_segment.as_deref(),
    ) && now.duration_since(archived.0) > max_age
    {
        return Observed::new(
            conditions::BACKUP_READY,
            Status::False,
            Reason::WALArchivingStale,
            format!(
                "the newest WAL segment in the archive, {segment}, was uploaded at {}, {}s ago; with a heartbeat written every {} and a walArchiveTimeout of {}, a newer one was due within {}s: a restore now would lose the writes since then. Check the heartbeat Deployment, the cluster's archiving and the storage account",
                archived.0,
                now.duration_since(archived.0).as_secs(),
                policy
                    .drill
                    .as_ref()
                    .map_or("", |d| d.heartbeat_interval.as_str()),
                policy.wal_archive_timeout,
                max_age.as_secs()
            ),
        );
    }
    let Some(last) = last_backup else {
        return Observed::new(
            conditions::BACKUP_READY,
            Status::Unknown,
            Reason::WaitingForFirstBackup,
            format!(
                "no base backup has completed yet (schedule: {} UTC)",
                policy.schedule
            ),
        );
    };
    if let Some(failed) = backup.last_failed_backup.as_ref().map(|t| t.0)
        && failed > last
    {
        return Observed::new(
            conditions::BACKUP_READY,
            Status::False,
            Reason::BackupFailing,
            format!(
                "the last base backup attempt failed at {failed}; the last successful one completed at {last}: check the Backup objects and the backup logs"
            ),
        );
    }
    if policy.suspend {
        return Observed::new(
            conditions::BACKUP_READY,
            Status::True,
            Reason::BackupsSuspended,
            format!("scheduled backups are suspended by the policy; last base backup {last}"),
        );
    }
    match Schedule::parse(&policy.schedule)
        .ok()
        .and_then(|s| schedule::stale_at(&s, last))
    {
        Some(deadline) if now >= deadline => Observed::new(
            conditions::BACKUP_READY,
            Status::False,
            Reason::BackupStale,
            format!(
                "the last base backup completed at {last}; the schedule {} UTC should have produced a newer one by {deadline}: check the ScheduledBackup and the backup logs",
                policy.schedule
            ),
        ),
        Some(deadline) => Observed::new(
            conditions::BACKUP_READY,
            Status::True,
            Reason::BackupsHealthy,
            format!("last base backup completed at {last}; the next one is due by {deadline}"),
        ),
        None => Observed::new(
            conditions::BACKUP_READY,
            Status::True,
            Reason::BackupsHealthy,
            format!("last base backup completed at {last}"),
        ),
    }
}

/// When `BackupReady` would next flip on its own as time passes (the last backup going stale, or
/// failing archiving exceeding the RPO), so the controller requeues for exactly that moment and
/// writes nothing in between.
pub fn next_flip(
    backup: &BackupStatus,
    cluster: Option<&DynamicObject>,
    policy: &BackupPolicySpec,
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let condition = match wal_archiving(cluster) {
        Some((WalArchiving::FailingSince(_), since, _)) => {
            rpo(policy).and_then(|rpo| since.checked_add(rpo).ok())
        }
        _ if policy.suspend => None,
        _ => backup
            .last_successful_backup
            .as_ref()
            .and_then(|last| schedule::stale_at(&Schedule::parse(&policy.schedule).ok()?, last.0)),
    };
    let archive = archive_max_age(policy).and_then(|max_age| {
        backup
            .last_archived_wal
            .as_ref()
            .and_then(|t| t.0.checked_add(max_age).ok())
    });
    // One second late, so the comparison has certainly flipped.
    [condition, archive]
        .into_iter()
        .flatten()
        .filter(|candidate| *candidate > now)
        .min()
        .map(|candidate| candidate + jiff::SignedDuration::from_secs(1))
}

/// The policy's RPO: `walArchiveTimeout` as a duration.
fn rpo(policy: &BackupPolicySpec) -> Option<jiff::SignedDuration> {
    let text = policy.wal_archive_timeout.trim();
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: i64 = number.parse().ok()?;
    match unit {
        "s" => Some(jiff::SignedDuration::from_secs(number)),
        "m" => Some(jiff::SignedDuration::from_mins(number)),
        _ => None,
    }
}

/// Exports what the status says about this database's backups.
pub fn export_metrics(
    ctx: &Context,
    db: &AppDatabase,
    backup: Option<&BackupStatus>,
    policy: Option<&BackupPolicySpec>,
    cluster: Option<&DynamicObject>,
) {
    let namespace = db.namespace().unwrap_or_default();
    let seconds = |t: &Time| t.0.as_millisecond() as f64 / 1000.0;
    let backed_up = db.spec.backup.is_some();
    let figures = BackupFigures {
        last_backup: backup.and_then(|b| b.last_successful_backup.as_ref().map(seconds)),
        wal_archived: backup.and_then(|b| b.last_archived_wal.as_ref().map(seconds)),
        wal_max_age: policy
            .filter(|_| backed_up)
            .and_then(archive_max_age)
            .map(|age| age.as_secs_f64()),
        wal_failing_since: match wal_archiving(cluster).filter(|_| backed_up) {
            Some((WalArchiving::FailingSince(since), _, _)) => Some(since),
            _ => None,
        },
    };
    ctx.metrics
        .databases
        .set_backups(&namespace, &db.name_any(), figures);
}

pub(crate) fn time_field(value: &serde_json::Value, field: &str) -> Option<jiff::Timestamp> {
    value
        .get(field)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
}

/// Where a database's WAL and base backups go. Barman keeps one history per server name in a
/// container, and refuses to archive a second cluster's WAL into it ("Expected empty archive").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupDestination {
    pub service_url: String,
    pub container: String,
    pub server_name: String,
}

impl BackupDestination {
    pub fn of(db: &AppDatabase, policy: &BackupPolicySpec) -> Self {
        let azure = &policy.storage.azure;
        Self {
            service_url: azure.service_url(),
            container: naming::container(&azure.container_template, db.app_name()),
            server_name: homelab_render::facts::server_name(db),
        }
    }
}

/// The AppDatabase (`namespace/name`) that already archives to `destination`, if one came first:
/// the older one keeps the destination (ties go by namespace and name), so the verdict is the
/// same from either side and never moves an existing history.
pub fn destination_taken_by<'a>(
    db: &AppDatabase,
    destination: &BackupDestination,
    others: impl IntoIterator<Item = (&'a AppDatabase, BackupDestination)>,
) -> Option<String> {
    let rank = |d: &AppDatabase| {
        (
            d.meta().creation_timestamp.as_ref().map(|t| t.0),
            d.namespace().unwrap_or_default(),
            d.name_any(),
        )
    };
    let own = rank(db);
    others
        .into_iter()
        .filter(|(other, other_destination)| {
            let same_object =
                other.namespace() == db.namespace() && other.name_any() == db.name_any();
            !same_object && other_destination == destination && rank(other) < own
        })
        .map(|(other, _)| rank(other))
        .min()
        .map(|(_, namespace, name)| format!("{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn on_demand(phase: &str, stopped: Option<&str>) -> OnDemandBackup {
        OnDemandBackup {
            token: "t".into(),
            backup: "b".into(),
            phase: phase.into(),
            started: None,
            stopped: stopped.map(|s| Time(s.parse().unwrap())),
            error: None,
        }
    }

    #[test]
    fn completed_on_demand_backups_count_before_the_plugin_reports_them() {
        let time = |s: &str| Some(Time(s.parse().unwrap()));
        // No window yet: the completed on-demand backup is the first and last one known.
        assert_eq!(
            known_backups(
                None,
                None,
                &[
                    on_demand("Completed", Some("2026-12-03T15:46:18Z")),
                    on_demand("Running", None),
                    on_demand("Failed", Some("2026-12-03T15:50:00Z")),
                ]
            ),
            (time("2026-12-03T15:46:18Z"), time("2026-12-03T15:46:18Z"))
        );
        // A window: its first point stands, the newer of the two is the last backup.
        assert_eq!(
            known_backups(
                time("2026-11-26T01:00:00Z"),
                time("2026-12-03T01:00:00Z"),
                &[on_demand("Completed", Some("2026-12-03T15:46:18Z"))]
            ),
            (time("2026-11-26T01:00:00Z"), time("2026-12-03T15:46:18Z"))
        );
        assert_eq!(
            known_backups(
                time("2026-11-26T01:00:00Z"),
                time("2026-12-03T16:00:00Z"),
                &[on_demand("Completed", Some("2026-12-03T15:46:18Z"))]
            ),
            (time("2026-11-26T01:00:00Z"), time("2026-12-03T16:00:00Z"))
        );
        assert_eq!(
            known_backups(None, None, &[on_demand("Pending", None)]),
            (None, None)
        );
    }

    use serde_json::json;

    fn database(namespace: &str, name: &str, created: &str) -> AppDatabase {
        serde_json::from_value(json!({
            "apiVersion": "homelab.io/v1alpha1", "kind": "AppDatabase",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"backup": {"policyRef": {"name": "daily"}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_first_database_keeps_a_shared_backup_destination() {
        let p = policy("0 1 * * *");
        let older = database("homelab", "linkding", "2026-11-01T00:00:00Z");
        let newer = database("linkding-dev", "linkding", "2026-11-02T00:00:00Z");
        let elsewhere = database("other", "wiki", "2026-10-01T00:00:00Z");
        let destination = BackupDestination::of(&newer, &p);
        assert_eq!(destination, BackupDestination::of(&older, &p));
        assert_eq!(destination.container, "linkding-db-clean");
        let all = || {
            [&older, &newer, &elsewhere]
                .into_iter()
                .map(|d| (d, BackupDestination::of(d, &p)))
        };
        assert_eq!(
            destination_taken_by(&newer, &destination, all()).as_deref(),
            Some("homelab/linkding")
        );
        assert_eq!(destination_taken_by(&older, &destination, all()), None);
        // Its own entry never counts, and neither does another container.
        assert_eq!(
            destination_taken_by(&elsewhere, &BackupDestination::of(&elsewhere, &p), all()),
            None
        );
        // Same age: namespace and name decide, the same way from both sides.
        let twin = database("a-first", "linkding", "2026-11-02T00:00:00Z");
        let with_twin = || {
            [&newer, &twin]
                .into_iter()
                .map(|d| (d, BackupDestination::of(d, &p)))
        };
        assert_eq!(
            destination_taken_by(&newer, &destination, with_twin()).as_deref(),
            Some("a-first/linkding")
        );
        assert_eq!(destination_taken_by(&twin, &destination, with_twin()), None);
    }

    fn policy(schedule: &str) -> BackupPolicySpec {
        serde_json::from_value(json!({
            "schedule": schedule,
            "walArchiveTimeout": "5m",
            "storage": {"azure": {"storageAccount": "acct"}}
        }))
        .unwrap()
    }

    fn cluster(archiving: &str, since: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": CNPG_API, "kind": "Cluster", "metadata": {"name": "c"},
            "status": {"conditions": [{"type": "ContinuousArchiving", "status": archiving,
                "reason": "x", "message": "archive failed", "lastTransitionTime": since}]}
        }))
        .unwrap()
    }

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn daily_backups_go_stale_after_the_missed_run_plus_slack() {
        let backup = BackupStatus {
            last_successful_backup: Some(Time(t("2026-11-25T01:05:00Z"))),
            ..BackupStatus::default()
        };
        let p = policy("0 1 * * *");
        let fresh = backup_health(&backup, None, &p, t("2026-11-26T01:59:00Z"));
        assert_eq!(fresh.status, Status::True, "{fresh:?}");
        let stale = backup_health(&backup, None, &p, t("2026-11-26T02:00:00Z"));
        assert_eq!(
            (stale.status, stale.reason.as_str()),
            (Status::False, "BackupStale")
        );
        assert_eq!(
            next_flip(&backup, None, &p, t("2026-11-25T12:00:00Z")),
            Some(t("2026-11-26T02:00:01Z"))
        );
        // An hourly schedule allows about an hour and ten minutes.
        let hourly = policy("0 * * * *");
        let stale = backup_health(&backup, None, &hourly, t("2026-11-25T02:10:00Z"));
        assert_eq!(stale.status, Status::False);
    }

    #[test]
    fn failing_archiving_turns_stale_after_the_rpo() {
        let backup = BackupStatus {
            last_successful_backup: Some(Time(t("2026-11-26T01:00:00Z"))),
            ..BackupStatus::default()
        };
        let p = policy("0 1 * * *");
        let c = cluster("False", "2026-11-26T10:00:00Z");
        let failing = backup_health(&backup, Some(&c), &p, t("2026-11-26T10:04:00Z"));
        assert_eq!(failing.reason, "WALArchivingFailing");
        assert_eq!(
            next_flip(&backup, Some(&c), &p, t("2026-11-26T10:04:00Z")),
            Some(t("2026-11-26T10:05:01Z"))
        );
        let stale = backup_health(&backup, Some(&c), &p, t("2026-11-26T10:06:00Z"));
        assert_eq!(
            (stale.status, stale.reason.as_str()),
            (Status::False, "WALArchivingStale")
        );
        let ok = cluster("True", "2026-11-20T00:00:00Z");
        let healthy = backup_health(&backup, Some(&ok), &p, t("2026-11-26T10:06:00Z"));
        assert_eq!(healthy.status, Status::True);
    }

    #[test]
    fn an_archive_without_new_segments_is_stale_only_for_a_written_database() {
        let mut backup = BackupStatus {
            last_successful_backup: Some(Time(t("2026-11-26T01:00:00Z"))),
            last_archived_wal: Some(Time(t("2026-11-26T10:00:00Z"))),
            last_archived_wal_segment: Some("000000010000000000000042".into()),
            ..BackupStatus::default()
        };
        let ok = cluster("True", "2026-11-20T00:00:00Z");
        // Without a heartbeat an idle database archives nothing: age alone says nothing.
        let idle = policy("0 1 * * *");
        assert_eq!(archive_max_age(&idle), None);
        let healthy = backup_health(&backup, Some(&ok), &idle, t("2026-11-26T12:00:00Z"));
        assert_eq!(healthy.status, Status::True, "{healthy:?}");

        // 5m timeout + 30s heartbeat + 1m: stale after 6m30s.
        let mut written = policy("0 1 * * *");
        written.drill = Some(serde_json::from_value(json!({"schedule": "0 3 * * 0"})).unwrap());
        assert_eq!(
            archive_max_age(&written),
            Some(jiff::SignedDuration::from_secs(390))
        );
        let fresh = backup_health(&backup, Some(&ok), &written, t("2026-11-26T10:06:30Z"));
        assert_eq!(fresh.status, Status::True, "{fresh:?}");
        assert_eq!(
            next_flip(&backup, Some(&ok), &written, t("2026-11-26T10:03:00Z")),
            Some(t("2026-11-26T10:06:31Z"))
        );
        let stale = backup_health(&backup, Some(&ok), &written, t("2026-11-26T10:06:31Z"));
        assert_eq!(
            (stale.status, stale.reason.as_str()),
            (Status::False, "WALArchivingStale")
        );
        assert!(
            stale.message.contains("000000010000000000000042")
                && stale.message.contains("2026-11-26T10:00:00Z"),
            "{}",
            stale.message
        );
        // A newer segment makes it healthy again.
        backup.last_archived_wal = Some(Time(t("2026-11-26T10:05:00Z")));
        let again = backup_health(&backup, Some(&ok), &written, t("2026-11-26T10:07:00Z"));
        assert_eq!(again.status, Status::True, "{again:?}");
    }

    #[test]
    fn a_failed_attempt_after_the_last_success_is_reported() {
        let backup = BackupStatus {
            last_successful_backup: Some(Time(t("2026-11-25T01:00:00Z"))),
            last_failed_backup: Some(Time(t("2026-11-26T01:00:00Z"))),
            ..BackupStatus::default()
        };
        let c = backup_health(
            &backup,
            None,
            &policy("0 1 * * *"),
            t("2026-11-26T01:10:00Z"),
        );
        assert_eq!(c.reason, "BackupFailing");
    }
}
