//! Property tests: for any valid `AppDatabase`, `BackupPolicy` and `HomelabApp`, rendering does
//! not panic, is deterministic, and produces objects whose names and label values Kubernetes
//! accepts.

use homelab_api::{AppDatabase, BackupPolicySpec, HomelabApp};
use homelab_render::facts::{DatabaseFacts, RestoreSourceFacts};
use homelab_render::{
    AppDatabaseFacts, HomelabAppFacts, OperatorConfig, PolicyFacts, RenderError,
    render_app_database, render_homelab_app, to_yaml,
};
use kube::api::DynamicObject;
use proptest::prelude::*;
use serde_json::{Value, json};

fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() <= 63
        && (b.is_empty()
            || (b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))))
}

fn check_objects(objects: &[DynamicObject]) -> Result<(), TestCaseError> {
    for object in objects {
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default();
        let name = object.metadata.name.as_deref().unwrap_or_default();
        prop_assert!(is_dns_label(name), "{kind} name {name:?}");
        if kind == "Cluster" {
            // CloudNativePG refuses longer cluster names (instance pods append suffixes).
            prop_assert!(name.len() <= 50, "Cluster name {name:?}");
        }
        prop_assert!(object.metadata.namespace.is_some());
        for (key, value) in object.metadata.labels.iter().flatten() {
            prop_assert!(is_label_value(value), "{kind} {name} label {key}={value:?}");
        }
        let labels = object.metadata.labels.clone().unwrap_or_default();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        ] {
            prop_assert!(labels.contains_key(key), "{kind} {name} lacks {key}");
        }
    }
    Ok(())
}

fn app_name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9]|-[a-z0-9]){0,19}".prop_filter("at most 40 characters", |s| s.len() <= 40)
}

fn homelab_app_name() -> impl Strategy<Value = String> {
    "[a-z]([-a-z0-9]{0,48}[a-z0-9])?"
}

