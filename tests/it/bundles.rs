//! Batch and transaction bundles through the REST API: identities and references, conditional
//! entries, all-or-nothing, per-entry outcomes, limits and concurrency.

use fjord_tests::{send, Reply, Server};
use serde_json::{json, Value};

use crate::searching::ids;
use crate::{all_at_once, server_with_tenant};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

fn post_bundle(base: &str, bundle: &Value) -> Reply {
    send("POST", base, &[JSON], Some(&bundle.to_string()))
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

fn statuses(reply: &Reply) -> Vec<String> {
    reply.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_owned())
        .collect()
}

/// The id in a response entry's `location` (`Type/id/_history/v`).
fn located_id(reply: &Reply, index: usize) -> String {
    let location = reply.json()["entry"][index]["response"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    location.split('/').nth(1).unwrap().to_owned()
}

fn organization(value: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "identifier": [{ "system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": value }],
        "name": format!("HF {value}"),
    })
}

/// A patient (by `urn:uuid`), an observation that refers to it and to an organization by
/// condition, and a conditional create of that organization's sibling.
fn home_measurement_bundle(org: &str) -> Value {
    transaction(vec![
        json!({
            "fullUrl": "urn:uuid:1e0e2e54-4a7c-4f4e-9d1a-000000000001",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{ "system": "urn:test", "value": "p-1" }],
                "managingOrganization": {
                    "reference": format!("Organization?identifier=urn:oid:2.16.578.1.12.4.1.4.101|{org}")
                },
            },
            "request": { "method": "POST", "url": "Patient" },
        }),
        json!({
            "fullUrl": "urn:uuid:1e0e2e54-4a7c-4f4e-9d1a-000000000002",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
                "subject": { "reference": "urn:uuid:1e0e2e54-4a7c-4f4e-9d1a-000000000001" },
                "valueQuantity": { "value": 64, "unit": "/min" },
            },
            "request": { "method": "POST", "url": "Observation" },
        }),
    ])
}

