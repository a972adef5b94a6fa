//! Tenant settings and what they switch: referential integrity (on by default), mandatory
//! `If-Match`, cascading deletes and conditional deletes of many; through the REST API.

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::searching::ids;
use crate::{a_patient, all_at_once, server_with_tenant};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

fn settings_url(base: &str) -> String {
    let (origin, tenant) = base.rsplit_once("/fhir/").expect("a tenant base URL");
    format!("{origin}/admin/tenants/{tenant}/settings")
}

fn set_settings(base: &str, settings: Value) -> Reply {
    send(
        "PUT",
        &settings_url(base),
        &[("Content-Type", "application/json")],
        Some(&settings.to_string()),
    )
}

fn observation_of(patient: &str) -> String {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
        "subject": { "reference": format!("Patient/{patient}") },
    })
    .to_string()
}

fn post(base: &str, path: &str, body: &str) -> Reply {
    send("POST", &format!("{base}/{path}"), &[JSON], Some(body))
}

/// A CapabilityStatement element of the Patient resource, as the tenant's settings make it.
fn patient_capability(base: &str, element: &str) -> Value {
    let statement = send("GET", &format!("{base}/metadata"), &[], None).json();
    let resources = statement["rest"][0]["resource"].as_array().unwrap().clone();
    let patient = resources
        .into_iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient is served");
    patient[element].clone()
}

fn created_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["id"].as_str().expect("an id").to_owned()
}

/// The first issue's diagnostics and expression of an OperationOutcome.
fn issue(reply: &Reply) -> (String, Value) {
    let outcome = reply.json();
    assert_eq!(
        outcome["resourceType"], "OperationOutcome",
        "{}",
        reply.body
    );
    let issue = &outcome["issue"][0];
    (
        issue["diagnostics"].as_str().unwrap_or_default().to_owned(),
        issue["expression"].clone(),
    )
}

