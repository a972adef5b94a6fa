//! Custom SearchParameter resources and `$reindex`: a tenant's own parameter is searchable once
//! posted, for resources written afterwards at once and for older ones after a reindex; a
//! definition Fjord cannot use is refused; other tenants do not see it.

use std::time::{Duration, Instant};

use fjord_tests::send;
use serde_json::{json, Value};

use crate::searching::{capability_of, ids, put, search_param_names};
use crate::server_with_tenant;

const BIRTH_PLACE: &str = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace";
const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

fn born_in(id: &str, city: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "extension": [{"url": BIRTH_PLACE, "valueAddress": {"city": city}}]})
}

fn birth_place_parameter() -> Value {
    json!({
        "resourceType": "SearchParameter", "id": "birth-place",
        "url": "https://helse-nord.example/fhir/SearchParameter/birth-place",
        "name": "BirthPlace", "status": "active", "description": "Fødested",
        "code": "birth-place", "base": ["Patient"], "type": "string",
        "expression": format!("Patient.extension('{BIRTH_PLACE}').value.city")
    })
}

fn strict(url: &str) -> u16 {
    send("GET", url, &[("Prefer", "handling=strict")], None).status
}

/// Polls a `$reindex` job until it is done; returns the final reply's body.
fn wait_for(job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = send("GET", job, &[], None);
        match reply.status {
            202 => {
                assert!(reply.header("x-progress").is_some());
                assert!(Instant::now() < deadline, "the job did not finish");
                std::thread::sleep(Duration::from_millis(100));
            }
            200 => return reply.json(),
            other => panic!("{job}: {other} {}", reply.body),
        }
    }
}

#[test]
fn custom_parameters_and_reindex() {
    let (server, base) = server_with_tenant();
    put(&base, &born_in("old1", "Tromsø"));
    put(&base, &born_in("old2", "Bodø"));
    let query = format!("{base}/Patient?birth-place=tromso");
    assert_eq!(strict(&query), 400, "unknown before it is defined");

    let created = send(
        "PUT",
        &format!("{base}/SearchParameter/birth-place"),
        &[JSON],
        Some(&birth_place_parameter().to_string()),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    // Known now; written before, so not indexed yet. Written after: found at once.
    assert_eq!(strict(&query), 200);
    assert!(ids(&base, "Patient?birth-place=tromso").is_empty());
    put(&base, &born_in("new1", "Tromsø"));
    assert_eq!(ids(&base, "Patient?birth-place=tromso"), ["new1"]);
    let patient = capability_of(&base, "Patient");
    assert!(search_param_names(&patient)
        .iter()
        .any(|name| name == "birth-place"));

    let started = send("POST", &format!("{base}/Patient/$reindex"), &[], None);
    assert_eq!(started.status, 202, "{}", started.body);
    let job = started.header("content-location").unwrap().to_owned();
    let done = wait_for(&job);
    assert_eq!(done["parameter"][1]["valueInteger"], 3);
    let mut found = ids(&base, "Patient?birth-place=tromso");
    found.sort();
    assert_eq!(found, ["new1", "old1"]);
    assert_eq!(ids(&base, "Patient?birth-place:exact=Bodø"), ["old2"]);
    // A system-wide reindex changes nothing more and also completes.
    let all = send("POST", &format!("{base}/$reindex"), &[], None);
    assert_eq!(all.status, 202);
    wait_for(all.header("content-location").unwrap());
    assert_eq!(ids(&base, "Patient?birth-place=tromso").len(), 2);

    // Another tenant has its own parameters.
    let other = crate::add_tenant(&server, "t2");
    assert_eq!(strict(&format!("{other}/Patient?birth-place=x")), 400);
    // A job is only visible to its own tenant.
    let foreign = job.replace("/fhir/t1/", "/fhir/t2/");
    assert_eq!(send("GET", &foreign, &[], None).status, 404);

    // Definitions Fjord cannot use are refused with what is wrong.
    for (change, expected) in [
        (json!({"expression": "Patient.extension(("}), "birth-place"),
        (json!({"type": "size"}), "size"),
        (json!({"base": ["Nonsense"]}), "Nonsense"),
    ] {
        let mut broken = birth_place_parameter();
        for (key, value) in change.as_object().unwrap() {
            broken[key] = value.clone();
        }
        let reply = send(
            "PUT",
            &format!("{base}/SearchParameter/birth-place"),
            &[JSON],
            Some(&broken.to_string()),
        );
        assert_eq!(reply.status, 422, "{change}: {}", reply.body);
        assert!(reply.body.contains(expected), "{change}: {}", reply.body);
    }
    // Deleting it makes the parameter unknown again.
    let deleted = send(
        "DELETE",
        &format!("{base}/SearchParameter/birth-place"),
        &[],
        None,
    );
    assert!(matches!(deleted.status, 200 | 204), "{}", deleted.body);
    assert_eq!(strict(&query), 400);
}
