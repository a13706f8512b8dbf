//! Architecture invariant: services never import each other (only the proto crate and the
//! shared crates), and the gateway imports no service. Checked on the workspace's manifests.

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
        if !SERVICES.contains(&name) && name != "cocon-gateway" {
            continue;
        }
        checked += 1;
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            assert!(
                !SERVICES.contains(&dep_name),
                "{name} depends on {dep_name}: services talk only through cocon-proto clients and cocon-events"
            );
        }
    }
    assert_eq!(checked, SERVICES.len() + 1, "every service crate was checked");
}
