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

/// The command that regenerates `crds/` and `docs/crd-reference.md` from the Rust types.
pub const REGENERATE: &str =
    "cargo run -p homelab-api --bin crdgen -- crds --reference docs/crd-reference.md";

/// A CRD as YAML, with a header saying where it comes from.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    Ok(format!(
        "# Generated from crates/homelab-api by `{REGENERATE}`. Do not edit.\n{body}"
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
                "has(self.spec.database.name) || !((has(self.spec.app) ? self.spec.app : self.metadata.name).replace('-', '_') in ['postgres', 'template0', 'template1'])",
                "the database name defaults to the app name with hyphens as underscores, which here gives a database every cluster already has (postgres, template0 or template1): set spec.database.name",
                Some(".spec.database.name"),
            ),
            rule(
                "has(self.spec.database.owner) || !((has(self.spec.app) ? self.spec.app : self.metadata.name).replace('-', '_') in ['postgres', 'streaming_replica'] || (has(self.spec.app) ? self.spec.app : self.metadata.name).startsWith('pg-'))",
                "the owner role defaults to the app name with hyphens as underscores, which here gives a reserved role (postgres, or a pg_ name): set spec.database.owner",
                Some(".spec.database.owner"),
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

    /// The schema node a printer column's JSON path leads to, following `.field` steps and
    /// treating `[...]` (an index or a filter) as a step into a list's items.
    fn column_target<'a>(
        root: &'a JSONSchemaProps,
        json_path: &str,
    ) -> Option<&'a JSONSchemaProps> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray;
        let mut node = root;
        let mut rest = json_path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                rest = &after[end + 1..];
                node = match node.items.as_ref()? {
                    JSONSchemaPropsOrArray::Schema(items) => items,
                    JSONSchemaPropsOrArray::Schemas(_) => return None,
                };
            } else {
                let after = rest.strip_prefix('.')?;
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let field = &after[..end];
                rest = &after[end..];
                node = node.properties.as_ref()?.get(field)?;
            }
        }
        Some(node)
    }

    #[test]
    fn printer_columns_point_at_fields_of_the_right_type() {
        for crd in crds() {
            let version = &crd.spec.versions[0];
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{} has no schema", crd.spec.names.kind));
            let columns = version
                .additional_printer_columns
                .clone()
                .unwrap_or_default();
            assert!(
                !columns.is_empty(),
                "{} has no printer columns",
                crd.spec.names.kind
            );
            for column in columns {
                if column.json_path.starts_with(".metadata.") {
                    continue;
                }
                let target = column_target(schema, &column.json_path).unwrap_or_else(|| {
                    panic!(
                        "{} column {:?}: {} is not a field",
                        crd.spec.names.kind, column.name, column.json_path
                    )
                });
                let schema_type = target.type_.as_deref().unwrap_or_default();
                let compatible = match column.type_.as_str() {
                    "date" => {
                        schema_type == "string" && target.format.as_deref() == Some("date-time")
                    }
                    "integer" => schema_type == "integer",
                    "string" => schema_type == "string",
                    "boolean" => schema_type == "boolean",
                    "number" => schema_type == "number" || schema_type == "integer",
                    _ => false,
                };
                assert!(
                    compatible,
                    "{} column {:?} is a {} but {} is a {schema_type}",
                    crd.spec.names.kind, column.name, column.type_, column.json_path
                );
            }
        }
    }
}
