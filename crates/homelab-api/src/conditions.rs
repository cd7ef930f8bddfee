//! Conditions in the `metav1.Condition` shape, and the rule for updating them: the transition
//! time moves only when the status flips, so repeated reconciles produce identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::reasons::Reason;

/// Summary condition on every kind: `True` when everything the resource asks for is in place.
pub const READY: &str = "Ready";

/// `AppDatabase`: the CloudNativePG cluster reports a healthy state.
pub const CLUSTER_READY: &str = "ClusterReady";
/// `AppDatabase`: the generated password exists in Key Vault and is synced into the cluster.
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// `AppDatabase`: the backup container and its credentials exist.
pub const STORAGE_READY: &str = "StorageReady";
/// `AppDatabase`: base backups are recent and WAL archiving is within the policy's bound.
pub const BACKUP_READY: &str = "BackupReady";
/// `AppDatabase`: a requested restore can proceed (the target lies inside the recovery window).
pub const RESTORE_READY: &str = "RestoreReady";
/// `AppDatabase`, present only when a volume cannot get the size asked for: its storage class
/// does not allow expansion.
pub const VOLUMES_READY: &str = "VolumesReady";

/// `HomelabApp`: the Deployment has its desired replicas available.
pub const AVAILABLE: &str = "Available";
/// `HomelabApp`: the referenced database is ready and its credentials are synced.
pub const DATABASE_READY: &str = "DatabaseReady";
/// `HomelabApp`: the app's secrets are synced from Key Vault.
pub const SECRETS_READY: &str = "SecretsReady";

/// `BackupPolicy`: the policy is valid and applied to the databases that reference it.
pub const POLICY_APPLIED: &str = "Applied";
/// `BackupPolicy`: the last restore drill of every covered database succeeded.
pub const DRILL_SUCCEEDED: &str = "DrillSucceeded";

/// The three values a condition's status can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    pub fn from_bool(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// A condition as a controller computes it, before times and generations are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges freshly observed conditions into the previous list.
///
/// `lastTransitionTime` is carried over from the previous condition of the same type unless its
/// status changed; `now` is used only for new or flipped conditions. Conditions of types that are
/// no longer observed are dropped. The result is ordered as `observed` is.
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = o.status.as_str();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.type_.to_string(),
                status: status.to_string(),
                reason: o.reason.as_str().to_string(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Sets `observed` in a written list of conditions by its type, leaving the others as they are:
/// the transition time moves only when the status flips, as in [`merge`].
pub fn set_written(
    conditions: &mut Vec<Condition>,
    observed: &Observed,
    generation: Option<i64>,
    now: &Time,
) {
    let merged = merge(conditions, std::slice::from_ref(observed), generation, now);
    let Some(condition) = merged.into_iter().next() else {
        return;
    };
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None if condition.type_ == READY => conditions.insert(0, condition),
        None => conditions.push(condition),
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of that type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets `condition` by its type: replaces the condition of that type, or adds it (`Ready` first,
/// any other type last).
pub fn set(list: &mut Vec<Observed>, condition: Observed) {
    match list.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None if condition.type_ == READY => list.insert(0, condition),
        None => list.push(condition),
    }
}

/// Summarises specific conditions into `Ready`: the first one that is not `True` gives its
/// reason and message; otherwise `Ready=True` with `ready_message`.
pub fn summarize(specific: &[Observed], ready_message: &str) -> Observed {
    match specific.iter().find(|c| c.status != Status::True) {
        Some(blocking) => Observed::new(
            READY,
            if blocking.status == Status::False {
                Status::False
            } else {
                Status::Unknown
            },
            blocking.reason,
            blocking.message.clone(),
        ),
        None => Observed::new(READY, Status::True, Reason::Ready, ready_message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let first = merge(
            &[],
            &[Observed::new(
                READY,
                Status::False,
                Reason::ClusterCreating,
                "a",
            )],
            Some(1),
            &t0,
        );
        let second = merge(
            &first,
            &[Observed::new(
                READY,
                Status::False,
                Reason::ClusterNotHealthy,
                "b",
            )],
            Some(2),
            &t1,
        );
        assert_eq!(second[0].last_transition_time, t0);
        assert_eq!(second[0].reason, "ClusterNotHealthy");
        assert_eq!(second[0].observed_generation, Some(2));
        let third = merge(
            &second,
            &[Observed::new(READY, Status::True, Reason::Ready, "c")],
            Some(2),
            &t1,
        );
        assert_eq!(third[0].last_transition_time, t1);
    }

    #[test]
    fn a_written_condition_is_replaced_by_type_and_keeps_its_transition_time() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let mut written = merge(
            &[],
            &[
                Observed::new(READY, Status::False, Reason::ClusterCreating, "a"),
                Observed::new(CLUSTER_READY, Status::Unknown, Reason::ClusterCreating, "b"),
            ],
            Some(1),
            &t0,
        );
        set_written(
            &mut written,
            &Observed::new(READY, Status::False, Reason::AzureForbidden, "c"),
            Some(1),
            &t1,
        );
        assert_eq!(written.len(), 2);
        assert_eq!(
            (written[0].reason.as_str(), written[0].message.as_str()),
            ("AzureForbidden", "c")
        );
        assert_eq!(written[0].last_transition_time, t0, "still False");
        assert_eq!(written[1].reason, "ClusterCreating");
    }

    #[test]
    fn conditions_are_set_by_type() {
        let mut list = vec![Observed::new(
            CLUSTER_READY,
            Status::True,
            Reason::ClusterHealthy,
            "",
        )];
        set(
            &mut list,
            Observed::new(READY, Status::False, Reason::CRDNotInstalled, "a"),
        );
        set(
            &mut list,
            Observed::new(CLUSTER_READY, Status::False, Reason::ClusterNotHealthy, "b"),
        );
        set(
            &mut list,
            Observed::new(READY, Status::False, Reason::ClusterNotHealthy, "c"),
        );
        let seen: Vec<_> = list.iter().map(|c| (c.type_, c.reason)).collect();
        assert_eq!(
            seen,
            [
                (READY, Reason::ClusterNotHealthy),
                (CLUSTER_READY, Reason::ClusterNotHealthy)
            ]
        );
    }

    #[test]
    fn summary_takes_the_first_blocking_condition() {
        let specific = [
            Observed::new(CLUSTER_READY, Status::True, Reason::ClusterHealthy, ""),
            Observed::new(
                CREDENTIALS_READY,
                Status::False,
                Reason::CredentialsNotSynced,
                "waiting for ESO",
            ),
            Observed::new(
                BACKUP_READY,
                Status::Unknown,
                Reason::WaitingForFirstBackup,
                "",
            ),
        ];
        let ready = summarize(&specific, "all good");
        assert_eq!(ready.status, Status::False);
        assert_eq!(ready.reason, Reason::CredentialsNotSynced);
        let all_true = [Observed::new(
            CLUSTER_READY,
            Status::True,
            Reason::ClusterHealthy,
            "",
        )];
        assert_eq!(summarize(&all_true, "all good").status, Status::True);
    }
}
