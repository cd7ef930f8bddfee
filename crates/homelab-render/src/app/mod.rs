//! `HomelabApp` → Deployment, Service, Ingress or HTTPRoute, `ExternalSecret`s for its Key Vault
//! secrets and its database connection, PersistentVolumeClaims and a NetworkPolicy.

mod deployment;
mod external_secret;
mod http_route;
mod ingress;
mod network_policy;
mod pvc;
mod service;

use std::collections::BTreeMap;

use homelab_api::homelab_app::{ConnectionField, DatabaseBinding};
use homelab_api::{HomelabApp, HomelabAppSpec, naming};
use kube::api::DynamicObject;

use crate::config::OperatorConfig;
use crate::error::RenderError;
use crate::facts::{DatabaseFacts, HomelabAppFacts};
use crate::kinds::OwnerKind;
use crate::meta::{self, Owner};

/// Everything one `HomelabApp` needs, sorted by kind and name:
///
/// - Deployment `{name}` meeting the `restricted` Pod Security profile unless
///   `security.runAsRoot`, with `Recreate` updates when it mounts volumes;
/// - Service `{name}` (port 80 → the container's `http` port);
/// - Ingress `{name}` with a cert-manager certificate in `{name}-tls`, or HTTPRoute `{name}`;
/// - `ExternalSecret` `{name}-secrets` for `spec.secrets`, and `{name}-db` with the database
///   `username`, `password` and `uri`, both read from Key Vault into this namespace;
/// - PersistentVolumeClaim `{name}-{volume}` per volume;
/// - NetworkPolicy `{name}` unless disabled.
pub fn render_homelab_app(
    app: &HomelabApp,
    facts: &HomelabAppFacts,
    config: &OperatorConfig,
) -> Result<Vec<DynamicObject>, RenderError> {
    let ctx = Context::new(app, facts, config)?;
    let mut objects = vec![deployment::deployment(&ctx)?, service::service(&ctx)?];
    if let Some(ingress) = &ctx.spec.ingress {
        objects.push(ingress::ingress(&ctx, ingress)?);
    }
    if let Some(route) = &ctx.spec.route {
        objects.push(http_route::http_route(&ctx, route));
    }
    if !ctx.spec.secrets.is_empty() {
        objects.push(external_secret::app_secrets(&ctx));
    }
    if let Some(db) = &ctx.database {
        objects.push(external_secret::database_secret(&ctx, db));
    }
    for volume in &ctx.spec.persistence {
        objects.push(pvc::volume_claim(&ctx, volume)?);
    }
    if ctx.spec.network_policy.enabled {
        objects.push(network_policy::network_policy(&ctx)?);
    }
    meta::sort(&mut objects);
    Ok(objects)
}

/// The database an app is bound to, resolved.
pub(crate) struct BoundDatabase<'a> {
    pub binding: &'a DatabaseBinding,
    pub facts: &'a DatabaseFacts,
    /// The host the app connects to: the pooler's or the read-write Service's.
    pub host: String,
}

impl BoundDatabase<'_> {
    /// `jdbc:postgresql://{host}:5432/{database}`, without credentials.
    pub fn jdbc_url(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}",
            self.host,
            naming::POSTGRES_PORT,
            self.facts.database
        )
    }
}

/// One `HomelabApp`, validated and prepared for the child renderers.
pub(crate) struct Context<'a> {
    pub spec: &'a HomelabAppSpec,
    pub config: &'a OperatorConfig,
    pub owner: Owner,
    pub name: String,
    pub database: Option<BoundDatabase<'a>>,
}

/// Longest name of a label value, Service or other DNS-1035 label.
const DNS_LABEL_MAX: usize = 63;

impl<'a> Context<'a> {
    pub fn new(
        app: &'a HomelabApp,
        facts: &'a HomelabAppFacts,
        config: &'a OperatorConfig,
    ) -> Result<Self, RenderError> {
        let owner = Owner::new(OwnerKind::HomelabApp, &app.metadata)?;
        let name = owner.name.clone();
        if !is_dns_label(&name) || name.len() > naming::MAX_HOMELAB_APP_NAME_LEN {
            return Err(RenderError::InvalidName {
                field: "metadata.name".into(),
                value: name,
                reason: format!(
                    "it names the app's Deployment, Service and Ingress: use at most {} lowercase letters, digits and hyphens, starting with a letter",
                    naming::MAX_HOMELAB_APP_NAME_LEN
                ),
            });
        }
        let database = match &app.spec.database {
            None => None,
            Some(binding) => Some(bind_database(binding, facts)?),
        };
        let ctx = Self {
            spec: &app.spec,
            config,
            owner,
            name,
            database,
        };
        ctx.check_env()?;
        Ok(ctx)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        meta::labels(&self.name, &self.owner.name, naming::COMPONENT_SERVER)
    }

    /// The labels that select the app's pods. Immutable once the Deployment exists.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (naming::LABEL_NAME.to_string(), self.name.clone()),
            (naming::LABEL_INSTANCE.to_string(), self.owner.name.clone()),
            (
                naming::LABEL_COMPONENT.to_string(),
                naming::COMPONENT_SERVER.to_string(),
            ),
        ])
    }

    /// Every environment variable is set in exactly one place.
    fn check_env(&self) -> Result<(), RenderError> {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        let plain = self
            .spec
            .env
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), format!("spec.env[{i}]")));
        let database = self
            .spec
            .database
            .iter()
            .flat_map(|d| d.env.iter().enumerate())
            .map(|(i, e)| (e.name.as_str(), format!("spec.database.env[{i}]")));
        let secrets = self
            .spec
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.mount_path.is_none())
            .map(|(i, s)| (s.name.as_str(), format!("spec.secrets[{i}]")));
        for (name, field) in plain.chain(database).chain(secrets) {
            if let Some(first) = seen.get(name) {
                return Err(RenderError::DuplicateEnv {
                    name: name.to_string(),
                    first: first.clone(),
                    second: field,
                });
            }
            seen.insert(name, field);
        }
        Ok(())
    }
}

