//! The token and URI modifiers that look past the value itself: `:in`, `:not-in`, `:below`,
//! `:above` on tokens (the tenant's ValueSets and CodeSystems), `:of-type` on identifiers, and
//! `:above`/`:below` on URIs.

use serde_json::{json, Value};

use crate::searching::{assert_finds, assert_rejects, put};

const CS: &str = "http://example.org/fhir/CodeSystem/vitals";
const LOINC: &str = "http://loinc.org";

fn observation(id: &str, system: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": system, "code": code}]}})
}

fn value_set(id: &str, body: Value) -> Value {
    let mut vs = json!({"resourceType": "ValueSet", "id": id, "status": "active",
                        "url": format!("http://example.org/fhir/ValueSet/{id}")});
    for (k, v) in body.as_object().unwrap() {
        vs[k] = v.clone();
    }
    vs
}

#[test]
fn terminology_identifier_and_uri_modifiers() {
    let (_server, base) = crate::server_with_tenant();
    put(
        &base,
        &json!({"resourceType": "CodeSystem", "id": "vitals", "url": CS, "status": "active",
            "content": "complete", "hierarchyMeaning": "is-a",
            "concept": [
                {"code": "vital", "concept": [
                    {"code": "bp", "concept": [{"code": "sys"}, {"code": "dia"}]},
                    {"code": "pulse"}]}]}),
    );
    put(
        &base,
        &value_set(
            "bp",
            json!({"compose": {"include": [{"system": CS,
        "filter": [{"property": "concept", "op": "is-a", "value": "bp"}]}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "below-bp",
            json!({"compose": {"include": [{"system": CS,
        "filter": [{"property": "concept", "op": "descendent-of", "value": "bp"}]}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "heart",
            json!({"compose": {"include": [{"system": LOINC,
        "concept": [{"code": "8867-4"}]}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "imports",
            json!({"compose": {"include": [{
        "valueSet": ["http://example.org/fhir/ValueSet/heart"]}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "expanded",
            json!({"expansion": {"timestamp": "2026-11-01T00:00:00Z",
        "contains": [{"system": CS, "code": "pulse"}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "all-vitals-but-bp",
            json!({"compose": {
        "include": [{"system": CS}], "exclude": [{"system": CS, "concept": [{"code": "bp"}]}]}}),
        ),
    );
    put(
        &base,
        &value_set(
            "loinc-but-weight",
            json!({"compose": {
        "include": [{"system": LOINC}], "exclude": [{"system": LOINC, "concept": [{"code": "29463-7"}]}]}}),
        ),
    );
    for (id, system, code) in [
        ("sys", CS, "sys"),
        ("dia", CS, "dia"),
        ("bp", CS, "bp"),
        ("pulse", CS, "pulse"),
        ("heart", LOINC, "8867-4"),
        ("weight", LOINC, "29463-7"),
    ] {
        put(&base, &observation(id, system, code));
    }
    put(
        &base,
        &json!({"resourceType": "Patient", "id": "p1", "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "urn:oid:1.2.3", "value": "12345"},
            {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "12345"}]}),
    );

    let vs = |id: &str| format!("http://example.org/fhir/ValueSet/{id}");
    let cases: Vec<(String, &[&str])> = vec![
        (
            format!("Observation?code:in={}", vs("bp")),
            &["bp", "sys", "dia"],
        ),
        (
            format!("Observation?code:in={}", vs("below-bp")),
            &["sys", "dia"],
        ),
        (
            format!("Observation?code:not-in={}", vs("bp")),
            &["pulse", "heart", "weight"],
        ),
        (format!("Observation?code:in={}", vs("heart")), &["heart"]),
        (format!("Observation?code:in={}", vs("imports")), &["heart"]),
        (
            format!("Observation?code:in={}", vs("expanded")),
            &["pulse"],
        ),
        (
            format!("Observation?code:in={}", vs("all-vitals-but-bp")),
            &["sys", "dia", "pulse"],
        ),
        (
            format!("Observation?code:in={},{}", vs("heart"), vs("expanded")),
            &["heart", "pulse"],
        ),
        (
            format!("Observation?code:below={CS}|bp"),
            &["bp", "sys", "dia"],
        ),
        (
            format!("Observation?code:below={CS}|vital"),
            &["bp", "sys", "dia", "pulse"],
        ),
        (format!("Observation?code:above={CS}|sys"), &["bp", "sys"]),
        (
            format!("Observation?code:below={CS}|pulse&code:not-in={}", vs("bp")),
            &["pulse"],
        ),
        // An identifier's value under its type; another identifier with the value is not it.
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"
                .into(),
            &["p1"],
        ),
        ("Patient?identifier:of-type=|MR|12345".into(), &["p1"]),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|54321"
                .into(),
            &[],
        ),
        // URIs on path segments.
        (
            "ValueSet?url:below=http://example.org/fhir/".into(),
            &[
                "bp",
                "below-bp",
                "heart",
                "imports",
                "expanded",
                "all-vitals-but-bp",
                "loinc-but-weight",
            ],
        ),
        (
            "ValueSet?url:below=http://example.org/fhir/ValueSet/bp".into(),
            &["bp"],
        ),
        (
            "ValueSet?url:above=http://example.org/fhir/ValueSet/bp/_history/2".into(),
            &["bp"],
        ),
        (
            "CodeSystem?url:above=http://example.org/fhir/ValueSet/bp".into(),
            &[],
        ),
    ];
    assert_finds(&base, &cases);

    // What the tenant's terminology cannot decide is a 400 that says why.
    assert_rejects(
        &base,
        &[
            (
                "Observation?code:in=http://example.org/fhir/ValueSet/nope".to_owned(),
                "not known",
            ),
            (
                format!("Observation?code:in={}", vs("loinc-but-weight")),
                "CodeSystem http://loinc.org is not known",
            ),
            (
                format!("Observation?code:below={CS}|nope"),
                "has no code nope",
            ),
            ("Observation?code:below=bp".to_owned(), "system|code"),
            ("Patient?identifier:of-type=MR|12345".to_owned(), "of-type"),
        ],
    );
}
