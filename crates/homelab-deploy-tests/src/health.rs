//! Argo CD's health of the operator's kinds: the Lua checks of `deploy/argocd/health`, run the
//! way Argo CD runs them, and how the README says each reason the operator reports on
//! `Ready=False` shows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use homelab_api::reasons::{Kind, Reason, Shows};
use serde_json::Value;

use crate::{repo_root, run, tool};

/// How Argo CD shows each reason `kind` reports on `Ready=False`, from the operator's one list of
/// reasons ([`homelab_api::reasons::Reason`]): Progressing when it resolves without anyone
/// changing anything, Degraded when it needs a change. The README (`## ArgoCD`, and the
/// troubleshooting table) says the same.
pub fn documented(kind: &str) -> Vec<(&'static str, &'static str)> {
    let Some(kind) = [Kind::HomelabApp, Kind::AppDatabase, Kind::BackupPolicy]
        .into_iter()
        .find(|k| k.as_str() == kind)
    else {
        return Vec::new();
    };
    Reason::failing_on(kind)
        .map(|(reason, shows)| {
            let health = match shows {
                Shows::Progressing => "Progressing",
                Shows::Degraded | Shows::NotOnReady => "Degraded",
            };
            (reason.as_str(), health)
        })
        .collect()
}

/// The reasons a kind's health check treats as resolving by themselves: the keys of the
/// `local transient = { … }` table of its `health.lua`.
pub fn transient_in_lua(kind: &str) -> Result<Vec<String>> {
    let path = health_dir(kind).join("health.lua");
    let script =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let Some(table) = script
        .split("local transient = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
    else {
        return Ok(Vec::new());
    };
    Ok(table
        .lines()
        .filter_map(|line| line.trim().strip_suffix("= true,"))
        .map(|key| key.trim().to_string())
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each health check's `transient` table is exactly the kind's reasons that resolve by
    /// themselves: a reason added to the operator's list lands in the Lua, or the test says so.
    #[test]
    fn the_health_checks_know_every_reason_that_resolves_by_itself() {
        for kind in [Kind::HomelabApp, Kind::AppDatabase, Kind::BackupPolicy] {
            let mut in_lua = transient_in_lua(kind.as_str()).expect("the health check");
            in_lua.sort();
            let mut listed: Vec<String> = Reason::failing_on(kind)
                .filter(|(_, shows)| *shows == Shows::Progressing)
                .map(|(reason, _)| reason.as_str().to_string())
                .collect();
            listed.sort();
            assert_eq!(
                in_lua,
                listed,
                "deploy/argocd/health/homelab.io/{}/health.lua's transient table",
                kind.as_str()
            );
        }
    }
}
