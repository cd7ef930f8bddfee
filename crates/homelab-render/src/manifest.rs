//! Rendering from YAML files: parse multi-document input, resolve the references between the
//! documents (an `AppDatabase`'s BackupPolicy and restore source, a `HomelabApp`'s database),
//! render every resource and return the children, or an error that names the file, the document
//! and the field.
//!
//! Resources without `metadata.namespace` are placed in `default`, as `kubectl` would. Resources
//! in files have no uid, so their children carry no ownerReferences (the garbage collector would
//! delete children whose owner does not exist); the owner annotation is still set where it
//! applies.

use std::collections::BTreeMap;

use homelab_api::{AppDatabase, BackupPolicy, HomelabApp, naming};
use kube::api::DynamicObject;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::facts::{
    AppDatabaseFacts, DatabaseFacts, HomelabAppFacts, PolicyFacts, RestoreSourceFacts,
};
use crate::{meta, render_app_database, render_homelab_app};

/// Namespace of resources that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a document came from: the source (usually a file path) and its 1-based position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub document: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, document {}", self.source, self.document)
    }
}

/// A parsed custom resource.
#[derive(Clone, Debug)]
pub enum Resource {
    AppDatabase(Box<AppDatabase>),
    BackupPolicy(Box<BackupPolicy>),
    HomelabApp(Box<HomelabApp>),
}

impl Resource {
    fn kind(&self) -> &'static str {
        match self {
            Resource::AppDatabase(_) => "AppDatabase",
            Resource::BackupPolicy(_) => "BackupPolicy",
            Resource::HomelabApp(_) => "HomelabApp",
        }
    }

    fn metadata(&self) -> &kube::api::ObjectMeta {
        match self {
            Resource::AppDatabase(r) => &r.metadata,
            Resource::BackupPolicy(r) => &r.metadata,
            Resource::HomelabApp(r) => &r.metadata,
        }
    }

    /// Mutable metadata, e.g. to give parsed resources a namespace or uid.
    pub fn metadata_mut(&mut self) -> &mut kube::api::ObjectMeta {
        match self {
            Resource::AppDatabase(r) => &mut r.metadata,
            Resource::BackupPolicy(r) => &mut r.metadata,
            Resource::HomelabApp(r) => &mut r.metadata,
        }
    }

    fn key(&self) -> (String, String) {
        let meta = self.metadata();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// One document of the input.
#[derive(Clone, Debug)]
pub struct Document {
    pub location: Location,
    pub resource: Resource,
}

/// Why the input could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML.
    #[error("{location}: invalid YAML: {message}")]
    Yaml { location: Location, message: String },

    /// A field with the wrong type or value, or one the kind does not have.
    #[error("{location}: {path}: {message}")]
    Field {
        location: Location,
        path: String,
        message: String,
    },

    /// A document of a kind this renderer does not handle.
    #[error(
        "{location}: {api_version}/{kind} is not rendered here; the input may contain only homelab.io/v1alpha1 HomelabApp, AppDatabase and BackupPolicy documents"
    )]
    UnsupportedKind {
        location: Location,
        api_version: String,
        kind: String,
    },

    /// Two documents define the same resource, or render the same child.
    #[error("{location}: {what} is already defined by {other}")]
    Duplicate {
        location: Location,
        what: String,
        other: Location,
    },

    /// A resource that does not render.
    #[error("{location} ({kind} {name}): {error}")]
    Render {
        location: Location,
        kind: &'static str,
        name: String,
        #[source]
        error: Box<RenderError>,
    },

    /// A rendered object that did not serialize to YAML.
    #[error("could not write {what} as YAML: {message}")]
    Output { what: String, message: String },
}

/// Parses, resolves and renders `inputs` (`(source name, YAML text)` pairs), returning every
/// child sorted by kind, namespace and name.
pub fn render_manifests<S: AsRef<str>, T: AsRef<str>>(
    inputs: &[(S, T)],
    config: &OperatorConfig,
) -> Result<Vec<DynamicObject>, ManifestError> {
    render_manifests_in(inputs, DEFAULT_NAMESPACE, config)
}

