//! Fuzzing of the deserialisation + render path: whatever JSON reaches the operator as an
//! `AppDatabase`, `HomelabApp` or `BackupPolicy`, `serde_json::from_value` followed by rendering
//! returns a value or an error and never panics.
//!
//! Two generators per kind: arbitrary JSON shaped like a resource (real field names from the CRD
//! schema, any value types and edge-case values), and structurally schema-valid specs generated
//! from the CRD's OpenAPI schema (types, enums, bounds, lengths, patterns; CEL rules are not
//! applied, so the renderer also sees combinations admission would refuse).
//!
//! Each generator reports how many cases reached the renderer (deserialised) and how many rendered
//! without error, and fails when the share that reached it is below its floor (8 % for arbitrary
//! JSON, of which half is merged into the kind's smallest valid spec; 90 % for schema-valid
//! specs): a generator whose cases serde refuses tests nothing of the renderer.
//!
//! The case count comes from `PROPTEST_CASES` (proptest's default, 256, in the test suite);
//! `make fuzz` runs a million per generator and kind in release mode.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use homelab_api::{AppDatabase, BackupPolicy, HomelabApp};
use homelab_render::{
    AppDatabaseFacts, DatabaseFacts, HomelabAppFacts, OperatorConfig, PolicyFacts,
    render_app_database, render_homelab_app,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The share of arbitrary-JSON cases that must deserialise and reach the renderer (most are
/// refused by serde, as the apiserver's schema would refuse them).
const FLOOR_ARBITRARY: f64 = 0.08;
/// The share of schema-valid cases that must reach the renderer.
const FLOOR_SCHEMA_VALID: f64 = 0.9;

fn crd_schema(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crds")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let crd: Value = serde_norway::from_str(&text).unwrap_or(Value::Null);
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

struct Schemas {
    database: Value,
    app: Value,
    policy: Value,
    field_names: Vec<String>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let database = crd_schema("homelab.io_appdatabases.yaml");
        let app = crd_schema("homelab.io_homelabapps.yaml");
        let policy = crd_schema("homelab.io_backuppolicies.yaml");
        let mut names = BTreeSet::new();
        for schema in [&database, &app, &policy] {
            collect_names(schema, &mut names);
        }
        assert!(
            !names.is_empty() && database.is_object() && app.is_object() && policy.is_object(),
            "the CRD schemas under crds/ could not be read"
        );
        Schemas {
            database,
            app,
            policy,
            field_names: names.into_iter().collect(),
        }
    })
}

fn collect_names(schema: &Value, names: &mut BTreeSet<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            names.insert(name.clone());
            collect_names(sub, names);
        }
    }
    collect_names_in(&schema["items"], names);
    collect_names_in(&schema["additionalProperties"], names);
}

fn collect_names_in(schema: &Value, names: &mut BTreeSet<String>) {
    if schema.is_object() {
        collect_names(schema, names);
    }
}

/// Strings that have broken parsers before, or might: empty, signs, units, huge numbers,
/// cron-ish, URLs, non-ASCII, control characters, very long.
fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-1",
            "1",
            "00",
            "1Gi",
            "0Gi",
            "1.5Gi",
            "9999999999999Ti",
            "1e3",
            "100m",
            "-5Mi",
            "Gi",
            "30d",
            "0d",
            "1h",
            "366d",
            "5m",
            "0s",
            "-1h",
            "9223372036854775807s",
            "* * * * *",
            "0 1 * * *",
            "*/0 * * * *",
            "60 24 32 13 8",
            "@daily",
            "a b c d e",
            "https://",
            "https://x.example/a",
            "http://[::1]:99999",
            "latest",
            "a:b:c",
            "@sha256:",
            "{app}",
            "{app}{app}{app}{app}{app}{app}{app}{app}",
            "{}",
            "{namespace}",
            "Ü",
            "é-ü",
            "\u{0}",
            "\n",
            "a\u{202e}b",
            "--",
            "a--b",
            "-a",
            "a-",
            "A",
            "postgres",
            "template0",
            "2025-13-40T99:99:99Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ])
        .prop_map(str::to_string),
        "[a-z0-9-]{0,70}",
        "\\PC{0,20}",
        (1usize..300).prop_map(|n| "a".repeat(n)),
    ]
}

fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(2),
            json!(65535),
            json!(65536),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(i32::MAX),
            json!(i32::MIN),
            json!(0.5),
            json!(-0.0),
            json!(1e308),
        ]),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}

/// Any JSON, with object keys mostly taken from the CRDs' field names.
fn jsonish() -> impl Strategy<Value = Value> {
    let names = schemas().field_names.clone();
    let key = prop_oneof![
        8 => prop::sample::select(names),
        1 => "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_number(),
        edge_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `patch` merged into `base`: objects field by field, anything else replaces.
fn merge(base: Value, patch: Value) -> Value {
    match (base, patch) {
        (Value::Object(mut base), Value::Object(patch)) => {
            for (key, value) in patch {
                let merged = match base.remove(&key) {
                    Some(old) => merge(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Object(base)
        }
        (_, patch) => patch,
    }
}

/// Arbitrary JSON for the spec of `kind`: half of it as is, half merged into the smallest spec
/// the kind accepts, so that edge values also reach the renderer past the required fields.
fn arbitrary_spec(kind: &str) -> impl Strategy<Value = Value> {
    let minimal = match kind {
        "HomelabApp" => json!({"image": "registry.example/app:1", "port": 8080}),
        "BackupPolicy" => json!({"storage": {"azure": {"storageAccount": "fuzzaccount"}}}),
        _ => json!({}),
    };
    prop_oneof![
        jsonish(),
        jsonish().prop_map(move |patch| merge(minimal.clone(), patch)),
    ]
}

/// A value following `schema` structurally.
fn from_schema(schema: &Value, depth: u32) -> BoxedStrategy<Value> {
    if let Some(options) = schema["enum"].as_array().filter(|o| !o.is_empty()) {
        return prop::sample::select(options.clone()).boxed();
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return prop_oneof![
            (0i64..5000).prop_map(|n| json!(n)),
            edge_string().prop_map(Value::String),
            prop::sample::select(vec!["1", "10%", "100m", "1Gi", "2"]).prop_map(|s| json!(s)),
        ]
        .boxed();
    }
    match schema["type"].as_str().unwrap_or("object") {
        "object" => {
            let required: BTreeSet<String> = schema["required"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object() {
                let fields: Vec<BoxedStrategy<(String, Option<Value>)>> = properties
                    .iter()
                    .filter(|_| depth < 8)
                    .map(|(name, sub)| {
                        let name = name.clone();
                        let value = from_schema(sub, depth + 1);
                        if required.contains(&name) {
                            value.prop_map(move |v| (name.clone(), Some(v))).boxed()
                        } else {
                            prop::option::weighted(0.5, value)
                                .prop_map(move |v| (name.clone(), v))
                                .boxed()
                        }
                    })
                    .collect();
                fields
                    .prop_map(|fields| {
                        let map: Map<String, Value> = fields
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, v?)))
                            .collect();
                        Value::Object(map)
                    })
                    .boxed()
            } else if schema["additionalProperties"].is_object() && depth < 8 {
                let max = schema["maxProperties"].as_u64().unwrap_or(4).min(4) as usize;
                prop::collection::btree_map(
                    "[a-z][a-z0-9_.-]{0,12}",
                    from_schema(&schema["additionalProperties"], depth + 1),
                    0..=max,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed()
            } else {
                Just(json!({})).boxed()
            }
        }
        "array" => {
            let max = schema["maxItems"].as_u64().unwrap_or(3).min(3) as usize;
            let min = (schema["minItems"].as_u64().unwrap_or(0) as usize).min(max);
            prop::collection::vec(from_schema(&schema["items"], depth + 1), min..=max)
                .prop_map(Value::Array)
                .boxed()
        }
        "integer" => {
            let min = schema["minimum"].as_i64().unwrap_or(-1000);
            let max = schema["maximum"].as_i64().unwrap_or(100_000).max(min);
            prop_oneof![
                3 => (min..=max).prop_map(|n| json!(n)),
                1 => prop::sample::select(vec![min, max]).prop_map(|n| json!(n)),
            ]
            .boxed()
        }
        "number" => (-1e6f64..1e6).prop_map(|f| json!(f)).boxed(),
        "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
        _ => string_for(schema),
    }
}

fn string_for(schema: &Value) -> BoxedStrategy<Value> {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().map(|m| m as usize);
    // Strings are cut or padded to the schema's length bounds (filtering would reject most).
    let fit = move |s: String| {
        let mut s: String = match max {
            Some(m) => s.chars().take(m).collect(),
            None => s,
        };
        while s.chars().count() < min {
            s.push('a');
        }
        s
    };
    let base: BoxedStrategy<String> = match schema["pattern"].as_str() {
        Some(pattern) => {
            let trimmed = pattern.trim_start_matches('^').trim_end_matches('$');
            match proptest::string::string_regex(trimmed) {
                Ok(strategy) => prop_oneof![4 => strategy, 1 => edge_string()].boxed(),
                Err(_) => edge_string().boxed(),
            }
        }
        None => match schema["format"].as_str() {
            Some("date-time") => prop::sample::select(vec![
                "2025-01-01T00:00:00Z",
                "1970-01-01T00:00:00Z",
                "2099-12-31T23:59:59Z",
            ])
            .prop_map(String::from)
            .boxed(),
            _ => prop_oneof![edge_string(), "[a-z]([a-z0-9-]{0,30}[a-z0-9])?",].boxed(),
        },
    };
    prop_oneof![
        9 => base.prop_map(fit),
        1 => edge_string(),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "homelab.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "fuzz", "uid": "00000000-0000-0000-0000-000000000001", "generation": 1},
        "spec": spec,
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        1 => edge_string(),
    ]
}

fn fixed_database() -> AppDatabase {
    serde_json::from_value(resource(
        "AppDatabase",
        "fixed",
        json!({"backup": {"policyRef": {"name": "daily"}}}),
    ))
    .unwrap_or_else(|e| panic!("fixed database: {e}"))
}

fn fixed_policy_spec() -> homelab_api::BackupPolicySpec {
    let policy: BackupPolicy = serde_json::from_value(resource(
        "BackupPolicy",
        "daily",
        json!({"storage": {"azure": {"storageAccount": "fuzzaccount"}}}),
    ))
    .unwrap_or_else(|e| panic!("fixed policy: {e}"));
    policy.spec
}

/// How far one generated case got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// `serde_json::from_value` refused it (what the apiserver's schema would refuse too).
    NotDeserialised,
    /// It reached the renderer, which refused it with an error.
    RenderError,
    /// It reached the renderer, which rendered it.
    Rendered,
}

fn reached<T, E>(result: &Result<T, E>) -> Reached {
    if result.is_ok() {
        Reached::Rendered
    } else {
        Reached::RenderError
    }
}

/// Deserialises and renders; errors are fine, panics are not (proptest reports them).
fn exercise_database(value: Value, with_policy: bool) -> Reached {
    let config = OperatorConfig::default();
    let Ok(db) = serde_json::from_value::<AppDatabase>(value) else {
        return Reached::NotDeserialised;
    };
    let policy = with_policy.then(|| PolicyFacts {
        name: "daily".into(),
        spec: fixed_policy_spec(),
    });
    let facts = AppDatabaseFacts::new(&db, policy);
    let rendered = render_app_database(&db, &facts, &config);
    let _ = DatabaseFacts::from_app_database(&db, &config);
    reached(&rendered)
}

fn exercise_app(value: Value, with_database: bool) -> Reached {
    let config = OperatorConfig::default();
    let Ok(app) = serde_json::from_value::<HomelabApp>(value) else {
        return Reached::NotDeserialised;
    };
    let facts = HomelabAppFacts {
        database: with_database
            .then(|| DatabaseFacts::from_app_database(&fixed_database(), &config)),
    };
    reached(&render_homelab_app(&app, &facts, &config))
}

fn exercise_policy(value: Value) -> Reached {
    let config = OperatorConfig::default();
    let Ok(policy) = serde_json::from_value::<BackupPolicy>(value) else {
        return Reached::NotDeserialised;
    };
    let db = fixed_database();
    let facts = AppDatabaseFacts::new(
        &db,
        Some(PolicyFacts {
            name: "daily".into(),
            spec: policy.spec,
        }),
    );
    reached(&render_app_database(&db, &facts, &config))
}

/// Runs `exercise` on the cases of `strategy` (`PROPTEST_CASES` of them; a panic fails the
/// test with proptest's shrunk case), prints how many reached the renderer, and fails when that
/// share is below `floor`: a generator whose cases are all refused before rendering tests
/// nothing of the renderer.
fn fuzz<S: Strategy>(label: &str, strategy: S, floor: f64, exercise: impl Fn(S::Value) -> Reached)
where
    S::Value: std::fmt::Debug,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let (cases, rendering, rendered) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |value| {
        cases.fetch_add(1, Ordering::Relaxed);
        match exercise(value) {
            Reached::NotDeserialised => {}
            Reached::RenderError => {
                rendering.fetch_add(1, Ordering::Relaxed);
            }
            Reached::Rendered => {
                rendering.fetch_add(1, Ordering::Relaxed);
                rendered.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{label}: {failure}");
    }
    let (cases, rendering, rendered) = (
        cases.into_inner(),
        rendering.into_inner(),
        rendered.into_inner(),
    );
    let share = rendering as f64 / cases.max(1) as f64;
    // Straight to stderr, past libtest's capture: the figures are the point of `make fuzz`.
    let line = format!(
        "{label}: {cases} cases, {rendering} reached the renderer ({:.1} %, floor {:.0} %), \
         {rendered} of them rendered without error\n",
        share * 100.0,
        floor * 100.0
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    assert!(
        share >= floor,
        "{label}: only {rendering} of {cases} cases reached the renderer ({:.1} %, floor {:.0} %)",
        share * 100.0,
        floor * 100.0
    );
}

#[test]
fn arbitrary_json_app_databases_never_panic() {
    fuzz(
        "AppDatabase, arbitrary JSON",
        (name(), arbitrary_spec("AppDatabase"), any::<bool>()),
        FLOOR_ARBITRARY,
        |(name, spec, policy)| exercise_database(resource("AppDatabase", &name, spec), policy),
    );
}

#[test]
fn arbitrary_json_homelab_apps_never_panic() {
    fuzz(
        "HomelabApp, arbitrary JSON",
        (name(), arbitrary_spec("HomelabApp"), any::<bool>()),
        FLOOR_ARBITRARY,
        |(name, spec, database)| exercise_app(resource("HomelabApp", &name, spec), database),
    );
}

#[test]
fn arbitrary_json_backup_policies_never_panic() {
    fuzz(
        "BackupPolicy, arbitrary JSON",
        (name(), arbitrary_spec("BackupPolicy")),
        FLOOR_ARBITRARY,
        |(name, spec)| exercise_policy(resource("BackupPolicy", &name, spec)),
    );
}

#[test]
fn schema_valid_app_databases_never_panic() {
    fuzz(
        "AppDatabase, schema-valid",
        (name(), from_schema(&schemas().database, 0), any::<bool>()),
        FLOOR_SCHEMA_VALID,
        |(name, spec, policy)| exercise_database(resource("AppDatabase", &name, spec), policy),
    );
}

#[test]
fn schema_valid_homelab_apps_never_panic() {
    fuzz(
        "HomelabApp, schema-valid",
        (name(), from_schema(&schemas().app, 0), any::<bool>()),
        FLOOR_SCHEMA_VALID,
        |(name, spec, database)| exercise_app(resource("HomelabApp", &name, spec), database),
    );
}

#[test]
fn schema_valid_backup_policies_never_panic() {
    fuzz(
        "BackupPolicy, schema-valid",
        (name(), from_schema(&schemas().policy, 0)),
        FLOOR_SCHEMA_VALID,
        |(name, spec)| exercise_policy(resource("BackupPolicy", &name, spec)),
    );
}
