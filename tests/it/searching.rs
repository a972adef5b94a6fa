//! Search through the REST API: each parameter type and modifier against a small fixture whose
//! answers are known, paging, strict handling, bad values, and that the index follows updates,
//! deletes and the tenant wall.

use std::collections::BTreeSet;

use fjord_tests::send;
use serde_json::{json, Value};

use crate::server_with_tenant;

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

pub(crate) fn patient(id: &str, family: &str, given: &str, gender: &str, birth: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "gender": gender, "birthDate": birth,
        "active": true,
        "name": [{"family": family, "given": [given]}],
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": format!("fnr-{id}")}],
    })
}

pub(crate) fn observation(id: &str, patient: &str, code: &str, when: &str, value: Value) -> Value {
    let mut observation = json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": "Målt verdi"},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": when,
    });
    if !value.is_null() {
        observation["valueQuantity"] = value;
    }
    observation
}

pub(crate) fn quantity(value: f64, code: &str) -> Value {
    json!({"value": value, "unit": code, "system": UCUM, "code": code})
}

pub(crate) fn put(base: &str, resource: &Value) {
    let url = format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let reply = send("PUT", &url, &[JSON], Some(&resource.to_string()));
    assert!(matches!(reply.status, 200 | 201), "{url}: {}", reply.body);
}

/// The CapabilityStatement's entry for one resource type.
pub(crate) fn capability_of(base: &str, resource_type: &str) -> Value {
    let metadata = send("GET", &format!("{base}/metadata"), &[], None).json();
    metadata["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == resource_type)
        .unwrap()
        .clone()
}

/// The ids of every match (not includes), following `next` links; fails if an id repeats.
pub(crate) fn ids(base: &str, query: &str) -> Vec<String> {
    let mut url = format!("{base}/{query}");
    let mut found = Vec::new();
    loop {
        let reply = send("GET", &url, &[], None);
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        let page = reply.json();
        assert_eq!(page["type"], "searchset");
        let entries = page["entry"].as_array().unwrap();
        for entry in entries.iter().filter(|e| e["search"]["mode"] == "match") {
            let id = entry["resource"]["id"].as_str().unwrap().to_owned();
            assert!(!found.contains(&id), "{query}: {id} repeats");
            found.push(id);
        }
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => return found,
        }
    }
}

