//! The install manifests: `deploy/base` (Kustomize) and `deploy/helm/homelab-operator` (Helm).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use homelab_deploy_tests::{
    DryRun, display, helm, helm_template, kustomize, object_id, of_kind, read_documents, repo_root,
    run,
};
use homelab_testenv::TestEnv;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::namespace_with_labels;

const RELEASE_NAMESPACE: &str = "homelab-system";

async fn base() -> Result<Vec<Value>> {
    kustomize(&repo_root().join("deploy/base")).await
}

fn chart(namespace: &str) -> Result<Vec<Value>> {
    helm_template(namespace, &[])
}

/// The one object of `kind` named `name`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind}/{name} among the rendered objects"))
}

fn kinds_and_names(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().map(object_id).collect()
}

#[tokio::test]
async fn kustomize_base_is_accepted_by_the_apiserver() -> Result<()> {
    let objects = base().await?;
    let expected: BTreeSet<String> = [
        "Namespace/homelab-system",
        "CustomResourceDefinition/appdatabases.homelab.io",
        "CustomResourceDefinition/backuppolicies.homelab.io",
        "CustomResourceDefinition/homelabapps.homelab.io",
        "ServiceAccount/homelab-operator",
        "ClusterRole/homelab-operator",
        "ClusterRoleBinding/homelab-operator",
        "Role/homelab-operator-leader-election",
        "RoleBinding/homelab-operator-leader-election",
        "Deployment/homelab-operator",
        "Service/homelab-operator-metrics",
        "ServiceMonitor/homelab-operator",
        "NetworkPolicy/homelab-operator",
        "PodDisruptionBudget/homelab-operator",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds_and_names(&objects), expected);
    for object in &objects {
        if object["metadata"].get("namespace").is_some() {
            assert_eq!(
                object["metadata"]["namespace"],
                RELEASE_NAMESPACE,
                "{}",
                object_id(object)
            );
        }
    }

    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-base").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    dry_run.apply_all(&objects, Some(&namespace)).await
}

#[tokio::test]
async fn helm_chart_lints_and_is_accepted_by_the_apiserver() -> Result<()> {
    let helm = helm()?;
    let chart_dir = repo_root().join("deploy/helm/homelab-operator");
    run(std::process::Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(&chart_dir))?;

    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-helm").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    // Defaults, then every optional object switched on and a namespace list set.
    let defaults = chart(&namespace)?;
    dry_run.apply_all(&defaults, None).await?;
    let everything = helm_template(
        &namespace,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "operator.watchNamespaces={apps,media}",
            "--set",
            "replicaCount=3",
        ],
    )?;
    ensure!(
        everything.iter().any(|o| o["kind"] == "PrometheusRule"),
        "metrics.prometheusRule.enabled=true renders no PrometheusRule"
    );
    let deployment = find(&everything, "Deployment", "homelab-operator")?;
    assert_eq!(deployment["spec"]["replicas"], 3);
    let env_vars = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    ensure!(
        env_vars.as_array().is_some_and(|vars| vars
            .iter()
            .any(|v| v["name"] == "HOMELAB_WATCH_NAMESPACES" && v["value"] == "apps,media")),
        "operator.watchNamespaces does not reach HOMELAB_WATCH_NAMESPACES: {env_vars}"
    );
    dry_run.apply_all(&everything, None).await?;

    // Switched off, the optional objects disappear.
    let minimal = helm_template(
        &namespace,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=false",
            "--set",
            "networkPolicy.enabled=false",
            "--set",
            "podDisruptionBudget.enabled=false",
        ],
    )?;
    for kind in ["ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"] {
        ensure!(
            of_kind(&minimal, kind).is_empty(),
            "{kind} rendered although disabled"
        );
    }
    Ok(())
}

/// Strips what legitimately differs between the two renderings: Helm's bookkeeping labels.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("labels");
    }
    object
}

