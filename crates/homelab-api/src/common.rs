//! Small types shared by the three kinds: references, deletion policy, secret store reference.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
}

/// What happens to data outside the custom resource when the custom resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the CloudNativePG cluster and its volumes, the backup container and the Key Vault
    /// secrets. Re-creating the resource adopts them again.
    #[default]
    Retain,
    /// Delete the cluster, its volumes, the backup container and the secrets the operator created.
    Delete,
}

/// Kind of External Secrets Operator store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecretStoreKind {
    /// A cluster-wide `ClusterSecretStore`.
    #[default]
    ClusterSecretStore,
    /// A `SecretStore` in the resource's own namespace.
    SecretStore,
}

/// The External Secrets Operator store that reads Azure Key Vault.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Name of the store.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Kind of the store.
    #[serde(default)]
    pub kind: SecretStoreKind,
}