fn size() -> impl Strategy<Value = String> {
    (
        "[1-9][0-9]{0,3}",
        prop::sample::select(vec!["Mi", "Gi", "Ti"]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"))
}

fn cron_field(max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (0..=max).prop_map(|v| v.to_string()),
        (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
        (0..=max, 0..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (0..=max, 0..=max).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn schedule() -> impl Strategy<Value = String> {
    (
        cron_field(59),
        cron_field(23),
        cron_field(27),
        cron_field(11),
        cron_field(6),
    )
        .prop_map(|(m, h, dom, mon, dow)| {
            // Day of month and month start at 1.
            let shift = |f: String| {
                f.split(',')
                    .map(|item| match item.split_once('-') {
                        Some((a, b)) => format!("{}-{}", bump(a), bump(b)),
                        None if item.starts_with('*') => item.to_string(),
                        None => bump(item),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!("{m} {h} {} {} {dow}", shift(dom), shift(mon))
        })
}

fn bump(v: &str) -> String {
    v.parse::<u32>()
        .map(|n| (n + 1).to_string())
        .unwrap_or_else(|_| v.to_string())
}

fn policy() -> impl Strategy<Value = PolicyFacts> {
    (
        schedule(),
        ("[1-9][0-9]{0,3}", prop::sample::select(vec!["d", "w", "m"])),
        prop_oneof![
            (30u32..=3600).prop_map(|s| format!("{s}s")),
            (1u32..=60).prop_map(|m| format!("{m}m"))
        ],
        prop::sample::select(vec!["none", "gzip", "bzip2", "snappy", "lz4", "zstd", "xz"]),
        prop::sample::select(vec![
            "{app}-db-clean",
            "{app}",
            "pg-{app}-backups",
            "x{app}",
        ]),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(Just("http://127.0.0.1:10000/devstoreaccount1".to_string())),
    )
        .prop_map(
            |(schedule, (n, unit), timeout, compression, template, sas, suspend, endpoint)| {
                let mut azure = json!({
                    "storageAccount": "homelabbackups",
                    "containerTemplate": template,
                    "credentials": if sas {
                        json!({"mode": "SasToken"})
                    } else {
                        json!({"mode": "InheritFromAzureAD", "clientId": "11111111-1111-1111-1111-111111111111"})
                    },
                });
                if let Some(endpoint) = endpoint {
                    azure["endpoint"] = endpoint.into();
                }
                let spec: BackupPolicySpec = serde_json::from_value(json!({
                    "schedule": schedule,
                    "retention": format!("{n}{unit}"),
                    "walArchiveTimeout": timeout,
                    "walCompression": compression,
                    "suspend": suspend,
                    "storage": {"azure": azure},
                }))
                .unwrap_or_else(|e| panic!("generated an invalid policy: {e}"));
                PolicyFacts {
                    name: "policy".into(),
                    spec,
                }
            },
        )
}

fn database() -> impl Strategy<Value = AppDatabase> {
    (
        app_name(),
        proptest::option::of(app_name()),
        1i32..=9,
        13i32..=18,
        size(),
        proptest::option::of(size()),
        proptest::option::of((1i32..=10, any::<bool>(), proptest::option::of(10i32..=100_000))),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, app, instances, version, storage, wal, pooler, backup, delete, monitor)| {
            let mut spec = json!({
                "instances": instances,
                "postgres": {"version": version},
                "storage": {"size": storage},
                "deletionPolicy": if delete { "Delete" } else { "Retain" },
                "monitoring": {"podMonitor": monitor},
            });
            if let Some(app) = app {
                spec["app"] = app.into();
            }
            if let Some(wal) = wal {
                spec["walStorage"] = json!({"size": wal});
            }
            if let Some((instances, transaction, max)) = pooler {
                spec["pooler"] = json!({"instances": instances, "poolMode": if transaction { "transaction" } else { "session" }});
                if let Some(max) = max {
                    spec["pooler"]["maxClientConnections"] = max.into();
                }
            }
            if backup {
                spec["backup"] = json!({"policyRef": {"name": "policy"}});
            }
            resource(json!({
                "apiVersion": "homelab.io/v1alpha1",
                "kind": "AppDatabase",
                "metadata": {"name": name},
                "spec": spec,
            }))
        })
}

fn resource<T: serde::de::DeserializeOwned>(mut value: Value) -> T {
    value["metadata"]["namespace"] = "apps".into();
    value["metadata"]["uid"] = "6f1d0c2e-1111-4222-8333-444455556666".into();
    serde_json::from_value(value).unwrap_or_else(|e| panic!("generated an invalid resource: {e}"))
}

fn homelab_app() -> impl Strategy<Value = (HomelabApp, bool)> {
    (
        homelab_app_name(),
        0i32..=50,
        1i32..=65535,
        0usize..4,
        prop::collection::vec(
            prop::sample::select(vec!["host", "port", "database", "username", "password", "uri", "jdbcUrl"]),
            0..7,
        ),
        prop::collection::vec(proptest::option::of(0usize..3), 0..5),
        prop::collection::vec("[a-z]([-a-z0-9]{0,10}[a-z0-9])?", 0..4),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        0u8..3,
    )
        .prop_map(|(name, replicas, port, env, db_env, secrets, volumes, flags, exposure)| {
            let (use_pooler, root, policy_on, tls) = flags;
            let mut spec = json!({
                "image": "registry.example/app:1.0",
                "replicas": replicas,
                "port": port,
                "env": (0..env).map(|i| json!({"name": format!("E{i}"), "value": "v"})).collect::<Vec<_>>(),
                "secrets": secrets.iter().enumerate().map(|(i, dir)| {
                    let mut s = json!({"name": format!("S{i}"), "keyVaultSecret": format!("kv-{i}")});
                    if let Some(dir) = dir {
                        s["mountPath"] = format!("/secrets/{dir}").into();
                    }
                    s
                }).collect::<Vec<_>>(),
                "networkPolicy": {"enabled": policy_on, "egress": [{"cidr": "0.0.0.0/0", "ports": [443]}]},
                "security": {"runAsRoot": root, "runAsUser": 1000, "fsGroup": 1000},
                "healthCheck": {"path": "/health", "port": port, "initialDelaySeconds": 5},
            });
            let mut seen = std::collections::BTreeSet::new();
            spec["persistence"] = volumes
                .into_iter()
                .filter(|v| seen.insert(v.clone()))
                .enumerate()
                .map(|(i, v)| json!({"name": v, "mountPath": format!("/data/{i}"), "size": "1Gi"}))
                .collect();
            if !db_env.is_empty() {
                spec["database"] = json!({
                    "ref": {"name": "db"},
                    "usePooler": use_pooler,
                    "env": db_env.iter().enumerate().map(|(i, f)| json!({"name": format!("D{i}"), "field": f})).collect::<Vec<_>>(),
                });
            }
            match exposure {
                1 => spec["ingress"] = json!({"host": "app.example.com", "tls": {"enabled": tls}}),
                2 => spec["route"] = json!({"gateway": {"name": "gw", "namespace": "gateway"}, "hostname": "app.example.com"}),
                _ => {}
            }
            let app = resource(json!({
                "apiVersion": "homelab.io/v1alpha1",
                "kind": "HomelabApp",
                "metadata": {"name": name},
                "spec": spec,
            }));
            (app, use_pooler)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn app_databases_render_valid_deterministic_objects(
        database in database(),
        policy in policy(),
        restored in any::<bool>(),
    ) {
        let config = OperatorConfig::default();
        let mut facts = AppDatabaseFacts::new(&database, database.spec.backup.as_ref().map(|_| policy));
        if restored {
            let mut database = database.clone();
            database.spec.restore = serde_json::from_value(json!({"from": {"appDatabase": "source"}})).ok();
            facts.restore_source = Some(RestoreSourceFacts::ObjectStore {
                name: "source-db-backup".into(),
                server_name: "source-db-cnpg-v1".into(),
                names: homelab_api::app_database::DatabaseNames::for_app("source"),
            });
            let objects = render_app_database(&database, &facts, &config);
            let acceptable = objects.is_ok()
                || matches!(objects, Err(RenderError::InvalidContainer { .. }));
            prop_assert!(acceptable, "restore failed: {:?}", objects.err());
        }
        match render_app_database(&database, &facts, &config) {
            Ok(objects) => {
                check_objects(&objects)?;
                let again = render_app_database(&database, &facts, &config);
                let first = to_yaml(&objects).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let second = again.map_err(|e| TestCaseError::fail(e.to_string()))
                    .and_then(|o| to_yaml(&o).map_err(|e| TestCaseError::fail(e.to_string())))?;
                prop_assert_eq!(first, second);
            }
            // Only a template that does not fit this app name may fail; the schema sees one or the
            // other, never both.
            Err(RenderError::InvalidContainer { container, .. }) => {
                prop_assert!(!homelab_api::naming::is_valid_container_name(&container), "{container}");
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn homelab_apps_render_valid_deterministic_objects(
        (app, use_pooler) in homelab_app(),
        database in database(),
    ) {
        let config = OperatorConfig::default();
        let mut db = DatabaseFacts::from_app_database(&database, &config);
        db.name = "db".into();
        db.has_pooler = db.has_pooler || use_pooler;
        let facts = HomelabAppFacts { database: Some(db) };
        let objects = render_homelab_app(&app, &facts, &config)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_objects(&objects)?;
        let again = render_homelab_app(&app, &facts, &config)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(objects, again);
    }
}
