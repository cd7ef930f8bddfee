//! Every kind of object the operator creates, with what a dynamic client needs to reach it.

use kube::core::{ApiResource, GroupVersionKind};

/// The kinds of custom resource that own children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    AppDatabase,
    BackupPolicy,
    HomelabApp,
}

impl OwnerKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::AppDatabase => "AppDatabase",
            OwnerKind::BackupPolicy => "BackupPolicy",
            OwnerKind::HomelabApp => "HomelabApp",
        }
    }
}

/// A kind of child object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// The custom resources that create objects of this kind.
    pub owners: &'static [OwnerKind],
}

impl ChildKind {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group, version and kind.
    pub fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(self.group, self.version, self.kind)
    }

    /// What `kube::Api::<DynamicObject>` needs.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&self.gvk(), self.plural)
    }

    /// Whether a custom resource of `owner` kind creates objects of this kind.
    pub fn is_owned_by(&self, owner: OwnerKind) -> bool {
        self.owners.contains(&owner)
    }
}

use OwnerKind::{AppDatabase as Adb, BackupPolicy as Bp, HomelabApp as App};

pub const DEPLOYMENT: ChildKind = child("apps", "v1", "Deployment", "deployments", &[App, Adb]);
pub const JOB: ChildKind = child("batch", "v1", "Job", "jobs", &[Bp]);
pub const SERVICE: ChildKind = child("", "v1", "Service", "services", &[App]);
pub const PERSISTENT_VOLUME_CLAIM: ChildKind = child(
    "",
    "v1",
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    &[App],
);
pub const INGRESS: ChildKind = child("networking.k8s.io", "v1", "Ingress", "ingresses", &[App]);
pub const NETWORK_POLICY: ChildKind = child(
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "networkpolicies",
    &[App],
);
pub const HTTP_ROUTE: ChildKind = child(
    "gateway.networking.k8s.io",
    "v1",
    "HTTPRoute",
    "httproutes",
    &[App],
);
pub const EXTERNAL_SECRET: ChildKind = child(
    "external-secrets.io",
    "v1",
    "ExternalSecret",
    "externalsecrets",
    &[Adb, App],
);
pub const CLUSTER: ChildKind = child(
    "postgresql.cnpg.io",
    "v1",
    "Cluster",
    "clusters",
    &[Adb, Bp],
);
pub const POOLER: ChildKind = child("postgresql.cnpg.io", "v1", "Pooler", "poolers", &[Adb]);
pub const SCHEDULED_BACKUP: ChildKind = child(
    "postgresql.cnpg.io",
    "v1",
    "ScheduledBackup",
    "scheduledbackups",
    &[Adb],
);
pub const BACKUP: ChildKind = child("postgresql.cnpg.io", "v1", "Backup", "backups", &[Adb]);
pub const OBJECT_STORE: ChildKind = child(
    "barmancloud.cnpg.io",
    "v1",
    "ObjectStore",
    "objectstores",
    &[Adb],
);
pub const POD_MONITOR: ChildKind = child(
    "monitoring.coreos.com",
    "v1",
    "PodMonitor",
    "podmonitors",
    &[Adb],
);

const fn child(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    owners: &'static [OwnerKind],
) -> ChildKind {
    ChildKind {
        group,
        version,
        kind,
        plural,
        namespaced: true,
        owners,
    }
}

static CHILD_KINDS: [ChildKind; 14] = [
    DEPLOYMENT,
    JOB,
    SERVICE,
    PERSISTENT_VOLUME_CLAIM,
    INGRESS,
    NETWORK_POLICY,
    HTTP_ROUTE,
    EXTERNAL_SECRET,
    CLUSTER,
    POOLER,
    SCHEDULED_BACKUP,
    BACKUP,
    OBJECT_STORE,
    POD_MONITOR,
];

/// Every kind the operator creates, in a stable order.
pub fn child_kinds() -> &'static [ChildKind] {
    &CHILD_KINDS
}

/// The child kind with this `apiVersion` and `kind`, if the operator creates it.
pub fn find(api_version: &str, kind: &str) -> Option<&'static ChildKind> {
    CHILD_KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_resources_carry_group_version_and_plural() {
        let cluster = CLUSTER.api_resource();
        assert_eq!(cluster.api_version, "postgresql.cnpg.io/v1");
        assert_eq!(cluster.plural, "clusters");
        let service = SERVICE.api_resource();
        assert_eq!(service.api_version, "v1");
        assert_eq!(service.group, "");
    }

    #[test]
    fn kinds_are_unique_and_findable() {
        for kind in child_kinds() {
            assert_eq!(find(&kind.api_version(), kind.kind), Some(kind));
        }
        assert!(find("external-secrets.io/v1beta1", "ExternalSecret").is_none());
    }

    #[test]
    fn every_owner_has_children() {
        for owner in [
            OwnerKind::AppDatabase,
            OwnerKind::BackupPolicy,
            OwnerKind::HomelabApp,
        ] {
            assert!(child_kinds().iter().any(|k| k.is_owned_by(owner)));
        }
    }
}
