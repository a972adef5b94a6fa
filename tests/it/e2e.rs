//! End to end with real SMART clients against the development authorization server:
//! - npm `fhirclient` in headless Chromium (driven by Playwright): a standalone launch with
//!   PKCE, whose login page's patient picker is clicked, and an EHR launch from `fjord launch`;
//!   each app reads its patient's Observations, and the standalone one renews its token;
//! - PyPI `fhirclient`: SMART Backend Services, a client assertion signed with the system's
//!   own RSA key (RS384).
//!
//! `scripts/e2e-setup` (run by `scripts/test`) installs Chromium and the packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use fjord_tests::free_port;
use serde_json::Value;

use crate::smart::{load, Smart};

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// Chromium, the npm packages and the Python environment, or a clear failure.
fn prerequisites() -> (PathBuf, PathBuf) {
    let dir = e2e_dir();
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let python = dir.join(".venv/bin/python");
    for needed in [
        chromium.clone(),
        dir.join("node_modules/playwright-core"),
        dir.join("node_modules/fhirclient/build/fhir-client.min.js"),
        python.clone(),
    ] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/e2e-setup",
            needed.display()
        );
    }
    (chromium, python)
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The JSON line a client printed for `flow`.
fn flow<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["flow"] == name)
        .unwrap_or_else(|| panic!("no {name} flow in {lines:?}"))
}

#[test]
fn real_smart_clients_launch_and_read_through_the_development_authorization_server() {
    let (chromium, python) = prerequisites();
    let smart = Smart::start("e2e", &[]);
    load(&smart);
    let base = smart.server.base("t1");
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/index.html");
    smart.cli(&["client", "add", "e2e-browser", "--redirect-uri", &redirect]);
    let launch = smart.cli(&[
        "launch",
        "--tenant",
        "t1",
        "--patient",
        "a",
        "--fhir-user",
        "Practitioner/pr",
    ]);

    let printed = run(Command::new("node")
        .arg(e2e_dir().join("smart.mjs"))
        .env("FHIR_BASE", &base)
        .env("APP_PORT", port.to_string())
        .env("CLIENT_ID", "e2e-browser")
        .env("LAUNCH", launch.trim())
        .env("PICK_PATIENT", "b")
        .env("PICK_USER", "Practitioner/pr")
        .env("CHROMIUM", &chromium));
    let lines: Vec<Value> = printed
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();

    let standalone = flow(&lines, "standalone");
    assert!(standalone.get("error").is_none(), "{standalone}");
    assert_eq!(standalone["patient"], "b");
    assert_eq!(standalone["patientResource"], "Patient/b");
    assert_eq!(standalone["fhirUser"], "Practitioner/pr");
    assert_eq!(
        standalone["observations"],
        serde_json::json!(["Observation/b-vital"])
    );
    assert_eq!(
        standalone["refreshed"], 1,
        "the renewed token reads the same"
    );
    let pages: Vec<&str> = standalone["pages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        pages.contains(&"/auth/t1/authorize"),
        "the login page was shown: {pages:?}"
    );

    let ehr = flow(&lines, "ehr");
    assert!(ehr.get("error").is_none(), "{ehr}");
    assert_eq!(ehr["patient"], "a");
    assert_eq!(ehr["fhirUser"], "Practitioner/pr");
    assert_eq!(
        ehr["observations"],
        serde_json::json!(["Observation/a-lab", "Observation/a-vital"])
    );

    // SMART Backend Services with the Python client and a key of its own.
    let keys = smart.dir.join("backend-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let script = e2e_dir().join("backend.py");
    run(Command::new(&python).arg(&script).arg("keygen").arg(&keys));
    smart.cli(&[
        "client",
        "add",
        "e2e-backend",
        "--jwks",
        keys.join("jwks.json").to_str().unwrap(),
        "--scope",
        "system/Observation.rs",
    ]);
    let printed = run(Command::new(&python)
        .arg(&script)
        .arg("run")
        .env("FHIR_BASE", &base)
        .env("CLIENT_ID", "e2e-backend")
        .env("KEY_DIR", &keys));
    let backend: Value =
        serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(
        backend["token_endpoint"],
        format!("{}/auth/t1/token", smart.server.origin)
    );
    assert_eq!(backend["authorized"], true);
    assert_eq!(
        backend["observations"],
        serde_json::json!([
            "Observation/a-lab",
            "Observation/a-vital",
            "Observation/b-vital"
        ])
    );
}
