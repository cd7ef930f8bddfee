//! Write requests from the apiserver's audit log.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// The audit log's current length, to count from. An unreadable log is an error, never an
/// empty window (which would read as "no writes").
pub fn offset(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("the audit log {} cannot be read", path.display()))?
        .len())
}

/// Write requests (create, update, patch, delete) in `namespace` after byte `offset`, Leases
/// excluded, counted by `verb resource`.
pub fn writes(path: &Path, offset: u64, namespace: &str) -> Result<BTreeMap<String, usize>> {
    let text = std::fs::read(path)
        .with_context(|| format!("the audit log {} cannot be read", path.display()))?;
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&text[start..]).lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["stage"] != "ResponseComplete" || event["objectRef"]["namespace"] != namespace {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or_default();
        if !matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            continue;
        }
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        if resource == "leases" {
            continue;
        }
        let subresource = event["objectRef"]["subresource"]
            .as_str()
            .unwrap_or_default();
        let key = if subresource.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource}/{subresource}")
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}
