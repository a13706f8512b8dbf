//! Embeds Cocon's own web apps (`apps/<slug>/…`) in the binary: writes `builtin_apps.rs`, the
//! list of every file of every app with its bytes (`include_bytes!`), so the README's command
//! needs nothing beside the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if entry.path().is_dir() {
            files(&entry.path(), &rel, out);
        } else {
            out.push((rel, entry.path()));
        }
    }
}

/// What every app holds besides its own files: `apps/_shared/` (the look and the API helpers).
const SHARED: &str = "_shared";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut found = Vec::new();
    files(&root, "", &mut found);
    let (shared, own): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|(rel, _)| rel.starts_with(&format!("{SHARED}/")));
    // Each app's files, then the shared ones under the same slug, so an app's files stay together.
    let mut all: Vec<(String, PathBuf)> = Vec::new();
    let mut slugs: Vec<&str> = own
        .iter()
        .map(|(rel, _)| rel.split_once('/').expect("apps/<slug>/<file>").0)
        .collect();
    slugs.dedup();
    for slug in slugs {
        let mine: Vec<_> = own
            .iter()
            .filter(|(rel, _)| rel.starts_with(&format!("{slug}/")))
            .cloned()
            .collect();
        let theirs: Vec<_> = shared
            .iter()
            .map(|(rel, path)| (format!("{slug}/{}", &rel[SHARED.len() + 1..]), path.clone()))
            .collect();
        for (rel, _) in &theirs {
            assert!(
                !mine.iter().any(|(r, _)| r == rel),
                "apps/{rel} would hide a file of apps/{SHARED}"
            );
        }
        all.extend(mine);
        all.extend(theirs);
    }
    let mut code = String::from("/// Every file of Cocon's own apps: (slug, path in the app, content).\n");
    code.push_str("pub const FILES: &[(&str, &str, &[u8])] = &[\n");
    for (rel, path) in &all {
        println!("cargo:rerun-if-changed={}", path.display());
        let (slug, inner) = rel.split_once('/').expect("apps/<slug>/<file>");
        writeln!(
            code,
            "    ({slug:?}, {inner:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_apps.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
