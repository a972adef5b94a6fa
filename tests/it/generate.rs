//! Synthetic DHO data (`fjord_testkit::synthetic`, `fjord generate`): every resource conforms
//! to the profile it claims (no-basis, the national vital signs, Fjord's DHO profiles), and the
//! transaction bundles `fjord generate` writes load into a server in file order.

use std::collections::HashMap;

use fjord_testkit::synthetic::{Dataset, Scale};
use fjord_validation::{validate_with, IdentifierRules, Options, Severity};
use serde_json::Value;

use crate::validation_profiles::dho;

#[test]
fn generated_resources_conform_to_the_profiles_they_claim() {
    let conformance = dho();
    let dataset = Dataset::new(Scale {
        patients: 12,
        months: 1,
        seed: 5,
        ..Scale::default()
    });
    let resources: Vec<Value> = dataset.resources().collect();
    let questionnaires: HashMap<String, Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Questionnaire")
        .map(|q| (q["url"].as_str().unwrap().to_owned(), q.clone()))
        .collect();
    let mut by_type: HashMap<String, usize> = HashMap::new();
    for resource in &resources {
        let questionnaire = resource["questionnaire"]
            .as_str()
            .and_then(|url| questionnaires.get(url));
        let report = validate_with(
            resource,
            &Options {
                identifiers: IdentifierRules {
                    allow_test_data: true,
                },
                conformance: Some(&conformance),
                unknown_profile: Severity::Error,
                questionnaire,
                ..Options::default()
            },
        );
        let errors: Vec<_> = report.errors().collect();
        assert!(errors.is_empty(), "{errors:?}\n{resource}");
        *by_type
            .entry(resource["resourceType"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Every kind the data set makes was checked, each measurement against its own profile.
    for kind in [
        "Organization",
        "Practitioner",
        "Questionnaire",
        "Patient",
        "Device",
        "CarePlan",
        "Observation",
        "QuestionnaireResponse",
        "Appointment",
    ] {
        assert!(
            by_type.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: {by_type:?}"
        );
    }
    let profiles: std::collections::BTreeSet<&str> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Observation")
        .filter_map(|r| r["meta"]["profile"][0].as_str())
        .collect();
    assert!(profiles.len() >= 5, "{profiles:?}");
}

/// `fjord generate --format bundles` writes transactions that load in file order (referential
/// integrity on, every reference to something an earlier entry or bundle stored), and the
/// server then holds exactly what the command said it wrote; NDJSON holds the same resources.
#[test]
fn generated_bundles_load_into_a_server_and_ndjson_holds_the_same() {
    let dir = crate::embedded::data_dir("generate");
    let out = dir.join("bundles");
    let ndjson = dir.join("ndjson");
    let generate = |format: &str, out: &std::path::Path| {
        let output = std::process::Command::new(fjord_tests::fjord_binary())
            .args([
                "generate",
                "--patients",
                "6",
                "--months",
                "1",
                "--seed",
                "9",
            ])
            .args(["--bundle-entries", "200", "--format", format, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let summary = String::from_utf8(output.stdout).unwrap();
        // "Type\tcount" lines, then a total.
        summary
            .lines()
            .filter_map(|line| {
                let (kind, count) = line.split_once('\t')?;
                Some((kind.to_owned(), count.parse::<usize>().ok()?))
            })
            .collect::<std::collections::BTreeMap<String, usize>>()
    };
    let counts = generate("bundles", &out);
    assert_eq!(generate("ndjson", &ndjson), counts);
    for (kind, count) in &counts {
        let file = std::fs::read_to_string(ndjson.join(format!("{kind}.ndjson"))).unwrap();
        assert_eq!(file.lines().count(), *count, "{kind}");
    }

    let server = fjord_tests::Server::start(&["--data-dir", dir.join("data").to_str().unwrap()]);
    let base = server.base("default");
    let mut bundles: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bundles.sort();
    assert!(bundles.len() > 2, "{bundles:?}");
    for path in &bundles {
        let bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let entries = crate::synthea::post_bundle(&base, &bundle);
        assert_eq!(entries.len(), bundle["entry"].as_array().unwrap().len());
    }
    for (kind, count) in &counts {
        let reply = fjord_tests::send("GET", &format!("{base}/{kind}?_summary=count"), &[], None);
        assert_eq!(reply.json()["total"], *count as u64, "{kind}");
    }
    // The data answers the searches its users make: a patient's blood pressures, by code.
    let patient = "Patient/s9-pat-0";
    let reply = fjord_tests::send(
        "GET",
        &format!("{base}/Observation?subject={patient}&_summary=count"),
        &[],
        None,
    );
    assert!(
        reply.json()["total"].as_u64().unwrap() > 20,
        "{}",
        reply.body
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
