//! Node.js programs the tests run with real packages from the npm registry.

use std::path::Path;

/// Copies `files` of `tests/<source>` into `into` and installs their locked dependencies
/// (`npm ci`, from the npm registry), as a person would on a fresh machine.
pub fn npm_ci(source: &str, files: &[&str], into: &Path, omit_dev: bool) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
    std::fs::create_dir_all(into).expect("the directory for the program");
    for name in files {
        std::fs::copy(source.join(name), into.join(name)).unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
    let mut args = vec!["ci", "--no-audit", "--no-fund"];
    if omit_dev {
        args.push("--omit=dev");
    }
    let out = std::process::Command::new("npm")
        .args(args)
        .current_dir(into)
        .output()
        .expect("npm runs (it comes with Node.js)");
    assert!(
        out.status.success(),
        "npm ci failed (the npm registry must be reachable): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
