//! The OCI image archives pods run, built here by `hack/build-images.sh` (pods never pull).
//!
//! The script builds each image from registry packages and local binaries, caches it by the
//! hash of its inputs, and lists every archive in an index (`<ref>\t<archive>\t<sha256>` a line)
//! whose path it prints last.

use std::path::{Path, PathBuf};

use crate::Error;

/// One image the script builds: its short name (the script's argument) and, for images made
/// from a binary, the environment variable naming that binary.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    /// The script's name for it.
    pub name: &'static str,
    /// The variable that names its binary, if it is made from one.
    pub binary_env: Option<&'static str>,
}

/// The sandbox ("pause") image.
pub const PAUSE: Recipe = Recipe {
    name: "pause",
    binary_env: Some("PAUSE_BINARY"),
};

/// The CloudNativePG operand: PostgreSQL 17.
pub const POSTGRESQL: Recipe = Recipe {
    name: "postgresql",
    binary_env: None,
};

/// A client image with `psql`, for tests.
pub const PSQL: Recipe = Recipe {
    name: "psql",
    binary_env: None,
};

/// PgBouncer, for CloudNativePG's Pooler pods.
pub const PGBOUNCER: Recipe = Recipe {
    name: "pgbouncer",
    binary_env: None,
};

/// The CloudNativePG operator.
pub const CLOUDNATIVE_PG: Recipe = Recipe {
    name: "cloudnative-pg",
    binary_env: Some("CNPG_MANAGER"),
};

/// The Barman Cloud Plugin.
pub const BARMAN_PLUGIN: Recipe = Recipe {
    name: "plugin-barman-cloud",
    binary_env: Some("BARMAN_CLOUD_MANAGER"),
};

/// The Barman Cloud Plugin's instance sidecar (barman-cloud with its Azure extras).
pub const BARMAN_SIDECAR: Recipe = Recipe {
    name: "plugin-barman-cloud-sidecar",
    binary_env: Some("BARMAN_CLOUD_MANAGER"),
};

/// External Secrets Operator.
pub const EXTERNAL_SECRETS: Recipe = Recipe {
    name: "external-secrets",
    binary_env: Some("ESO_BINARY"),
};

/// homelab-operator.
pub const HOMELAB_OPERATOR: Recipe = Recipe {
    name: "homelab-operator",
    binary_env: Some("HOMELAB_OPERATOR_BINARY"),
};

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The full reference, e.g. `localhost/homelab/pause:3.10`.
    pub reference: String,
    /// The OCI archive.
    pub archive: PathBuf,
}

/// The images of one build.
#[derive(Debug, Clone, Default)]
pub struct Images(pub Vec<Image>);

impl Images {
    /// Every archive.
    pub fn archives(&self) -> Vec<PathBuf> {
        self.0.iter().map(|i| i.archive.clone()).collect()
    }

    /// The reference of the image whose repository (the part before the tag) ends with `name`.
    pub fn reference(&self, name: &str) -> Option<&str> {
        self.0.iter().map(|i| i.reference.as_str()).find(|r| {
            r.rsplit_once(':')
                .is_some_and(|(repo, _)| repo.ends_with(name))
        })
    }
}

/// Builds (or finds cached) `recipes` with the binaries in `binaries` (`(variable, path)`), and
/// returns them.
pub async fn build(recipes: &[Recipe], binaries: &[(&str, &Path)]) -> Result<Images, Error> {
    let names: Vec<&str> = recipes.iter().map(|r| r.name).collect();
    let index = crate::process::run_build_script("build-images.sh", &names, binaries).await?;
    let text = std::fs::read_to_string(&index).map_err(Error::io(format!(
        "reading the image index {} that hack/build-images.sh printed",
        index.display()
    )))?;
    let all: Vec<Image> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let reference = fields.next()?.trim();
            let archive = fields.next()?.trim();
            (!reference.is_empty()).then(|| Image {
                reference: reference.to_owned(),
                archive: PathBuf::from(archive),
            })
        })
        .collect();
    let mut wanted = Vec::new();
    for recipe in recipes {
        let short = recipe.name;
        let found = all.iter().rev().find(|image| {
            image
                .reference
                .rsplit_once(':')
                .is_some_and(|(repo, _)| repo.rsplit('/').next() == Some(short))
        });
        match found {
            Some(image) if image.archive.is_file() => wanted.push(image.clone()),
            _ => {
                return Err(Error::Node {
                    what: format!("building image {short}"),
                    reason: format!("{} lists no archive for it", index.display()),
                });
            }
        }
    }
    Ok(Images(wanted))
}
