//! Alerts (`deploy/monitoring/prometheusrule.yaml`) and the Grafana dashboard.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use homelab_deploy_tests::{DryRun, helm_template, read_documents, repo_root, run, tool};
use homelab_testenv::TestEnv;
use serde_json::Value;

/// Metrics the operator exports (`homelab_operator_` prefix), and the backup metrics.
const OPERATOR_COUNTERS: [&str; 5] = [
    "homelab_operator_reconciles_total",
    "homelab_operator_reconcile_errors_total",
    "homelab_operator_child_applies_total",
    "homelab_operator_status_patches_total",
    "homelab_operator_azure_requests_total",
];
const OPERATOR_GAUGES: [&str; 2] = [
    "homelab_operator_reconciles_in_flight",
    "homelab_operator_leader",
];
const OPERATOR_HISTOGRAM: &str = "homelab_operator_reconcile_duration_seconds";
const BACKUP_METRICS: [&str; 8] = [
    "homelab_backup_last_success_timestamp_seconds",
    "homelab_wal_last_archived_timestamp_seconds",
    "homelab_wal_archive_max_age_seconds",
    "homelab_wal_archiving_failing_since_timestamp_seconds",
    "homelab_restore_drill_last_success",
    "homelab_restore_drill_recovery_seconds",
    "homelab_restore_drill_data_loss_seconds",
    "homelab_restore_drill_objectives_met",
];

fn known_metrics() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = OPERATOR_COUNTERS
        .iter()
        .chain(OPERATOR_GAUGES.iter())
        .chain(BACKUP_METRICS.iter())
        .map(|m| (*m).to_owned())
        .collect();
    for suffix in ["_bucket", "_sum", "_count"] {
        known.insert(format!("{OPERATOR_HISTOGRAM}{suffix}"));
    }
    known.insert("up".into());
    known
}

/// PromQL words that are not metric names: modifiers, set operators and aggregation operators
/// (which may be followed by `by (…)` rather than directly by their parenthesis).
const KEYWORDS: [&str; 27] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects: identifiers that are not functions, keywords,
/// label names or parts of strings, label matchers and ranges.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop strings, then what is inside braces and brackets.
    let mut cleaned = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = cleaned.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let is_call = j < chars.len() && chars[j] == '(';
            let is_keyword = KEYWORDS.contains(&word.to_ascii_lowercase().as_str());
            if is_keyword
                && matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                )
                && is_call
            {
                // Skip the label list.
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j;
            } else if !is_call && !is_keyword {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including exponents and durations such as 5m.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

fn unknown_metrics(exprs: &[String]) -> Vec<String> {
    let known = known_metrics();
    let mut unknown = Vec::new();
    for expr in exprs {
        for name in metric_names(expr) {
            if !known.contains(&name) {
                unknown.push(format!("{name} in {expr}"));
            }
        }
    }
    unknown
}

#[test]
fn metric_name_extraction_sees_metrics_and_only_metrics() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (kind, le) (rate(homelab_operator_reconcile_duration_seconds_bucket{job="$job", kind=~"App.*"}[$__rate_interval]))) > 1.5e3 and on (kind) up offset 5m"#,
    );
    assert_eq!(
        names,
        ["homelab_operator_reconcile_duration_seconds_bucket", "up"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        unknown_metrics(&["rate(homelab_operator_reconciles{kind=\"x\"}[5m])".into()]),
        vec!["homelab_operator_reconciles in rate(homelab_operator_reconciles{kind=\"x\"}[5m])"]
    );
}

fn rule_object() -> Result<Value> {
    let documents = read_documents(&repo_root().join("deploy/monitoring/prometheusrule.yaml"))?;
    ensure!(documents.len() == 1, "one PrometheusRule expected");
    Ok(documents.into_iter().next().unwrap_or_default())
}

fn rule_exprs(spec: &Value) -> Vec<String> {
    spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["expr"].as_str().map(String::from))
        .collect()
}