#[test]
fn a_transaction_assigns_ids_rewrites_references_and_answers_each_entry() {
    let (_server, base) = server_with_tenant();
    let org = send(
        "POST",
        &format!("{base}/Organization"),
        &[JSON],
        Some(&organization("974589095").to_string()),
    );
    assert_eq!(org.status, 201);
    let org_id = org.json()["id"].as_str().unwrap().to_owned();

    let reply = post_bundle(&base, &home_measurement_bundle("974589095"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["type"], "transaction-response");
    assert_eq!(statuses(&reply), ["201 Created", "201 Created"]);
    let entry = &reply.json()["entry"][0]["response"];
    assert_eq!(entry["etag"], "W/\"1\"");
    assert!(entry["lastModified"].is_string());
    let (patient_id, observation_id) = (located_id(&reply, 0), located_id(&reply, 1));

    let observation = send(
        "GET",
        &format!("{base}/Observation/{observation_id}"),
        &[],
        None,
    );
    assert_eq!(
        observation.json()["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let patient = send("GET", &format!("{base}/Patient/{patient_id}"), &[], None);
    assert_eq!(
        patient.json()["managingOrganization"]["reference"],
        format!("Organization/{org_id}")
    );
    // The references are searchable as written.
    assert_eq!(
        ids(&base, &format!("Observation?subject=Patient/{patient_id}")),
        [observation_id]
    );
}

#[test]
fn a_failing_entry_rolls_the_whole_transaction_back_and_is_named() {
    let (_server, base) = server_with_tenant();
    // The conditional reference matches nothing: 412, and the patient is not stored either.
    let reply = post_bundle(&base, &home_measurement_bundle("000000000"));
    assert_eq!(reply.status, 412, "{}", reply.body);
    let issue = &reply.json()["issue"][0];
    assert_eq!(issue["expression"][0], "Bundle.entry[0]");
    assert!(ids(&base, "Patient?identifier=urn:test|p-1").is_empty());
    assert!(ids(&base, "Observation").is_empty());

    // A stale ifMatch in the second entry undoes the first.
    let put = send(
        "PUT",
        &format!("{base}/Organization/o1"),
        &[JSON],
        Some(&json!({ "resourceType": "Organization", "id": "o1", "name": "A" }).to_string()),
    );
    assert_eq!(put.status, 201);
    let bundle = transaction(vec![
        json!({
            "resource": organization("1"),
            "request": { "method": "POST", "url": "Organization" },
        }),
        json!({
            "resource": { "resourceType": "Organization", "id": "o1", "name": "B" },
            "request": { "method": "PUT", "url": "Organization/o1", "ifMatch": "W/\"7\"" },
        }),
    ]);
    let reply = post_bundle(&base, &bundle);
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert_eq!(reply.json()["issue"][0]["expression"][0], "Bundle.entry[1]");
    assert_eq!(ids(&base, "Organization"), ["o1"]);

    // A reference to a urn:uuid no entry has, and an invalid resource: 400.
    let dangling = transaction(vec![json!({
        "resource": { "resourceType": "Observation", "status": "final",
                      "code": { "text": "x" },
                      "subject": { "reference": "urn:uuid:0b6c2d36-0000-0000-0000-000000000000" } },
        "request": { "method": "POST", "url": "Observation" },
    })]);
    assert_eq!(post_bundle(&base, &dangling).status, 400);
    let invalid = transaction(vec![json!({
        "resource": { "resourceType": "Patient", "birthDate": 1970 },
        "request": { "method": "POST", "url": "Patient" },
    })]);
    let reply = post_bundle(&base, &invalid);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.json()["issue"][0]["expression"][0]
        .as_str()
        .unwrap()
        .starts_with("Bundle.entry[0].resource"));
    assert!(ids(&base, "Patient").is_empty());
}

#[test]
fn transactions_delete_create_update_and_read_in_order_and_are_idempotent() {
    let (_server, base) = server_with_tenant();
    let put = |id: &str| {
        send(
            "PUT",
            &format!("{base}/Organization/{id}"),
            &[JSON],
            Some(&json!({ "resourceType": "Organization", "id": id }).to_string()),
        )
    };
    assert_eq!(put("gone").status, 201);
    assert_eq!(put("kept").status, 201);
    // Listed out of order on purpose: the read comes last whatever its position.
    let bundle = transaction(vec![
        json!({ "request": { "method": "GET", "url": "Organization/kept" } }),
        json!({
            "resource": organization("5"),
            "request": { "method": "POST", "url": "Organization",
                         "ifNoneExist": "identifier=urn:oid:2.16.578.1.12.4.1.4.101|5" },
        }),
        json!({
            "resource": { "resourceType": "Organization", "id": "kept", "name": "Renamed" },
            "request": { "method": "PUT", "url": "Organization/kept", "ifMatch": "W/\"1\"" },
        }),
        json!({ "request": { "method": "DELETE", "url": "Organization/gone" } }),
        json!({ "request": { "method": "GET", "url": "Organization?name=renamed" } }),
    ]);
    let reply = post_bundle(&base, &bundle);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        statuses(&reply),
        [
            "200 OK",
            "201 Created",
            "200 OK",
            "204 No Content",
            "200 OK"
        ]
    );
    let body = reply.json();
    assert_eq!(body["entry"][0]["resource"]["name"], "Renamed");
    assert_eq!(body["entry"][4]["resource"]["total"], 1);
    let created = located_id(&reply, 1);
    assert_eq!(
        send("GET", &format!("{base}/Organization/gone"), &[], None).status,
        410
    );

    // Again: the conditional create finds its resource; the stale ifMatch now fails it all.
    let again = post_bundle(&base, &bundle);
    assert_eq!(again.status, 412, "{}", again.body);
    let mut retry = bundle.clone();
    retry["entry"][2]["request"]["ifMatch"] = json!("W/\"2\"");
    let reply = post_bundle(&base, &retry);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(statuses(&reply)[1], "200 OK");
    assert_eq!(located_id(&reply, 1), created);
    assert_eq!(
        ids(
            &base,
            "Organization?identifier=urn:oid:2.16.578.1.12.4.1.4.101|5"
        )
        .len(),
        1
    );
}

#[test]
fn a_batch_answers_every_entry_on_its_own() {
    let (_server, base) = server_with_tenant();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            { "resource": organization("1"), "request": { "method": "POST", "url": "Organization" } },
            { "request": { "method": "GET", "url": "Organization/missing" } },
            { "resource": organization("2"), "request": { "method": "PUT", "url": "Organization/x",
                                                          "ifMatch": "W/\"3\"" } },
            { "request": { "method": "HEAD", "url": "Organization/x" } },
            { "resource": organization("3"), "request": { "method": "POST", "url": "Organization" } },
            // An invalid resource, and an invalid FHIRPath Patch: refused, they alone.
            { "resource": { "resourceType": "Organization", "nonsense": 1 },
              "request": { "method": "POST", "url": "Organization" } },
            { "resource": { "resourceType": "Parameters", "parameter": [{ "name": "operation", "bogus": true }] },
              "request": { "method": "PATCH", "url": "Organization/x" } },
        ],
    });
    let reply = post_bundle(&base, &bundle);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["type"], "batch-response");
    assert_eq!(
        statuses(&reply),
        [
            "201 Created",
            "404 Not Found",
            "412 Precondition Failed",
            "501 Not Implemented",
            "201 Created",
            "400 Bad Request",
            "400 Bad Request",
        ]
    );
    let invalid = &reply.json()["entry"][5]["response"]["outcome"];
    assert!(invalid.to_string().contains("nonsense"), "{invalid}");
    assert_eq!(
        reply.json()["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(ids(&base, "Organization").len(), 2);

    // Not a batch or transaction, or not a Bundle: 400.
    let document = json!({ "resourceType": "Bundle", "type": "document" });
    assert_eq!(post_bundle(&base, &document).status, 400);
    let patient = json!({ "resourceType": "Patient" });
    assert_eq!(post_bundle(&base, &patient).status, 400);
}

#[test]
fn a_bundle_over_the_entry_or_size_limit_is_refused_before_any_work() {
    let database = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fjord_testkit::database());
    let config = std::env::temp_dir().join(format!("fjord-bundles-{}.toml", std::process::id()));
    std::fs::write(&config, "max_bundle_entries = 3\nmax_body_bytes = 4096\n").unwrap();
    let server = Server::start(&[
        "--database-url",
        &database.url,
        "--config",
        config.to_str().unwrap(),
    ]);
    let base = crate::add_tenant(&server, "t1");
    let entry = json!({ "resource": organization("1"), "request": { "method": "POST", "url": "Organization" } });
    let reply = post_bundle(&base, &transaction(vec![entry.clone(); 4]));
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(ids(&base, "Organization").is_empty());
    assert_eq!(
        post_bundle(&base, &transaction(vec![entry.clone(); 3])).status,
        200
    );
    // Within the entry count, over the body size: refused too, with an OperationOutcome.
    let mut large = entry;
    large["resource"]["name"] = json!("x".repeat(5000));
    let reply = post_bundle(&base, &transaction(vec![large]));
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    assert_eq!(ids(&base, "Organization").len(), 3);
    let _ = std::fs::remove_file(config);
}

#[test]
fn concurrent_transactions_with_the_same_if_none_exist_create_one_resource() {
    let (_server, base) = server_with_tenant();
    const CLIENTS: usize = 32;
    for round in 0..3 {
        let value = format!("9{round}");
        let bundle = transaction(vec![json!({
            "resource": organization(&value),
            "request": { "method": "POST", "url": "Organization",
                         "ifNoneExist": format!("identifier=urn:oid:2.16.578.1.12.4.1.4.101|{value}") },
        })]);
        let replies = all_at_once(CLIENTS, || post_bundle(&base, &bundle));
        assert!(replies.iter().all(|r| r.status == 200));
        let created = replies
            .iter()
            .filter(|r| statuses(r)[0] == "201 Created")
            .count();
        assert_eq!(created, 1, "round {round}");
        let query = format!("Organization?identifier=urn:oid:2.16.578.1.12.4.1.4.101|{value}");
        assert_eq!(ids(&base, &query).len(), 1, "round {round}");
    }
}
