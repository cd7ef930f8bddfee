//! The `homelab-testenv` binary's lifecycle: `exec` passes the control plane to its command and
//! returns the command's exit code, and no control-plane process outlives a killed `up`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

const BIN: &str = env!("CARGO_BIN_EXE_homelab-testenv");

/// Processes whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The fields after the parenthesised command name: state, ppid, ...
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .map(|(_, s)| s.trim_start().chars().next()),
            Some(Some('Z'))
        )
    })
}

#[test]
fn exec_exports_the_control_plane_and_returns_the_exit_code() -> Result<()> {
    let output = Command::new(BIN)
        .env_remove("HOMELAB_TESTENV_KUBECONFIG")
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            r#"test -r "$HOMELAB_TESTENV_KUBECONFIG" && test "$KUBECONFIG" = "$HOMELAB_TESTENV_KUBECONFIG" \
               && test -r "$HOMELAB_TESTENV_AUDIT_LOG" && "$HOMELAB_TESTENV_BIN_DIR/kubectl" get namespace default \
               && exit 7"#,
        ])
        .output()?;
    ensure!(
        output.status.code() == Some(7),
        "expected exit code 7, got {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn no_control_plane_process_outlives_a_killed_up() -> Result<()> {
    let mut up = Command::new(BIN)
        .arg("up")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = up.stdout.take().context("no stdout")?;
    // `up` prints its export lines once everything is ready.
    let exports: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .collect::<Result<_, _>>()?;
    ensure!(
        exports
            .iter()
            .any(|l| l.starts_with("export HOMELAB_TESTENV_KUBECONFIG=")),
        "unexpected output of up: {exports:?}"
    );
    let children = children_of(up.id());
    ensure!(
        children.len() == 3,
        "expected etcd, kube-apiserver and kube-controller-manager, found {children:?}"
    );

    up.kill()?;
    up.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|&pid| alive(pid)) {
        ensure!(
            Instant::now() < deadline,
            "still running 10 s after up was killed: {:?}",
            children
                .iter()
                .filter(|&&pid| alive(pid))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
