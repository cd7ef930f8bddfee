//! `HomelabApp`: one web app — Deployment, Service, Ingress or HTTPRoute with TLS, secrets from
//! Azure Key Vault, wiring to its `AppDatabase`, volumes and a NetworkPolicy.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, LocalRef, SecretStoreRef};

/// A self-hosted web app (linkding, commafeed, wallabag, n8n, listmonk…) and everything it needs
/// to run: Deployment, Service, Ingress or Gateway API route with TLS, secrets from Key Vault,
/// database wiring and a NetworkPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "homelab.io",
    version = "v1alpha1",
    kind = "HomelabApp",
    namespaced,
    status = "HomelabAppStatus",
    shortname = "happ",
    category = "homelab",
    doc = "A self-hosted web app with its Deployment, Service, Ingress or HTTPRoute, Key Vault secrets, database wiring and NetworkPolicy.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the app is available"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the app is or is not ready"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Where the app is served"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas",
        priority = 1,
        description = "Available replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.ingress) && has(self.route))", "message": "set at most one of spec.ingress and spec.route", "fieldPath": ".route"},
    {"rule": "!has(self.env) || !has(self.database) || !self.env.exists(e, self.database.env.exists(d, d.name == e.name))",
     "message": "spec.env and spec.database.env set the same environment variable: each variable can come from one place only",
     "fieldPath": ".env"},
    {"rule": "!has(self.secrets) || !self.secrets.exists(s, !has(s.mountPath) && ((has(self.env) && self.env.exists(e, e.name == s.name)) || (has(self.database) && self.database.env.exists(d, d.name == s.name))))",
     "message": "a secret without mountPath is an environment variable, and spec.env or spec.database.env already sets one of the same name: each variable can come from one place only",
     "fieldPath": ".secrets"},
    {"rule": "!has(self.persistence) || self.persistence.all(v, self.persistence.exists_one(w, w.mountPath == v.mountPath))",
     "message": "two volumes in spec.persistence have the same mountPath: give each its own directory",
     "fieldPath": ".persistence"}
]))]
pub struct HomelabAppSpec {
    /// Container image, e.g. `sissbruecker/linkding:1.41.0`.
    #[schemars(length(min = 1, max = 512), pattern(r"^[^\s]+$"))]
    pub image: String,

    /// Number of pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,

    /// Port the app listens on inside the container.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,

    /// Plain environment variables. Secrets belong in `secrets`, database settings in `database`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// CPU and memory for the app's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::resource_requirements_schema")]
    pub resources: Option<ResourceRequirements>,

    /// HTTP health check used for readiness and liveness probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Expose the app through an Ingress with a cert-manager certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Expose the app through a Gateway API `HTTPRoute` attached to an existing Gateway (the
    /// successor of ingress-nginx). Mutually exclusive with `ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,

    /// Connect the app to an AppDatabase, naming the environment variables it expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseBinding>,

    /// Secrets from Azure Key Vault, synced by External Secrets Operator into a Secret in this
    /// namespace and exposed as environment variables or files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub secrets: Vec<AppSecret>,

    /// The External Secrets Operator store for this app's secrets. Defaults to the operator's
    /// configured ClusterSecretStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,

    /// Persistent volumes, one PersistentVolumeClaim each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub persistence: Vec<VolumeSpec>,

    /// What deleting this HomelabApp, or removing a volume from `persistence`, does to the
    /// volumes' PersistentVolumeClaims. `Retain` (default) keeps them and the data on them: an
    /// app re-created under the same name mounts them again (delete a claim by hand when its
    /// data is no longer wanted). `Delete` removes them with the app or the volume.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Network isolation: on by default.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Pod security. By default the pod meets the Pod Security Standards `restricted` profile.
    #[serde(default)]
    pub security: SecuritySpec,
}

fn default_replicas() -> i32 {
    1
}

fn default_port() -> i32 {
    8080
}

/// A plain environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 128), pattern(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"))]
    pub name: String,
    /// Value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// HTTP health check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Path answered with a 2xx or 3xx status when the app is healthy, e.g. `/health`.
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub path: String,
    /// Port, if not the app's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Seconds to wait after start before the first liveness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
}

/// Ingress settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name, e.g. `links.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")
    )]
    pub host: String,
    /// Path prefix.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub path: String,
    /// IngressClass.
    #[serde(default = "default_ingress_class")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub class_name: String,
    /// TLS through cert-manager. On by default with the operator's configured cluster issuer.
    #[serde(default)]
    pub tls: TlsSpec,
}

fn default_path() -> String {
    "/".to_string()
}

fn default_ingress_class() -> String {
    "nginx".to_string()
}

/// TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve HTTPS.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// cert-manager ClusterIssuer. Defaults to the operator's configured issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub cluster_issuer: Option<String>,
    /// Secret for the certificate. Defaults to `{name}-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            cluster_issuer: None,
            secret_name: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Gateway API route settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The Gateway to attach to.
    pub gateway: GatewayRef,
    /// Host name, e.g. `links.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")
    )]
    pub hostname: String,
    /// Path prefix.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub path: String,
}

