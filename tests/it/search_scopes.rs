//! Search beyond one type's own parameters: chaining, `_has`, system and compartment searches,
//! `_include`/`_revinclude`, `_summary` and `_elements`, on the fixture of `searching` plus the
//! resources these need.

use std::collections::BTreeSet;

use fjord_tests::send;
use serde_json::{json, Value};

use crate::searching::{assert_finds, capability_of, fixture, get_json, ids, put};
use crate::server_with_tenant;

/// The fixture with an organisation managing p1 and p2, a practitioner who measured o4, and a
/// provenance of o1.
fn linked_fixture(base: &str) {
    fixture(base);
    put(
        base,
        &json!({"resourceType": "Organization", "id": "org1", "name": "Helse Nord",
                "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "983974899"}]}),
    );
    put(
        base,
        &json!({"resourceType": "Organization", "id": "org2", "name": "Helse Vest",
                "partOf": {"reference": "Organization/org1"}}),
    );
    for (id, organization) in [("p1", "org1"), ("p2", "org2")] {
        let reply = send("GET", &format!("{base}/Patient/{id}"), &[], None);
        let mut patient = reply.json();
        patient["managingOrganization"] =
            json!({"reference": format!("Organization/{organization}")});
        put(base, &patient);
    }
    put(
        base,
        &json!({"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Lege"}]}),
    );
    let mut o4 = send("GET", &format!("{base}/Observation/o4"), &[], None).json();
    o4["performer"] = json!([{"reference": "Practitioner/pr1"}]);
    put(base, &o4);
    put(
        base,
        &json!({"resourceType": "Provenance", "id": "prov1",
                "target": [{"reference": "Observation/o1"}],
                "recorded": "2026-11-01T08:00:00Z",
                "agent": [{"who": {"reference": "Practitioner/pr1"}}]}),
    );
}

fn get(base: &str, query: &str) -> Value {
    get_json(&format!("{base}/{query}"))
}

/// `(mode, Type/id)` of every entry of one page.
fn entries(page: &Value) -> BTreeSet<(String, String)> {
    page["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                e["search"]["mode"].as_str().unwrap().to_owned(),
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap_or("")
                ),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(m, r)| (m.to_string(), r.to_string()))
        .collect()
}

#[test]
fn chains_and_reverse_chains() {
    let (_server, base) = server_with_tenant();
    linked_fixture(&base);
    assert_finds(
        &base,
        &[
            ("Observation?subject.name=odegard", &["o1", "o2"]),
            ("Observation?subject:Patient.gender=male", &["o3", "o4"]),
            ("Observation?patient.birthdate=lt1990&code=8867-4", &["o4"]),
            (
                "Observation?subject.identifier=urn:oid:2.16.578.1.12.4.1.4.1|fnr-p3",
                &["o5", "o6"],
            ),
            // Two levels, then three (org2 is part of org1).
            (
                "Observation?subject.organization.name=helse",
                &["o1", "o2", "o3", "o4"],
            ),
            (
                "Observation?subject.organization.name=helse nord",
                &["o1", "o2"],
            ),
            (
                "Observation?subject.organization.partof.identifier=983974899",
                &["o3", "o4"],
            ),
            ("Observation?performer.family=lege", &["o4"]),
            ("Observation?subject.name=nobody", &[]),
            // OR inside the chained parameter; AND across parameters.
            (
                "Observation?subject.gender=male,other&code=29463-7",
                &["o3"],
            ),
            // Reverse chains, nested, and combined with chains.
            (
                "Patient?_has:Observation:subject:code=8867-4",
                &["p2", "p3"],
            ),
            (
                "Patient?_has:Observation:patient:value-quantity=gt100||/min",
                &["p3"],
            ),
            ("Patient?_has:Observation:subject:code=1111-1", &[]),
            (
                "Patient?_has:Observation:subject:_has:Provenance:target:agent=pr1",
                &["p1"],
            ),
            (
                "Organization?_has:Patient:organization:_has:Observation:subject:code=8867-4",
                &["org2"],
            ),
            (
                "Practitioner?_has:Observation:performer:subject.gender=male",
                &["pr1"],
            ),
            (
                "Patient?_has:Observation:subject:code:not=29463-7",
                &["p2", "p3"],
            ),
        ],
    );
}

