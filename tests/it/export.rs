//! Bulk Data `$export`: system, Patient and Group level, `_type`, `_since`, `_typeFilter`, the
//! asynchronous pattern, files for the starting client only, the caller's grant applied, and
//! the export in the audit trail.

use std::collections::BTreeSet;

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::import::at;
use crate::smart::Smart;

#[test]
fn export_writes_what_the_grant_allows_for_its_client_only() {
    let smart = Smart::start("export", &[]);
    let base = smart.server.base("t1");
    let token = |client: &str, scope: &str, patient: Option<&str>| {
        smart.issuer.mint(&fjord_smart::TokenRequest {
            audience: base.clone(),
            scope: scope.into(),
            client_id: Some(client.into()),
            patient: patient.map(str::to_owned),
            ..Default::default()
        })
    };
    let writer = token("writer", "system/*.cruds", None);
    let exporter = token("exporter", "system/*.rs", None);
    let other = token("other", "system/*.rs", None);
    let put = |path: &str, body: Value| {
        let reply = smart.call(&writer, "PUT", path, Some(&body));
        assert!(reply.status == 201 || reply.status == 200, "{}", reply.body);
    };
    for id in ["pa", "pb", "pc"] {
        put(
            &format!("/Patient/{id}"),
            json!({ "resourceType": "Patient", "id": id }),
        );
    }
    put(
        "/Device/d1",
        json!({ "resourceType": "Device", "id": "d1" }),
    );
    put(
        "/Practitioner/pr1",
        json!({ "resourceType": "Practitioner", "id": "pr1" }),
    );
    let observation = |id: &str, subject: &str, code: &str| {
        json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": code }] },
            "subject": { "reference": subject },
        })
    };
    put(
        "/Observation/oa1",
        observation("oa1", "Patient/pa", "8867-4"),
    );
    put(
        "/Observation/oa2",
        observation("oa2", "Patient/pa", "29463-7"),
    );
    put(
        "/Observation/ob1",
        observation("ob1", "Patient/pb", "8867-4"),
    );
    // About a device: in no patient's compartment.
    put(
        "/Observation/od1",
        observation("od1", "Device/d1", "8867-4"),
    );
    put(
        "/Group/g1",
        json!({
            "resourceType": "Group", "id": "g1", "type": "person", "actual": true,
            "member": [
                { "entity": { "reference": "Patient/pa" } },
                { "entity": { "reference": "Patient/pb" }, "inactive": true },
                { "entity": { "reference": "Patient/pc" } },
            ],
        }),
    );

    // System level: every type with resources, the audit trail left out.
    let (manifest, progress) = export(&base, "/$export", &exporter);
    assert!(
        progress.iter().all(|p| p.contains(" types, ")),
        "{progress:?}"
    );
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], format!("{base}/$export"));
    assert!(manifest["transactionTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        counts(&manifest),
        BTreeSet::from([
            ("Device".to_owned(), 1),
            ("Group".to_owned(), 1),
            ("Observation".to_owned(), 4),
            ("Patient".to_owned(), 3),
            ("Practitioner".to_owned(), 1),
        ])
    );
    let observations = file(&manifest, "Observation", &exporter);
    assert_eq!(ids(&observations), set(&["oa1", "oa2", "ob1", "od1"]));
    assert!(observations.iter().all(|o| o["meta"]["versionId"] == "1"));
    // The files and the status are the starting client's only.
    let url = manifest["output"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(at("GET", &url, &other).status, 404);
    assert_eq!(send("GET", &url, &[], None).status, 401);
    let status_url = url.rsplit_once('/').unwrap().0.to_owned();
    assert_eq!(at("GET", &status_url, &other).status, 404);
    assert_eq!(at("DELETE", &status_url, &other).status, 404);
    // Forgotten, files and all.
    assert_eq!(at("DELETE", &status_url, &exporter).status, 202);
    assert_eq!(at("GET", &status_url, &exporter).status, 404);
    assert_eq!(at("GET", &url, &exporter).status, 404);

    // Patient level: the patients' compartments, not the device's observation.
    let (manifest, _) = export(
        &base,
        "/Patient/$export?_type=Patient,Observation",
        &exporter,
    );
    assert_eq!(
        ids(&file(&manifest, "Observation", &exporter)),
        set(&["oa1", "oa2", "ob1"])
    );
    assert_eq!(
        ids(&file(&manifest, "Patient", &exporter)),
        set(&["pa", "pb", "pc"])
    );
    // Group level: its active members' compartments.
    let (manifest, _) = export(&base, "/Group/g1/$export", &exporter);
    assert_eq!(
        ids(&file(&manifest, "Observation", &exporter)),
        set(&["oa1", "oa2"])
    );
    assert_eq!(
        ids(&file(&manifest, "Patient", &exporter)),
        set(&["pa", "pc"])
    );
    // The Group is in its members' compartments (R4's `member`); the device in none.
    assert_eq!(ids(&file(&manifest, "Group", &exporter)), set(&["g1"]));
    assert!(
        counts(&manifest).iter().all(|(t, _)| t != "Device"),
        "{manifest}"
    );
    // `_typeFilter`: a type's queries are alternatives.
    let (manifest, _) = export(
        &base,
        "/Patient/$export?_type=Observation&_typeFilter=Observation%3Fcode%3D8867-4,Observation%3F_id%3Doa2",
        &exporter,
    );
    assert_eq!(
        ids(&file(&manifest, "Observation", &exporter)),
        set(&["oa1", "oa2", "ob1"])
    );
    let (manifest, _) = export(
        &base,
        "/$export?_typeFilter=Observation%3Fcode%3D29463-7",
        &exporter,
    );
    assert_eq!(
        ids(&file(&manifest, "Observation", &exporter)),
        set(&["oa2"])
    );
    assert_eq!(counts(&manifest).len(), 5, "other types are not filtered");

    // `_since`: what changed from then on.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(
        "/Observation/ob1",
        observation("ob1", "Patient/pb", "29463-7"),
    );
    let (manifest, _) = export(
        &base,
        &format!(
            "/$export?_since={}",
            since.replace(':', "%3A").replace('+', "%2B")
        ),
        &exporter,
    );
    assert_eq!(
        counts(&manifest),
        BTreeSet::from([("Observation".to_owned(), 1)])
    );
    assert_eq!(
        file(&manifest, "Observation", &exporter)[0]["meta"]["versionId"],
        "2"
    );

    // A patient's token exports that patient's data only.
    let patient_token = token(
        "app",
        "patient/Observation.rs patient/Patient.rs",
        Some("pb"),
    );
    let (manifest, _) = export(&base, "/Patient/$export", &patient_token);
    assert_eq!(
        ids(&file(&manifest, "Observation", &patient_token)),
        set(&["ob1"])
    );
    assert_eq!(
        ids(&file(&manifest, "Patient", &patient_token)),
        set(&["pb"])
    );
    // Types named but not granted: 403; bad parameters: 400; an unknown group: 404.
    for (path, status) in [
        ("/$export?_type=Device", 403),
        ("/$export?_type=Nonsense", 400),
        ("/$export?_outputFormat=text%2Fcsv", 400),
        ("/$export?_typeFilter=Observation%3Fnonsense%3D1", 400),
        ("/$export?_elements=id", 400),
        ("/Patient/$export?_type=Device", 400),
        ("/Group/nope/$export", 404),
    ] {
        let token = if status == 403 {
            &patient_token
        } else {
            &exporter
        };
        let reply = kick_off(&base, path, token);
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }

    // Each export is in the audit trail as a DICOM Export naming its request and patients.
    let audit_reader = token("auditor", "system/AuditEvent.rs", None);
    let mut found = Value::Null;
    for _ in 0..50 {
        let reply = smart.call(
            &audit_reader,
            "GET",
            "/AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110106&entity=Patient/pc",
            None,
        );
        found = reply.json();
        if found["entry"].as_array().is_some_and(|e| e.len() >= 4) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Four exports wrote pc's Patient resource: the first at system level (its files since
    // deleted), the Patient and the Group level ones, the `_typeFilter` one; not the `_since`
    // one, nor pb's own.
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(4), "{found}");
    let first = &found["entry"][0]["resource"];
    assert_eq!(first["action"], "R");
    assert!(first["entity"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["role"]["code"] == "24"));

    // The CapabilityStatement offers it at all three levels.
    let metadata = send("GET", &format!("{base}/metadata"), &[], None).json();
    let has_export = |operations: &Value| {
        operations
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["name"] == "export"))
    };
    assert!(has_export(&metadata["rest"][0]["operation"]));
    for t in ["Patient", "Group"] {
        let resource = metadata["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == t)
            .unwrap();
        assert!(has_export(&resource["operation"]), "{t}");
    }
}

