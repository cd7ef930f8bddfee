//! The operator's Azure side, on Microsoft's official SDK crates.
//!
//! For each database the operator keeps, in Azure:
//! - a generated password in Key Vault (`{app}-db-password`), created only if absent and never
//!   overwritten ([`SecretVault::ensure_password`]);
//! - a private Blob container for its backups (`{app}-db-clean`, [`BlobStore::ensure_container`]);
//! - a container-scoped SAS token for Barman Cloud in Key Vault (`{app}-db-backup-sas`), whose
//!   secret `exp` attribute is the token's expiry, rotated when less than a third of its lifetime
//!   remains ([`ensure_backup_sas`]).
//!
//! Controllers use the [`SecretVault`] and [`BlobStore`] traits and never see HTTP.
//! [`AzureClients`] builds the implementations from [`AzureConfig`]: the identity (workload
//! identity, service principal, managed identity, or an explicit credential), the cloud, and SDK
//! retries. The vault URL is given per call; a blob store is bound to one account's service URL.
//! Errors ([`AzureError`]) are classified — unreachable, throttled (with `Retry-After`), forbidden
//! (naming the missing role), soft-deleted, invalid name — and each message says what to do.

mod backup;
mod blob;
mod clients;
mod config;
mod error;
mod keyvault;
mod names;
mod password;
mod sas;
mod secret;
mod wal;

pub use backup::{SasOutcome, ensure_backup_sas};
pub use blob::{AzureBlobStore, BlobStore, ContainerOutcome};
pub use clients::AzureClients;
pub use config::{AzureConfig, Cloud, CredentialConfig, RetryConfig, SasSigning};
pub use error::{AzureError, AzureRole, Result, Service};
pub use keyvault::{
    GENERATED_CONTENT_TYPE, Generator, KeyVaultSecrets, MANAGED_BY_TAG, MANAGED_BY_VALUE,
    SAS_CONTENT_TYPE, SIGNED_FOR_TAG, SecretOutcome, SecretVault, StoredSecret,
};
pub use names::{ContainerName, SecretName};
pub use password::{DEFAULT_PASSWORD_LENGTH, RandomnessError, generate_password};
pub use sas::{
    BARMAN_PERMISSIONS, CLOCK_SKEW, DEFAULT_SAS_LIFETIME, MAX_USER_DELEGATION_LIFETIME,
    RotationDecision, RotationReason, SAS_VERSION, SasPolicy, SasProtocol, SasScope, SasToken,
    UserDelegationKey, rotation_decision, sign_service_sas, sign_user_delegation_sas, validity,
};
pub use secret::SecretValue;
pub use wal::{
    ArchivedWal, ListedBlob, WalSegment, newest_archived_wal, newest_segment, probe_prefixes,
};
