//! PATCH: the official FHIRPath Patch and JSON Patch cases (`../shared/patch-tests`) run against
//! `fjord-patch`, and PATCH through the REST API (`If-Match`, validation of the result, errors).

use fjord_patch::{apply_fhirpath_patch, apply_json_patch, PatchError};
use fjord_tests::{send, shared_dir};
use serde_json::{json, Value};

use crate::{all_at_once, server_with_tenant};

fn cases(file: &str) -> Vec<Value> {
    let path = shared_dir().join("patch-tests").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Runs cases of `{input, patch, output | error}`; the failures, by name. A case that
/// fails must leave its input as it was.
fn run(
    cases: &[Value],
    name: &str,
    input: &str,
    patch: &str,
    output: &str,
    apply: fn(&mut Value, &Value) -> Result<(), PatchError>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let mut document = case[input].clone();
        let result = apply(&mut document, &case[patch]);
        let expected = case.get(output).map(normalized_narrative);
        let document = normalized_narrative(&document);
        let name = case[name].as_str().unwrap_or("unnamed");
        let fails = case.get("error").is_some();
        match (result, expected) {
            (Err(_), _) if fails => {
                assert_eq!(
                    document, case[input],
                    "{name}: a failed patch changed the input"
                );
            }
            (Err(e), _) => failures.push(format!("{name}: {e}")),
            (Ok(()), _) if fails => failures.push(format!("{name}: applied, but should fail")),
            (Ok(()), Some(expected)) if document != expected => {
                failures.push(format!("{name}: expected {expected}, got {document}"))
            }
            (Ok(()), _) => {}
        }
    }
    failures
}

/// The cases were converted from XML, where whitespace between the narrative's tags is not
/// content: outputs lost it, patch values kept it. Compared with it collapsed.
fn normalized_narrative(resource: &Value) -> Value {
    let mut resource = resource.clone();
    if let Some(div) = resource["text"]["div"].as_str() {
        let collapsed = div.split_whitespace().collect::<Vec<_>>().join(" ");
        resource["text"]["div"] = Value::String(collapsed.replace("> <", "><"));
    }
    resource
}

#[test]
fn the_official_fhirpath_patch_cases_pass() {
    let cases = cases("fhir-patch-tests.converted.json");
    assert_eq!(cases.len(), 33);
    let failures = run(
        &cases,
        "name",
        "input",
        "diff",
        "output",
        apply_fhirpath_patch,
    );
    assert!(
        failures.is_empty(),
        "{} of 33 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_official_json_patch_cases_pass() {
    let cases = cases("json-patch-tests.json");
    assert_eq!(cases.len(), 16);
    let failures = run(
        &cases,
        "comment",
        "doc",
        "patch",
        "expected",
        apply_json_patch,
    );
    assert!(
        failures.is_empty(),
        "{} of 16 failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const JSON_PATCH: (&str, &str) = ("Content-Type", "application/json-patch+json");
const FHIR_JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

/// A patient `Patient/{id}` at version 1.
fn stored_patient(base: &str, id: &str) -> String {
    let url = format!("{base}/Patient/{id}");
    let body = json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{ "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": format!("{id}-fnr") }],
        "name": [{ "family": "Nordmann", "given": ["Kari"] }],
        "gender": "female",
        "birthDate": "1950-02-03",
    });
    assert_eq!(
        send("PUT", &url, &[FHIR_JSON], Some(&body.to_string())).status,
        201
    );
    url
}

fn fhirpath_replace(path: &str, value: Value) -> Value {
    let mut parts = vec![
        json!({ "name": "type", "valueCode": "replace" }),
        json!({ "name": "path", "valueString": path }),
    ];
    let mut value_part = json!({ "name": "value" });
    for (key, v) in value.as_object().unwrap() {
        value_part[key] = v.clone();
    }
    parts.push(value_part);
    json!({ "resourceType": "Parameters", "parameter": [{ "name": "operation", "part": parts }] })
}

