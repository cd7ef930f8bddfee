//! Operator-wide settings that shape rendered objects.

use std::collections::BTreeMap;

use homelab_api::common::{SecretStoreKind, SecretStoreRef};

/// Settings that apply to every rendered object unless a resource overrides them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    /// The External Secrets Operator store that reads Azure Key Vault, when a resource names none.
    pub default_secret_store: SecretStoreRef,
    /// cert-manager ClusterIssuer for Ingress certificates, when an Ingress names none.
    pub default_cluster_issuer: String,
    /// Namespace of the ingress controller (or Gateway data plane) pods that may reach apps.
    pub ingress_namespace: String,
    /// Labels of the ingress controller pods in `ingress_namespace`; every pod there when empty.
    pub ingress_pod_labels: BTreeMap<String, String>,
    /// Labels added to rendered PodMonitors, for a Prometheus that selects them by label.
    pub monitor_labels: BTreeMap<String, String>,
    /// Namespace of the cluster DNS pods that apps may query.
    pub dns_namespace: String,
    /// Repository of the PostgreSQL operand images.
    pub postgres_image_repository: String,
    /// What follows the major version in the default operand image's tag: CloudNativePG's image
    /// type and Debian release (`{major}-standard-trixie`). The bare `{major}` tags are the
    /// `system` images, which upstream keeps only for backward compatibility.
    pub postgres_image_flavor: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            default_secret_store: SecretStoreRef {
                name: "azure-keyvault".to_string(),
                kind: SecretStoreKind::ClusterSecretStore,
            },
            default_cluster_issuer: "letsencrypt-prod".to_string(),
            ingress_namespace: "ingress-nginx".to_string(),
            ingress_pod_labels: BTreeMap::new(),
            monitor_labels: BTreeMap::new(),
            dns_namespace: "kube-system".to_string(),
            postgres_image_repository: "ghcr.io/cloudnative-pg/postgresql".to_string(),
            postgres_image_flavor: "standard-trixie".to_string(),
        }
    }
}
