//! Metadata every child shares: the recommended `app.kubernetes.io` labels, the owner reference
//! (or, for data that must outlive its owner, the owner annotation), and the conversion into
//! [`DynamicObject`]s in a stable order.

use std::collections::BTreeMap;

use homelab_api::naming;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use kube::core::TypeMeta;
use serde::Serialize;

use crate::error::RenderError;
use crate::kinds::{ChildKind, OwnerKind};

/// The custom resource a child belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
    pub namespace: String,
    /// Absent for a resource that was never stored (a manifest file); its children then carry no
    /// ownerReference, since the garbage collector deletes dependents of owners that do not exist.
    pub uid: Option<String>,
}

impl Owner {
    /// Reads kind, name, namespace and uid from a resource's metadata.
    pub fn new(kind: OwnerKind, meta: &ObjectMeta) -> Result<Self, RenderError> {
        let missing = |field| RenderError::MissingMetadata {
            kind: kind.as_str(),
            field,
        };
        Ok(Self {
            kind,
            name: meta
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing("name"))?,
            namespace: meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing("namespace"))?,
            uid: meta.uid.clone().filter(|u| !u.is_empty()),
        })
    }

    /// The controller reference to this resource, if it has a uid.
    pub fn reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: format!("{}/{}", homelab_api::GROUP, homelab_api::VERSION),
            kind: self.kind.as_str().to_string(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }

    /// `{Kind}/{name}`, the value of [`naming::ANNOTATION_OWNER`].
    pub fn annotation(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }
}

/// How a child relates to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// A controller ownerReference: the child goes when the owner goes.
    Owned,
    /// Data the user may keep: the owner annotation, and an ownerReference only when `owned`.
    DataBearing { owned: bool },
}

/// The recommended labels: `name` is the application, `instance` the custom resource.
pub fn labels(name: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (naming::LABEL_NAME.to_string(), name.to_string()),
        (naming::LABEL_INSTANCE.to_string(), instance.to_string()),
        (naming::LABEL_COMPONENT.to_string(), component.to_string()),
        (
            naming::LABEL_PART_OF.to_string(),
            naming::PART_OF.to_string(),
        ),
        (
            naming::LABEL_MANAGED_BY.to_string(),
            naming::MANAGED_BY.to_string(),
        ),
    ])
}

/// Metadata of a child of `owner`.
pub fn child_meta(
    owner: &Owner,
    name: String,
    labels: BTreeMap<String, String>,
    ownership: Ownership,
) -> ObjectMeta {
    let (reference, annotations) = match ownership {
        Ownership::Owned => (owner.reference(), None),
        Ownership::DataBearing { owned } => (
            owner.reference().filter(|_| owned),
            Some(BTreeMap::from([(
                naming::ANNOTATION_OWNER.to_string(),
                owner.annotation(),
            )])),
        ),
    };
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        annotations,
        owner_references: reference.map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// A child whose body (everything but `apiVersion`, `kind` and `metadata`) is `body`, a JSON
/// object such as `{"spec": …}`.
pub fn dynamic(kind: &ChildKind, metadata: ObjectMeta, body: serde_json::Value) -> DynamicObject {
    DynamicObject {
        types: Some(TypeMeta {
            api_version: kind.api_version(),
            kind: kind.kind.to_string(),
        }),
        metadata,
        data: body,
    }
}

/// A child built as a typed k8s-openapi object.
pub fn from_typed<T: Serialize>(
    kind: &ChildKind,
    object: &T,
) -> Result<DynamicObject, RenderError> {
    let error = |reason: String| RenderError::Serialize {
        kind: kind.kind,
        name: String::new(),
        reason,
    };
    let mut value = serde_json::to_value(object).map_err(|e| error(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), kind.api_version().into());
        map.insert("kind".into(), kind.kind.into());
    }
    serde_json::from_value(value).map_err(|e| error(e.to_string()))
}

/// Sorts children by kind, namespace and name, the order every renderer returns.
pub fn sort(objects: &mut [DynamicObject]) {
    objects.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

fn sort_key(object: &DynamicObject) -> (&str, &str, &str, &str) {
    let (api_version, kind) = object
        .types
        .as_ref()
        .map(|t| (t.api_version.as_str(), t.kind.as_str()))
        .unwrap_or_default();
    (
        kind,
        api_version,
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether `object` belongs to the custom resource `kind`/`name` with `uid`: through a controller
/// ownerReference, or (for data-bearing children kept outside garbage collection) through the
/// owner annotation. Controllers use it to prune only what they created.
pub fn is_owned_by(object: &DynamicObject, kind: OwnerKind, name: &str, uid: &str) -> bool {
    let by_reference = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid && r.kind == kind.as_str());
    let annotation = format!("{}/{name}", kind.as_str());
    let by_annotation = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(naming::ANNOTATION_OWNER))
        .is_some_and(|v| *v == annotation);
    by_reference || by_annotation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: Option<&str>) -> Owner {
        Owner {
            kind: OwnerKind::AppDatabase,
            name: "linkding".into(),
            namespace: "apps".into(),
            uid: uid.map(str::to_string),
        }
    }

    #[test]
    fn owned_children_get_a_controller_reference() {
        let meta = child_meta(
            &owner(Some("u-1")),
            "x".into(),
            BTreeMap::new(),
            Ownership::Owned,
        );
        let refs = meta.owner_references.unwrap_or_default();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].api_version, "homelab.io/v1alpha1");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(refs[0].block_owner_deletion, Some(true));
        assert!(meta.annotations.is_none());
    }

    #[test]
    fn retained_data_gets_the_annotation_and_no_reference() {
        let meta = child_meta(
            &owner(Some("u-1")),
            "x".into(),
            BTreeMap::new(),
            Ownership::DataBearing { owned: false },
        );
        assert!(meta.owner_references.is_none());
        assert_eq!(
            meta.annotations.unwrap_or_default()[naming::ANNOTATION_OWNER],
            "AppDatabase/linkding"
        );
    }

    #[test]
    fn resources_without_uid_own_nothing() {
        let meta = child_meta(&owner(None), "x".into(), BTreeMap::new(), Ownership::Owned);
        assert!(meta.owner_references.is_none());
    }

    #[test]
    fn ownership_is_recognised_by_reference_or_annotation() {
        let owned = dynamic(
            &crate::kinds::POOLER,
            child_meta(
                &owner(Some("u-1")),
                "p".into(),
                BTreeMap::new(),
                Ownership::Owned,
            ),
            serde_json::json!({}),
        );
        assert!(is_owned_by(
            &owned,
            OwnerKind::AppDatabase,
            "linkding",
            "u-1"
        ));
        assert!(!is_owned_by(
            &owned,
            OwnerKind::AppDatabase,
            "linkding",
            "u-2"
        ));
        let kept = dynamic(
            &crate::kinds::CLUSTER,
            child_meta(
                &owner(Some("u-1")),
                "c".into(),
                BTreeMap::new(),
                Ownership::DataBearing { owned: false },
            ),
            serde_json::json!({}),
        );
        assert!(is_owned_by(
            &kept,
            OwnerKind::AppDatabase,
            "linkding",
            "u-9"
        ));
        assert!(!is_owned_by(
            &kept,
            OwnerKind::HomelabApp,
            "linkding",
            "u-1"
        ));
    }
}
