//! The BackupPolicy controller: validates the policy, reports which databases use it, and (with
//! `drill`) runs restore drills.

use std::sync::Arc;

use homelab_api::BackupPolicy;
use homelab_api::backup_policy::BackupPolicyStatus;
use homelab_api::conditions::{self, Observed, Status};
use homelab_api::reasons::Reason;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::{Context, Error, now, object_reference};
use crate::kubernetes::status;

pub const KIND: &str = "BackupPolicy";

pub async fn reconcile(
    guard: Arc<DeserializeGuard<BackupPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let policy = match &guard.0 {
        Ok(policy) => policy,
        Err(invalid) => return super::report_invalid::<BackupPolicy>(invalid, &ctx).await,
    };
    if policy.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.start_reconcile(KIND);
    ctx.caches_ready().await;
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &namespace);

    let databases = ctx
        .databases
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|db| db.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|db| {
            db.spec
                .backup
                .as_ref()
                .is_some_and(|b| b.policy_ref.name == name)
        })
        .count();

    let mut observed = Vec::new();
    let mut status = BackupPolicyStatus {
        databases: Some(i32::try_from(databases).unwrap_or(i32::MAX)),
        ..policy.status.clone().unwrap_or_default()
    };
    let validation = validate(policy);
    match &validation {
        Ok(cnpg_schedule) => {
            status.cnpg_schedule = Some(cnpg_schedule.clone());
            observed.push(Observed::new(
                conditions::POLICY_APPLIED,
                Status::True,
                Reason::PolicyValid,
                format!(
                    "base backups at {} UTC (CloudNativePG schedule {cnpg_schedule}), retention {}, WAL archived at least every {}; used by {databases} database(s)",
                    policy.spec.schedule, policy.spec.retention, policy.spec.wal_archive_timeout
                ),
            ));
        }
        Err(err) => {
            status.cnpg_schedule = None;
            observed.push(Observed::new(
                conditions::POLICY_APPLIED,
                Status::False,
                err.reason(),
                err.to_string(),
            ));
        }
    }
    let ready = conditions::summarize(&observed, "the policy is valid and applied");
    conditions::set(&mut observed, ready);

    // Restore drills. Their outcome is reported in DrillSucceeded, not in Ready: a failed drill
    // says something about the backups, not about the policy.
    // A drill step that fails is reported in DrillSucceeded and returned after the status is
    // written, so what the pass decided for the other databases is kept.
    let mut wake = None;
    let mut drill_error = None;
    if validation.is_ok() {
        match super::drills::reconcile(policy, &ctx, &mut status, jiff::Timestamp::now()).await {
            Ok(pass) => {
                observed.extend(pass.condition);
                wake = pass.wake;
                drill_error = pass.error;
            }
            Err(err) => {
                observed.push(Observed::new(
                    conditions::DRILL_SUCCEEDED,
                    Status::False,
                    err.reason(),
                    format!("restore drills cannot go on: {err}; this is tried again"),
                ));
                drill_error = Some(err);
            }
        }
    }

    let current = ctx.status_writes.previous(policy, policy.status.as_ref());
    let previous = current.clone().unwrap_or_default();
    status.observed_generation = policy.meta().generation;
    status.conditions = conditions::merge(
        &previous.conditions,
        &observed,
        policy.meta().generation,
        &now(),
    );
    if status::patch_if_changed(&api, &ctx.status_writes, policy, current.as_ref(), &status).await?
    {
        ctx.metrics
            .status_patches
            .get_or_create(&crate::metrics::KindLabels { kind: KIND })
            .inc();
        // Each drill publishes its own Event (started, succeeded, failed, timed out) with the
        // database and the measured times; DrillSucceeded flipping would only repeat it.
        let without_drills = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
            c.iter()
                .filter(|c| c.type_ != conditions::DRILL_SUCCEEDED)
                .cloned()
                .collect::<Vec<_>>()
        };
        super::publish_transitions(
            &ctx.events,
            &object_reference(policy),
            &without_drills(&previous.conditions),
            &without_drills(&status.conditions),
        )
        .await;
    }
    if let Some(err) = drill_error {
        // DrillSucceeded flips publish no Event (each drill publishes its own), so a step that
        // failed publishes one here.
        ctx.events
            .publish(
                &object_reference(policy),
                true,
                err.reason().as_str(),
                "Drill",
                format!("a restore drill step failed: {err}"),
            )
            .await;
        return Err(err);
    }
    let resync = ctx.config.resync();
    let requeue = wake
        .map(|at| {
            let until = at.duration_since(jiff::Timestamp::now());
            std::time::Duration::try_from(until)
                .unwrap_or_default()
                .clamp(std::time::Duration::from_secs(1), resync)
        })
        .unwrap_or(resync);
    Ok(Action::requeue(requeue))
}

/// Checks what the schema cannot: that the schedules are cron expressions CloudNativePG accepts.
/// Returns the base-backup schedule in CloudNativePG's six-field form.
fn validate(policy: &BackupPolicy) -> Result<String, Error> {
    let schedule = homelab_render::cron::to_cnpg_schedule(&policy.spec.schedule)
        .map_err(|e| Error::InvalidSpec(format!("spec.schedule: {e}")))?;
    if let Some(drill) = &policy.spec.drill {
        homelab_render::cron::to_cnpg_schedule(&drill.schedule)
            .map_err(|e| Error::InvalidSpec(format!("spec.drill.schedule: {e}")))?;
    }
    Ok(schedule)
}
