//! Installing CustomResourceDefinitions from YAML files and waiting until they are served.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;

use crate::Error;

/// Field manager of everything the test environment applies.
pub const FIELD_MANAGER: &str = "homelab-testenv";

const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(120);

/// One CRD document read from a file, kept as JSON so that no field is lost on the way.
#[derive(Debug, Clone)]
pub struct CrdManifest {
    /// The file it came from.
    pub source: PathBuf,
    /// `metadata.name`, e.g. `clusters.postgresql.cnpg.io`.
    pub name: String,
    /// The whole document.
    pub body: serde_json::Value,
}

/// Reads every CRD in the `*.yaml` and `*.yml` files of `dir` (not recursive), in file-name order.
/// A missing directory yields nothing; documents of other kinds are skipped.
pub fn load_dir(dir: &Path) -> Result<Vec<CrdManifest>, Error> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        crds.extend(load_file(&file)?);
    }
    Ok(crds)
}

/// Reads every CRD in one (possibly multi-document) YAML file, skipping documents of other kinds.
pub fn load_file(path: &Path) -> Result<Vec<CrdManifest>, Error> {
    let manifest_error = |reason: String| Error::Manifest {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| manifest_error(e.to_string()))?;
    let mut crds = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let body =
            serde_json::Value::deserialize(document).map_err(|e| manifest_error(e.to_string()))?;
        // Empty documents, and other kinds such as a kustomization.yaml beside the CRDs.
        if body["kind"] != "CustomResourceDefinition" {
            continue;
        }
        let name = body["metadata"]["name"]
            .as_str()
            .ok_or_else(|| manifest_error("a CRD has no metadata.name".into()))?
            .to_owned();
        crds.push(CrdManifest {
            source: path.to_owned(),
            name,
            body,
        });
    }
    Ok(crds)
}

/// Server-side applies every CRD, then waits until each is Established.
pub async fn install(client: &kube::Client, crds: &[CrdManifest]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    try_join_all(crds.iter().map(|crd| {
        let api = api.clone();
        let params = params.clone();
        async move {
            api.patch(&crd.name, &params, &Patch::Apply(&crd.body))
                .await
                .map_err(Error::kube(format!(
                    "applying CRD {} from {}",
                    crd.name,
                    crd.source.display()
                )))
        }
    }))
    .await?;
    try_join_all(crds.iter().map(|crd| wait_established(&api, &crd.name))).await?;
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<(), Error> {
    let wait = await_condition(api.clone(), name, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISHED_TIMEOUT, wait).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::timeout(
            format!("CRD {name} to be Established ({e})"),
            ESTABLISHED_TIMEOUT,
        )),
        Err(_) => Err(Error::timeout(
            format!("CRD {name} to be Established"),
            ESTABLISHED_TIMEOUT,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_crds_and_skips_other_documents() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("homelab-testenv-crds-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("b.yaml"),
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata:\n  name: widgets.example.io\n---\n---\n\
             apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata:\n  name: gadgets.example.io\n",
        )?;
        std::fs::write(
            dir.join("a.yml"),
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata:\n  name: apples.example.io\n",
        )?;
        std::fs::write(
            dir.join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [b.yaml]\n",
        )?;
        std::fs::write(dir.join("notes.txt"), "kind: CustomResourceDefinition\n")?;

        let names: Vec<String> = load_dir(&dir)?.into_iter().map(|c| c.name).collect();
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(
            names,
            [
                "apples.example.io",
                "widgets.example.io",
                "gadgets.example.io"
            ]
        );
        Ok(())
    }

    #[test]
    fn a_crd_without_a_name_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let path = std::env::temp_dir().join(format!(
            "homelab-testenv-noname-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, "kind: CustomResourceDefinition\nmetadata: {}\n")?;
        let result = load_file(&path);
        std::fs::remove_file(&path)?;
        match result {
            Err(Error::Manifest { reason, .. }) => assert!(reason.contains("no metadata.name")),
            other => panic!("expected a manifest error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_missing_directory_holds_no_crds() -> Result<(), Error> {
        assert!(load_dir(Path::new("/nonexistent/homelab-testenv"))?.is_empty());
        Ok(())
    }
}
