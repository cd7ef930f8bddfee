//! The CustomResourceDefinitions, generated from the Rust types.
//!
//! kube's derive produces each CRD; this module adds the few rules that need the object's
//! `metadata.name` (which only a root-level CEL rule can see), so the generated files in `crds/`
//! are complete.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, ValidationRule,
};
use kube::CustomResourceExt;

use crate::{AppDatabase, BackupPolicy, HomelabApp};

/// The three CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![app_database(), backup_policy(), homelab_app()]
}

/// File name of a CRD under `crds/`: `{group}_{plural}.yaml`, as controller-gen names them.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as YAML, with a header saying where it comes from.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    Ok(format!(
        "# Generated from crates/homelab-api by `make crds`. Do not edit.\n{body}"
    ))
}

fn rule(rule: &str, message: &str, field_path: Option<&str>) -> ValidationRule {
    ValidationRule {
        rule: rule.to_string(),
        message: Some(message.to_string()),
        field_path: field_path.map(str::to_string),
        ..ValidationRule::default()
    }
}

/// Adds root-level CEL rules. `metadata.name` is declared in the schema (as a plain string, which
/// Kubernetes allows) so that rules can point their `fieldPath` at it.
fn add_root_rules(crd: &mut CustomResourceDefinition, rules: Vec<ValidationRule>) {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            let metadata = schema
                .properties
                .get_or_insert_with(Default::default)
                .entry("metadata".to_string())
                .or_insert_with(|| JSONSchemaProps {
                    type_: Some("object".to_string()),
                    ..JSONSchemaProps::default()
                });
            metadata
                .properties
                .get_or_insert_with(Default::default)
                .entry("name".to_string())
                .or_insert_with(|| JSONSchemaProps {
                    type_: Some("string".to_string()),
                    ..JSONSchemaProps::default()
                });
            schema
                .x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .extend(rules.iter().cloned());
        }
    }
}

fn app_database() -> CustomResourceDefinition {
    let mut crd = AppDatabase::crd();
    add_root_rules(
        &mut crd,
        vec![
            rule(
                "has(self.spec.app) || (size(self.metadata.name) <= 40 && self.metadata.name.matches('^[a-z]([a-z0-9]|-[a-z0-9])*$'))",
                "metadata.name is used as the app name, which must be at most 40 lowercase letters, digits and single hyphens starting with a letter (it names the cluster {app}-db-cnpg-v1 and the backup container): choose such a name or set spec.app",
                Some(".metadata.name"),
            ),
            rule(
                "!has(self.spec.restore) || !has(self.spec.restore.from.appDatabase) || self.spec.restore.from.appDatabase != self.metadata.name",
                "spec.restore.from.appDatabase names this AppDatabase itself: a database cannot be restored from its own backups; name the database whose backups to restore",
                Some(".spec.restore.from.appDatabase"),
            ),
        ],
    );
    crd
}

fn backup_policy() -> CustomResourceDefinition {
    BackupPolicy::crd()
}

fn homelab_app() -> CustomResourceDefinition {
    let mut crd = HomelabApp::crd();
    add_root_rules(
        &mut crd,
        vec![rule(
            "size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name names the app's Deployment, Service and Ingress: use at most 50 lowercase letters, digits and hyphens, starting with a letter",
            Some(".metadata.name"),
        )],
    );
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_namespaced_with_status_and_category() {
        for crd in crds() {
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.group, crate::GROUP);
            let names = &crd.spec.names;
            assert_eq!(
                names.categories.as_deref(),
                Some(&["homelab".to_string()][..])
            );
            assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, crate::VERSION);
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
    }
}
