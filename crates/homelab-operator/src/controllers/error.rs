//! Why a reconciliation failed. Each error has a category that becomes the condition reason and
//! the Event reason, and a message written for the person reading `kubectl describe`.

use std::time::Duration;

use homelab_api::reasons::Reason;
use homelab_render::RenderError;

use crate::kubernetes::children::ChildError;

/// The kinds a resource can reference that the operator looks up itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferencedKind {
    AppDatabase,
    BackupPolicy,
}

impl std::fmt::Display for ReferencedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferencedKind::AppDatabase => "AppDatabase",
            ReferencedKind::BackupPolicy => "BackupPolicy",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec passed admission but cannot be turned into child objects.
    #[error("{0}")]
    InvalidSpec(String),

    /// The resource cannot be rendered into its children; the render error says which field.
    #[error("{0}")]
    Render(#[from] homelab_render::RenderError),

    /// A referenced object does not exist.
    #[error(
        "{kind} {name:?} does not exist in namespace {namespace}: create it or fix the reference"
    )]
    MissingReference {
        kind: ReferencedKind,
        name: String,
        namespace: String,
    },

    /// A kind the resource needs is not installed in the cluster.
    #[error("{0}")]
    MissingCrd(String),

    /// Applying or deleting a child failed.
    #[error("{0}")]
    Child(#[from] ChildError),

    /// Any other apiserver failure.
    #[error("Kubernetes API request failed: {}", crate::kubernetes::describe(.0))]
    Kube(#[from] kube::Error),

    /// Azure failed or refused a request.
    #[error("{0}")]
    Azure(#[from] homelab_azure::AzureError),

    /// Another AppDatabase already archives to this database's container under the same server
    /// name.
    #[error(
        "Blob container {container} ({service_url}) already holds the WAL and base backups of server {server_name}, written by AppDatabase {holder}: a second cluster cannot archive into the same history, so this database is not created. Give it its own destination: point its BackupPolicy at another storage account or another containerTemplate (for example \"{{app}}-dev-db\"), or give this AppDatabase another name"
    )]
    BackupDestinationInUse {
        container: String,
        service_url: String,
        server_name: String,
        holder: String,
    },

    /// The External Secrets store a database names cannot give its Key Vault URL.
    #[error("{0}")]
    SecretStore(String),
}

impl Error {
    /// The condition and Event reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::Render(err) => match err {
                RenderError::UnresolvedReference {
                    kind: "AppDatabase",
                    ..
                } => Reason::DatabaseNotFound,
                RenderError::UnresolvedReference {
                    kind: "BackupPolicy",
                    ..
                } => Reason::BackupPolicyNotFound,
                _ => Reason::InvalidSpec,
            },
            Error::MissingReference { kind, .. } => match kind {
                ReferencedKind::AppDatabase => Reason::DatabaseNotFound,
                ReferencedKind::BackupPolicy => Reason::BackupPolicyNotFound,
            },
            Error::MissingCrd(_) => Reason::CRDNotInstalled,
            Error::Child(err) if err.is_rejection() => Reason::ChildRejected,
            Error::Child(_) => Reason::ApplyFailed,
            Error::Kube(_) => Reason::KubernetesAPIError,
            Error::Azure(err) => crate::azure::reason(err),
            Error::SecretStore(_) => Reason::SecretStoreNotUsable,
            Error::BackupDestinationInUse { .. } => Reason::BackupDestinationInUse,
        }
    }

    /// Whether retrying soon can help. Permanent errors wait for the user to change something
    /// (every change re-triggers reconciliation), so they are retried only slowly.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::InvalidSpec(_)
            | Error::Render(_)
            | Error::MissingReference { .. }
            | Error::MissingCrd(_)
            | Error::SecretStore(_)
            | Error::BackupDestinationInUse { .. } => false,
            Error::Child(err) => !err.is_rejection(),
            Error::Kube(_) => true,
            Error::Azure(err) => err.is_transient(),
        }
    }
}

impl Error {
    /// How long the far side asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Azure(err) => err.retry_after(),
            _ => None,
        }
    }
}

/// Exponential backoff for transient failures: 1s, 2s, 4s … capped at five minutes.
pub fn backoff(failures: u32) -> Duration {
    let seconds = 1u64 << failures.min(9);
    Duration::from_secs(seconds.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_errors_keep_their_kind() {
        let missing = Error::from(RenderError::UnresolvedReference {
            field: "spec.database.ref.name".into(),
            kind: "AppDatabase",
            name: "nowhere".into(),
            reason: "does not exist in this namespace".into(),
        });
        assert_eq!(missing.reason(), Reason::DatabaseNotFound);
        assert!(!missing.is_transient());
        let no_pooler = Error::from(RenderError::NoPooler {
            database: "n8n".into(),
        });
        assert_eq!(no_pooler.reason(), Reason::InvalidSpec);
        assert_eq!(
            no_pooler.to_string(),
            RenderError::NoPooler {
                database: "n8n".into()
            }
            .to_string()
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
