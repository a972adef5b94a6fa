//! The REST API through the real `fjord` binary and a real HTTP client.

use fjord_tests::{send, without_server_meta};
use serde_json::{json, Value};

use crate::{a_patient, server_with_tenant};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");
const BP: &str = r#"{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-11-01T08:00:00+01:00","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120.0,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}"#;

#[test]
fn create_read_vread_update_delete_history() {
    let (_server, base) = server_with_tenant();
    a_patient(&base, "p1");
    let created = send("POST", &format!("{base}/Observation"), &[JSON], Some(BP));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(created.header("last-modified").is_some());
    let location = created.header("location").unwrap().to_owned();
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{base}/Observation/{id}/_history/1"));
    // Decimals keep their lexical form (120.0, not 120).
    assert!(created.body.contains("\"value\":120.0"), "{}", created.body);

    let read = send("GET", &format!("{base}/Observation/{id}"), &[], None);
    assert_eq!(read.status, 200);
    let mut expected: Value = serde_json::from_str(BP).unwrap();
    expected
        .as_object_mut()
        .unwrap()
        .shift_insert(1, "id".into(), json!(id));
    assert_eq!(without_server_meta(read.json()), expected);

    let mut changed: Value = read.json();
    changed["status"] = json!("amended");
    let updated = send(
        "PUT",
        &format!("{base}/Observation/{id}"),
        &[JSON, ("If-Match", "W/\"1\"")],
        Some(&changed.to_string()),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["meta"]["versionId"], "2");
    let stale = send(
        "PUT",
        &format!("{base}/Observation/{id}"),
        &[JSON, ("If-Match", "W/\"1\"")],
        Some(&changed.to_string()),
    );
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["resourceType"], "OperationOutcome");

    let v1 = send(
        "GET",
        &format!("{base}/Observation/{id}/_history/1"),
        &[],
        None,
    );
    assert_eq!(v1.json()["status"], "final");
    assert_eq!(
        send(
            "GET",
            &format!("{base}/Observation/{id}/_history/9"),
            &[],
            None
        )
        .status,
        404
    );

    let deleted = send("DELETE", &format!("{base}/Observation/{id}"), &[], None);
    assert_eq!(deleted.status, 200);
    assert_eq!(
        send("GET", &format!("{base}/Observation/{id}"), &[], None).status,
        410
    );
    assert_eq!(
        send(
            "GET",
            &format!("{base}/Observation/{id}/_history/3"),
            &[],
            None
        )
        .status,
        410
    );
    assert_eq!(
        send(
            "GET",
            &format!("{base}/Observation/{id}/_history/2"),
            &[],
            None
        )
        .status,
        200
    );
    // Deleting again changes nothing.
    assert_eq!(
        send("DELETE", &format!("{base}/Observation/{id}"), &[], None).status,
        200
    );

    let history = send(
        "GET",
        &format!("{base}/Observation/{id}/_history"),
        &[],
        None,
    )
    .json();
    assert_eq!(history["type"], "history");
    let methods: Vec<&str> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "POST"]);
    assert!(history["entry"][0].get("resource").is_none());
}

