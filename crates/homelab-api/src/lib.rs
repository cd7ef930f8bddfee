//! The `homelab.io/v1alpha1` API: the three custom resources users write, their status, the
//! naming conventions every child object follows, and the generated CustomResourceDefinitions.
//!
//! This crate does no I/O. Renderers, controllers and tests all build on it.

// kube's `printcolumn(...)` attributes repeat keys such as `type_`, which this lint mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod app_database;
pub mod backup_policy;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod homelab_app;
pub mod naming;
pub mod reasons;
pub mod reference;

pub use app_database::{AppDatabase, AppDatabaseSpec, AppDatabaseStatus};
pub use backup_policy::{BackupPolicy, BackupPolicySpec, BackupPolicyStatus};
pub use homelab_app::{HomelabApp, HomelabAppSpec, HomelabAppStatus};

/// API group of every kind in this crate.
pub const GROUP: &str = "homelab.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get homelab` lists all three kinds.
pub const CATEGORY: &str = "homelab";
