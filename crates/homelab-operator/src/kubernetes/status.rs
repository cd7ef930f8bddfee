//! Writes a custom resource's status only when it differs from what is stored.

use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use homelab_api::naming;

/// Patches `.status` with server-side apply when `new` differs from `current`. Returns whether a
/// request was sent.
pub async fn patch_if_changed<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    new: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(new) {
        return Ok(false);
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            object = %object.name_any(),
            before = %serde_json::to_string(&current).unwrap_or_default(),
            after = %serde_json::to_string(new).unwrap_or_default(),
            "status changed"
        );
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(naming::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}