#[test]
fn update_as_create_and_id_rules() {
    let (_server, base) = server_with_tenant();
    let body = r#"{"resourceType":"Patient","id":"pasient-1","active":true}"#;
    let created = send(
        "PUT",
        &format!("{base}/Patient/pasient-1"),
        &[JSON],
        Some(body),
    );
    assert_eq!(created.status, 201);
    assert!(created.header("location").is_some());
    assert_eq!(
        send(
            "PUT",
            &format!("{base}/Patient/pasient-1"),
            &[JSON],
            Some(body)
        )
        .status,
        200
    );
    let mismatch = send("PUT", &format!("{base}/Patient/other"), &[JSON], Some(body));
    assert_eq!(mismatch.status, 400);
    let wrong_type = send(
        "PUT",
        &format!("{base}/Observation/pasient-1"),
        &[JSON],
        Some(body),
    );
    assert_eq!(wrong_type.status, 400);
    let no_id = send(
        "PUT",
        &format!("{base}/Patient/pasient-1"),
        &[JSON],
        Some(r#"{"resourceType":"Patient"}"#),
    );
    assert_eq!(no_id.status, 400);
    let bad_id = send(
        "PUT",
        &format!("{base}/Patient/a_b"),
        &[JSON],
        Some(r#"{"resourceType":"Patient","id":"a_b"}"#),
    );
    assert_eq!(bad_id.status, 400);
    let bad_body_id = send(
        "POST",
        &format!("{base}/Patient"),
        &[JSON],
        Some(r#"{"resourceType":"Patient","id":"a b"}"#),
    );
    assert_eq!(bad_body_id.status, 400);
    assert_eq!(
        bad_body_id.json()["issue"][0]["expression"][0],
        "Patient.id"
    );
    // If-Match on a resource that does not exist cannot match.
    let missing = send(
        "PUT",
        &format!("{base}/Patient/nobody"),
        &[JSON, ("If-Match", "W/\"1\"")],
        Some(r#"{"resourceType":"Patient","id":"nobody"}"#),
    );
    assert_eq!(missing.status, 412);
    // An id in a create body is ignored.
    let posted = send("POST", &format!("{base}/Patient"), &[JSON], Some(body)).json();
    assert_ne!(posted["id"], "pasient-1");
    // Server-owned meta is the server's.
    let forged = r#"{"resourceType":"Patient","id":"pasient-1","meta":{"versionId":"99","lastUpdated":"2000-01-01T00:00:00Z"}}"#;
    let updated = send(
        "PUT",
        &format!("{base}/Patient/pasient-1"),
        &[JSON],
        Some(forged),
    )
    .json();
    assert_eq!(updated["meta"]["versionId"], "3");
    assert_ne!(updated["meta"]["lastUpdated"], "2000-01-01T00:00:00Z");
}

#[test]
fn bad_input_is_an_operation_outcome_and_stores_nothing() {
    let (server, base) = server_with_tenant();
    let post = |body: &str| send("POST", &format!("{base}/Patient"), &[JSON], Some(body));
    let check = |body: &str, status: u16, expression: Option<&str>| {
        let reply = post(body);
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        let outcome = reply.json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        if let Some(expression) = expression {
            assert_eq!(outcome["issue"][0]["expression"][0], expression, "{body}");
        }
    };
    check("{not json", 400, None);
    check(
        r#"{"resourceType":"Patient","foo":1}"#,
        400,
        Some("Patient.foo"),
    );
    check(
        r#"{"resourceType":"Patient","active":"yes"}"#,
        400,
        Some("Patient.active"),
    );
    check(
        r#"{"resourceType":"Patient","name":[{"given":[1]}]}"#,
        400,
        Some("Patient.name[0].given[0]"),
    );
    check(r#"{"resourceType":"Nope"}"#, 400, Some("resourceType"));
    check(
        r#"{"resourceType":"Observation","status":"final","code":{}}"#,
        400,
        None,
    );
    let deep = format!(
        r#"{{"resourceType":"Patient","extension":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    check(&deep, 400, None);
    let nested = r#"{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o","meta":{"versionId":"7"}}]}"#;
    let reply = post(nested);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(
        reply.json()["issue"][0]["expression"][0],
        "Patient.contained[0].meta"
    );
    let huge = format!(
        r#"{{"resourceType":"Patient","id":"x","text":{{"status":"generated","div":"{}"}}}}"#,
        "a".repeat(17 * 1024 * 1024)
    );
    assert_eq!(post(&huge).status, 413);
    assert_eq!(
        send(
            "POST",
            &format!("{base}/Patient"),
            &[("Content-Type", "text/plain")],
            Some("{}")
        )
        .status,
        415
    );
    assert_eq!(
        send(
            "GET",
            &format!("{base}/Patient/x"),
            &[("Accept", "text/html")],
            None
        )
        .status,
        406
    );
    assert_eq!(
        send("POST", &format!("{base}/Patient/x"), &[JSON], Some("{}")).status,
        405
    );
    assert_eq!(
        send("GET", &format!("{base}/NotAType/x"), &[], None).status,
        404
    );
    assert_eq!(
        send(
            "GET",
            &format!("{}/fhir/no-such-hf/Patient/x", server.origin),
            &[],
            None
        )
        .status,
        404
    );
    // Nothing of the above was stored, and the server still serves.
    let history = send("GET", &format!("{base}/_history"), &[], None).json();
    assert!(
        history
            .get("entry")
            .and_then(Value::as_array)
            .is_none_or(|e| e.is_empty()),
        "{history}"
    );
    assert_eq!(
        send("GET", &format!("{}/health/live", server.origin), &[], None).status,
        200
    );
}

#[test]
fn conditional_reads_prefer_and_formats() {
    let (_server, base) = server_with_tenant();
    a_patient(&base, "p1");
    let created = send(
        "POST",
        &format!("{base}/Observation"),
        &[JSON, ("Prefer", "return=minimal")],
        Some(BP),
    );
    assert_eq!(created.status, 201);
    assert!(created.body.is_empty());
    let location = created.header("location").unwrap();
    let url = location.split("/_history").next().unwrap().to_owned();
    let read = send("GET", &url, &[], None);
    let last_modified = read.header("last-modified").unwrap().to_owned();
    assert_eq!(
        send("GET", &url, &[("If-None-Match", "W/\"1\"")], None).status,
        304
    );
    assert_eq!(
        send("GET", &url, &[("If-None-Match", "W/\"2\"")], None).status,
        200
    );
    assert_eq!(
        send("GET", &url, &[("If-Modified-Since", &last_modified)], None).status,
        304
    );
    assert_eq!(
        send(
            "GET",
            &url,
            &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
            None
        )
        .status,
        200
    );

    let outcome = send(
        "PUT",
        &url,
        &[JSON, ("Prefer", "return=OperationOutcome")],
        Some(&read.body),
    );
    assert_eq!(outcome.json()["resourceType"], "OperationOutcome");

    let xml = send("GET", &url, &[("Accept", "application/fhir+xml")], None);
    assert_eq!(xml.status, 200);
    assert!(xml
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+xml"));
    assert!(
        xml.body
            .contains("<Observation xmlns=\"http://hl7.org/fhir\">"),
        "{}",
        xml.body
    );
    assert!(send("GET", &format!("{url}?_format=xml"), &[], None)
        .body
        .starts_with("<?xml"));
    let pretty = send("GET", &format!("{url}?_pretty=true"), &[], None).body;
    assert!(pretty.contains("\n  \"resourceType\""));

    // XML in, JSON out: the same resource.
    let id = url.rsplit('/').next().unwrap();
    let put_xml = send(
        "PUT",
        &url,
        &[("Content-Type", "application/fhir+xml")],
        Some(&xml.body),
    );
    assert_eq!(put_xml.status, 200, "{}", put_xml.body);
    assert_eq!(
        without_server_meta(put_xml.json()),
        without_server_meta(read.json()),
        "{id}"
    );

    let errors_in_xml = send(
        "GET",
        &format!("{base}/Patient/none?_format=xml"),
        &[],
        None,
    );
    assert_eq!(errors_in_xml.status, 404);
    assert!(errors_in_xml.body.contains("<OperationOutcome"));
}

#[test]
fn history_pages_and_since() {
    let (_server, base) = server_with_tenant();
    for i in 0..5 {
        let body = format!(r#"{{"resourceType":"Patient","id":"p{i}"}}"#);
        assert_eq!(
            send("PUT", &format!("{base}/Patient/p{i}"), &[JSON], Some(&body)).status,
            201
        );
    }
    let mid = send("GET", &format!("{base}/Patient/p2"), &[], None).json()["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_owned();
    send("POST", &format!("{base}/Observation"), &[JSON], Some(BP));
    let mut url = format!("{base}/_history?_count=2");
    let mut seen = Vec::new();
    while let Some(page) = Some(send("GET", &url, &[], None).json()) {
        for entry in page["entry"].as_array().unwrap() {
            seen.push(
                entry["fullUrl"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(&seen[1..], ["p4", "p3", "p2", "p1", "p0"]);
    let types = send("GET", &format!("{base}/Patient/_history"), &[], None).json();
    assert_eq!(types["entry"].as_array().unwrap().len(), 5);
    let since = send(
        "GET",
        &format!("{base}/Patient/_history?_since={}", mid.replace('+', "%2B")),
        &[],
        None,
    )
    .json();
    assert_eq!(since["entry"].as_array().unwrap().len(), 3);
    assert_eq!(
        send(
            "GET",
            &format!("{base}/_history?_since=yesterday"),
            &[],
            None
        )
        .status,
        400
    );
    assert_eq!(
        send("GET", &format!("{base}/Patient/none/_history"), &[], None).status,
        404
    );
}

#[test]
fn tenants_are_isolated_and_administered() {
    let (server, base) = server_with_tenant();
    let admin = format!("{}/admin/tenants", server.origin);
    assert_eq!(
        send(
            "POST",
            &admin,
            &[],
            Some(r#"{"id":"t2","name":"Tenant two"}"#)
        )
        .status,
        201
    );
    assert_eq!(
        send("POST", &admin, &[], Some(r#"{"id":"t2","name":"again"}"#)).status,
        409
    );
    assert_eq!(
        send("POST", &admin, &[], Some(r#"{"id":"Bad Id","name":"x"}"#)).status,
        400
    );
    let listed: Vec<String> = send("GET", &admin, &[], None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["t1", "t2"]);
    let body = r#"{"resourceType":"Patient","id":"shared-id"}"#;
    send(
        "PUT",
        &format!("{base}/Patient/shared-id"),
        &[JSON],
        Some(body),
    );
    let other = server.base("t2");
    assert_eq!(
        send("GET", &format!("{other}/Patient/shared-id"), &[], None).status,
        404
    );
    assert!(send("GET", &format!("{other}/_history"), &[], None)
        .json()
        .get("entry")
        .is_none_or(|e| e.as_array().unwrap().is_empty()));
    // The same id in another tenant is another resource.
    assert_eq!(
        send(
            "PUT",
            &format!("{other}/Patient/shared-id"),
            &[JSON],
            Some(body)
        )
        .status,
        201
    );
}

#[test]
fn metadata_and_health() {
    let (server, base) = server_with_tenant();
    let statement = send("GET", &format!("{base}/metadata"), &[], None).json();
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let resources = statement["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    let codes: Vec<&str> = resources[0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"search-type"));
    // System-level search, batches and transactions are served and announced.
    let system: Vec<&str> = statement["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(system.contains(&"search-system"));
    assert!(system.contains(&"batch") && system.contains(&"transaction"));
    assert_eq!(resources[0]["conditionalCreate"], true);
    assert_eq!(resources[0]["conditionalDelete"], "single");
    assert_eq!(
        send("GET", &format!("{}/health/ready", server.origin), &[], None).status,
        200
    );
    // A body that is not a resource is a 400, not an unserved interaction.
    assert_eq!(send("POST", &base, &[], Some("{}")).status, 400);
}
