//! Every reason the operator writes into a condition, in one list: the kinds that report it, and
//! how Argo CD shows a resource whose `Ready` is False for it. Conditions take a [`Reason`], so a
//! reason cannot be emitted without being listed here; the Argo CD health checks and the README
//! are tested against [`Reason::ALL`].

use std::fmt;

/// The three kinds, as far as reasons are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    HomelabApp,
    AppDatabase,
    BackupPolicy,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::HomelabApp => "HomelabApp",
            Kind::AppDatabase => "AppDatabase",
            Kind::BackupPolicy => "BackupPolicy",
        }
    }
}

/// How Argo CD shows a resource whose `Ready` condition is False (or Unknown) for a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shows {
    /// It resolves without anyone changing anything (the health check's `transient` table).
    Progressing,
    /// Someone must change something.
    Degraded,
    /// The reason never makes `Ready` False: it goes with a True condition, or with a condition
    /// that `Ready` does not summarise (`DrillSucceeded`).
    NotOnReady,
}

macro_rules! reasons {
    ($( $(#[doc = $doc:expr])* $reason:ident: $shows:ident, [$($kind:ident),+]; )+) => {
        /// A condition reason the operator emits.
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[doc = $doc])* $reason, )+
        }

        impl Reason {
            /// Every reason, in the order listed here.
            pub const ALL: &'static [Reason] = &[$(Reason::$reason),+];

            /// The reason as written into conditions and Events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$reason => stringify!($reason), )+
                }
            }

            /// How Argo CD shows `Ready=False` for this reason.
            pub const fn shows(self) -> Shows {
                match self {
                    $( Reason::$reason => Shows::$shows, )+
                }
            }

            /// The kinds that report it.
            pub const fn kinds(self) -> &'static [Kind] {
                match self {
                    $( Reason::$reason => &[$(Kind::$kind),+], )+
                }
            }
        }
    };
}

