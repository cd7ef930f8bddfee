//! `homelab-operator render -f FILE_OR_DIR`: prints every child object of the custom resources
//! it reads, exactly as the controllers would apply them.

use std::path::{Path, PathBuf};

/// Why rendering from files failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderCommandError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Manifest(#[from] homelab_render::ManifestError),
    #[error("cannot write YAML: {0}")]
    Yaml(String),
}

/// Reads `.yaml`/`.yml` files and renders them; resources that name no namespace are rendered
/// in `namespace`. A directory contributes its files in name order;
/// its subdirectories too when `recursive` (as `kubectl apply -R`).
pub fn render_paths(
    paths: &[PathBuf],
    recursive: bool,
    namespace: &str,
    config: &homelab_render::OperatorConfig,
) -> Result<String, RenderCommandError> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, recursive, true, &mut files)?;
    }
    let mut inputs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| RenderCommandError::Read {
            path: file.clone(),
            source,
        })?;
        inputs.push((file.display().to_string(), text));
    }
    let objects = homelab_render::manifest::render_manifests_in(&inputs, namespace, config)?;
    homelab_render::to_yaml(&objects).map_err(|e| RenderCommandError::Yaml(e.to_string()))
}

fn collect(
    path: &Path,
    recursive: bool,
    top: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), RenderCommandError> {
    let read_err = |source| RenderCommandError::Read {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        if !top && !recursive {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() || entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                collect(&entry, recursive, false, files)?;
            }
        }
        Ok(())
    } else {
        std::fs::metadata(path).map_err(read_err)?;
        files.push(path.to_path_buf());
        Ok(())
    }
}