/// [`render_manifests`], with resources that name no namespace in `namespace` (as `kubectl
/// apply -n` puts them).
pub fn render_manifests_in<S: AsRef<str>, T: AsRef<str>>(
    inputs: &[(S, T)],
    namespace: &str,
    config: &OperatorConfig,
) -> Result<Vec<DynamicObject>, ManifestError> {
    let documents = parse_manifests_in(inputs, namespace)?;
    render_documents(&documents, config)
}

/// Parses every document of every input. Empty documents are skipped; resources without a
/// namespace are put in [`DEFAULT_NAMESPACE`].
pub fn parse_manifests<S: AsRef<str>, T: AsRef<str>>(
    inputs: &[(S, T)],
) -> Result<Vec<Document>, ManifestError> {
    parse_manifests_in(inputs, DEFAULT_NAMESPACE)
}

/// [`parse_manifests`], with resources that name no namespace put in `namespace`.
pub fn parse_manifests_in<S: AsRef<str>, T: AsRef<str>>(
    inputs: &[(S, T)],
    namespace: &str,
) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    for (source, text) in inputs {
        for (index, document) in serde_norway::Deserializer::from_str(text.as_ref()).enumerate() {
            let location = Location {
                source: source.as_ref().to_string(),
                document: index + 1,
            };
            let value = Value::deserialize(document).map_err(|e| ManifestError::Yaml {
                location: location.clone(),
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            let mut resource = parse_resource(&location, value)?;
            let meta = resource.metadata_mut();
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some(namespace.to_string());
            }
            documents.push(Document { location, resource });
        }
    }
    Ok(documents)
}

fn parse_resource(location: &Location, value: Value) -> Result<Resource, ManifestError> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion").to_string(), text("kind").to_string());
    if api_version != format!("{}/{}", homelab_api::GROUP, homelab_api::VERSION) {
        return Err(ManifestError::UnsupportedKind {
            location: location.clone(),
            api_version,
            kind,
        });
    }
    Ok(match kind.as_str() {
        "AppDatabase" => Resource::AppDatabase(Box::new(typed(location, value)?)),
        "BackupPolicy" => Resource::BackupPolicy(Box::new(typed(location, value)?)),
        "HomelabApp" => Resource::HomelabApp(Box::new(typed(location, value)?)),
        _ => {
            return Err(ManifestError::UnsupportedKind {
                location: location.clone(),
                api_version,
                kind,
            });
        }
    })
}

