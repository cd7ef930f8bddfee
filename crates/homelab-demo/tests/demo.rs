//! The demo runs end to end (`--once`) on the data plane and shows what it promises: every seed
//! app's database Ready from CloudNativePG, its credentials synced by ESO, its WAL and base backup
//! in Azurite, and what differs from a homelab. Run by the end-to-end phase of `make test`, where
//! it attaches to the data plane of `homelab-testenv exec --data-plane`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_demo_runs_every_seed_database_and_backs_it_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_homelab-demo"))
        .arg("--once")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}\n{stdout}");
    for app in ["linkding", "commafeed", "wallabag", "n8n", "listmonk"] {
        let lines =
            |needle: &str| -> Vec<&str> { stdout.lines().filter(|l| l.contains(needle)).collect() };
        let database = lines(&format!("appdatabase.homelab.io/{app} "));
        assert!(
            database.iter().any(|l| l.contains(" True ")),
            "{app}'s AppDatabase is not Ready: {database:?}\n{stdout}"
        );
        let cluster = lines(&format!("cluster.postgresql.cnpg.io/{app}-db-cnpg-v1 "));
        assert!(
            cluster
                .iter()
                .any(|l| l.contains("Cluster in healthy state")),
            "CloudNativePG does not report {app}'s cluster healthy: {cluster:?}"
        );
        for secret in ["credentials", "backup-sas"] {
            let synced = lines(&format!("{app}-db-{secret} "));
            assert!(
                synced.iter().any(|l| l.contains("SecretSynced")),
                "{app}-db-{secret} is not synced: {synced:?}"
            );
        }
        let backups = lines(&format!("{app}-db-clean: "));
        assert!(
            backups
                .iter()
                .any(|l| !l.contains(": 0 WAL") && !l.contains(", 0 base")),
            "{app}'s backups are not in Azurite: {backups:?}"
        );
    }
    assert!(stdout.contains("backuppolicy.homelab.io/daily"));
    assert!(
        stderr.contains("nothing is pulled"),
        "the demo must say what differs from a homelab:\n{stderr}"
    );
}
