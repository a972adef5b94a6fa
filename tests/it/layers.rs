//! The dependency direction of the workspace, checked over `cargo metadata`: a wrong arrow fails
//! the build instead of waiting for review.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Which workspace crates each crate may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("fjord-model", &[]),
    ("fjord-definitions", &[]),
    ("fjord-fhirpath", &["fjord-definitions"]),
    ("fjord-search", &["fjord-definitions", "fjord-fhirpath"]),
    ("fjord-patch", &["fjord-definitions", "fjord-fhirpath"]),
    (
        "fjord-validation",
        &["fjord-definitions", "fjord-fhirpath", "fjord-model"],
    ),
    ("fjord-smart", &["fjord-search"]),
    ("fjord-authz", &["fjord-smart"]),
    ("fjord-pg", &[]),
    ("fjord-metrics", &[]),
    ("fjord-store", &["fjord-search", "fjord-smart"]),
    ("fjord-text", &["fjord-search"]),
    (
        "fjord-engine",
        &[
            "fjord-definitions",
            "fjord-metrics",
            "fjord-model",
            "fjord-patch",
            "fjord-search",
            "fjord-smart",
            "fjord-store",
            "fjord-text",
            "fjord-validation",
        ],
    ),
    (
        "fjord-subscriptions",
        &[
            "fjord-engine",
            "fjord-fhirpath",
            "fjord-metrics",
            "fjord-model",
            "fjord-search",
            "fjord-store",
        ],
    ),
    (
        "fjord-rest",
        &[
            "fjord-authz",
            "fjord-engine",
            "fjord-metrics",
            "fjord-model",
            "fjord-smart",
            "fjord-subscriptions",
        ],
    ),
    (
        "fjord-server",
        &[
            "fjord-authz",
            "fjord-engine",
            "fjord-metrics",
            "fjord-pg",
            "fjord-rest",
            "fjord-smart",
            "fjord-store",
            "fjord-subscriptions",
            "fjord-testkit",
            "fjord-text",
        ],
    ),
    (
        "fjord-testkit",
        &["fjord-pg", "fjord-store", "fjord-validation"],
    ),
    ("fjord-gen", &[]),
];

/// Libraries only one crate may name (besides tests and benches).
const OWNERS: &[(&str, &str)] = &[
    ("fhirbolt", "fjord-model"),
    ("sqlx", "fjord-store"),
    ("actix-web", "fjord-rest"),
    ("tantivy", "fjord-text"),
    ("jsonwebtoken", "fjord-smart"),
    ("actix-cors", "fjord-rest"),
    ("actix-ws", "fjord-rest"),
];

#[test]
fn layers_point_down_and_libraries_stay_with_their_owner() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut normal_deps = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let deps: Vec<String> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        normal_deps.insert(package["name"].as_str().unwrap().to_owned(), deps);
    }
    for (krate, allowed) in ALLOWED {
        let deps = &normal_deps[*krate];
        for dep in deps.iter().filter(|d| d.starts_with("fjord-")) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{krate} must not depend on {dep}"
            );
        }
    }
    for (library, owner) in OWNERS {
        for (krate, deps) in normal_deps
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "fjord-tests" | "fjord-benches"))
        {
            if deps.iter().any(|d| d == library) {
                assert_eq!(krate, owner, "only {owner} may use {library}");
            }
        }
    }
}
