//! The demo runs end to end (`--once`) and shows the operator's output: the three kinds, the
//! CloudNativePG clusters, the ExternalSecrets, and the containers and secrets in the emulators.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_demo_shows_every_seed_app_and_its_azure_side() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_homelab-demo"))
        .arg("--once")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}\n{stdout}");
    for app in ["linkding", "commafeed", "wallabag", "n8n", "listmonk"] {
        for expected in [
            format!("appdatabase.homelab.io/{app}"),
            format!("homelabapp.homelab.io/{app}"),
            format!("{app}-db-cnpg-v1"),
            format!("{app}-db-credentials"),
            format!("{app}-db-password"),
            format!("{app}-db-backup-sas"),
            format!("{app}-db-clean"),
        ] {
            assert!(
                stdout.contains(&expected),
                "missing {expected} in:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("backuppolicy.homelab.io/daily"));
    assert!(
        stderr.contains("no kubelet"),
        "the demo must say what cannot run here"
    );
}
