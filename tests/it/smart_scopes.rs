//! Conditional scopes beyond searches and reads:
//! - the history of a type or of the system: the versions of the resources the scopes allow as
//!   they are now, each version judged by its own content, so a measurement that moved from
//!   another patient shows only from the move on; paging keeps to it;
//! - refusals name only what the caller may read.

use serde_json::Value;

use crate::smart::{load, observation, Smart, VITAL};

/// `Type/id/version` of every entry of each page, following `next` links with `token`.
fn versions(smart: &Smart, token: &str, path: &str) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut pages = 0;
    let mut reply = smart.call(token, "GET", path, None);
    loop {
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(!reply.body.contains("only-b"), "{path}: {}", reply.body);
        pages += 1;
        let page = reply.json();
        for entry in page["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            found.push(format!(
                "{}/{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap(),
                resource["meta"]["versionId"].as_str().unwrap()
            ));
        }
        let next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str().map(str::to_owned));
        let Some(next) = next else {
            return (found, pages);
        };
        reply = fjord_tests::send(
            "GET",
            &next,
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
    }
}

#[test]
fn conditional_scopes_see_the_history_of_what_they_allow() {
    let smart = Smart::start("smart-history", &[]);
    load(&smart);
    let system = smart.token("t1", "system/*.cruds", None);
    // A measurement filed under b, then moved to a and corrected.
    for (patient, code) in [("b", "only-b"), ("a", "8867-4"), ("a", "8867-4")] {
        let mut moved = observation("moved", patient, VITAL, code);
        moved["valueQuantity"]["value"] = Value::from(if patient == "b" { 1 } else { 2 });
        let reply = smart.call(&system, "PUT", "/Observation/moved", Some(&moved));
        assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
    }

    let a = smart.token("t1", "patient/*.rs", Some("a"));
    let (observations, _) = versions(&smart, &a, "/Observation/_history");
    assert_eq!(
        observations,
        [
            "Observation/moved/3",
            "Observation/moved/2",
            "Observation/a-lab/1",
            "Observation/a-vital/1"
        ],
        "newest first, b's version of the moved measurement left out"
    );
    let (paged, pages) = versions(&smart, &a, "/Observation/_history?_count=1");
    assert_eq!(paged, observations);
    assert!(pages >= 4, "one version a page: {pages}");
    let (everything, _) = versions(&smart, &a, "/_history");
    assert_eq!(
        everything,
        [
            "Observation/moved/3",
            "Observation/moved/2",
            "Observation/a-lab/1",
            "Observation/a-vital/1",
            "Patient/a/1"
        ]
    );

    // A granular scope: its query judges each version.
    let heart_rates = smart.token("t1", "user/Observation.rs?code=8867-4", None);
    let (found, _) = versions(&smart, &heart_rates, "/Observation/_history");
    assert_eq!(
        found,
        [
            "Observation/moved/3",
            "Observation/moved/2",
            "Observation/a-vital/1"
        ]
    );
    let (everything, _) = versions(&smart, &heart_rates, "/_history");
    assert_eq!(
        everything, found,
        "the system's history: the granted type only"
    );
    assert_eq!(
        smart
            .call(&heart_rates, "GET", "/Patient/_history", None)
            .status,
        403
    );
    // Without conditions, the whole history, b's version included.
    let unconditional = smart.call(&system, "GET", "/Observation/moved/_history", None);
    assert_eq!(unconditional.json()["entry"].as_array().unwrap().len(), 3);
}

#[test]
fn a_refused_delete_names_only_the_referrers_the_caller_may_read() {
    let smart = Smart::start("smart-refusals", &[]);
    load(&smart);
    let system = smart.token("t1", "system/*.cruds", None);
    // b's measurement derived from a's, and a's own summary of it.
    for (id, patient) in [("b-derived", "b"), ("a-derived", "a")] {
        let mut derived = observation(id, patient, VITAL, "8867-4");
        derived["derivedFrom"] = serde_json::json!([{"reference": "Observation/a-vital"}]);
        let reply = smart.call(
            &system,
            "PUT",
            &format!("/Observation/{id}"),
            Some(&derived),
        );
        assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
    }
    let a = smart.token("t1", "patient/*.cruds", Some("a"));
    let refused = smart.call(&a, "DELETE", "/Observation/a-vital", None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("Observation/a-derived"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("b-derived"), "{}", refused.body);
    assert!(refused.body.contains("may not read"), "{}", refused.body);
    let told = smart.call(&system, "DELETE", "/Observation/a-vital", None);
    assert!(told.body.contains("Observation/b-derived"), "{}", told.body);
}

#[test]
fn writes_under_a_granular_date_or_string_scope_are_decided_in_memory() {
    let smart = Smart::start("smart-granular-writes", &[]);
    load(&smart);
    let recent = smart.token("t1", "user/Observation.cru?date=ge2020-01-01", None);
    let measured = |id: &str, when: &str| {
        let mut o = observation(id, "a", VITAL, "8867-4");
        o["effectiveDateTime"] = Value::from(when);
        o
    };
    let put = |token: &str, resource: &Value| {
        let path = format!("/Observation/{}", resource["id"].as_str().unwrap());
        smart.call(token, "PUT", &path, Some(resource)).status
    };
    assert_eq!(put(&recent, &measured("new", "2024-03-01T08:00:00Z")), 201);
    assert_eq!(put(&recent, &measured("old", "2010-03-01T08:00:00Z")), 403);
    // Moving a granted one out of the grant is refused too.
    assert_eq!(put(&recent, &measured("new", "2010-03-01T08:00:00Z")), 403);
    let named = smart.token("t1", "user/Patient.cru?family=nord", None);
    let patient = |id: &str, family: &str| serde_json::json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
    let put_patient = |resource: &Value| {
        let path = format!("/Patient/{}", resource["id"].as_str().unwrap());
        smart.call(&named, "PUT", &path, Some(resource)).status
    };
    assert_eq!(put_patient(&patient("n1", "Nordmann")), 201);
    assert_eq!(put_patient(&patient("n2", "Hansen")), 403);
}
