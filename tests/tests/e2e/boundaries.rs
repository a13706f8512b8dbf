//! Architecture invariant: services never import each other nor the gateway (only the proto
//! crate and the shared crates: common, events, storage, mesh), the gateway imports no service,
//! and the shared crates import neither. Only the `cocon` binary assembles them. Checked on the
//! workspace's manifests.

use std::process::Command;

const SERVICES: [&str; 6] = [
    "cocon-auth",
    "cocon-documents",
    "cocon-files",
    "cocon-jobs",
    "cocon-sharing",
    "cocon-notifications",
];

#[test]
fn test_no_service_depends_on_another_service() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let mut checked = 0;
    for package in packages {
        let name = package["name"].as_str().unwrap();
        if name == "cocon" || name == "cocon-tests" {
            continue;
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            assert!(
                !SERVICES.contains(&dep_name) && dep_name != "cocon-gateway",
                "{name} depends on {dep_name}: services talk only through cocon-mesh's clients and cocon-events"
            );
        }
    }
    // The services, the gateway, and proto, common, events, storage and mesh.
    assert_eq!(
        checked,
        SERVICES.len() + 6,
        "every crate but the binary and the tests was checked"
    );
}