/// The host an app bound by `binding` connects to: the database's pooler when it asks for it,
/// the primary's read-write Service otherwise. `status.databaseHost` reports the same.
pub fn database_host(binding: &DatabaseBinding, database_app: &str, namespace: &str) -> String {
    if binding.use_pooler {
        naming::pooler_host(database_app, namespace)
    } else {
        naming::read_write_host(database_app, namespace)
    }
}

fn bind_database<'a>(
    binding: &'a DatabaseBinding,
    facts: &'a HomelabAppFacts,
) -> Result<BoundDatabase<'a>, RenderError> {
    let wanted = &binding.database_ref.name;
    let Some(db) = facts.database.as_ref().filter(|db| db.name == *wanted) else {
        return Err(RenderError::UnresolvedReference {
            field: "spec.database.ref.name".into(),
            kind: "AppDatabase",
            name: wanted.clone(),
            reason: "does not exist in this namespace; create it or fix the name".into(),
        });
    };
    if binding.use_pooler && !db.has_pooler {
        return Err(RenderError::NoPooler {
            database: db.name.clone(),
        });
    }
    let host = database_host(binding, &db.app, &db.namespace);
    Ok(BoundDatabase {
        binding,
        facts: db,
        host,
    })
}

/// Whether a connection field is a credential, which comes from the `{name}-db` Secret.
pub(crate) fn is_secret_field(field: ConnectionField) -> bool {
    matches!(
        field,
        ConnectionField::Username | ConnectionField::Password | ConnectionField::Uri
    )
}

/// A DNS-1035 label: at most 63 lowercase letters, digits and hyphens, starting with a letter
/// and ending with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DNS_LABEL_MAX
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
pub(crate) mod test_support {
    use homelab_api::HomelabApp;
    use homelab_api::common::SecretStoreRef;

    use crate::facts::{DatabaseFacts, HomelabAppFacts};

    pub fn app(yaml: &str) -> HomelabApp {
        let mut app: HomelabApp = match serde_norway::from_str(yaml) {
            Ok(app) => app,
            Err(e) => panic!("bad test HomelabApp: {e}"),
        };
        app.metadata.namespace = Some("apps".into());
        app.metadata.uid = Some("00000000-0000-0000-0000-0000000000a1".into());
        app
    }

    pub fn facts(name: &str, has_pooler: bool) -> HomelabAppFacts {
        HomelabAppFacts {
            database: Some(DatabaseFacts {
                name: name.into(),
                app: name.into(),
                namespace: "apps".into(),
                database: name.replace('-', "_"),
                owner: name.replace('-', "_"),
                key_vault_secret: format!("{name}-db-password"),
                secret_store: SecretStoreRef {
                    name: "azure-keyvault".into(),
                    kind: Default::default(),
                },
                has_pooler,
            }),
        }
    }

    pub fn spec(object: &kube::api::DynamicObject) -> &serde_json::Value {
        &object.data["spec"]
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::facts::HomelabAppFacts;

    const DB_APP: &str = r#"
metadata: {name: linkding}
spec:
  image: sissbruecker/linkding:1.41.0
  env: [{name: LD_DB_ENGINE, value: postgres}]
  database:
    ref: {name: linkding}
    env:
      - {name: LD_DB_HOST, field: host}
      - {name: LD_DB_PASSWORD, field: password}
"#;

    #[test]
    fn missing_database_is_named() {
        let err = render_homelab_app(
            &app(DB_APP),
            &HomelabAppFacts::default(),
            &OperatorConfig::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("spec.database.ref.name"), "{err}");
        assert!(err.contains("\"linkding\""), "{err}");
    }

    #[test]
    fn pooler_must_exist_when_used() {
        let yaml = DB_APP.replace(
            "ref: {name: linkding}",
            "ref: {name: linkding}\n    usePooler: true",
        );
        let err = render_homelab_app(
            &app(&yaml),
            &facts("linkding", false),
            &OperatorConfig::default(),
        );
        assert!(matches!(err, Err(RenderError::NoPooler { .. })));
    }

    #[test]
    fn duplicate_env_names_are_refused() {
        let yaml = DB_APP.replace("name: LD_DB_ENGINE", "name: LD_DB_HOST");
        let err = render_homelab_app(
            &app(&yaml),
            &facts("linkding", false),
            &OperatorConfig::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("spec.env[0]") && err.contains("spec.database.env[0]"),
            "{err}"
        );
    }

    #[test]
    fn long_or_invalid_names_are_refused() {
        let long = format!("metadata: {{name: {}}}\nspec: {{image: x}}", "a".repeat(51));
        assert!(matches!(
            render_homelab_app(
                &app(&long),
                &HomelabAppFacts::default(),
                &OperatorConfig::default()
            ),
            Err(RenderError::InvalidName { .. })
        ));
        assert!(!is_dns_label("1abc"));
        assert!(!is_dns_label("abc-"));
        assert!(is_dns_label("a-b-1"));
    }

    #[test]
    fn renders_every_child_once() -> Result<(), RenderError> {
        let objects = render_homelab_app(
            &app(DB_APP),
            &facts("linkding", false),
            &OperatorConfig::default(),
        )?;
        let kinds: Vec<_> = objects
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
            .collect();
        assert_eq!(
            kinds,
            [
                "Deployment/linkding",
                "ExternalSecret/linkding-db",
                "NetworkPolicy/linkding",
                "Service/linkding"
            ]
        );
        Ok(())
    }
}