#[test]
fn system_and_compartment_searches() {
    let (_server, base) = server_with_tenant();
    linked_fixture(&base);
    assert_finds(
        &base,
        &[
            ("?_id=p1,o1,org1", &["p1", "o1", "org1"]),
            (
                "?_type=Patient,Organization&_id=p1,o1,org1",
                &["p1", "org1"],
            ),
            ("?_type=Practitioner,Organization", &["pr1", "org1", "org2"]),
            ("?_type=Patient,Practitioner&name=lege", &["pr1"]),
            ("?_type=Patient,Practitioner&name:missing=true", &["p4"]),
            // The compartment of p1: its observations, the provenance does not point at p1.
            ("Patient/p1/Observation", &["o1", "o2"]),
            (
                "Patient/p1/Observation?code=29463-7&date=2026-11-02",
                &["o2"],
            ),
            ("Patient/p2/Observation?_sort=-date", &["o4", "o3"]),
            ("Patient/p1/*", &["p1", "o1", "o2"]),
            ("Practitioner/pr1/*", &["pr1", "o4", "prov1"]),
            ("Patient/nobody/Observation", &[]),
        ],
    );
    let sorted = ids(&base, "?_type=Patient,Observation&_sort=_id&_count=2");
    assert_eq!(sorted.len(), 10);
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "{sorted:?}");
    let page = get(&base, "Patient/p2/Observation?_count=1");
    let next = page["link"][1]["url"].as_str().unwrap();
    assert!(next.contains("/Patient/p2/Observation?"), "{next}");
    for (query, status) in [
        ("Patient/p1/Questionnaire", 400),
        ("?_type=Nonsense", 400),
        ("?_type=Patient,Observation&code=x", 200),
        ("Nonsense/p1/Observation", 404),
    ] {
        let reply = send("GET", &format!("{base}/{query}"), &[], None);
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
    }
    let strict = send(
        "GET",
        &format!("{base}/?_type=Patient,Observation&code=x"),
        &[("Prefer", "handling=strict")],
        None,
    );
    assert_eq!(strict.status, 400, "{}", strict.body);
    let posted = send(
        "POST",
        &format!("{base}/Patient/p1/Observation/_search"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("date=2026-11-01"),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(
        entries(&posted.json()),
        pairs(&[("match", "Observation/o1")])
    );
}

#[test]
fn includes_and_reverse_includes() {
    let (_server, base) = server_with_tenant();
    linked_fixture(&base);
    let page = get(&base, "Observation?_id=o1,o4&_include=Observation:subject");
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Observation/o1"),
            ("match", "Observation/o4"),
            ("include", "Patient/p1"),
            ("include", "Patient/p2"),
        ])
    );
    let page = get(&base, "Observation?_id=o4&_include=*");
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Observation/o4"),
            ("include", "Patient/p2"),
            ("include", "Practitioner/pr1"),
        ])
    );
    let typed = get(
        &base,
        "Observation?_id=o4&_include=Observation:performer:Organization",
    );
    assert_eq!(entries(&typed), pairs(&[("match", "Observation/o4")]));
    // A resource both matched and included appears once, as a match.
    let page = get(
        &base,
        "Patient?_id=p1&_revinclude=Observation:subject&_revinclude=Provenance:target",
    );
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Patient/p1"),
            ("include", "Observation/o1"),
            ("include", "Observation/o2"),
        ])
    );
    // :iterate follows from included resources: p1 ← o1, o2 ← prov1.
    let page = get(
        &base,
        "Patient?_id=p1&_revinclude=Observation:subject&_revinclude:iterate=Provenance:target",
    );
    assert!(entries(&page).contains(&("include".into(), "Provenance/prov1".into())));
    let page = get(
        &base,
        "Observation?_id=o3&_include=Observation:subject&_include:iterate=Patient:organization\
         &_include:iterate=Organization:partof",
    );
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Observation/o3"),
            ("include", "Patient/p2"),
            ("include", "Organization/org2"),
            ("include", "Organization/org1"),
        ])
    );
    // Paging counts matches only; includes belong to the page of their match.
    let page = get(
        &base,
        "Observation?subject=p1&_include=Observation:subject&_count=1&_total=accurate",
    );
    assert_eq!(page["total"], 2);
    assert_eq!(page["entry"].as_array().unwrap().len(), 2);
    let observation = capability_of(&base, "Observation");
    assert!(observation["searchInclude"]
        .as_array()
        .unwrap()
        .contains(&json!("Observation:subject")));
    assert!(observation["searchRevInclude"]
        .as_array()
        .unwrap()
        .contains(&json!("Provenance:target")));
}