#[test]
fn patch_applies_json_and_fhirpath_patches_with_if_match_and_validates_the_result() {
    let (_server, base) = server_with_tenant();
    let url = stored_patient(&base, "p1");

    // JSON Patch, with the current version in If-Match.
    let patch = json!([{ "op": "replace", "path": "/name/0/family", "value": "Hansen" }]);
    let reply = send(
        "PATCH",
        &url,
        &[JSON_PATCH, ("If-Match", "W/\"1\"")],
        Some(&patch.to_string()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("ETag"), Some("W/\"2\""));
    assert_eq!(reply.json()["name"][0]["family"], "Hansen");
    assert_eq!(reply.json()["gender"], "female", "the rest is kept");

    // FHIRPath Patch, JSON and XML.
    let patch = fhirpath_replace("Patient.birthDate", json!({ "valueDate": "1951-03-04" }));
    let reply = send("PATCH", &url, &[FHIR_JSON], Some(&patch.to_string()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["birthDate"], "1951-03-04");
    let xml = r#"<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/><part><name value="type"/><valueCode value="add"/></part><part><name value="path"/><valueString value="Patient"/></part><part><name value="name"/><valueString value="active"/></part><part><name value="value"/><valueBoolean value="true"/></part></parameter></Parameters>"#;
    let reply = send(
        "PATCH",
        &url,
        &[
            ("Content-Type", "application/fhir+xml"),
            ("Accept", "application/fhir+json"),
        ],
        Some(xml),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["active"], true);
    assert_eq!(reply.json()["meta"]["versionId"], "4");

    // Every failure leaves version 4 as it is.
    type Headers<'h> = Vec<(&'h str, &'h str)>;
    let failures: Vec<(Headers, String, u16)> = vec![
        // A stale If-Match.
        (vec![JSON_PATCH, ("If-Match", "W/\"1\"")], json!([{ "op": "remove", "path": "/gender" }]).to_string(), 412),
        // A JSON Patch `test` that fails, and a path that is not there.
        (vec![JSON_PATCH], json!([{ "op": "test", "path": "/gender", "value": "male" }, { "op": "remove", "path": "/gender" }]).to_string(), 422),
        (vec![JSON_PATCH], json!([{ "op": "remove", "path": "/telecom/0" }]).to_string(), 422),
        // Not a patch document.
        (vec![JSON_PATCH], json!({ "op": "remove" }).to_string(), 400),
        (vec![JSON_PATCH], "[{".to_owned(), 400),
        (vec![FHIR_JSON], json!({ "resourceType": "Patient" }).to_string(), 400),
        // A FHIRPath Patch whose path finds nothing to replace.
        (vec![FHIR_JSON], fhirpath_replace("Patient.deceased", json!({ "valueBoolean": true })).to_string(), 422),
        // The result is not a valid Patient, or changes the id.
        (vec![JSON_PATCH], json!([{ "op": "add", "path": "/colour", "value": "blue" }]).to_string(), 400),
        (vec![JSON_PATCH], json!([{ "op": "replace", "path": "/id", "value": "p2" }]).to_string(), 400),
    ];
    for (headers, body, status) in failures {
        let reply = send("PATCH", &url, &headers, Some(&body));
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.json()["resourceType"], "OperationOutcome", "{body}");
    }
    let current = send("GET", &url, &[], None).json();
    assert_eq!(current["meta"]["versionId"], "4");
    assert_eq!(current["gender"], "female");

    // A patch of what does not exist, or was deleted.
    let patch = json!([{ "op": "remove", "path": "/gender" }]).to_string();
    assert_eq!(
        send(
            "PATCH",
            &format!("{base}/Patient/nobody"),
            &[JSON_PATCH],
            Some(&patch)
        )
        .status,
        404
    );
    assert_eq!(send("DELETE", &url, &[], None).status, 200);
    assert_eq!(send("PATCH", &url, &[JSON_PATCH], Some(&patch)).status, 410);
}

#[test]
fn conditional_patch_patches_the_one_match_and_patch_entries_run_in_transactions() {
    let (_server, base) = server_with_tenant();
    stored_patient(&base, "p1");
    stored_patient(&base, "p2");
    let patch = json!([{ "op": "add", "path": "/active", "value": false }]).to_string();
    let by_identifier = format!("{base}/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|p1-fnr");
    let reply = send("PATCH", &by_identifier, &[JSON_PATCH], Some(&patch));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["id"], "p1");
    let none = format!("{base}/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|nobody");
    assert_eq!(
        send("PATCH", &none, &[JSON_PATCH], Some(&patch)).status,
        404
    );
    let both = format!("{base}/Patient?family=Nordmann");
    assert_eq!(
        send("PATCH", &both, &[JSON_PATCH], Some(&patch)).status,
        412
    );

    // A transaction with a FHIRPath Patch and a JSON Patch (as a Binary).
    use base64::Engine as _;
    let json_patch = json!([{ "op": "replace", "path": "/gender", "value": "other" }]).to_string();
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": fhirpath_replace("Patient.name.family", json!({ "valueString": "Berg" })),
                "request": { "method": "PATCH", "url": "Patient/p1", "ifMatch": "W/\"2\"" },
            },
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64::engine::general_purpose::STANDARD.encode(json_patch),
                },
                "request": { "method": "PATCH", "url": "Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|p2-fnr" },
            },
        ],
    });
    let reply = send("POST", &base, &[FHIR_JSON], Some(&transaction.to_string()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entries = reply.json()["entry"].clone();
    assert_eq!(entries[0]["response"]["status"], "200 OK");
    assert_eq!(entries[0]["response"]["etag"], "W/\"3\"");
    assert_eq!(entries[1]["response"]["location"], "Patient/p2/_history/2");
    assert_eq!(
        send("GET", &format!("{base}/Patient/p1"), &[], None).json()["name"][0]["family"],
        "Berg"
    );
    assert_eq!(
        send("GET", &format!("{base}/Patient/p2"), &[], None).json()["gender"],
        "other"
    );

    // A failing patch entry rolls the transaction back.
    let mut failing = transaction.clone();
    failing["entry"][0]["request"]["ifMatch"] = json!("W/\"2\"");
    let reply = send("POST", &base, &[FHIR_JSON], Some(&failing.to_string()));
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert_eq!(
        send("GET", &format!("{base}/Patient/p2"), &[], None).json()["meta"]["versionId"],
        "2"
    );
}

#[test]
fn of_two_concurrent_patches_with_the_same_if_match_one_wins() {
    let (_server, base) = server_with_tenant();
    for round in 0..8 {
        let url = stored_patient(&base, &format!("race-{round}"));
        let turn = std::sync::atomic::AtomicUsize::new(0);
        let statuses = all_at_once(2, || {
            let family = ["Left", "Right"][turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst)];
            let patch = json!([{ "op": "replace", "path": "/name/0/family", "value": family }]);
            send(
                "PATCH",
                &url,
                &[JSON_PATCH, ("If-Match", "W/\"1\"")],
                Some(&patch.to_string()),
            )
            .status
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 412], "round {round}");
        assert_eq!(
            send("GET", &url, &[], None).json()["meta"]["versionId"],
            "2"
        );
    }
}