/// For each Kustomize object, where its Helm twin first differs once both pass `normalize`.
fn differences(
    kustomized: &[Value],
    templated: &[Value],
    normalize: fn(&Value) -> Value,
) -> Result<Vec<String>> {
    let mut differences = Vec::new();
    for object in kustomized {
        let id = object_id(object);
        let other = templated
            .iter()
            .find(|o| object_id(o) == id)
            .with_context(|| format!("{id} missing from Helm"))?;
        if let Some(difference) = first_difference(&normalize(object), &normalize(other), "") {
            differences.push(format!("{id}: {difference}"));
        }
    }
    Ok(differences)
}

/// Where two values first differ: a JSON pointer and both sides, shortened.
fn first_difference(left: &Value, right: &Value, pointer: &str) -> Option<String> {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    l.get(k).unwrap_or(&Value::Null),
                    r.get(k).unwrap_or(&Value::Null),
                    &format!("{pointer}/{k}"),
                )
            })
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => l
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{pointer}/{i}"))),
        // YAML `9.0` and `9` are the same number to the apiserver.
        (Value::Number(l), Value::Number(r)) if l.as_f64() == r.as_f64() => None,
        _ if left == right => None,
        _ => {
            let short = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            Some(format!(
                "at {pointer}: kustomize {} vs helm {}",
                short(left),
                short(right)
            ))
        }
    }
}