/// Deserializes with the path of a bad field, then rejects fields the kind does not have (which
/// serde would silently drop, as a typo such as `ingres:` would be).
fn typed<K: DeserializeOwned + serde::Serialize>(
    location: &Location,
    value: Value,
) -> Result<K, ManifestError> {
    let parsed: K = serde_path_to_error::deserialize(&value).map_err(|e| ManifestError::Field {
        location: location.clone(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    let echoed = serde_json::to_value(&parsed).map_err(|e| ManifestError::Output {
        what: location.to_string(),
        message: e.to_string(),
    })?;
    if let Some(path) = unknown_field(&value, &echoed, String::new()) {
        return Err(ManifestError::Field {
            location: location.clone(),
            path,
            message: "unknown field; check its spelling against the CRD (kubectl explain)".into(),
        });
    }
    Ok(parsed)
}

/// The first path in `input` that the parsed resource does not have. Empty values may be absent
/// from the output (skipped when serializing), so they are not reported.
fn unknown_field(input: &Value, echoed: &Value, path: String) -> Option<String> {
    match (input, echoed) {
        (Value::Object(input), Value::Object(echoed)) => input.iter().find_map(|(key, value)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match echoed.get(key) {
                Some(echoed) => unknown_field(value, echoed, child),
                None if is_empty(value) => None,
                None => Some(child),
            }
        }),
        (Value::Array(input), Value::Array(echoed)) => input
            .iter()
            .zip(echoed)
            .enumerate()
            .find_map(|(i, (value, echoed))| unknown_field(value, echoed, format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Renders parsed documents, resolving references among them.
pub fn render_documents(
    documents: &[Document],
    config: &OperatorConfig,
) -> Result<Vec<DynamicObject>, ManifestError> {
    let mut policies: BTreeMap<(String, String), (&Document, &BackupPolicy)> = BTreeMap::new();
    let mut databases: BTreeMap<(String, String), (&Document, &AppDatabase)> = BTreeMap::new();
    let mut apps: BTreeMap<(String, String), &Document> = BTreeMap::new();
    for document in documents {
        let key = document.resource.key();
        let previous = match &document.resource {
            Resource::BackupPolicy(p) => policies.insert(key.clone(), (document, p)).map(|p| p.0),
            Resource::AppDatabase(d) => databases.insert(key.clone(), (document, d)).map(|d| d.0),
            Resource::HomelabApp(_) => apps.insert(key.clone(), document),
        };
        if let Some(previous) = previous {
            return Err(ManifestError::Duplicate {
                location: document.location.clone(),
                what: format!("{} {}/{}", document.resource.kind(), key.0, key.1),
                other: previous.location.clone(),
            });
        }
    }

    let resolver = Resolver {
        policies: &policies,
        databases: &databases,
    };
    let mut rendered: Vec<(DynamicObject, &Location)> = Vec::new();
    for document in documents {
        let render_error = |error: RenderError| ManifestError::Render {
            location: document.location.clone(),
            kind: document.resource.kind(),
            name: document.resource.key().1,
            error: Box::new(error),
        };
        let objects = match &document.resource {
            Resource::BackupPolicy(_) => Vec::new(),
            Resource::AppDatabase(database) => {
                let facts = resolver.database_facts(database).map_err(render_error)?;
                render_app_database(database, &facts, config).map_err(render_error)?
            }
            Resource::HomelabApp(app) => {
                let facts = resolver.app_facts(app, config).map_err(render_error)?;
                render_homelab_app(app, &facts, config).map_err(render_error)?
            }
        };
        rendered.extend(objects.into_iter().map(|o| (o, &document.location)));
    }

    let mut seen: BTreeMap<(String, String, String, String), &Location> = BTreeMap::new();
    for (object, location) in &rendered {
        let types = object.types.clone().unwrap_or_default();
        let key = (
            types.api_version,
            types.kind,
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        );
        if let Some(other) = seen.get(&key) {
            return Err(ManifestError::Duplicate {
                location: (*location).clone(),
                what: format!("{} {}/{}", key.1, key.2, key.3),
                other: (*other).clone(),
            });
        }
        seen.insert(key, location);
    }
    let mut objects: Vec<DynamicObject> = rendered.into_iter().map(|(o, _)| o).collect();
    meta::sort(&mut objects);
    Ok(objects)
}

type ByKey<'a, T> = BTreeMap<(String, String), (&'a Document, &'a T)>;

struct Resolver<'a> {
    policies: &'a ByKey<'a, BackupPolicy>,
    databases: &'a ByKey<'a, AppDatabase>,
}

impl Resolver<'_> {
    fn policy(&self, namespace: &str, name: &str, field: &str) -> Result<PolicyFacts, RenderError> {
        self.policies
            .get(&(namespace.to_string(), name.to_string()))
            .map(|(_, policy)| PolicyFacts {
                name: name.to_string(),
                spec: policy.spec.clone(),
            })
            .ok_or_else(|| RenderError::UnresolvedReference {
                field: field.to_string(),
                kind: "BackupPolicy",
                name: name.to_string(),
                reason: format!("is not among the inputs (namespace {namespace})"),
            })
    }

    fn database(
        &self,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<&AppDatabase, RenderError> {
        self.databases
            .get(&(namespace.to_string(), name.to_string()))
            .map(|(_, db)| *db)
            .ok_or_else(|| RenderError::UnresolvedReference {
                field: field.to_string(),
                kind: "AppDatabase",
                name: name.to_string(),
                reason: format!("is not among the inputs (namespace {namespace})"),
            })
    }

    fn database_facts(&self, database: &AppDatabase) -> Result<AppDatabaseFacts, RenderError> {
        let namespace = database.metadata.namespace.as_deref().unwrap_or_default();
        let policy = match &database.spec.backup {
            Some(backup) => Some(self.policy(
                namespace,
                &backup.policy_ref.name,
                "spec.backup.policyRef.name",
            )?),
            None => None,
        };
        let mut facts = AppDatabaseFacts::new(database, policy);
        let Some(restore) = &database.spec.restore else {
            return Ok(facts);
        };
        if let Some(archive) = &restore.from.archive {
            let archive_policy = self.policy(
                namespace,
                &archive.policy_ref.name,
                "spec.restore.from.archive.policyRef.name",
            )?;
            facts.restore_source = Some(RestoreSourceFacts::Archive {
                policy: Box::new(archive_policy),
                names: RestoreSourceFacts::archive_names(archive, database),
            });
        } else if let Some(source_name) = &restore.from.app_database {
            let field = "spec.restore.from.appDatabase";
            let source = self.database(namespace, source_name, field)?;
            if source.spec.backup.is_none() {
                return Err(RenderError::InvalidRestore {
                    field: field.into(),
                    reason: format!(
                        "AppDatabase {source_name} has no spec.backup, so there are no backups to restore; give it a BackupPolicy or restore from an archive"
                    ),
                });
            }
            let source_app = source.app_name();
            facts.restore_source = Some(RestoreSourceFacts::ObjectStore {
                name: naming::backup_object_store(source_app),
                server_name: crate::facts::server_name(source),
                names: source.published_names(),
            });
        }
        Ok(facts)
    }

    fn app_facts(
        &self,
        app: &HomelabApp,
        config: &OperatorConfig,
    ) -> Result<HomelabAppFacts, RenderError> {
        let Some(binding) = &app.spec.database else {
            return Ok(HomelabAppFacts::default());
        };
        let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
        let database = self.database(
            namespace,
            &binding.database_ref.name,
            "spec.database.ref.name",
        )?;
        Ok(HomelabAppFacts {
            database: Some(DatabaseFacts::from_app_database(database, config)),
        })
    }
}

/// Writes objects as a multi-document YAML stream, each document starting with `---`.
pub fn to_yaml(objects: &[DynamicObject]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for object in objects {
        let yaml = serde_norway::to_string(object).map_err(|e| ManifestError::Output {
            what: format!(
                "{} {}",
                object
                    .types
                    .as_ref()
                    .map(|t| t.kind.as_str())
                    .unwrap_or_default(),
                object.metadata.name.as_deref().unwrap_or_default()
            ),
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: homelab.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: daily}\nspec: {storage: {azure: {storageAccount: acct}}}\n";

    fn render(inputs: &[(&str, &str)]) -> Result<Vec<DynamicObject>, ManifestError> {
        render_manifests(inputs, &OperatorConfig::default())
    }

    fn names(objects: &[DynamicObject]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o.types
                        .as_ref()
                        .map(|t| t.kind.as_str())
                        .unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn resolves_policies_and_databases_across_files() -> Result<(), ManifestError> {
        let db = "apiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: wiki, namespace: apps}\nspec: {backup: {policyRef: {name: daily}}}\n---\n# trailing comment only\n";
        let policy = POLICY.replace("{name: daily}", "{name: daily, namespace: apps}");
        let objects = render(&[("db.yaml", db), ("policy.yaml", &policy)])?;
        assert_eq!(
            names(&objects),
            [
                "Cluster/wiki-db-cnpg-v1",
                "ExternalSecret/wiki-db-backup-sas",
                "ExternalSecret/wiki-db-credentials",
                "ObjectStore/wiki-db-backup",
                "PodMonitor/wiki-db-cnpg-v1",
                "ScheduledBackup/wiki-db-backup"
            ]
        );
        assert!(
            objects
                .iter()
                .all(|o| o.metadata.owner_references.is_none())
        );
        assert!(
            objects
                .iter()
                .all(|o| o.metadata.namespace.as_deref() == Some("apps"))
        );
        Ok(())
    }

    #[test]
    fn missing_namespace_means_default_and_missing_policy_is_named() {
        let db = "apiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: wiki}\nspec: {backup: {policyRef: {name: nightly}}}\n";
        let err = render(&[("db.yaml", db)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("db.yaml, document 1 (AppDatabase wiki)"),
            "{err}"
        );
        assert!(
            err.contains("spec.backup.policyRef.name names BackupPolicy \"nightly\""),
            "{err}"
        );
        assert!(err.contains("namespace default"), "{err}");
    }

    #[test]
    fn field_errors_carry_file_document_and_path() {
        let bad = format!(
            "{POLICY}---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {{name: x}}\nspec: {{instances: many}}\n"
        );
        let err = render(&[("apps/x.yaml", &bad)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("apps/x.yaml, document 2: spec.instances:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_reported() {
        let bad = "apiVersion: homelab.io/v1alpha1\nkind: HomelabApp\nmetadata: {name: x}\nspec: {image: nginx, ingres: {host: a.example.com}}\n";
        let err = render(&[("x.yaml", bad)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("document 1: spec.ingres: unknown field"),
            "{err}"
        );
        let nested = "apiVersion: homelab.io/v1alpha1\nkind: HomelabApp\nmetadata: {name: x}\nspec: {image: nginx, env: [{name: A, valeu: b}]}\n";
        let err = render(&[("x.yaml", nested)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("spec.env[0].valeu: unknown field"), "{err}");
    }

    #[test]
    fn other_kinds_and_bad_yaml_are_refused() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";
        let err = render(&[("ns.yaml", ns)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("v1/Namespace is not rendered here"), "{err}");
        let err = render(&[("bad.yaml", "a: [b\n")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("bad.yaml, document 1: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let twice = format!("{POLICY}---\n{POLICY}");
        let err = render(&[("p.yaml", &twice)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("BackupPolicy default/daily is already defined by p.yaml, document 1"),
            "{err}"
        );
        let a = "apiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: a}\nspec: {app: shared}\n";
        let b = "apiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: b}\nspec: {app: shared}\n";
        let err = render(&[("a.yaml", a), ("b.yaml", b)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("Cluster default/shared-db-cnpg-v1 is already defined"),
            "{err}"
        );
    }

    #[test]
    fn restores_resolve_their_source() -> Result<(), ManifestError> {
        let input = format!(
            "{POLICY}---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {{name: wiki}}\nspec: {{backup: {{policyRef: {{name: daily}}}}}}\n---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {{name: wiki2}}\nspec: {{backup: {{policyRef: {{name: daily}}}}, restore: {{from: {{appDatabase: wiki}}}}}}\n"
        );
        let objects = render(&[("r.yaml", &input)])?;
        let cluster = objects
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some("wiki2-db-cnpg-v1"))
            .map(|o| o.data["spec"].clone())
            .unwrap_or_default();
        assert_eq!(
            cluster["externalClusters"][0]["plugin"]["parameters"]["barmanObjectName"],
            "wiki-db-backup"
        );
        Ok(())
    }

    #[test]
    fn restoring_into_the_own_container_archives_under_a_new_server_name()
    -> Result<(), ManifestError> {
        // As `kubectl get -o yaml` prints it, with the uid the controllers name the new server
        // after.
        let input = format!(
            "{POLICY}---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {{name: wiki, uid: 5c0ffee1-aaaa-bbbb-cccc-000000000000}}\nspec:\n  backup: {{policyRef: {{name: daily}}}}\n  restore: {{from: {{archive: {{policyRef: {{name: daily}}, container: wiki-db-clean, serverName: wiki-db-cnpg-v1}}}}}}\n"
        );
        let objects = render(&[("r.yaml", &input)])?;
        assert!(names(&objects).contains(&"ObjectStore/wiki-db-restore".to_string()));
        assert!(names(&objects).contains(&"ExternalSecret/wiki-db-restore-sas".to_string()));
        let cluster = objects
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some("wiki-db-cnpg-v1"))
            .map(|o| o.data["spec"].clone())
            .unwrap_or_default();
        assert_eq!(
            cluster["plugins"][0]["parameters"]["serverName"],
            "wiki-db-cnpg-v1-5c0ffee1"
        );
        assert_eq!(
            cluster["externalClusters"][0]["plugin"]["parameters"],
            serde_json::json!({"barmanObjectName": "wiki-db-restore", "serverName": "wiki-db-cnpg-v1"})
        );
        Ok(())
    }

    #[test]
    fn yaml_output_is_a_document_stream() -> Result<(), ManifestError> {
        let objects = render(&[("p.yaml", POLICY)])?;
        assert_eq!(to_yaml(&objects)?, "");
        let db = "apiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: w}\nspec: {monitoring: {podMonitor: false}}\n";
        let yaml = to_yaml(&render(&[("d.yaml", db)])?)?;
        assert_eq!(yaml.matches("---\n").count(), 2);
        assert!(
            yaml.starts_with("---\napiVersion: postgresql.cnpg.io/v1\nkind: Cluster\n"),
            "{yaml}"
        );
        Ok(())
    }
}
