//! Adding and removing the operator's finalizer with JSON patches guarded by a `test`
//! operation, so a concurrent change to the list is never overwritten.

use homelab_api::naming::FINALIZER;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub fn has_finalizer<K: Resource>(object: &K) -> bool {
    object.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer if it is missing. Returns whether a request was sent.
pub async fn ensure<K>(api: &Api<K>, object: &K) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(object) {
        return Ok(false);
    }
    let patch = if object.finalizers().is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    let name = object.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(true),
        // The `test` failed: the cached object is older than the stored one, typically because
        // an earlier reconcile added the finalizer and the watch has not delivered that yet.
        // Look at the stored object instead of failing into a backoff; retry once from it.
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let stored = api.get(&name).await?;
            if has_finalizer(&stored) {
                return Ok(false);
            }
            let (path, value) = if stored.finalizers().is_empty() {
                ("/metadata/finalizers", serde_json::json!([FINALIZER]))
            } else {
                ("/metadata/finalizers/-", serde_json::json!(FINALIZER))
            };
            let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": stored.resource_version()},
                {"op": "add", "path": path, "value": value}
            ]))
            .map_err(kube::Error::SerdeError)?;
            api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await?;
            Ok(true)
        }
        Err(err) => Err(err),
    }
}

/// Removes the finalizer if present.
pub async fn remove<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch = serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")}
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}