#[test]
fn settings_are_shown_replaced_checked_and_take_effect_at_once() {
    let (_server, base) = server_with_tenant();
    let url = settings_url(&base);
    let defaults = send("GET", &url, &[], None);
    assert_eq!(defaults.status, 200, "{}", defaults.body);
    assert_eq!(
        defaults.json(),
        json!({
            "requireIfMatch": false,
            "referentialIntegrity": true,
            "cascadeDelete": false,
            "conditionalDeleteMultiple": false,
            "validation": "off",
            "allowTestData": false,
            "requiredProfiles": {},
            "unknownProfile": "warning",
            "trustedIssuers": [],
            "sharing": [],
            "limits": {},
        })
    );
    for bad in [
        json!({ "referentialIntegrity": false, "typo": true }),
        json!({ "requireIfMatch": "yes" }),
        json!({ "validation": "sometimes" }),
        json!(["requireIfMatch"]),
    ] {
        let refused = set_settings(&base, bad.clone());
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        assert_eq!(refused.json()["resourceType"], "OperationOutcome");
    }
    // A refused change changes nothing.
    assert_eq!(send("GET", &url, &[], None).json(), defaults.json());

    // Settings absent by default are settings too.
    let external = set_settings(
        &base,
        json!({ "authorizationServer": { "tokenEndpoint": "https://idp.hf.no/token" } }),
    );
    assert_eq!(external.status, 200, "{}", external.body);
    let discovery = send(
        "GET",
        &format!("{base}/.well-known/smart-configuration"),
        &[],
        None,
    );
    assert_eq!(
        discovery.json()["token_endpoint"],
        "https://idp.hf.no/token",
        "{}",
        discovery.body
    );

    // Absent keys take their defaults; the change is live for the next request.
    let changed = set_settings(&base, json!({ "requireIfMatch": true }));
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.json()["requireIfMatch"], true);
    assert_eq!(changed.json()["referentialIntegrity"], true);
    let tenant = send("GET", url.trim_end_matches("/settings"), &[], None);
    assert_eq!(tenant.json()["settings"]["requireIfMatch"], true);
    a_patient(&base, "p1");
    let unversioned = send(
        "PUT",
        &format!("{base}/Patient/p1"),
        &[JSON],
        Some(r#"{"resourceType":"Patient","id":"p1","active":true}"#),
    );
    assert_eq!(unversioned.status, 400, "{}", unversioned.body);

    let unknown = send(
        "GET",
        &url.replace("/tenants/t1/", "/tenants/nowhere/"),
        &[],
        None,
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[test]
fn a_tenant_can_make_if_match_mandatory_for_updates_and_patches() {
    let (_server, base) = server_with_tenant();
    assert_eq!(
        set_settings(&base, json!({ "requireIfMatch": true })).status,
        200
    );
    let url = format!("{base}/Patient/p1");
    let body = |active: bool| json!({ "resourceType": "Patient", "id": "p1", "active": active });
    // Creates name no version: allowed, by PUT and by POST.
    let created = send("PUT", &url, &[JSON], Some(&body(true).to_string()));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        post(&base, "Patient", r#"{"resourceType":"Patient"}"#).status,
        201
    );

    let missing = send("PUT", &url, &[JSON], Some(&body(false).to_string()));
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(issue(&missing).0.contains("If-Match"), "{}", missing.body);
    let stale = send(
        "PUT",
        &url,
        &[JSON, ("If-Match", "W/\"7\"")],
        Some(&body(false).to_string()),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    let current = send(
        "PUT",
        &url,
        &[JSON, ("If-Match", "W/\"1\"")],
        Some(&body(false).to_string()),
    );
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.json()["meta"]["versionId"], "2");

    let patch = r#"[{"op":"replace","path":"/active","value":true}]"#;
    let patch_type = ("Content-Type", "application/json-patch+json");
    let unversioned_patch = send("PATCH", &url, &[patch_type], Some(patch));
    assert_eq!(unversioned_patch.status, 400, "{}", unversioned_patch.body);
    let versioned_patch = send(
        "PATCH",
        &url,
        &[patch_type, ("If-Match", "W/\"2\"")],
        Some(patch),
    );
    assert_eq!(versioned_patch.status, 200, "{}", versioned_patch.body);
    // Neither refused request changed anything.
    assert_eq!(
        send("GET", &url, &[], None).json()["meta"]["versionId"],
        "3"
    );
}

#[test]
fn a_write_whose_references_do_not_resolve_is_refused_naming_the_path() {
    let (_server, base) = server_with_tenant();
    let dangling = post(&base, "Observation", &observation_of("nobody"));
    assert_eq!(dangling.status, 422, "{}", dangling.body);
    let (diagnostics, expression) = issue(&dangling);
    assert!(diagnostics.contains("Patient/nobody"), "{diagnostics}");
    assert_eq!(expression, json!(["Observation.subject"]));
    assert!(ids(&base, "Observation").is_empty());

    // In a list, the path names the item; versioned references count as their resource.
    a_patient(&base, "p1");
    let observation = created_id(&post(&base, "Observation", &observation_of("p1")));
    let mut body: Value = serde_json::from_str(&observation_of("p1")).unwrap();
    body["id"] = json!(observation);
    body["performer"] = json!([
        { "reference": "Patient/p1/_history/1" },
        { "reference": "Practitioner/absent" },
    ]);
    let update = send(
        "PUT",
        &format!("{base}/Observation/{observation}"),
        &[JSON],
        Some(&body.to_string()),
    );
    assert_eq!(update.status, 422, "{}", update.body);
    assert_eq!(issue(&update).1, json!(["Observation.performer[1]"]));

    // What is not a local reference is not checked: contained, absolute, logical.
    body["contained"] = json!([{ "resourceType": "Practitioner", "id": "c" }]);
    body["performer"] = json!([
        { "reference": "#c" },
        { "reference": "https://elsewhere.example/fhir/Practitioner/x" },
        { "identifier": { "system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9144889" } },
    ]);
    let update = send(
        "PUT",
        &format!("{base}/Observation/{observation}"),
        &[JSON],
        Some(&body.to_string()),
    );
    assert_eq!(update.status, 200, "{}", update.body);

    // A deleted resource is not there to refer to.
    let other = created_id(&post(&base, "Patient", r#"{"resourceType":"Patient"}"#));
    assert_eq!(
        send("DELETE", &format!("{base}/Patient/{other}"), &[], None).status,
        200
    );
    assert_eq!(
        post(&base, "Observation", &observation_of(&other)).status,
        422
    );

    // Off, the tenant stores what it is sent.
    let enforced = json!(["literal", "logical", "local", "enforced"]);
    assert_eq!(patient_capability(&base, "referencePolicy"), enforced);
    assert_eq!(
        set_settings(&base, json!({ "referentialIntegrity": false })).status,
        200
    );
    assert_eq!(
        patient_capability(&base, "referencePolicy"),
        json!(["literal", "logical", "local"])
    );
    assert_eq!(
        post(&base, "Observation", &observation_of("nobody")).status,
        201
    );
}

#[test]
fn a_transaction_checks_references_after_all_its_entries() {
    let (_server, base) = server_with_tenant();
    // The Observation comes first and refers to the Patient created after it: allowed.
    let forward = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b0c6a52-1111-4c55-9a0e-000000000001",
                "resource": {
                    "resourceType": "Observation", "status": "final",
                    "code": { "text": "pulse" },
                    "subject": { "reference": "urn:uuid:5b0c6a52-1111-4c55-9a0e-000000000002" }
                },
                "request": { "method": "POST", "url": "Observation" }
            },
            {
                "fullUrl": "urn:uuid:5b0c6a52-1111-4c55-9a0e-000000000002",
                "resource": { "resourceType": "Patient" },
                "request": { "method": "POST", "url": "Patient" }
            }
        ]
    });
    let done = send("POST", &base, &[JSON], Some(&forward.to_string()));
    assert_eq!(done.status, 200, "{}", done.body);

    // A dangling reference in the second entry: nothing of the bundle is stored.
    let broken = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": { "resourceType": "Patient", "id": "kept-out" },
                "request": { "method": "PUT", "url": "Patient/kept-out" }
            },
            {
                "resource": {
                    "resourceType": "Observation", "status": "final",
                    "code": { "text": "pulse" },
                    "subject": { "reference": "Patient/nobody" }
                },
                "request": { "method": "POST", "url": "Observation" }
            }
        ]
    });
    let refused = send("POST", &base, &[JSON], Some(&broken.to_string()));
    assert_eq!(refused.status, 422, "{}", refused.body);
    let (diagnostics, _) = issue(&refused);
    assert!(diagnostics.contains("entry 1"), "{diagnostics}");
    assert!(diagnostics.contains("Patient/nobody"), "{diagnostics}");
    assert_eq!(
        send("GET", &format!("{base}/Patient/kept-out"), &[], None).status,
        404
    );
    assert_eq!(ids(&base, "Observation").len(), 1);
}

