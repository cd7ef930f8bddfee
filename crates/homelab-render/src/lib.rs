//! Desired state, computed: pure functions from a `homelab.io` custom resource and a few observed
//! facts to the complete set of Kubernetes objects that implement it.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: the same input always renders
//! byte-identical output. Controllers apply the result with server-side apply and prune what is
//! no longer rendered; the `render` command prints it.
//!
//! - [`render_app_database`]: the CloudNativePG `Cluster`, its `PodMonitor`, the Barman Cloud
//!   `ObjectStore` and `ScheduledBackup`, the `ExternalSecret`s for the credentials and the backup
//!   SAS token, and the PgBouncer `Pooler`.
//! - [`render_restore_drill`] and [`render_on_demand_backup`]: objects the controllers create on
//!   request.
//! - [`render_homelab_app`]: Deployment, Service, Ingress or HTTPRoute, `ExternalSecret`s,
//!   PersistentVolumeClaims and NetworkPolicy.
//! - [`manifest`]: the same from YAML files, resolving references between the documents.
//! - [`child_kinds`]: every kind the operator creates, for building APIs and watches.

pub mod app;
pub mod config;
pub mod cron;
pub mod database;
pub mod error;
pub mod facts;
pub mod kinds;
pub mod manifest;
pub mod meta;
pub mod units;

pub use app::render_homelab_app;
pub use config::OperatorConfig;
pub use database::{
    VerificationReport, render_app_database, render_drill_verification, render_on_demand_backup,
    render_restore_drill,
};
pub use error::RenderError;
pub use facts::{
    AppDatabaseFacts, DatabaseFacts, DrillFacts, HomelabAppFacts, PolicyFacts, RestoreSourceFacts,
};
pub use kinds::{ChildKind, child_kinds};
pub use manifest::{ManifestError, render_manifests, to_yaml};
