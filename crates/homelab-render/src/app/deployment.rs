//! The Deployment: one container, hardened to the `restricted` Pod Security profile unless the
//! image must run as root, with probes, environment, secrets and volumes.

use std::collections::BTreeMap;

use homelab_api::homelab_app::{AppSecret, ConnectionField, HealthCheck};
use homelab_api::naming;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

use super::{Context, is_secret_field};
use crate::error::RenderError;
use crate::kinds::DEPLOYMENT;
use crate::meta::{self, Ownership};

/// Name of the container port, used by the Service, probes and NetworkPolicy.
pub(crate) const HTTP_PORT_NAME: &str = "http";

pub(super) fn deployment(ctx: &Context) -> Result<DynamicObject, RenderError> {
    let spec = ctx.spec;
    let (volumes, mounts) = volumes(ctx)?;
    let container = Container {
        name: ctx.name.clone(),
        image: Some(spec.image.clone()),
        command: non_empty(spec.command.clone()),
        args: non_empty(spec.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.to_string()),
            container_port: spec.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        env: non_empty(env(ctx)),
        resources: spec.resources.clone(),
        readiness_probe: spec.health_check.as_ref().map(|h| readiness(ctx, h)),
        liveness_probe: spec.health_check.as_ref().map(|h| liveness(ctx, h)),
        volume_mounts: non_empty(mounts),
        security_context: Some(container_security(spec.security.run_as_root)),
        ..Container::default()
    };
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        // Service links would inject variables such as N8N_PORT=tcp://… that apps misread.
        enable_service_links: Some(false),
        security_context: Some(pod_security(ctx)),
        containers: vec![container],
        volumes: non_empty(volumes),
        ..PodSpec::default()
    };
    let deployment = Deployment {
        metadata: meta::child_meta(
            &ctx.owner,
            naming::app_workload(&ctx.name),
            ctx.labels(),
            Ownership::Owned,
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(ctx.selector()),
                ..LabelSelector::default()
            },
            // A ReadWriteOnce volume cannot be attached to the new pod while the old one runs.
            strategy: (!spec.persistence.is_empty()).then(|| DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    meta::from_typed(&DEPLOYMENT, &deployment)
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn pod_security(ctx: &Context) -> PodSecurityContext {
    let security = &ctx.spec.security;
    PodSecurityContext {
        run_as_non_root: (!security.run_as_root).then_some(true),
        run_as_user: security.run_as_user.filter(|_| !security.run_as_root),
        fs_group: security.fs_group,
        fs_group_change_policy: security.fs_group.map(|_| "OnRootMismatch".to_string()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// `restricted` drops every capability; images that need root keep the runtime's defaults
/// (the `baseline` profile), which they need to bind low ports and switch users.
fn container_security(run_as_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: (!run_as_root).then(|| Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn probe_port(ctx: &Context, health: &HealthCheck) -> IntOrString {
    match health.port {
        Some(port) if port != ctx.spec.port => IntOrString::Int(port),
        _ => IntOrString::String(HTTP_PORT_NAME.to_string()),
    }
}

fn http_get(ctx: &Context, health: &HealthCheck) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(health.path.clone()),
        port: probe_port(ctx, health),
        ..HTTPGetAction::default()
    }
}

fn readiness(ctx: &Context, health: &HealthCheck) -> Probe {
    Probe {
        http_get: Some(http_get(ctx, health)),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn liveness(ctx: &Context, health: &HealthCheck) -> Probe {
    Probe {
        http_get: Some(http_get(ctx, health)),
        initial_delay_seconds: health.initial_delay_seconds,
        period_seconds: Some(20),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn secret_ref(name: String, key: &str) -> Option<EnvVarSource> {
    Some(EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name,
            key: key.to_string(),
            optional: None,
        }),
        ..EnvVarSource::default()
    })
}

/// Plain variables, then database fields (values for host, port, database and JDBC URL; Secret
/// references for credentials), then secrets.
fn env(ctx: &Context) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = ctx
        .spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            value_from: None,
        })
        .collect();
    if let Some(db) = &ctx.database {
        for var in &db.binding.env {
            let literal = |value: String| EnvVar {
                name: var.name.clone(),
                value: Some(value),
                value_from: None,
            };
            env.push(match var.field {
                ConnectionField::Host => literal(db.host.clone()),
                ConnectionField::Port => literal(naming::POSTGRES_PORT.to_string()),
                ConnectionField::Database => literal(db.facts.database.clone()),
                ConnectionField::JdbcUrl => literal(db.jdbc_url()),
                field => EnvVar {
                    name: var.name.clone(),
                    value: None,
                    value_from: secret_ref(
                        naming::app_database_secret(&ctx.name),
                        secret_key(field),
                    ),
                },
            });
        }
    }
    for secret in ctx.spec.secrets.iter().filter(|s| s.mount_path.is_none()) {
        env.push(EnvVar {
            name: secret.name.clone(),
            value: None,
            value_from: secret_ref(naming::app_secrets(&ctx.name), &secret.name),
        });
    }
    env
}

/// The key of a credential in the `{name}-db` Secret.
pub(crate) fn secret_key(field: ConnectionField) -> &'static str {
    debug_assert!(is_secret_field(field));
    match field {
        ConnectionField::Username => "username",
        ConnectionField::Uri => "uri",
        _ => "password",
    }
}

/// Volumes for the claims and for secret files (one per directory), and their mounts.
fn volumes(ctx: &Context) -> Result<(Vec<Volume>, Vec<VolumeMount>), RenderError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut paths: BTreeMap<&str, String> = BTreeMap::new();
    for (i, volume) in ctx.spec.persistence.iter().enumerate() {
        let field = format!("spec.persistence[{i}]");
        if let Some(other) = paths.insert(volume.mount_path.as_str(), field.clone()) {
            return Err(duplicate(field, &volume.mount_path, other));
        }
        volumes.push(Volume {
            name: volume.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: naming::app_volume_claim(&ctx.name, &volume.name),
                read_only: None,
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path: volume.mount_path.clone(),
            ..VolumeMount::default()
        });
    }
    let mut directories: BTreeMap<&str, Vec<(usize, &AppSecret)>> = BTreeMap::new();
    for (i, secret) in ctx.spec.secrets.iter().enumerate() {
        if let Some(path) = &secret.mount_path {
            directories
                .entry(path.as_str())
                .or_default()
                .push((i, secret));
        }
    }
    for (n, (path, secrets)) in directories.into_iter().enumerate() {
        let field = format!("spec.secrets[{}].mountPath", secrets[0].0);
        if let Some(other) = paths.insert(path, field.clone()) {
            return Err(duplicate(field, path, other));
        }
        // Longer than any persistence volume name can be, so the two never collide.
        let name = format!("secret-files-{n}");
        volumes.push(Volume {
            name: name.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(naming::app_secrets(&ctx.name)),
                items: Some(
                    secrets
                        .iter()
                        .map(|(_, s)| KeyToPath {
                            key: s.name.clone(),
                            path: s.name.clone(),
                            mode: None,
                        })
                        .collect(),
                ),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: path.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Ok((volumes, mounts))
}

fn duplicate(field: String, path: &str, other: String) -> RenderError {
    RenderError::DuplicateMountPath {
        field,
        path: path.to_string(),
        other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{app, facts, spec};
    use super::*;
    use crate::config::OperatorConfig;
    use crate::facts::HomelabAppFacts;
    use serde_json::{Value, json};

    fn render(yaml: &str, facts: &HomelabAppFacts) -> Result<Value, RenderError> {
        let app = app(yaml);
        let config = OperatorConfig::default();
        let ctx = Context::new(&app, facts, &config)?;
        Ok(spec(&deployment(&ctx)?).clone())
    }

    fn pod(spec: &Value) -> &Value {
        &spec["template"]["spec"]
    }

    #[test]
    fn restricted_by_default() -> Result<(), RenderError> {
        let s = render(
            "metadata: {name: a}\nspec: {image: x, security: {runAsUser: 1000, fsGroup: 2000}}",
            &HomelabAppFacts::default(),
        )?;
        assert_eq!(
            pod(&s)["securityContext"],
            json!({
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "fsGroup": 2000,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"}
            })
        );
        assert_eq!(
            pod(&s)["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(pod(&s)["automountServiceAccountToken"], false);
        assert_eq!(pod(&s)["enableServiceLinks"], false);
        assert!(s.get("strategy").is_none());
        Ok(())
    }

    #[test]
    fn run_as_root_keeps_baseline() -> Result<(), RenderError> {
        let s = render(
            "metadata: {name: a}\nspec: {image: x, security: {runAsRoot: true, runAsUser: 5}}",
            &HomelabAppFacts::default(),
        )?;
        assert_eq!(
            pod(&s)["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            pod(&s)["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false})
        );
        Ok(())
    }

    #[test]
    fn probes_follow_the_health_check() -> Result<(), RenderError> {
        let s = render(
            "metadata: {name: a}\nspec: {image: x, port: 9000, healthCheck: {path: /health, initialDelaySeconds: 30}}",
            &HomelabAppFacts::default(),
        )?;
        let c = &pod(&s)["containers"][0];
        assert_eq!(
            c["ports"],
            json!([{"name": "http", "containerPort": 9000, "protocol": "TCP"}])
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/health", "port": "http"})
        );
        assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 30);
        assert!(c["readinessProbe"].get("initialDelaySeconds").is_none());
        let s = render(
            "metadata: {name: a}\nspec: {image: x, healthCheck: {path: /h, port: 9100}}",
            &HomelabAppFacts::default(),
        )?;
        assert_eq!(
            pod(&s)["containers"][0]["livenessProbe"]["httpGet"]["port"],
            9100
        );
        Ok(())
    }

    #[test]
    fn database_credentials_come_from_the_secret_never_inline() -> Result<(), RenderError> {
        let s = render(
            r#"
metadata: {name: app}
spec:
  image: x
  env: [{name: MODE, value: prod}]
  database:
    ref: {name: appdb}
    env:
      - {name: H, field: host}
      - {name: P, field: port}
      - {name: D, field: database}
      - {name: U, field: username}
      - {name: PW, field: password}
      - {name: URI, field: uri}
      - {name: JDBC, field: jdbcUrl}
  secrets: [{name: API_KEY, keyVaultSecret: app-api-key}]
"#,
            &facts("appdb", false),
        )?;
        let env = &pod(&s)["containers"][0]["env"];
        let from = |key: &str, secret: &str| json!({"secretKeyRef": {"name": secret, "key": key}});
        assert_eq!(
            env,
            &json!([
                {"name": "MODE", "value": "prod"},
                {"name": "H", "value": "appdb-db-cnpg-v1-rw.apps.svc.cluster.local"},
                {"name": "P", "value": "5432"},
                {"name": "D", "value": "appdb"},
                {"name": "U", "valueFrom": from("username", "app-db")},
                {"name": "PW", "valueFrom": from("password", "app-db")},
                {"name": "URI", "valueFrom": from("uri", "app-db")},
                {"name": "JDBC", "value": "jdbc:postgresql://appdb-db-cnpg-v1-rw.apps.svc.cluster.local:5432/appdb"},
                {"name": "API_KEY", "valueFrom": from("API_KEY", "app-secrets")}
            ])
        );
        Ok(())
    }

    #[test]
    fn volumes_and_secret_files() -> Result<(), RenderError> {
        let s = render(
            r#"
metadata: {name: app}
spec:
  image: x
  persistence: [{name: data, mountPath: /data, size: 1Gi}]
  secrets:
    - {name: tls.crt, keyVaultSecret: app-crt, mountPath: /etc/tls}
    - {name: tls.key, keyVaultSecret: app-key, mountPath: /etc/tls}
    - {name: config.yaml, keyVaultSecret: app-config, mountPath: /etc/app}
"#,
            &HomelabAppFacts::default(),
        )?;
        assert_eq!(s["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            pod(&s)["volumes"],
            json!([
                {"name": "data", "persistentVolumeClaim": {"claimName": "app-data"}},
                {"name": "secret-files-0", "secret": {"secretName": "app-secrets", "items": [{"key": "config.yaml", "path": "config.yaml"}]}},
                {"name": "secret-files-1", "secret": {"secretName": "app-secrets", "items": [
                    {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}
                ]}}
            ])
        );
        assert_eq!(
            pod(&s)["containers"][0]["volumeMounts"],
            json!([
                {"name": "data", "mountPath": "/data"},
                {"name": "secret-files-0", "mountPath": "/etc/app", "readOnly": true},
                {"name": "secret-files-1", "mountPath": "/etc/tls", "readOnly": true}
            ])
        );
        assert!(pod(&s)["containers"][0].get("env").is_none());
        Ok(())
    }

    #[test]
    fn mount_paths_must_be_distinct() {
        let err = render(
            "metadata: {name: a}\nspec: {image: x, persistence: [{name: d, mountPath: /data, size: 1Gi}], secrets: [{name: k, keyVaultSecret: k, mountPath: /data}]}",
            &HomelabAppFacts::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("spec.secrets[0].mountPath") && err.contains("spec.persistence[0]"),
            "{err}"
        );
    }

    #[test]
    fn selector_is_stable_and_labels_complete() -> Result<(), RenderError> {
        let s = render(
            "metadata: {name: a}\nspec: {image: x, replicas: 2}",
            &HomelabAppFacts::default(),
        )?;
        assert_eq!(s["replicas"], 2);
        assert_eq!(
            s["selector"]["matchLabels"],
            json!({"app.kubernetes.io/component": "server", "app.kubernetes.io/instance": "a", "app.kubernetes.io/name": "a"})
        );
        assert_eq!(
            s["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "homelab-operator"
        );
        Ok(())
    }
}