#[test]
fn a_referenced_resource_is_deleted_only_with_its_referrers_when_cascading_is_allowed() {
    let (_server, base) = server_with_tenant();
    a_patient(&base, "p1");
    let mut observations: Vec<String> = (0..2)
        .map(|_| created_id(&post(&base, "Observation", &observation_of("p1"))))
        .collect();
    observations.sort();
    let patient = format!("{base}/Patient/p1");

    let refused = send("DELETE", &patient, &[], None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    let (diagnostics, _) = issue(&refused);
    for id in &observations {
        assert!(
            diagnostics.contains(&format!("Observation/{id}")),
            "{diagnostics}"
        );
    }
    assert_eq!(send("GET", &patient, &[], None).status, 200);

    // Cascading is the tenant's choice.
    let cascade = format!("{patient}?_cascade=delete");
    assert_eq!(send("DELETE", &cascade, &[], None).status, 400);
    assert_eq!(
        send("DELETE", &format!("{patient}?_cascade=all"), &[], None).status,
        400
    );
    assert_eq!(
        set_settings(&base, json!({ "cascadeDelete": true })).status,
        200
    );
    // Without asking, still refused.
    assert_eq!(send("DELETE", &patient, &[], None).status, 409);
    let cascaded = send("DELETE", &cascade, &[], None);
    assert_eq!(cascaded.status, 200, "{}", cascaded.body);
    assert_eq!(send("GET", &patient, &[], None).status, 410);
    for id in &observations {
        let read = send("GET", &format!("{base}/Observation/{id}"), &[], None);
        assert_eq!(read.status, 410, "{}", read.body);
    }

    // Once its referrers are gone, a resource deletes plainly.
    a_patient(&base, "p2");
    let observation = created_id(&post(&base, "Observation", &observation_of("p2")));
    assert_eq!(
        send("DELETE", &format!("{base}/Patient/p2"), &[], None).status,
        409
    );
    assert_eq!(
        send(
            "DELETE",
            &format!("{base}/Observation/{observation}"),
            &[],
            None
        )
        .status,
        200
    );
    assert_eq!(
        send("DELETE", &format!("{base}/Patient/p2"), &[], None).status,
        200
    );
}

#[test]
fn a_delete_racing_a_write_that_refers_to_it_never_leaves_a_dangling_reference() {
    let (_server, base) = server_with_tenant();
    for round in 0..12 {
        let patient = format!("race-{round}");
        a_patient(&base, &patient);
        let turn = std::sync::atomic::AtomicUsize::new(0);
        let replies = all_at_once(2, || {
            if turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                (
                    "delete",
                    send("DELETE", &format!("{base}/Patient/{patient}"), &[], None),
                )
            } else {
                (
                    "create",
                    post(&base, "Observation", &observation_of(&patient)),
                )
            }
        });
        let status = |kind: &str| {
            replies
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, r)| r.status)
                .expect("both ran")
        };
        let referrers = ids(&base, &format!("Observation?subject=Patient/{patient}"));
        match (status("delete"), status("create")) {
            (200, 422) => assert!(referrers.is_empty(), "round {round}"),
            (409, 201) => assert_eq!(referrers.len(), 1, "round {round}"),
            other => panic!(
                "round {round}: {other:?} {replies:?}",
                replies = replies
                    .iter()
                    .map(|(k, r)| format!("{k}: {} {}", r.status, r.body))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

#[test]
fn a_conditional_delete_of_many_matches_needs_the_tenant_setting() {
    let (_server, base) = server_with_tenant();
    for _ in 0..3 {
        created_id(&post(
            &base,
            "Patient",
            r#"{"resourceType":"Patient","identifier":[{"system":"urn:x","value":"same"}]}"#,
        ));
    }
    let url = format!("{base}/Patient?identifier=urn:x|same");
    let refused = send("DELETE", &url, &[], None);
    assert_eq!(refused.status, 412, "{}", refused.body);
    assert_eq!(ids(&base, "Patient?identifier=urn:x|same").len(), 3);
    assert_eq!(patient_capability(&base, "conditionalDelete"), "single");

    assert_eq!(
        set_settings(&base, json!({ "conditionalDeleteMultiple": true })).status,
        200
    );
    let deleted = send("DELETE", &url, &[], None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(deleted.body.contains('3'), "{}", deleted.body);
    assert_eq!(patient_capability(&base, "conditionalDelete"), "multiple");
    assert!(ids(&base, "Patient?identifier=urn:x|same").is_empty());
}