#[test]
fn summary_and_elements() {
    let (_server, base) = server_with_tenant();
    linked_fixture(&base);
    let count = get(&base, "Observation?code=29463-7&_summary=count");
    assert_eq!(count["total"], 4);
    assert!(count.get("entry").is_none());

    let keys = |resource: &Value| -> Vec<String> {
        resource.as_object().unwrap().keys().cloned().collect()
    };
    let page = get(&base, "Observation?_id=o1&_summary=true");
    let resource = &page["entry"][0]["resource"];
    assert_eq!(
        keys(resource),
        [
            "resourceType",
            "id",
            "meta",
            "status",
            "code",
            "subject",
            "effectiveDateTime",
            "valueQuantity"
        ]
    );
    let tags = resource["meta"]["tag"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["code"] == "SUBSETTED"));
    assert!(resource["meta"]["versionId"].is_string());

    let page = get(&base, "Observation?_id=o1&_elements=value,subject");
    assert_eq!(
        keys(&page["entry"][0]["resource"]),
        ["resourceType", "id", "meta", "subject", "valueQuantity"]
    );
    let page = get(&base, "Organization?_id=org1&_summary=text");
    assert_eq!(
        keys(&page["entry"][0]["resource"]),
        ["resourceType", "id", "meta"]
    );
    let page = get(&base, "Organization?_id=org1&_summary=data");
    assert_eq!(page["entry"][0]["resource"]["name"], "Helse Nord");
    let page = get(&base, "Organization?_id=org1&_summary=false");
    assert!(page["entry"][0]["resource"]["meta"].get("tag").is_none());
    // Bundles are built from the stored text; in XML too.
    let xml = send(
        "GET",
        &format!("{base}/Observation?_id=o1&_include=Observation:subject&_format=xml"),
        &[],
        None,
    );
    assert_eq!(xml.status, 200, "{}", xml.body);
    assert!(xml.body.contains("<Bundle") && xml.body.contains("<Observation"));
    assert!(xml.body.contains("<Patient"));
    // The self link keeps them.
    let page = get(&base, "Observation?_id=o1&_elements=status");
    assert!(page["link"][0]["url"]
        .as_str()
        .unwrap()
        .contains("_elements=status"));
}

#[test]
fn everything_of_a_patient() {
    let (_server, base) = server_with_tenant();
    linked_fixture(&base);
    let page = get(&base, "Patient/p1/$everything");
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Patient/p1"),
            ("match", "Observation/o1"),
            ("match", "Observation/o2"),
            ("include", "Organization/org1"),
        ])
    );
    // Paged: every member once over the pages (what they refer to comes with them).
    let mut members = ids(&base, "Patient/p2/$everything?_count=1");
    members.sort();
    assert_eq!(members, ["o3", "o4", "p2"]);
    let page = get(
        &base,
        "Patient/p1/$everything?_type=Observation&_since=2000-01-01",
    );
    assert_eq!(
        entries(&page),
        pairs(&[
            ("match", "Observation/o1"),
            ("match", "Observation/o2"),
            ("include", "Patient/p1"),
        ])
    );
    let missing = send(
        "GET",
        &format!("{base}/Patient/nobody/$everything"),
        &[],
        None,
    );
    assert_eq!(missing.status, 404);
    let patient = capability_of(&base, "Patient");
    let operations = patient["operation"].as_array().unwrap();
    assert!(operations.iter().any(|o| o["name"] == "everything"));
    assert!(operations.iter().any(|o| o["name"] == "reindex"));
}