fn kick_off(base: &str, path: &str, token: &str) -> Reply {
    send(
        "GET",
        &format!("{base}{path}"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "application/fhir+json"),
            ("Prefer", "respond-async"),
        ],
        None,
    )
}

/// Kicks an export off and polls it to its manifest; the progress it reported meanwhile.
fn export(base: &str, path: &str, token: &str) -> (Value, Vec<String>) {
    let started = kick_off(base, path, token);
    assert_eq!(started.status, 202, "{path}: {}", started.body);
    let status_url = started.header("Content-Location").unwrap().to_owned();
    assert!(status_url.starts_with(&format!("{base}/$export/")));
    crate::import::finished(&status_url, token)
}

/// The manifest's (type, count) pairs.
fn counts(manifest: &Value) -> BTreeSet<(String, u64)> {
    manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_owned(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The resources of a type's file, fetched as the client that started the export.
fn file(manifest: &Value, resource_type: &str, token: &str) -> Vec<Value> {
    let output = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == resource_type)
        .unwrap_or_else(|| panic!("no {resource_type} in {manifest}"));
    let reply = send(
        "GET",
        output["url"].as_str().unwrap(),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "application/fhir+ndjson"),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("Content-Type"),
        Some("application/fhir+ndjson")
    );
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, output["count"].as_u64().unwrap());
    lines
}

fn ids(resources: &[Value]) -> BTreeSet<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}
