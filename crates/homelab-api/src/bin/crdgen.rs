//! Writes the CustomResourceDefinitions to a directory (default `crds/`), one file per kind, and
//! with `--reference FILE` the Markdown CRD reference too.
//!
//! ```text
//! cargo run -p homelab-api --bin crdgen -- crds --reference docs/crd-reference.md
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [DIR] [--reference FILE]";

fn main() -> ExitCode {
    let mut dir = PathBuf::from("crds");
    let mut reference = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--reference" {
            match args.next() {
                Some(path) => reference = Some(PathBuf::from(path)),
                None => {
                    eprintln!("--reference needs a file\n{USAGE}");
                    return ExitCode::FAILURE;
                }
            }
        } else if arg == "--help" || arg == "-h" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        } else {
            dir = PathBuf::from(arg);
        }
    }
    match write_all(&dir, reference.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path, reference: Option<&Path>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for crd in homelab_api::crd::crds() {
        let path = dir.join(homelab_api::crd::file_name(&crd));
        let yaml = homelab_api::crd::to_yaml(&crd)
            .map_err(|e| format!("cannot serialize {}: {e}", path.display()))?;
        write(&path, &yaml)?;
    }
    if let Some(path) = reference {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        write(path, &homelab_api::reference::markdown())?;
    }
    Ok(())
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
