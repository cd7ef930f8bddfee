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
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Kind of the store.
    #[serde(default)]
    pub kind: SecretStoreKind,
}

/// Most resource names (`cpu`, `memory`, `ephemeral-storage`, hugepages…) one container lists in
/// `requests` or `limits`. Bounds the cost of the quantity rules below.
pub const MAX_RESOURCE_NAMES: u64 = 16;

/// Longest quantity string in `requests` or `limits`.
pub const MAX_QUANTITY_LEN: u64 = 64;

/// Schema of an optional `resources` field: Kubernetes' `ResourceRequirements`, with every request
/// and limit checked to be a quantity (the apiserver does not check quantities inside custom
/// resources by itself, so `cpu: lots` would otherwise be stored and fail later in the Pod).
pub fn resource_requirements_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema =
        generator.subschema_for::<Option<k8s_openapi::api::core::v1::ResourceRequirements>>();
    for list in ["requests", "limits"] {
        if let Some(map) = schema
            .pointer_mut(&format!("/properties/{list}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            map.insert("maxProperties".into(), MAX_RESOURCE_NAMES.into());
            if let Some(value) = map
                .get_mut("additionalProperties")
                .and_then(serde_json::Value::as_object_mut)
            {
                value.insert("maxLength".into(), MAX_QUANTITY_LEN.into());
            }
        }
    }
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([
            {
                "rule": "!has(self.requests) || self.requests.all(k, isQuantity(string(self.requests[k])))",
                "message": "every request must be a quantity, such as 250m or 0.5 for CPU and 256Mi or 1Gi for memory",
                "fieldPath": ".requests"
            },
            {
                "rule": "!has(self.limits) || self.limits.all(k, isQuantity(string(self.limits[k])))",
                "message": "every limit must be a quantity, such as 250m or 0.5 for CPU and 256Mi or 1Gi for memory",
                "fieldPath": ".limits"
            }
        ]),
    );
    schema
}