/// A Gateway, possibly in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Gateway name.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Gateway namespace; defaults to the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// Listener on the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub section_name: Option<String>,
}

/// How the app reaches its database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBinding {
    /// The AppDatabase, in this namespace.
    #[serde(rename = "ref")]
    pub database_ref: LocalRef,
    /// Connect through the PgBouncer pooler instead of directly to the primary.
    #[serde(default)]
    pub use_pooler: bool,
    /// Environment variables to set, each from one connection field.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<DatabaseEnv>,
}

/// One environment variable holding a database connection field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEnv {
    /// Variable name, as the app documents it (e.g. `LD_DB_HOST`).
    #[schemars(length(min = 1, max = 128), pattern(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"))]
    pub name: String,
    /// The connection field.
    pub field: ConnectionField,
}

/// A database connection field.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionField {
    /// Host of the read-write Service (or the pooler).
    Host,
    /// Port (5432).
    Port,
    /// Database name.
    Database,
    /// Role name.
    Username,
    /// Password (from a Secret, never inline).
    Password,
    /// `postgresql://user:password@host:5432/database` (from a Secret).
    Uri,
    /// `jdbc:postgresql://host:5432/database` (no credentials).
    JdbcUrl,
}

/// A secret from Key Vault.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppSecret {
    /// Environment variable name, or the file name when `mountPath` is set.
    #[schemars(length(min = 1, max = 128), pattern(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"))]
    pub name: String,
    /// The Key Vault secret.
    #[schemars(pattern(r"^[0-9a-zA-Z-]{1,127}$"))]
    pub key_vault_secret: String,
    /// Mount as a file in this directory instead of an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub mount_path: Option<String>,
}

/// A persistent volume. Its claim can grow but not shrink, and cannot change storage class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
     "message": "volume size can grow but never shrink", "fieldPath": ".size"},
    {"rule": "has(self.storageClass) == has(oldSelf.storageClass) && (!has(self.storageClass) || self.storageClass == oldSelf.storageClass)",
     "message": "storageClass is immutable: a volume cannot move to another storage class; add a volume under a new name instead", "fieldPath": ".storageClass", "reason": "FieldValueForbidden"}
]))]
pub struct VolumeSpec {
    /// Volume name; the PersistentVolumeClaim is `{app}-{name}`.
    #[schemars(length(min = 1, max = 12), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Where to mount it.
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub mount_path: String,
    /// Size, e.g. `1Gi`.
    #[schemars(length(max = 16), pattern(r"^[1-9][0-9]*(Mi|Gi|Ti)$"))]
    pub size: String,
    /// Storage class; the cluster default if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub storage_class: Option<String>,
}

/// NetworkPolicy settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create a NetworkPolicy that admits traffic only from the ingress controller and this
    /// namespace, and lets the app reach only DNS, its database and `egress`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Namespace of the ingress controller or Gateway pods. Defaults to the operator's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub ingress_namespace: Option<String>,
    /// Additional destinations the app may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub egress: Vec<EgressRule>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress_namespace: None,
            egress: Vec::new(),
        }
    }
}

/// A destination the app may reach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, isCIDR(e) && cidr(self.cidr).containsCIDR(e))",
     "message": "every except entry must be a network in CIDR notation inside cidr, such as 192.168.0.0/16 inside 0.0.0.0/0"}
]))]
pub struct EgressRule {
    /// Destination network in CIDR notation, e.g. `0.0.0.0/0` for the IPv4 internet, `::/0` for
    /// the IPv6 internet, or `192.168.10.0/24`.
    #[schemars(length(min = 4, max = 43))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "isCIDR(self)", "message": "must be a network in CIDR notation, such as 0.0.0.0/0, 192.168.10.0/24 or ::/0"}
    ]))]
    pub cidr: String,
    /// Networks inside `cidr` the app may not reach, e.g. the private ranges `10.0.0.0/8`,
    /// `172.16.0.0/12` and `192.168.0.0/16`, so that `0.0.0.0/0` means the internet and not the
    /// home network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 4, max = 43)))]
    pub except: Vec<String>,
    /// Destination ports; all ports if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// Pod security settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Allow the container to run as root, for images that cannot run otherwise. The pod then
    /// meets the `baseline` profile instead of `restricted`.
    #[serde(default)]
    pub run_as_root: bool,
    /// User ID to run as (ignored with `runAsRoot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// Group ID for volumes (`fsGroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub fs_group: Option<i64>,
}

/// Observed state of a `HomelabApp`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HomelabAppStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` and the specific `Available`, `DatabaseReady` and `SecretsReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Where the app is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Pods available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,

    /// The database host the app connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_host: Option<String>,
}