/// Asserts that each query finds exactly its ids, in any order; a failure lists every case
/// that failed.
pub(crate) fn assert_finds<Q: AsRef<str>>(base: &str, cases: &[(Q, &[&str])]) {
    let mut failures = Vec::new();
    for (query, expected) in cases {
        let query = query.as_ref();
        let found: BTreeSet<String> = ids(base, query).into_iter().collect();
        if found != set(expected) {
            failures.push(format!("{query}: expected {expected:?}, found {found:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The names of the search parameters a type's CapabilityStatement entry lists.
pub(crate) fn search_param_names(capability: &Value) -> Vec<String> {
    capability["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// GETs `url` and asserts a 200 with a JSON body.
pub(crate) fn get_json(url: &str) -> Value {
    let reply = send("GET", url, &[], None);
    assert_eq!(reply.status, 200, "{url}: {}", reply.body);
    reply.json()
}

/// Asserts that each query is a 400 whose OperationOutcome says `wanted`.
pub(crate) fn assert_rejects<Q: AsRef<str>>(base: &str, cases: &[(Q, &str)]) {
    for (query, wanted) in cases {
        let query = query.as_ref();
        let reply = send("GET", &format!("{base}/{query}"), &[], None);
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert!(reply.body.contains(wanted), "{query}: {}", reply.body);
    }
}

pub(crate) fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn fixture(base: &str) {
    put(
        base,
        &patient("p1", "Ødegård", "Åse", "female", "1950-03-14"),
    );
    put(base, &patient("p2", "Hansen", "Ola", "male", "1980-12-01"));
    put(base, &patient("p3", "Hanssen", "Kari", "female", "2001"));
    put(
        base,
        &json!({"resourceType": "Patient", "id": "p4", "gender": "other"}),
    );
    let weight = "29463-7";
    let pulse = "8867-4";
    for (id, patient, code, when, value) in [
        (
            "o1",
            "p1",
            weight,
            "2026-11-01T08:00:00+01:00",
            quantity(72.5, "kg"),
        ),
        (
            "o2",
            "p1",
            weight,
            "2026-11-02T08:00:00+01:00",
            quantity(71000.0, "g"),
        ),
        ("o3", "p2", weight, "2026-10-15", quantity(90.0, "kg")),
        (
            "o4",
            "p2",
            pulse,
            "2026-11-01T09:30:00Z",
            quantity(64.0, "/min"),
        ),
        (
            "o5",
            "p3",
            pulse,
            "2025-01-01T00:00:00Z",
            quantity(110.0, "/min"),
        ),
        ("o6", "p3", weight, "2026-11-01", Value::Null),
    ] {
        put(base, &observation(id, patient, code, when, value));
    }
}

#[test]
fn parameter_types_prefixes_and_modifiers() {
    let (_server, base) = server_with_tenant();
    fixture(&base);
    let cases: &[(&str, &[&str])] = &[
        // Token: code, system|code, |code, system|, :not, :text, boolean, OR, AND.
        ("Observation?code=29463-7", &["o1", "o2", "o3", "o6"]),
        ("Observation?code=http://loinc.org|8867-4", &["o4", "o5"]),
        ("Observation?code=|8867-4", &[]),
        ("Observation?code=http://snomed.info/sct|8867-4", &[]),
        (
            "Observation?code=http://loinc.org|",
            &["o1", "o2", "o3", "o4", "o5", "o6"],
        ),
        ("Observation?code=8867-4,29463-7&subject=p3", &["o5", "o6"]),
        ("Observation?code:not=29463-7", &["o4", "o5"]),
        (
            "Observation?code:text=malt",
            &["o1", "o2", "o3", "o4", "o5", "o6"],
        ),
        ("Observation?code:text=blod", &[]),
        ("Observation?status=final&code=8867-4", &["o4", "o5"]),
        ("Patient?active=true", &["p1", "p2", "p3"]),
        ("Patient?gender=female", &["p1", "p3"]),
        (
            "Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|fnr-p2",
            &["p2"],
        ),
        ("Patient?identifier=fnr-p3", &["p3"]),
        // Reference: id, Type/id, :Type, :missing.
        ("Observation?subject=Patient/p1", &["o1", "o2"]),
        ("Observation?subject=p2", &["o3", "o4"]),
        ("Observation?patient=p2", &["o3", "o4"]),
        ("Observation?subject:Patient=p3", &["o5", "o6"]),
        ("Observation?subject:Group=p3", &[]),
        (
            "Observation?encounter:missing=true&subject=p1",
            &["o1", "o2"],
        ),
        (
            "Observation?subject:missing=false&code=8867-4",
            &["o4", "o5"],
        ),
        // String: prefix without case and accents, :exact, :contains.
        ("Patient?family=odegard", &["p1"]),
        ("Patient?family=ØDE", &["p1"]),
        ("Patient?family=ødegård", &["p1"]),
        ("Patient?family=hans", &["p2", "p3"]),
        ("Patient?family:exact=Hansen", &["p2"]),
        ("Patient?family:exact=hansen", &[]),
        ("Patient?family:contains=sse", &["p3"]),
        ("Patient?name=ase", &["p1"]),
        ("Patient?given=ola,kari", &["p2", "p3"]),
        ("Patient?family:missing=true", &["p4"]),
        // Date: precision ranges and every prefix.
        ("Patient?birthdate=1950", &["p1"]),
        ("Patient?birthdate=1950-03", &["p1"]),
        ("Patient?birthdate=2001-06-01", &[]),
        ("Patient?birthdate=ge2001-06-01", &["p3"]),
        ("Patient?birthdate=lt1981", &["p1", "p2"]),
        ("Patient?birthdate=le1980-12-01", &["p1", "p2"]),
        ("Patient?birthdate=gt1980-12-01", &["p3"]),
        ("Patient?birthdate=sa1980", &["p3"]),
        ("Patient?birthdate=eb1980", &["p1"]),
        ("Patient?birthdate=ne1950-03-14", &["p2", "p3"]),
        ("Observation?date=2026-11-01", &["o1", "o4", "o6"]),
        ("Observation?date=2026-11-01T07:00:00Z", &["o1"]),
        (
            "Observation?date=ge2026-11-01&date=lt2026-11-02",
            &["o1", "o4", "o6"],
        ),
        (
            "Observation?date=gt2026-11-01T07:00:00Z&code=29463-7",
            &["o2", "o6"],
        ),
        ("Observation?date=2026-11", &["o1", "o2", "o4", "o6"]),
        // Quantity: canonical units, unit codes, no unit, prefixes.
        (
            "Observation?value-quantity=72.5|http://unitsofmeasure.org|kg",
            &["o1"],
        ),
        (
            "Observation?value-quantity=71|http://unitsofmeasure.org|kg",
            &["o2"],
        ),
        (
            "Observation?value-quantity=gt71.5|http://unitsofmeasure.org|kg",
            &["o1", "o3"],
        ),
        (
            "Observation?value-quantity=le72500|http://unitsofmeasure.org|g",
            &["o1", "o2"],
        ),
        ("Observation?value-quantity=64||/min", &["o4"]),
        ("Observation?value-quantity=ge100", &["o5", "o2"]),
        ("Observation?value-quantity=ap100||/min", &["o5"]),
        ("Observation?value-quantity:missing=true", &["o6"]),
        // Composite: token$quantity, and the union parameter combo-code.
        (
            "Observation?code-value-quantity=http://loinc.org|8867-4$gt100",
            &["o5"],
        ),
        (
            "Observation?code-value-quantity=29463-7$90|http://unitsofmeasure.org|kg",
            &["o3"],
        ),
        ("Observation?combo-code=8867-4", &["o4", "o5"]),
        // _id and _lastUpdated.
        ("Observation?_id=o1,o5", &["o1", "o5"]),
        ("Observation?_lastUpdated=gt2000-01-01&_id=o2", &["o2"]),
        ("Observation?_lastUpdated=lt2000-01-01", &[]),
        // Unknown parameters are ignored.
        ("Patient?gender=male&unknown-thing=1", &["p2"]),
    ];
    assert_finds(&base, cases);
}

#[test]
fn sorting_paging_totals_and_links() {
    let (_server, base) = server_with_tenant();
    fixture(&base);
    let cases: &[(&str, &[&str])] = &[
        // Descending by the latest instant: o6 is the whole day of 1 November.
        (
            "Observation?_sort=-date&_count=2",
            &["o2", "o6", "o4", "o1", "o3", "o5"],
        ),
        (
            "Observation?_sort=date,_id&_count=1",
            &["o5", "o3", "o6", "o1", "o4", "o2"],
        ),
        ("Patient?_sort=family&_count=3", &["p2", "p3", "p1", "p4"]),
        ("Patient?_sort=-birthdate", &["p3", "p2", "p1", "p4"]),
        (
            "Observation?code=29463-7&_sort=-_id",
            &["o6", "o3", "o2", "o1"],
        ),
        // Tokens by code, references as Type/id; a multi-valued parameter by its smallest value
        // ascending and its largest descending; without a value last either way.
        (
            "Observation?_sort=code,_id&_count=4",
            &["o1", "o2", "o3", "o6", "o4", "o5"],
        ),
        (
            "Observation?_sort=-code,-_id&_count=4",
            &["o5", "o4", "o6", "o3", "o2", "o1"],
        ),
        (
            "Observation?_sort=-subject,_id",
            &["o5", "o6", "o3", "o4", "o1", "o2"],
        ),
        ("Patient?_sort=gender,_id", &["p1", "p3", "p2", "p4"]),
        ("Patient?_sort=-identifier,_id", &["p3", "p2", "p1", "p4"]),
        // Quantities sort in their canonical unit (71000 g before 72.5 kg); no value sorts last.
        (
            "Observation?code=29463-7&_sort=value-quantity&_count=1",
            &["o2", "o1", "o3", "o6"],
        ),
        (
            "Observation?code=29463-7&_sort=-value-quantity,_id",
            &["o3", "o1", "o2", "o6"],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(ids(&base, query), *expected, "{query}");
    }

    let page = send(
        "GET",
        &format!("{base}/Observation?code=29463-7&_count=2&_total=accurate&bogus=1"),
        &[],
        None,
    )
    .json();
    assert_eq!(page["total"], 4);
    let links = page["link"].as_array().unwrap();
    assert_eq!(
        links[0]["url"],
        format!("{base}/Observation?code=29463-7&_count=2&_total=accurate")
    );
    let next = links[1]["url"].as_str().unwrap();
    // The next link carries a token, not the sort values of the last row.
    let token = next.split("_cursor=").nth(1).unwrap();
    assert!(
        token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{next}"
    );
    // The second page names itself by its token and links back to the first.
    let second = send("GET", next, &[], None).json();
    let relation = crate::paging::link;
    assert_eq!(relation(&second, "self").as_deref(), Some(next));
    assert_eq!(
        relation(&second, "first"),
        Some(format!(
            "{base}/Observation?code=29463-7&_count=2&_total=accurate"
        ))
    );
    assert_eq!(relation(&second, "next"), None);
    assert_eq!(page["entry"][0]["search"]["mode"], "match");
    assert_eq!(
        page["entry"][0]["fullUrl"],
        format!(
            "{base}/Observation/{}",
            page["entry"][0]["resource"]["id"].as_str().unwrap()
        )
    );

    // Keyset paging survives writes between pages: nothing repeats or goes missing.
    let first = send(
        "GET",
        &format!("{base}/Observation?_count=3&_sort=_id"),
        &[],
        None,
    )
    .json();
    put(
        &base,
        &observation("o0", "p1", "8867-4", "2026-11-03", Value::Null),
    );
    let rest = send("GET", first["link"][1]["url"].as_str().unwrap(), &[], None).json();
    let ids_of = |page: &Value| -> Vec<String> {
        page["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids_of(&first), ["o1", "o2", "o3"]);
    assert_eq!(ids_of(&rest), ["o4", "o5", "o6"]);

    // POST _search takes the parameters from the form body too.
    let posted = send(
        "POST",
        &format!("{base}/Observation/_search?status=final"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("code=8867-4&subject=p2"),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.json()["entry"][0]["resource"]["id"], "o4");
}

#[test]
fn bad_searches_are_operation_outcomes() {
    let (_server, base) = server_with_tenant();
    for query in [
        "Patient?birthdate=1950-13",
        "Observation?value-quantity=heavy",
        "Observation?code:below=x",
        "Observation?status.name=x",
        "Patient?_has:Observation:code:code=x",
        "Observation?_include=Observation:status",
        "Observation?_count=-1",
        "Observation?_sort=combo-code",
        "Observation?_cursor=nonsense",
        "Observation?encounter:missing=maybe",
        "Nonsense?x=1",
    ] {
        let reply = send("GET", &format!("{base}/{query}"), &[], None);
        assert!(
            matches!(reply.status, 400 | 404),
            "{query}: {}",
            reply.status
        );
        assert_eq!(reply.json()["resourceType"], "OperationOutcome", "{query}");
        let names_parameter = !["_cursor", "_count", "Nonsense"]
            .iter()
            .any(|s| query.contains(s));
        if names_parameter {
            let text = reply.body.to_lowercase();
            let name = query
                .split(['?', '=', ':', '.'])
                .nth(1)
                .unwrap()
                .to_lowercase();
            assert!(text.contains(&name), "{query}: {}", reply.body);
        }
    }
    let strict = send(
        "GET",
        &format!("{base}/Patient?unknown-thing=1"),
        &[("Prefer", "handling=strict")],
        None,
    );
    assert_eq!(strict.status, 400);
    assert!(strict.body.contains("unknown-thing"));
    // Searches past the bounds are refused as too costly, GET or POST, before they run.
    let ids = vec!["x"; fjord_search::MAX_ALTERNATIVES + 1].join(",");
    let includes = vec!["_include=Observation:subject"; fjord_search::MAX_INCLUDES + 1].join("&");
    let names = vec!["name=a"; fjord_search::MAX_SEARCH_PARAMETERS + 1].join("&");
    for (query, says) in [
        (format!("Patient?_id={ids}"), "_id lists 1001 values"),
        (format!("Observation?{includes}"), "21 _include"),
        (format!("Patient?{names}"), "65 parameters"),
    ] {
        let get = send("GET", &format!("{base}/{query}"), &[], None);
        let (path, form) = query.split_once('?').unwrap();
        let post = send(
            "POST",
            &format!("{base}/{path}/_search"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form),
        );
        for reply in [get, post] {
            assert_eq!(reply.status, 400, "{says}: {}", reply.body);
            let issue = &reply.json()["issue"][0];
            assert_eq!(issue["code"], "too-costly", "{says}: {}", reply.body);
            assert!(reply.body.contains(says), "{says}: {}", reply.body);
        }
    }
    let at_the_bound = vec!["x"; fjord_search::MAX_ALTERNATIVES].join(",");
    let reply = send(
        "GET",
        &format!("{base}/Patient?_id={at_the_bound}"),
        &[],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Nothing broke: the server still answers.
    assert_eq!(
        send("GET", &format!("{base}/Patient"), &[], None).status,
        200
    );
}

#[test]
fn the_index_follows_writes_and_tenants() {
    let (server, base) = server_with_tenant();
    fixture(&base);
    put(&base, &patient("p2", "Berg", "Ola", "male", "1980-12-01"));
    assert!(ids(&base, "Patient?family=hansen").is_empty());
    assert_eq!(ids(&base, "Patient?family=berg"), ["p2"]);
    let deleted = send("DELETE", &format!("{base}/Observation/o5"), &[], None);
    assert!(matches!(deleted.status, 200 | 204));
    assert_eq!(ids(&base, "Observation?code=8867-4"), ["o4"]);
    assert!(ids(&base, "Observation?_id=o5").is_empty());

    let other = crate::add_tenant(&server, "t2");
    assert!(ids(&other, "Patient").is_empty());
    assert!(ids(&other, "Observation?code=8867-4").is_empty());
    put(
        &other,
        &patient("p2", "Hansen", "Ola", "male", "1980-12-01"),
    );
    assert_eq!(ids(&other, "Patient?family=hansen"), ["p2"]);
    assert!(ids(&base, "Patient?family=hansen").is_empty());

    let observation = capability_of(&base, "Observation");
    let names = search_param_names(&observation);
    for name in [
        "code",
        "subject",
        "date",
        "value-quantity",
        "code-value-quantity",
        "_id",
    ] {
        assert!(names.iter().any(|n| n == name), "{name}");
    }
    assert!(observation["interaction"]
        .as_array()
        .unwrap()
        .contains(&json!({"code": "search-type"})));
}
