//! A PersistentVolumeClaim per volume: `ReadWriteOnce`, as most homelab storage provides.

use std::collections::BTreeMap;

use homelab_api::common::DeletionPolicy;
use homelab_api::homelab_app::VolumeSpec;
use homelab_api::naming;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::DynamicObject;

use super::Context;
use crate::error::RenderError;
use crate::kinds::PERSISTENT_VOLUME_CLAIM;
use crate::meta::{self, Ownership};

pub(super) fn volume_claim(
    ctx: &Context,
    volume: &VolumeSpec,
) -> Result<DynamicObject, RenderError> {
    let claim = PersistentVolumeClaim {
        metadata: meta::child_meta(
            &ctx.owner,
            naming::app_volume_claim(&ctx.name, &volume.name),
            ctx.labels(),
            // The app's data: under Retain (the default) no ownerReference, so neither the
            // garbage collector nor a deleted app takes it.
            Ownership::DataBearing {
                owned: ctx.spec.deletion_policy == DeletionPolicy::Delete,
            },
        ),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: volume.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(volume.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    meta::from_typed(&PERSISTENT_VOLUME_CLAIM, &claim)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::HomelabAppFacts;
    use serde_json::json;

    #[test]
    fn claim_per_volume() -> Result<(), RenderError> {
        let app = app(
            "metadata: {name: linkding}\nspec: {image: x, persistence: [{name: data, mountPath: /data, size: 1Gi, storageClass: longhorn}]}",
        );
        let facts = HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let c = volume_claim(&ctx, &app.spec.persistence[0])?;
        assert_eq!(c.metadata.name.as_deref(), Some("linkding-data"));
        // Retain (the default): the owner is named by annotation, not by an ownerReference.
        assert!(c.metadata.owner_references.is_none(), "{:?}", c.metadata);
        assert_eq!(
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(homelab_api::naming::ANNOTATION_OWNER))
                .map(String::as_str),
            Some("HomelabApp/linkding")
        );
        assert_eq!(
            spec(&c),
            &json!({
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "longhorn"
            })
        );
        Ok(())
    }

    #[test]
    fn claims_go_with_the_app_under_delete() -> Result<(), RenderError> {
        let app = app(
            "metadata: {name: linkding}\nspec: {image: x, deletionPolicy: Delete, persistence: [{name: data, mountPath: /data, size: 1Gi}]}",
        );
        let facts = HomelabAppFacts::default();
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, &facts, &config)?;
        let c = volume_claim(&ctx, &app.spec.persistence[0])?;
        assert_eq!(c.metadata.owner_references.map(|r| r.len()), Some(1));
        Ok(())
    }
}
