//! Writes the CRD YAML of every Weir resource into `charts/weir/crds/` (or the directory given
//! as the first argument). `crdgen --check` compares instead of writing and fails on a difference.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir: Option<PathBuf> = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]   (DIR defaults to charts/weir/crds in the workspace)");
                return ExitCode::SUCCESS;
            }
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.unwrap_or_else(weir_crds::chart_crds_dir);
    let mut stale = 0;
    for (file, crd) in weir_crds::all_crds() {
        let path = dir.join(&file);
        let text = weir_crds::crd_yaml(&crd);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                eprintln!("{} is out of date", path.display());
                stale += 1;
            }
        } else {
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, text)) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    if stale > 0 {
        eprintln!("run `cargo run -p weir-crds --bin crdgen` to regenerate");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
