//! `homelab-operator render -f FILE_OR_DIR`, as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn render(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args(["render", "-f"])
        .arg(path)
        .output()
        .expect("run homelab-operator render")
}

#[test]
fn renders_every_child_of_the_examples() {
    let output = render(&homelab_testenv::repo_root().join("examples"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "kind: Cluster\n",
        "name: linkding-db-cnpg-v1\n",
        "kind: ObjectStore\n",
        "kind: ScheduledBackup\n",
        "kind: ExternalSecret\n",
        "kind: Deployment\n",
        "kind: Ingress\n",
        "kind: HTTPRoute\n",
        "kind: NetworkPolicy\n",
        "kind: Pooler\n",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}");
    }
    // Same input, same bytes.
    let again = render(&homelab_testenv::repo_root().join("examples"));
    assert_eq!(output.stdout, again.stdout);
}

#[test]
fn invalid_input_names_the_file_the_document_and_the_field() {
    let dir = std::env::temp_dir().join(format!("homelab-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: homelab.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: daily}\nspec:\n  storage: {azure: {storageAccount: acct}}\n---\napiVersion: homelab.io/v1alpha1\nkind: AppDatabase\nmetadata: {name: broken}\nspec:\n  instances: three\n",
    )
    .unwrap();
    let output = render(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains('2'), "names the document: {stderr}");
    assert!(
        stderr.contains("spec.instances"),
        "names the field: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
