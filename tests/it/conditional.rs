//! Conditional create, update and delete, and optimistic locking, through the REST API;
//! including what happens when many clients send the same request at the same instant.

use std::sync::atomic::Ordering;

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::searching::ids;
use crate::{a_patient, add_tenant, all_at_once, server_with_tenant};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");
const SYSTEM: &str = "urn:oid:2.16.578.1.12.4.1.4.1";

/// A blood-pressure Observation with one identifier.
fn measurement(value: &str) -> String {
    json!({
        "resourceType": "Observation",
        "identifier": [{ "system": "urn:phg", "value": value }],
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "85354-9" }] },
        "subject": { "reference": "Patient/p1" },
    })
    .to_string()
}

fn patient(fnr: &str, family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": SYSTEM, "value": fnr }],
        "name": [{ "family": family }],
    })
}

fn conditional_create(base: &str, value: &str) -> Reply {
    send(
        "POST",
        &format!("{base}/Observation"),
        &[
            JSON,
            ("If-None-Exist", &format!("identifier=urn:phg|{value}")),
        ],
        Some(&measurement(value)),
    )
}

#[test]
fn conditional_create_creates_once_returns_the_match_and_refuses_ambiguity() {
    let (server, base) = server_with_tenant();
    a_patient(&base, "p1");
    let first = conditional_create(&base, "m1");
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_owned();

    // A retry finds the first: 200 with the stored resource, nothing new.
    let retry = conditional_create(&base, "m1");
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["id"], id.as_str());
    assert_eq!(retry.json()["meta"]["versionId"], "1");
    assert_eq!(ids(&base, "Observation?identifier=urn:phg|m1"), [id]);

    // Two matches: 412, and still two.
    let plain = send(
        "POST",
        &format!("{base}/Observation"),
        &[JSON],
        Some(&measurement("m1")),
    );
    assert_eq!(plain.status, 201);
    let ambiguous = conditional_create(&base, "m1");
    assert_eq!(ambiguous.status, 412, "{}", ambiguous.body);
    assert_eq!(ambiguous.json()["resourceType"], "OperationOutcome");
    assert_eq!(ids(&base, "Observation?identifier=urn:phg|m1").len(), 2);

    // A condition with a parameter Observation does not have, or none at all: 400.
    for condition in ["nonsense=1", ""] {
        let bad = send(
            "POST",
            &format!("{base}/Observation"),
            &[JSON, ("If-None-Exist", condition)],
            Some(&measurement("m2")),
        );
        assert_eq!(bad.status, 400, "{condition}: {}", bad.body);
    }
    // The full form `Type?query` is taken too.
    let full = send(
        "POST",
        &format!("{base}/Observation"),
        &[JSON, ("If-None-Exist", "Observation?identifier=urn:phg|m2")],
        Some(&measurement("m2")),
    );
    assert_eq!(full.status, 201, "{}", full.body);
    assert!(ids(&base, "Observation?identifier=urn:phg|m2").len() == 1);

    // Uniqueness is per tenant: the same condition creates in another one.
    let other = add_tenant(&server, "t2");
    a_patient(&other, "p1");
    let other = conditional_create(&other, "m1");
    assert_eq!(other.status, 201, "{}", other.body);
}

#[test]
fn concurrent_conditional_creates_make_one_resource() {
    let (_server, base) = server_with_tenant();
    a_patient(&base, "p1");
    const CLIENTS: usize = 32;
    for round in 0..4 {
        let value = format!("race-{round}");
        let replies = all_at_once(CLIENTS, || conditional_create(&base, &value));
        let created = replies.iter().filter(|r| r.status == 201).count();
        let found = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            (created, found),
            (1, CLIENTS - 1),
            "round {round}: {:?}",
            replies.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        let ids = ids(&base, &format!("Observation?identifier=urn:phg|{value}"));
        assert_eq!(ids.len(), 1, "round {round}");
        assert!(replies.iter().all(|r| r.json()["id"] == ids[0].as_str()));
    }
}

