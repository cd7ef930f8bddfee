//! Argo CD's health of the operator's kinds: the Lua checks of `deploy/argocd/health`, run the
//! way Argo CD runs them, and how the README says each reason the operator reports on
//! `Ready=False` shows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{repo_root, run, tool};

/// How the README (`## ArgoCD`, and the troubleshooting table) says Argo CD shows each reason the
/// operator reports on `Ready=False`: Progressing when it resolves without anyone changing
/// anything, Degraded when it needs a change.
pub fn documented(kind: &str) -> Vec<(&'static str, &'static str)> {
    const P: &str = "Progressing";
    const D: &str = "Degraded";
    // Every kind reports these from its reconcile error path.
    let mut reasons = vec![
        ("KubernetesAPIError", P),
        ("ApplyFailed", P),
        ("InvalidSpec", D),
        ("CRDNotInstalled", D),
        ("ChildRejected", D),
    ];
    match kind {
        "HomelabApp" => reasons.extend([
            ("DeploymentMissing", P),
            ("ReplicasUnavailable", P),
            ("DatabaseNotReady", P),
            ("WaitingForExternalSecrets", P),
            ("DatabaseNotFound", D),
            ("ReferenceNotFound", D),
            ("SecretsNotSynced", D),
        ]),
        "AppDatabase" => reasons.extend([
            ("ClusterCreating", P),
            ("ClusterNotFound", P),
            ("ClusterNotHealthy", P),
            ("ObjectStoreMissing", P),
            ("WaitingForExternalSecrets", P),
            ("WaitingForFirstBackup", P),
            ("RestoreStarting", P),
            ("SourceHasNoBackup", P),
            ("AzureUnreachable", P),
            ("AzureThrottled", P),
            ("AzureError", P),
            ("BackupPolicyNotFound", D),
            ("BackupDestinationInUse", D),
            ("StorageCannotExpand", D),
            ("SecretStoreNotUsable", D),
            ("CredentialsNotSynced", D),
            ("WALArchivingFailing", D),
            ("WALArchivingStale", D),
            ("BackupFailing", D),
            ("BackupStale", D),
            ("TargetTimeInFuture", D),
            ("TargetTimeBeforeRecoveryWindow", D),
            ("AzureForbidden", D),
            ("AzureUnauthenticated", D),
            ("SecretSoftDeleted", D),
            ("SasTokenRefused", D),
            ("SecretDisabled", D),
            ("InvalidAzureName", D),
            ("AzureMisconfigured", D),
        ]),
        _ => {}
    }
    reasons
}

/// Argo CD runs health checks in gopher-lua (Lua 5.1); Lua 5.4 is checked too, so the scripts
/// stay within what both accept.
pub fn interpreters() -> Result<Vec<PathBuf>> {
    ["lua5.1", "lua5.4"]
        .into_iter()
        .map(|name| tool(name, &format!("apt-get install {name}")))
        .collect()
}

pub fn health_dir(kind: &str) -> PathBuf {
    repo_root()
        .join("deploy/argocd/health/homelab.io")
        .join(kind)
}

/// A JSON value as a Lua expression. Argo CD's Lua (gopher-lua) holds every number as a float64
/// and prints an integral one without a decimal point (`"generation " .. 2` is `"generation 2"`);
/// Lua 5.4 does the same only for integers, so integral numbers are written as integers.
pub fn lua_literal(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                let _ = write!(out, "{i}");
            }
            None => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let _ = write!(out, "{f:?}");
            }
        },
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                lua_literal(item, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Object(fields) => {
            out.push('{');
            for (key, item) in fields {
                out.push('[');
                lua_string(key, out);
                out.push_str("]=");
                lua_literal(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Runs `health.lua` with `obj` set, the way Argo CD does, and returns `(status, message)`.
pub fn evaluate(lua: &Path, script: &Path, object: &Value) -> Result<(String, String)> {
    let mut literal = String::new();
    lua_literal(object, &mut literal);
    let harness = format!(
        r#"obj = {literal}
local chunk, err = loadfile(arg[1])
if not chunk then io.stderr:write(err) os.exit(2) end
local ok, hs = pcall(chunk)
if not ok then io.stderr:write(tostring(hs)) os.exit(3) end
if type(hs) ~= "table" then io.stderr:write("health.lua returned " .. type(hs)) os.exit(4) end
io.write(tostring(hs.status), "\n", tostring(hs.message))
"#
    );
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "homelab-health-{}-{}.lua",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, harness)?;
    let output = run(Command::new(lua).arg(&file).arg(script));
    std::fs::remove_file(&file)?;
    let output = output?;
    let (status, message) = output
        .split_once('\n')
        .with_context(|| format!("unexpected output {output:?}"))?;
    Ok((status.to_owned(), message.to_owned()))
}

/// Argo CD's health of `object`, a `kind` of the operator, computed by its `health.lua` under Lua
/// 5.1 (the dialect of Argo CD's gopher-lua): `(status, message)`.
pub fn argocd_health(kind: &str, object: &Value) -> Result<(String, String)> {
    let lua = tool("lua5.1", "apt-get install lua5.1")?;
    evaluate(&lua, &health_dir(kind).join("health.lua"), object)
}