/// `promtool check rules` on the rule groups, then `promtool test rules` on the unit tests of
/// `deploy/monitoring/prometheusrule-tests.yaml`.
#[test]
fn alerts_pass_promtool() -> Result<()> {
    let promtool = tool("promtool", "apt-get install prometheus (it ships promtool)")?;
    let rule = rule_object()?;
    let dir = std::env::temp_dir().join(format!("homelab-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("rules.yaml");
    let groups = serde_json::json!({ "groups": rule["spec"]["groups"] });
    std::fs::write(&rules, serde_norway::to_string(&groups)?)?;
    let tests = dir.join("tests.yaml");
    std::fs::copy(
        repo_root().join("deploy/monitoring/prometheusrule-tests.yaml"),
        &tests,
    )?;
    let checked = run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    let tested = run(Command::new(&promtool).args(["test", "rules"]).arg(&tests));
    std::fs::remove_dir_all(&dir)?;
    let checked = checked?;
    ensure!(
        checked.contains("SUCCESS"),
        "promtool check rules: {checked}"
    );
    tested?;

    let alerts: BTreeSet<&str> = rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for wanted in [
        "HomelabOperatorDown",
        "HomelabOperatorReconcileErrors",
        "HomelabBackupTooOld",
        "HomelabWALArchivingStale",
        "HomelabRestoreDrillFailed",
        "HomelabRestoreDrillObjectiveMissed",
    ] {
        ensure!(alerts.contains(wanted), "no alert {wanted}");
    }
    let unknown = unknown_metrics(&rule_exprs(&rule["spec"]));
    ensure!(
        unknown.is_empty(),
        "alerts use unknown metrics: {unknown:?}"
    );
    Ok(())
}

/// A rule file promtool must refuse: the check can fail.
#[test]
fn promtool_refuses_a_broken_rule() -> Result<()> {
    let promtool = tool("promtool", "apt-get install prometheus (it ships promtool)")?;
    let dir = std::env::temp_dir().join(format!("homelab-promtool-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(up[5m]\n",
    )?;
    let result = run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    std::fs::remove_dir_all(&dir)?;
    ensure!(
        result.is_err(),
        "promtool accepted an unbalanced expression"
    );
    Ok(())
}

#[tokio::test]
async fn prometheus_rule_is_accepted_by_the_apiserver_and_matches_the_chart() -> Result<()> {
    let rule = rule_object()?;
    let env = TestEnv::get().await;
    let namespace = env.namespace("deploy-rules").await?;
    let dry_run = DryRun::new(env.client().await?).await?;
    dry_run.apply(&rule, Some(&namespace)).await?;

    let chart = helm_template(
        "homelab-system",
        &["--set", "metrics.prometheusRule.enabled=true"],
    )?;
    let from_chart = chart
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("the chart renders no PrometheusRule")?;
    ensure!(
        from_chart["spec"] == rule["spec"],
        "deploy/helm/homelab-operator/files/prometheusrule-groups.yaml differs from the spec of \
         deploy/monitoring/prometheusrule.yaml"
    );
    Ok(())
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_exported_metrics() -> Result<()> {
    let path = repo_root().join("deploy/monitoring/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path)?;
    let dashboard: Value = serde_json::from_str(&text).context("the dashboard is not JSON")?;
    ensure!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut exprs = Vec::new();
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let before = exprs.len();
        collect_exprs(&panel["targets"], &mut exprs);
        ensure!(
            exprs.len() > before,
            "panel {:?} has no query",
            panel["title"]
        );
    }
    let unknown = unknown_metrics(&exprs);
    ensure!(
        unknown.is_empty(),
        "the dashboard queries metrics nobody exports: {unknown:?}"
    );
    // And it shows every metric there is.
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let mut missing: Vec<String> = OPERATOR_COUNTERS
        .iter()
        .chain(OPERATOR_GAUGES.iter())
        .chain(BACKUP_METRICS.iter())
        .filter(|m| !used.contains(**m))
        .map(|m| (*m).to_owned())
        .collect();
    if !used.contains(&format!("{OPERATOR_HISTOGRAM}_bucket")) {
        missing.push(OPERATOR_HISTOGRAM.into());
    }
    ensure!(
        missing.is_empty(),
        "the dashboard shows nothing of {missing:?}"
    );

    // Every id is unique, every panel has a place.
    let ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    ensure!(
        ids.len() == panels.len() && distinct.len() == ids.len(),
        "panel ids are not unique"
    );
    ensure!(
        panels.iter().all(|p| p["gridPos"]["w"].as_i64().is_some()),
        "a panel has no gridPos"
    );
    Ok(())
}
