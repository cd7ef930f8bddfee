//! Input that the CRD schemas cannot reject but that cannot be rendered either.

/// Why a resource could not be rendered. Each message names the field and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A resource without `metadata.name` or `metadata.namespace`.
    #[error("{kind} has no metadata.{field}; every {kind} needs a name and a namespace")]
    MissingMetadata {
        kind: &'static str,
        field: &'static str,
    },

    /// A name that would make invalid child names.
    #[error("{field} {value:?} is not valid: {reason}")]
    InvalidName {
        field: String,
        value: String,
        reason: String,
    },

    /// A cron expression the converter refuses.
    #[error("{field} {value:?} is not a valid cron expression: {reason}")]
    InvalidSchedule {
        field: String,
        value: String,
        reason: String,
    },

    /// A duration or retention period outside what the field allows.
    #[error("{field} {value:?} is not valid: {reason}")]
    InvalidDuration {
        field: String,
        value: String,
        reason: String,
    },

    /// A Blob container template that expands to a name Azure refuses.
    #[error(
        "{field} {template:?} expands to {container:?} for app {app:?}, which is not a valid Blob container name (3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit); shorten the template or the app name"
    )]
    InvalidContainer {
        field: String,
        template: String,
        app: String,
        container: String,
    },

    /// The app asks for the pooler but the database has none.
    #[error(
        "spec.database.usePooler is true but AppDatabase {database:?} has no spec.pooler; add a pooler to the AppDatabase or set usePooler to false"
    )]
    NoPooler { database: String },

    /// Two volumes or secret directories mounted at the same path.
    #[error(
        "{field} mounts {path:?}, which {other} already uses; give each volume its own mountPath"
    )]
    DuplicateMountPath {
        field: String,
        path: String,
        other: String,
    },

    /// An environment variable set twice.
    #[error(
        "environment variable {name:?} is set by both {first} and {second}; set it in one place"
    )]
    DuplicateEnv {
        name: String,
        first: String,
        second: String,
    },

    /// A reference to another resource that is not known.
    #[error("{field} names {kind} {name:?}, which {reason}")]
    UnresolvedReference {
        field: String,
        kind: &'static str,
        name: String,
        reason: String,
    },

    /// A restore whose source has nothing to restore from.
    #[error("{field}: {reason}")]
    InvalidRestore { field: String, reason: String },

    /// A typed Kubernetes object that did not serialize (a bug, not bad input).
    #[error("could not serialize {kind} {name}: {reason}")]
    Serialize {
        kind: &'static str,
        name: String,
        reason: String,
    },
}