#[test]
fn conditional_update_creates_updates_and_refuses_ambiguity() {
    let (_server, base) = server_with_tenant();
    let url = format!("{base}/Patient?identifier={SYSTEM}|01010112345");
    let put = |body: &Value, headers: &[(&str, &str)]| {
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        send("PUT", &url, &all, Some(&body.to_string()))
    };

    // No match and no id: created under a new id.
    let created = put(&patient("01010112345", "Nordmann"), &[]);
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // One match: updated, with or without the id in the body.
    let updated = put(&patient("01010112345", "Hansen"), &[]);
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["id"], id.as_str());
    assert_eq!(updated.json()["meta"]["versionId"], "2");
    let mut with_id = patient("01010112345", "Olsen");
    with_id["id"] = json!(id);
    let again = put(&with_id, &[("If-Match", "W/\"2\"")]);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["meta"]["versionId"], "3");

    // A stale If-Match, or a body naming another resource, changes nothing.
    let stale = put(&with_id, &[("If-Match", "W/\"2\"")]);
    assert_eq!(stale.status, 412, "{}", stale.body);
    with_id["id"] = json!("someone-else");
    let other = put(&with_id, &[]);
    assert_eq!(other.status, 400, "{}", other.body);
    let read = send("GET", &format!("{base}/Patient/{id}"), &[], None);
    assert_eq!(read.json()["meta"]["versionId"], "3");
    assert_eq!(read.json()["name"][0]["family"], "Olsen");

    // No match with an id in the body: created under that id.
    let mut chosen = patient("02020212345", "Berg");
    chosen["id"] = json!("chosen");
    let created = send(
        "PUT",
        &format!("{base}/Patient?identifier={SYSTEM}|02020212345"),
        &[JSON],
        Some(&chosen.to_string()),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["id"], "chosen");

    // Two matches: 412.
    let both = send(
        "PUT",
        &format!("{base}/Patient?identifier={SYSTEM}|"),
        &[JSON],
        Some(&patient("x", "y").to_string()),
    );
    assert_eq!(both.status, 412, "{}", both.body);
}

#[test]
fn conditional_delete_deletes_the_one_match() {
    let (_server, base) = server_with_tenant();
    a_patient(&base, "p1");
    for value in ["d1", "d2", "d2"] {
        let created = send(
            "POST",
            &format!("{base}/Observation"),
            &[JSON],
            Some(&measurement(value)),
        );
        assert_eq!(created.status, 201);
    }
    let delete = |value: &str| {
        send(
            "DELETE",
            &format!("{base}/Observation?identifier=urn:phg|{value}"),
            &[],
            None,
        )
    };
    let deleted = delete("d1");
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.header("etag"), Some("W/\"2\""));
    assert!(ids(&base, "Observation?identifier=urn:phg|d1").is_empty());
    // Nothing left to match: nothing to do.
    let nothing = delete("d1");
    assert_eq!(nothing.status, 200, "{}", nothing.body);
    assert!(
        nothing.body.contains("nothing to delete"),
        "{}",
        nothing.body
    );
    // Two matches: 412 and both stay.
    let ambiguous = delete("d2");
    assert_eq!(ambiguous.status, 412, "{}", ambiguous.body);
    assert_eq!(ids(&base, "Observation?identifier=urn:phg|d2").len(), 2);
}

#[test]
fn of_two_updates_with_the_same_if_match_exactly_one_wins() {
    let (_server, base) = server_with_tenant();
    for round in 0..8 {
        let id = format!("race-{round}");
        let url = format!("{base}/Patient/{id}");
        let mut body = patient("03030312345", "Start");
        body["id"] = json!(id);
        assert_eq!(
            send("PUT", &url, &[JSON], Some(&body.to_string())).status,
            201
        );
        // Two writers with different changes, both expecting version 1.
        let turn = std::sync::atomic::AtomicUsize::new(0);
        let statuses = all_at_once(2, || {
            let mut body = body.clone();
            let family = ["Left", "Right"][turn.fetch_add(1, Ordering::SeqCst)];
            body["name"][0]["family"] = json!(family);
            send(
                "PUT",
                &url,
                &[JSON, ("If-Match", "W/\"1\"")],
                Some(&body.to_string()),
            )
            .status
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 412], "round {round}");
        let read = send("GET", &url, &[], None);
        assert_eq!(read.json()["meta"]["versionId"], "2", "round {round}");
    }
}
