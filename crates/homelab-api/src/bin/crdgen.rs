//! Writes the CustomResourceDefinitions to a directory (default `crds/`), one file per kind.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("crds"));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for crd in homelab_api::crd::crds() {
        let path = dir.join(homelab_api::crd::file_name(&crd));
        let yaml = match homelab_api::crd::to_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(err) => {
                eprintln!("cannot serialize {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = std::fs::write(&path, yaml) {
            eprintln!("cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
