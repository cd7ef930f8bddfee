//! Golden snapshots: every seed example in `examples/`, rendered with a fixed namespace and fake
//! uids, as it would be applied by the operator.

use std::path::PathBuf;

use homelab_api::{AppDatabase, BackupPolicy};
use homelab_render::manifest::{Document, Resource, parse_manifests, render_documents, to_yaml};
use homelab_render::{DrillFacts, OperatorConfig, render_on_demand_backup, render_restore_drill};

const NAMESPACE: &str = "homelab";

fn examples_dir() -> PathBuf {
    homelab_testenv::repo_root().join("examples")
}

fn read(name: &str) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(examples_dir().join(name))?;
    Ok((format!("examples/{name}"), text))
}

/// A fixed uid per kind, so that ownerReferences appear as they would in a cluster.
fn fake_uid(resource: &Resource) -> &'static str {
    match resource {
        Resource::AppDatabase(_) => "11111111-1111-4111-8111-111111111111",
        Resource::HomelabApp(_) => "22222222-2222-4222-8222-222222222222",
        Resource::BackupPolicy(_) => "33333333-3333-4333-8333-333333333333",
    }
}

fn documents(files: &[&str]) -> anyhow::Result<Vec<Document>> {
    let inputs = files
        .iter()
        .map(|f| read(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut documents = parse_manifests(&inputs)?;
    for document in &mut documents {
        let uid = fake_uid(&document.resource);
        let meta = document.resource.metadata_mut();
        meta.namespace = Some(NAMESPACE.to_string());
        meta.uid = Some(uid.to_string());
    }
    Ok(documents)
}

fn render_example(name: &str) -> anyhow::Result<String> {
    let documents = documents(&["backup-policy.yaml", name])?;
    let objects = render_documents(&documents, &OperatorConfig::default())?;
    Ok(to_yaml(&objects)?)
}

/// The seed examples besides the shared policy.
fn seed_examples() -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "backup-policy.yaml")
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn every_example_renders_as_snapshotted() -> anyhow::Result<()> {
    let names = seed_examples()?;
    assert!(
        names.len() >= 5,
        "expected the five seed apps, found {names:?}"
    );
    for name in names {
        let yaml = render_example(&name)?;
        insta::assert_snapshot!(name.trim_end_matches(".yaml").to_string(), yaml);
    }
    Ok(())
}

#[test]
fn rendering_twice_is_byte_identical() -> anyhow::Result<()> {
    for name in seed_examples()? {
        assert_eq!(render_example(&name)?, render_example(&name)?);
    }
    Ok(())
}

#[test]
fn drill_and_on_demand_backup_for_linkding() -> anyhow::Result<()> {
    let documents = documents(&["backup-policy.yaml", "linkding.yaml"])?;
    let policy: &BackupPolicy = documents
        .iter()
        .find_map(|d| match &d.resource {
            Resource::BackupPolicy(p) => Some(p.as_ref()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no policy"))?;
    let database: &AppDatabase = documents
        .iter()
        .find_map(|d| match &d.resource {
            Resource::AppDatabase(db) => Some(db.as_ref()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no database"))?;
    let config = OperatorConfig::default();
    let drill = render_restore_drill(
        policy,
        database,
        &DrillFacts {
            sequence: 42,
            server_name: "linkding-db-cnpg-v1".into(),
            source_image: None,
        },
        &config,
    )?;
    let backup = render_on_demand_backup(database, "before-upgrade-1.42", &config)?;
    insta::assert_snapshot!("linkding-on-request", to_yaml(&[drill, backup])?);
    Ok(())
}