reasons! {
    // Every kind, from its reconcile error path.
    /// An apiserver request failed; retried with backoff.
    KubernetesAPIError: Progressing, [HomelabApp, AppDatabase, BackupPolicy];
    /// Applying or deleting a child failed for another reason than a refusal; retried.
    ApplyFailed: Progressing, [HomelabApp, AppDatabase, BackupPolicy];
    /// The spec passed admission but cannot be turned into child objects.
    InvalidSpec: Degraded, [HomelabApp, AppDatabase, BackupPolicy];
    /// A kind the resource needs is not installed.
    CRDNotInstalled: Degraded, [HomelabApp, AppDatabase, BackupPolicy];
    /// The apiserver refused a rendered child.
    ChildRejected: Degraded, [HomelabApp, AppDatabase, BackupPolicy];
    /// Everything the resource asks for is in place.
    Ready: NotOnReady, [HomelabApp, AppDatabase, BackupPolicy];

    // HomelabApp.
    /// The Deployment has not been seen yet.
    DeploymentMissing: Progressing, [HomelabApp];
    MinimumReplicasAvailable: NotOnReady, [HomelabApp];
    /// The Deployment's pods are not available.
    ReplicasUnavailable: Progressing, [HomelabApp];
    DatabaseReady: NotOnReady, [HomelabApp];
    /// The referenced AppDatabase is not ready yet.
    DatabaseNotReady: Progressing, [HomelabApp];
    /// The referenced AppDatabase does not exist.
    DatabaseNotFound: Degraded, [HomelabApp, AppDatabase];
    SecretsSynced: NotOnReady, [HomelabApp];
    /// External Secrets Operator reports the app's secrets failing to sync.
    SecretsNotSynced: Degraded, [HomelabApp];
    /// External Secrets Operator has not reported on a secret yet.
    WaitingForExternalSecrets: Progressing, [HomelabApp, AppDatabase];

    // AppDatabase: the cluster, the credentials, the Azure side.
    ClusterHealthy: NotOnReady, [AppDatabase];
    ClusterCreating: Progressing, [AppDatabase];
    ClusterNotFound: Progressing, [AppDatabase];
    ClusterNotHealthy: Progressing, [AppDatabase];
    CredentialsSynced: NotOnReady, [AppDatabase];
    CredentialsNotSynced: Degraded, [AppDatabase];
    ObjectStoreReady: NotOnReady, [AppDatabase];
    ObjectStoreMissing: Progressing, [AppDatabase];
    /// A volume cannot grow: its StorageClass does not allow expansion.
    StorageCannotExpand: Degraded, [AppDatabase];
    BackupPolicyNotFound: Degraded, [AppDatabase];
    BackupDestinationInUse: Degraded, [AppDatabase];
    SecretStoreNotUsable: Degraded, [AppDatabase];
    AzureUnreachable: Progressing, [AppDatabase];
    AzureThrottled: Progressing, [AppDatabase];
    /// Azure answered with an error not classified otherwise; retried.
    AzureError: Progressing, [AppDatabase];
    AzureForbidden: Degraded, [AppDatabase];
    AzureUnauthenticated: Degraded, [AppDatabase];
    SecretSoftDeleted: Degraded, [AppDatabase];
    SasTokenRefused: Degraded, [AppDatabase];
    SecretDisabled: Degraded, [AppDatabase];
    InvalidAzureName: Degraded, [AppDatabase];
    AzureMisconfigured: Degraded, [AppDatabase];

    // AppDatabase: backups and restores.
    BackupsHealthy: NotOnReady, [AppDatabase];
    BackupsSuspended: NotOnReady, [AppDatabase];
    /// On `BackupReady=Unknown`, which does not make `Ready` False: a new database is ready
    /// before its first backup.
    WaitingForFirstBackup: NotOnReady, [AppDatabase];
    WALArchivingFailing: Degraded, [AppDatabase];
    WALArchivingStale: Degraded, [AppDatabase];
    BackupFailing: Degraded, [AppDatabase];
    BackupStale: Degraded, [AppDatabase];
    Restored: NotOnReady, [AppDatabase];
    /// On `RestoreReady=True`: the restore may proceed.
    RestoreStarting: NotOnReady, [AppDatabase];
    SourceHasNoBackup: Progressing, [AppDatabase];
    TargetTimeInFuture: Degraded, [AppDatabase];
    TargetTimeBeforeRecoveryWindow: Degraded, [AppDatabase];

    // BackupPolicy. Drill outcomes are in DrillSucceeded, which Ready does not summarise.
    PolicyValid: NotOnReady, [BackupPolicy];
    DrillsSucceeded: NotOnReady, [BackupPolicy];
    NoDrillYet: NotOnReady, [BackupPolicy];
    DrillFailed: NotOnReady, [BackupPolicy];
    DrillObjectiveMissed: NotOnReady, [BackupPolicy];
}

impl Reason {
    /// The reason of that name, if the operator emits it.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name)
    }

    /// The reasons `kind` can report on `Ready=False`, with how Argo CD shows each.
    pub fn failing_on(kind: Kind) -> impl Iterator<Item = (Reason, Shows)> {
        Reason::ALL
            .iter()
            .copied()
            .filter(move |r| r.kinds().contains(&kind) && r.shows() != Shows::NotOnReady)
            .map(|r| (r, r.shows()))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_name(reason.as_str()), Some(*reason));
        }
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        assert_eq!(Reason::from_name("NoSuchReason"), None);
    }

    #[test]
    fn failing_reasons_are_per_kind() {
        let app: Vec<_> = Reason::failing_on(Kind::HomelabApp).collect();
        assert!(app.contains(&(Reason::DeploymentMissing, Shows::Progressing)));
        assert!(app.contains(&(Reason::ChildRejected, Shows::Degraded)));
        assert!(!app.iter().any(|(r, _)| *r == Reason::ClusterCreating));
        assert!(!app.iter().any(|(r, _)| *r == Reason::Ready));
    }
}