#[tokio::test]
async fn helm_and_kustomize_install_the_same_objects() -> Result<()> {
    let kustomized: Vec<Value> = base()
        .await?
        .into_iter()
        // Helm creates the release namespace itself (`--create-namespace`).
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    let templated = chart(RELEASE_NAMESPACE)?;
    assert_eq!(
        kinds_and_names(&kustomized),
        kinds_and_names(&templated),
        "Kustomize (left) and Helm (right) install different objects"
    );
    let differences = differences(&kustomized, &templated, comparable)?;
    ensure!(
        differences.is_empty(),
        "Helm's defaults differ from deploy/base:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// Fails on wildcards, non-resource URLs and any grant on Secrets.
fn check_rules(owner: &str, rules: &Value) -> Result<()> {
    let rules = rules
        .as_array()
        .with_context(|| format!("{owner} has no rules"))?;
    ensure!(!rules.is_empty(), "{owner} has no rules");
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            for value in rule[field].as_array().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default();
                ensure!(
                    !value.contains('*'),
                    "{owner} grants a wildcard in {field}: {rule}"
                );
                ensure!(
                    !(field == "resources" && value.split('/').next() == Some("secrets")),
                    "{owner} grants access to Secrets: {rule}"
                );
            }
        }
        ensure!(
            rule.get("nonResourceURLs").is_none(),
            "{owner} grants non-resource URLs: {rule}"
        );
        for verb in rule["verbs"].as_array().into_iter().flatten() {
            ensure!(
                !matches!(
                    verb.as_str(),
                    Some("escalate" | "bind" | "impersonate" | "deletecollection")
                ),
                "{owner} grants {verb}: {rule}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn rbac_has_no_wildcards_and_no_secrets() -> Result<()> {
    for (source, objects) in [
        ("deploy/base", base().await?),
        ("helm", chart(RELEASE_NAMESPACE)?),
    ] {
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .collect();
        assert_eq!(roles.len(), 2, "{source}: one ClusterRole and one Role");
        for role in roles {
            check_rules(&format!("{source} {}", object_id(role)), &role["rules"])?;
        }
    }
    // The checker itself catches what it should.
    for bad in [
        json!([{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }]),
        json!([{ "apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"] }]),
        json!([{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"] }]),
        json!([{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }]),
    ] {
        ensure!(
            check_rules("probe", &bad).is_err(),
            "{bad} passed the check"
        );
    }
    Ok(())
}

/// One access question for the authorizer.
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    name: &'static str,
    /// In the operator's namespace (`true`) or cluster-wide / another namespace (`false`).
    namespaced: bool,
}

const fn access(verb: &'static str, group: &'static str, resource: &'static str) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource: "",
        name: "",
        namespaced: true,
    }
}

const CHILD_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "patch", "update", "delete",
];

/// The children the operator creates, by API group and resource.
const CHILDREN: [(&str, &str); 14] = [
    ("apps", "deployments"),
    ("batch", "jobs"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("external-secrets.io", "externalsecrets"),
    ("postgresql.cnpg.io", "clusters"),
    ("postgresql.cnpg.io", "poolers"),
    ("postgresql.cnpg.io", "scheduledbackups"),
    ("postgresql.cnpg.io", "backups"),
    ("barmancloud.cnpg.io", "objectstores"),
    ("monitoring.coreos.com", "podmonitors"),
];

const OWN_KINDS: [&str; 3] = ["homelabapps", "appdatabases", "backuppolicies"];

async fn allowed(client: &kube::Client, user: &str, namespace: &str, a: &Access) -> Result<bool> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(a.resource.into()),
                subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                name: (!a.name.is_empty()).then(|| a.name.into()),
                namespace: if a.namespaced {
                    Some(namespace.into())
                } else if a.group == "coordination.k8s.io" || a.resource == "secrets" {
                    Some("default".into())
                } else {
                    None
                },
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .context("SubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Creates the rendered RBAC for real — ClusterRole and ClusterRoleBinding renamed after the
/// test namespace, the Role and RoleBinding in it — and asks the apiserver's authorizer what the
/// operator's ServiceAccount may do.
#[tokio::test]
async fn operator_account_gets_what_it_needs_and_nothing_more() -> Result<()> {
    let env = TestEnv::get().await;
    let client = env.client().await?;
    let namespace = env.namespace("deploy-rbac").await?;
    let objects = base().await?;
    let dry_run = DryRun::new(client.clone()).await?;
    let unique = format!("homelab-operator-{namespace}");

    let mut created_cluster_objects = Vec::new();
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        for object in of_kind(&objects, kind) {
            let mut object = object.clone();
            if kind.starts_with("Cluster") {
                object["metadata"]["name"] = json!(unique);
            } else {
                object["metadata"]["namespace"] = json!(namespace);
            }
            if kind == "ClusterRoleBinding" {
                object["roleRef"]["name"] = json!(unique);
            }
            if let Some(subjects) = object["subjects"].as_array_mut() {
                for subject in subjects {
                    subject["namespace"] = json!(namespace);
                }
            }
            let resource = match kind {
                "ClusterRole" => "clusterroles",
                "ClusterRoleBinding" => "clusterrolebindings",
                "Role" => "roles",
                _ => "rolebindings",
            };
            let ar = kube::core::ApiResource {
                group: "rbac.authorization.k8s.io".into(),
                version: "v1".into(),
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: kind.into(),
                plural: resource.into(),
            };
            let api: Api<DynamicObject> = if kind.starts_with("Cluster") {
                created_cluster_objects.push((ar.clone(), unique.clone()));
                Api::all_with(client.clone(), &ar)
            } else {
                Api::namespaced_with(client.clone(), &namespace, &ar)
            };
            let object: DynamicObject = serde_json::from_value(object)?;
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("creating {kind}"))?;
        }
    }
    // The rendered objects themselves pass too (dry-run, in the release namespace's shape).
    dry_run.apply_all(&objects, Some(&namespace)).await?;

    let user = format!("system:serviceaccount:{namespace}:homelab-operator");
    let mut needed = Vec::new();
    for (group, resource) in CHILDREN {
        for verb in CHILD_VERBS {
            needed.push(access(verb, group, resource));
        }
    }
    for resource in OWN_KINDS {
        for verb in ["get", "list", "watch", "patch", "update"] {
            needed.push(access(verb, "homelab.io", resource));
        }
        for subresource in ["status", "finalizers"] {
            for verb in ["patch", "update"] {
                needed.push(Access {
                    subresource,
                    ..access(verb, "homelab.io", resource)
                });
            }
        }
    }
    needed.push(access("get", "external-secrets.io", "secretstores"));
    needed.push(Access {
        namespaced: false,
        ..access("get", "external-secrets.io", "clustersecretstores")
    });
    for verb in ["get", "list"] {
        needed.push(Access {
            namespaced: false,
            ..access(verb, "storage.k8s.io", "storageclasses")
        });
    }
    // A drill's verification Job reports through its pod's termination message.
    needed.push(access("get", "", "pods"));
    needed.push(access("list", "", "pods"));
    needed.push(access("create", "events.k8s.io", "events"));
    needed.push(access("patch", "events.k8s.io", "events"));
    for verb in ["get", "list", "watch"] {
        needed.push(Access {
            namespaced: false,
            ..access(verb, "apiextensions.k8s.io", "customresourcedefinitions")
        });
    }
    needed.push(access("create", "coordination.k8s.io", "leases"));
    for verb in ["get", "update", "patch"] {
        needed.push(Access {
            name: "homelab-operator-leader",
            ..access(verb, "coordination.k8s.io", "leases")
        });
    }

    let forbidden = [
        access("get", "", "secrets"),
        access("list", "", "secrets"),
        access("watch", "", "secrets"),
        Access {
            namespaced: false,
            ..access("list", "", "secrets")
        },
        access("get", "", "configmaps"),
        access("create", "", "pods"),
        access("delete", "", "pods"),
        Access {
            subresource: "log",
            ..access("get", "", "pods")
        },
        access("delete", "homelab.io", "appdatabases"),
        Access {
            namespaced: false,
            ..access("patch", "storage.k8s.io", "storageclasses")
        },
        access("create", "homelab.io", "homelabapps"),
        access("list", "external-secrets.io", "secretstores"),
        access("create", "external-secrets.io", "secretstores"),
        Access {
            namespaced: false,
            ..access("create", "rbac.authorization.k8s.io", "clusterroles")
        },
        Access {
            namespaced: false,
            ..access(
                "update",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
            )
        },
        // Only the operator's own Lease, only in its own namespace.
        Access {
            name: "someone-elses-lease",
            ..access("update", "coordination.k8s.io", "leases")
        },
        Access {
            name: "homelab-operator-leader",
            namespaced: false,
            ..access("update", "coordination.k8s.io", "leases")
        },
    ];

    let describe = |a: &Access| {
        format!(
            "{} {}{}{}{}{}",
            a.verb,
            if a.group.is_empty() { "core" } else { a.group },
            format_args!("/{}", a.resource),
            if a.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", a.subresource)
            },
            if a.name.is_empty() {
                String::new()
            } else {
                format!(" named {}", a.name)
            },
            if a.namespaced {
                " in its namespace"
            } else {
                " elsewhere"
            },
        )
    };

    // New bindings reach the authorizer's cache within moments: retry the first question.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !allowed(&client, &user, &namespace, &needed[0]).await? {
        if Instant::now() > deadline {
            bail!("the authorizer never saw the new bindings");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut wrong = Vec::new();
    for a in &needed {
        if !allowed(&client, &user, &namespace, a).await? {
            wrong.push(format!("denied but needed: {}", describe(a)));
        }
    }
    for a in &forbidden {
        if allowed(&client, &user, &namespace, a).await? {
            wrong.push(format!("allowed but not needed: {}", describe(a)));
        }
    }

    for (ar, name) in created_cluster_objects {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        api.delete(&name, &DeleteParams::default()).await?;
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Makes a pod less strict in one way.
type Loosen = fn(&mut Value);

/// The Deployment's pod template as a Pod.
fn pod_from(deployment: &Value, namespace: &str) -> Value {
    let template = &deployment["spec"]["template"];
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "homelab-operator-pss-check",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    })
}

/// The apiserver's PodSecurity admission judges the operator's pod: a namespace enforcing
/// `restricted` must admit it, and must refuse the same pod made slightly less strict (which
/// proves the namespace really enforces).
#[tokio::test]
async fn operator_pods_meet_the_restricted_pod_security_standard() -> Result<()> {
    let env = TestEnv::get().await;
    let namespace = namespace_with_labels(
        "deploy-pss",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await?;
    let client = env.client().await?;
    // The ServiceAccount admission plugin wants the pod's account to exist.
    let _ = env
        .service_account_client(&namespace, "homelab-operator")
        .await?;
    let dry_run = DryRun::new(client).await?;

    for (source, objects) in [("deploy/base", base().await?), ("helm", chart(&namespace)?)] {
        let deployment = find(&objects, "Deployment", "homelab-operator")?;
        let pod = pod_from(deployment, &namespace);
        dry_run
            .apply(&pod, Some(&namespace))
            .await
            .with_context(|| format!("{source}: the restricted namespace refused the pod"))?;

        let loosened: [(&str, Loosen); 4] = [
            ("allowPrivilegeEscalation: true", |p| {
                p["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
                    json!(true);
            }),
            ("no capabilities dropped", |p| {
                p["spec"]["containers"][0]["securityContext"]["capabilities"] = json!({});
            }),
            ("runAsNonRoot unset", |p| {
                for scope in [&mut p["spec"]["securityContext"]] {
                    if let Some(sc) = scope.as_object_mut() {
                        sc.remove("runAsNonRoot");
                        sc.remove("runAsUser");
                    }
                }
                if let Some(sc) = p["spec"]["containers"][0]["securityContext"].as_object_mut() {
                    sc.remove("runAsNonRoot");
                }
            }),
            ("seccomp unset", |p| {
                if let Some(sc) = p["spec"]["securityContext"].as_object_mut() {
                    sc.remove("seccompProfile");
                }
                if let Some(sc) = p["spec"]["containers"][0]["securityContext"].as_object_mut() {
                    sc.remove("seccompProfile");
                }
            }),
        ];
        for (what, loosen) in loosened {
            let mut pod = pod.clone();
            loosen(&mut pod);
            match dry_run.apply(&pod, Some(&namespace)).await {
                Ok(_) => {
                    bail!("{source}: a pod with {what} was admitted: is `restricted` enforced?")
                }
                Err(e) => ensure!(
                    format!("{e:#}").contains("violates PodSecurity"),
                    "{source}: a pod with {what} was refused for another reason: {e:#}"
                ),
            }
        }

        // What PodSecurity does not check but the brief for the operator's pod requires.
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"], true,
            "{source}"
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        ensure!(
            container["resources"]["requests"].is_object()
                && container["resources"]["limits"]["memory"].is_string(),
            "{source}: resources: {}",
            container["resources"]
        );
    }
    Ok(())
}

/// Two replicas with leader election, the Lease in the pod's namespace, workload identity, and
/// spread over nodes.
#[tokio::test]
async fn deployment_runs_two_spread_replicas_with_leader_election() -> Result<()> {
    for (source, objects) in [
        ("deploy/base", base().await?),
        ("helm", chart(RELEASE_NAMESPACE)?),
    ] {
        let deployment = find(&objects, "Deployment", "homelab-operator")?;
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2, "{source}");
        let pod = &spec["template"];
        assert_eq!(
            pod["metadata"]["labels"]["azure.workload.identity/use"], "true",
            "{source}"
        );
        let env = pod["spec"]["containers"][0]["env"]
            .as_array()
            .with_context(|| format!("{source}: no env"))?;
        let var = |name: &str| env.iter().find(|v| v["name"] == name).cloned();
        assert_eq!(
            var("POD_NAMESPACE").map(|v| v["valueFrom"]["fieldRef"]["fieldPath"].clone()),
            Some(json!("metadata.namespace")),
            "{source}"
        );
        assert_eq!(
            var("HOMELAB_POD_NAME").map(|v| v["valueFrom"]["fieldRef"]["fieldPath"].clone()),
            Some(json!("metadata.name")),
            "{source}"
        );
        assert_eq!(
            var("HOMELAB_LEADER_ELECTION_NAMESPACE").map(|v| v["value"].clone()),
            Some(json!("$(POD_NAMESPACE)")),
            "{source}"
        );
        assert_eq!(
            var("HOMELAB_LEADER_ELECTION").map(|v| v["value"].clone()),
            Some(json!("true")),
            "{source}"
        );
        ensure!(
            pod["spec"]["topologySpreadConstraints"].is_array()
                && pod["spec"]["affinity"]["podAntiAffinity"].is_object(),
            "{source}: replicas are not spread"
        );
        let selector = &spec["selector"]["matchLabels"];
        for kind in ["Service", "PodDisruptionBudget"] {
            let object = of_kind(&objects, kind)
                .into_iter()
                .next()
                .with_context(|| format!("{source}: no {kind}"))?;
            let object_selector = if kind == "Service" {
                &object["spec"]["selector"]
            } else {
                &object["spec"]["selector"]["matchLabels"]
            };
            assert_eq!(object_selector, selector, "{source}: {kind} selector");
        }
        let account = find(&objects, "ServiceAccount", "homelab-operator")?;
        ensure!(
            account["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string(),
            "{source}: the ServiceAccount has no workload identity client ID"
        );
    }
    Ok(())
}

/// The CRDs of `crds/` are what both installs carry.
#[tokio::test]
async fn installs_carry_the_generated_crds() -> Result<()> {
    let crds_dir = repo_root().join("crds");
    let mut generated = BTreeSet::new();
    for entry in std::fs::read_dir(&crds_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            generated.insert(name);
        }
    }
    ensure!(!generated.is_empty(), "crds/ holds no CRD");

    let kustomization = read_documents(&crds_dir.join("kustomization.yaml"))?;
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert_eq!(
        listed, generated,
        "crds/kustomization.yaml must list every generated CRD"
    );

    // The chart's crds/ are symlinks to crds/ (Helm follows them, and `helm package` stores the
    // files they point to), so the chart cannot drift from the generated CRDs.
    let chart_crds = repo_root().join("deploy/helm/homelab-operator/crds");
    let mut wrong = Vec::new();
    let mut in_chart = BTreeSet::new();
    for entry in std::fs::read_dir(&chart_crds)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = std::fs::read_link(entry.path()).ok();
        let wanted = Path::new("../../../../crds").join(&name);
        if target.as_deref() != Some(wanted.as_path()) {
            wrong.push(format!("{name} is not a symlink to {}", wanted.display()));
        }
        in_chart.insert(name);
    }
    for name in generated.difference(&in_chart) {
        wrong.push(format!(
            "{name} is missing: ln -s ../../../../crds/{name} {}/{name}",
            display(&chart_crds)
        ));
    }
    for name in in_chart.difference(&generated) {
        wrong.push(format!("{name} is not a generated CRD"));
    }
    ensure!(
        wrong.is_empty(),
        "{}: {}",
        display(&chart_crds),
        wrong.join("; ")
    );
    Ok(())
}

/// `object` with its containers' environment sorted by name: Kustomize's strategic merge puts
/// the variables a patch adds first, Helm where the template has them.
fn comparable_env(object: &Value) -> Value {
    let mut object = comparable(object);
    if let Some(containers) = object
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for container in containers {
            if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
                env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
    }
    object
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["value"]
        .as_str()
}

/// `deploy/microk8s` and the chart with `values-microk8s.yaml` install the same objects, with
/// what MicroK8s 1.36's addons need: a service principal instead of workload identity, Traefik in
/// namespace `ingress` admitted by app NetworkPolicies, the API server's port 16443, and the
/// observability addon's Prometheus (namespace `observability`, label
/// `release=kube-prom-stack`) scraping the operator, its alerts and the databases' PodMonitors.
#[tokio::test]
async fn microk8s_install_is_the_same_in_kustomize_and_helm_and_is_accepted() -> Result<()> {
    let kustomized: Vec<Value> = kustomize(&repo_root().join("deploy/microk8s"))
        .await?
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    let values = repo_root().join("deploy/helm/homelab-operator/values-microk8s.yaml");
    let values = values.display().to_string();
    let templated = helm_template(RELEASE_NAMESPACE, &["-f", &values])?;
    assert_eq!(
        kinds_and_names(&kustomized),
        kinds_and_names(&templated),
        "deploy/microk8s (left) and values-microk8s.yaml (right) install different objects"
    );
    let differences = differences(&kustomized, &templated, comparable_env)?;
    ensure!(
        differences.is_empty(),
        "deploy/microk8s and values-microk8s.yaml differ:\n{}",
        differences.join("\n")
    );

    for (source, objects) in [("deploy/microk8s", &kustomized), ("helm", &templated)] {
        let deployment = find(objects, "Deployment", "homelab-operator")?;
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        ensure!(
            pod_labels.get("azure.workload.identity/use").is_none(),
            "{source}: the pod still asks for workload identity: {pod_labels}"
        );
        let account = find(objects, "ServiceAccount", "homelab-operator")?;
        ensure!(
            account["metadata"]["annotations"]
                .get("azure.workload.identity/client-id")
                .is_none(),
            "{source}: the ServiceAccount still names a workload identity"
        );
        assert_eq!(
            env_value(deployment, "HOMELAB_AZURE_CONFIG"),
            Some("/etc/homelab-operator/config/azure.yaml"),
            "{source}"
        );
        let config = find(objects, "ConfigMap", "homelab-operator-azure-config")?;
        let azure: serde_json::Value =
            serde_norway::from_str(config["data"]["azure.yaml"].as_str().unwrap_or_default())?;
        assert_eq!(
            azure,
            json!({"credential": {"type": "servicePrincipal",
                "clientSecretFile": "/var/run/secrets/homelab-operator/azure/client-secret"}}),
            "{source}"
        );
        for kind in ["ServiceMonitor", "PrometheusRule"] {
            let object = find(objects, kind, "homelab-operator")?;
            assert_eq!(
                object["metadata"]["labels"]["release"], "kube-prom-stack",
                "{source}: {kind} is not selected by the observability addon's Prometheus"
            );
        }
        let policy = find(objects, "NetworkPolicy", "homelab-operator")?;
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "observability",
            "{source}"
        );
        let ports: Vec<i64> = policy["spec"]["egress"][1]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        ensure!(
            ports.contains(&16443),
            "{source}: the operator cannot reach MicroK8s' API server on 16443: {ports:?}"
        );

        // What the operator renders with these settings, as its flags parse them.
        let mut args = Vec::new();
        for (variable, flag) in [
            ("HOMELAB_INGRESS_NAMESPACE", "--ingress-namespace"),
            ("HOMELAB_INGRESS_POD_LABELS", "--ingress-pod-labels"),
            ("HOMELAB_MONITOR_LABELS", "--monitor-labels"),
        ] {
            let value = env_value(deployment, variable)
                .with_context(|| format!("{source}: {variable} is not set"))?;
            args.push(format!("{flag}={value}"));
        }
        let render = homelab_operator::config::RunConfig::from_args(&args)?.render_config();
        let mut inputs = Vec::new();
        for file in ["examples/backup-policy.yaml", "examples/n8n.yaml"] {
            inputs.push((
                file.to_string(),
                std::fs::read_to_string(repo_root().join(file))?,
            ));
        }
        let mut examples = homelab_render::manifest::parse_manifests(&inputs)?;
        for (i, document) in examples.iter_mut().enumerate() {
            let meta = document.resource.metadata_mut();
            meta.namespace = Some("apps".to_string());
            meta.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
        }
        let children = homelab_render::manifest::render_documents(&examples, &render)?;
        let policy = children
            .iter()
            .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "NetworkPolicy"))
            .context("n8n renders no NetworkPolicy")?;
        assert_eq!(
            policy.data["spec"]["ingress"][0]["from"][0],
            json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
            }),
            "{source}"
        );
        let monitors: Vec<_> = children
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "PodMonitor"))
            .collect();
        ensure!(!monitors.is_empty(), "n8n renders no PodMonitor");
        for monitor in monitors {
            assert_eq!(
                monitor
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("release"))
                    .map(String::as_str),
                Some("kube-prom-stack"),
                "{source}"
            );
        }
    }

    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-microk8s").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    dry_run.apply_all(&kustomized, Some(&namespace)).await
}

#[test]
fn helm_refuses_two_azure_identities() -> Result<()> {
    let refused = helm_template(
        RELEASE_NAMESPACE,
        &["--set", "azure.servicePrincipal.enabled=true"],
    );
    let message = format!(
        "{:#}",
        refused.err().context("helm rendered both identities")?
    );
    ensure!(
        message.contains("set azure.workloadIdentity.enabled=false to use the service principal"),
        "{message}"
    );
    Ok(())
}
