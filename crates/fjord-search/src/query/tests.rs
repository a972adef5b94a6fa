// The index side must produce the keys the query side asks for; `equality_keys` is that side.

use super::values::{split_unescaped, unescape};
use super::*;

fn parse(resource_type: &str, query: &[(&str, &str)]) -> Result<SearchQuery, QueryError> {
    let registry = Registry::r4().unwrap();
    let params: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    registry.parse_query(Scope::Type(resource_type), &params, false)
}

fn stored_token(system: Option<&str>, code: &str) -> IndexValue {
    IndexValue::Token {
        system: system.map(str::to_owned),
        code: Some(code.to_owned()),
        text: None,
    }
}

#[test]
fn token_forms_ask_for_keys_the_index_has() {
    let stored = crate::equality_keys(
        "Observation",
        "code",
        &stored_token(Some("http://loinc.org"), "8480-6"),
    );
    let without_system = crate::equality_keys("Observation", "code", &stored_token(None, "8480-6"));
    let key_of = |value: &str| match &parse("Observation", &[("code", value)]).unwrap().filters[0] {
        Filter::Key(key) => *key,
        other => panic!("{other:?}"),
    };
    for (value, with_system, without) in [
        ("8480-6", true, true),
        ("http://loinc.org|8480-6", true, false),
        ("|8480-6", false, true),
        ("http://loinc.org|", true, false),
        ("http://snomed.info/sct|8480-6", false, false),
    ] {
        assert_eq!(stored.contains(&key_of(value)), with_system, "{value}");
        assert_eq!(without_system.contains(&key_of(value)), without, "{value}");
    }
}

#[test]
fn lists_modifiers_and_unknowns() {
    let query = parse(
        "Observation",
        &[
            ("code", "a,b"),
            ("code:not", "c"),
            ("bogus", "1"),
            ("_count", "10"),
        ],
    )
    .unwrap();
    assert!(matches!(&query.filters[0], Filter::Any(list) if list.len() == 2));
    assert!(matches!(&query.filters[1], Filter::Not(_)));
    assert_eq!(query.count, 10);
    assert_eq!(
        query.applied,
        [("code", "a,b"), ("code:not", "c"), ("_count", "10")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    let strict = Registry::r4().unwrap().parse_query(
        Scope::Type("Observation"),
        &[("bogus".into(), "1".into())],
        true,
    );
    assert!(strict.is_err());
    assert!(parse("Observation", &[("date", "2026-13-01")]).is_err());
    assert!(parse("Observation", &[("value-quantity", "abc")]).is_err());
    assert!(parse("Observation", &[("code:below", "x")]).is_err());
    assert!(parse("Observation", &[("_sort", "combo-code")]).is_err());
}

#[test]
fn quantities_compare_in_canonical_units() {
    let query = parse(
        "Observation",
        &[("value-quantity", "gt70|http://unitsofmeasure.org|kg")],
    )
    .unwrap();
    let Filter::Value {
        test: ValueTest::Quantity {
            prefix, low, unit, ..
        },
        ..
    } = &query.filters[0]
    else {
        panic!("{query:?}")
    };
    assert_eq!(*prefix, Prefix::Gt);
    assert_eq!(*low, Decimal::new(69500, 0));
    assert_eq!(*unit, UnitMatch::Canonical("g".into()));
}

#[test]
fn escapes() {
    assert_eq!(split_unescaped(r"a\,b,c", ','), ["a,b", "c"]);
    assert_eq!(unescape(r"a\,b"), "a,b");
    assert_eq!(split_unescaped(r"s\|x|c", '|'), ["s|x", "c"]);
}

fn parse_in(scope: Scope<'_>, query: &[(&str, &str)]) -> Result<SearchQuery, QueryError> {
    let params: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Registry::r4().unwrap().parse_query(scope, &params, true)
}

#[test]
fn chains_follow_reference_targets() {
    let query = parse("Observation", &[("subject:Patient.name", "Åse")]).unwrap();
    let Filter::Chain {
        link,
        target_type,
        filter,
    } = &query.filters[0]
    else {
        panic!("{query:?}")
    };
    assert_eq!(*link, keys::link("Observation", "subject"));
    assert_eq!(target_type, "Patient");
    assert!(matches!(**filter, Filter::String { .. }));
    // Without a type: every target type that has the parameter (Patient, Group, Device, …).
    let query = parse("Observation", &[("subject.name", "x")]).unwrap();
    assert!(matches!(&query.filters[0], Filter::Any(list) if list.len() > 1));
    // Two levels.
    let query = parse("Observation", &[("subject:Patient.organization.name", "x")]).unwrap();
    let Filter::Chain { filter, .. } = &query.filters[0] else {
        panic!("{query:?}")
    };
    assert!(
        matches!(**filter, Filter::Chain { ref target_type, .. } if target_type == "Organization")
    );
    // The key of a reference is the link combined with the target's own key.
    assert_eq!(
        keys::reference("Observation", "subject", "Patient", "p1"),
        keys::link("Observation", "subject") ^ keys::resource("Patient", "p1")
    );
    assert!(parse("Observation", &[("status.name", "x")]).is_err());
    assert!(parse_in(Scope::Type("Observation"), &[("subject:Patient.nope", "x")]).is_err());
    assert!(parse("Observation", &[("subject:Patient.nope", "x")])
        .unwrap()
        .filters
        .is_empty());
    let deep = "subject:Patient.organization.partof.partof.partof.partof.name";
    assert!(parse("Observation", &[(deep, "x")]).is_err());
}

#[test]
fn reverse_chains_nest() {
    let query = parse("Patient", &[("_has:Observation:patient:code", "1234")]).unwrap();
    assert!(matches!(&query.filters[0],
        Filter::Has { source_type, link, .. }
        if source_type == "Observation" && *link == keys::link("Observation", "patient")));
    let query = parse(
        "Patient",
        &[("_has:Observation:patient:_has:AuditEvent:entity:agent", "x")],
    )
    .unwrap();
    let Filter::Has { filter, .. } = &query.filters[0] else {
        panic!("{query:?}")
    };
    assert!(matches!(**filter, Filter::Has { .. }));
    assert!(parse("Patient", &[("_has:Observation:code:code", "1")]).is_err());
    assert!(parse("Patient", &[("_has:Nope:patient:code", "1")]).is_err());
    assert!(parse("Patient", &[("_has:Observation", "1")]).is_err());
}

#[test]
fn system_and_compartment_scopes() {
    let query = parse_in(
        Scope::System,
        &[("_type", "Patient,Observation"), ("_id", "a")],
    )
    .unwrap();
    assert_eq!(query.types, ["Observation", "Patient"]);
    assert_eq!(query.filters, [Filter::Id("a".into())]);
    // A parameter whose keys differ by type is asked of each type on its own.
    let query = parse_in(
        Scope::System,
        &[("_type", "Patient,Observation"), ("_tag", "x")],
    )
    .unwrap();
    assert!(matches!(&query.filters[0], Filter::Any(list) if list.len() == 2));
    // Parameters that not every type has are unknown.
    assert!(parse_in(
        Scope::System,
        &[("_type", "Patient,Observation"), ("code", "x")]
    )
    .is_err());
    assert!(parse_in(Scope::System, &[("_type", "Nope")]).is_err());
    assert!(parse_in(Scope::System, &[]).unwrap().types.len() > 140);

    let compartment = |resource_type| Scope::Compartment {
        owner_type: "Patient",
        owner_id: "p1",
        resource_type,
    };
    let query = parse_in(compartment(Some("Observation")), &[]).unwrap();
    assert_eq!(query.types, ["Observation"]);
    let Filter::Any(members) = &query.filters[0] else {
        panic!("{query:?}")
    };
    assert!(members.contains(&Filter::Key(keys::reference(
        "Observation",
        "subject",
        "Patient",
        "p1"
    ))));
    assert!(parse_in(compartment(Some("Questionnaire")), &[]).is_err());
    let everything = parse_in(compartment(None), &[]).unwrap();
    assert!(everything.types.contains(&"Patient".to_owned()));
    assert!(everything.types.contains(&"CarePlan".to_owned()));
}

#[test]
fn includes_summary_and_elements() {
    let query = parse(
        "Observation",
        &[
            ("_include", "Observation:subject:Patient"),
            ("_revinclude:iterate", "Provenance:target"),
            ("_summary", "count"),
            ("_count", "5"),
            ("_elements", "status,code"),
        ],
    )
    .unwrap();
    assert_eq!(
        query.includes,
        [
            Include {
                reverse: false,
                iterate: false,
                source_type: "Observation".into(),
                param: "subject".into(),
                target_type: Some("Patient".into()),
            },
            Include {
                reverse: true,
                iterate: true,
                source_type: "Provenance".into(),
                param: "target".into(),
                target_type: None,
            }
        ]
    );
    assert_eq!(
        (query.summary, query.count, query.total),
        (Summary::Count, 0, Total::Accurate)
    );
    assert_eq!(query.elements, ["status", "code"]);
    let all = parse("Observation", &[("_include", "*")]).unwrap();
    assert!(all.includes.iter().any(|i| i.param == "performer"));
    assert!(parse("Observation", &[("_include", "Observation:code")]).is_err());
    assert!(parse("Observation", &[("_revinclude", "*")]).is_err());
    assert!(parse("Observation", &[("_summary", "maybe")]).is_err());
}

#[test]
fn text_parameters_become_text_filters_for_the_index() {
    let text = |field: TextField, text: &str| Filter::Text {
        resource_type: "Observation".into(),
        field,
        text: text.into(),
    };
    let query = parse(
        "Observation",
        &[
            ("_text", "blood pressure"),
            ("_content", "puls,vekt"),
            ("code:text", "heart"),
        ],
    )
    .unwrap();
    assert_eq!(
        query.filters,
        [
            text(TextField::Narrative, "blood pressure"),
            Filter::Any(vec![
                text(TextField::Content, "puls"),
                text(TextField::Content, "vekt")
            ]),
            text(TextField::Token("code".into()), "heart"),
        ]
    );
    // A union parameter asks each of its parts.
    let combo = parse("Observation", &[("combo-code:text", "heart")]).unwrap();
    assert_eq!(
        combo.filters,
        [Filter::Any(vec![
            text(TextField::Token("code".into()), "heart"),
            text(TextField::Token("component-code".into()), "heart"),
        ])]
    );
    assert!(parse("Observation", &[("_text:exact", "x")]).is_err());
    assert!(parse("Observation", &[("_content", ",")]).is_err());
}

/// The keys a filter asks for, flattened over alternatives.
fn asked_keys(filter: &Filter) -> Vec<i64> {
    match filter {
        Filter::Key(key) => vec![*key],
        Filter::Any(alternatives) => alternatives.iter().flat_map(asked_keys).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn of_type_asks_for_identifier_values_under_their_type() {
    let registry = Registry::r4().unwrap();
    let patient = serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:1.2.3", "value": "12345"}],
    });
    let stored = crate::index_terms("Patient", &crate::extract(&registry, &patient).unwrap()).keys;
    let has = |value: &str| {
        let query = parse("Patient", &[("identifier:of-type", value)]).unwrap();
        asked_keys(&query.filters[0])
            .iter()
            .any(|k| stored.contains(k))
    };
    assert!(has(
        "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"
    ));
    assert!(has("|MR|12345"));
    assert!(!has(
        "http://terminology.hl7.org/CodeSystem/v2-0203|MR|54321"
    ));
    assert!(!has(
        "http://terminology.hl7.org/CodeSystem/v2-0203|PPN|12345"
    ));
    assert!(parse("Patient", &[("identifier:of-type", "MR|12345")]).is_err());
}

#[test]
fn uri_above_and_below_follow_path_segments() {
    let stored = crate::equality_keys(
        "ValueSet",
        "url",
        &IndexValue::Uri("http://acme.org/fhir/ValueSet/123".into()),
    );
    let has = |modifier: &str, value: &str| {
        let query = parse("ValueSet", &[(&format!("url:{modifier}"), value)]).unwrap();
        asked_keys(&query.filters[0])
            .iter()
            .any(|k| stored.contains(k))
    };
    assert!(has("below", "http://acme.org/fhir/"));
    assert!(has("below", "http://acme.org"));
    assert!(has("below", "http://acme.org/fhir/ValueSet/123"));
    assert!(!has("below", "http://acme.org/fh"));
    assert!(!has("below", "http://acme.org/fhir/ValueSet/1234"));
    assert!(has("above", "http://acme.org/fhir/ValueSet/123/_history/5"));
    assert!(has("above", "http://acme.org/fhir/ValueSet/123"));
    assert!(!has("above", "http://acme.org/fhir/ValueSet"));
}

/// Found by the `search_url` fuzz target: a value written to all 28 places a decimal holds had
/// no precision range, and a value at a decimal's bound overflowed it.
#[test]
fn decimals_at_the_bounds_of_precision_and_range_parse() {
    let places_28 = "4.4422222222222222221481701556";
    let largest = "79228162514264337593543950335";
    for value in [
        places_28.to_owned(),
        format!("ap{places_28}"),
        largest.to_owned(),
        format!("ap{largest}"),
        format!("-{largest}"),
    ] {
        parse("RiskAssessment", &[("probability", &value)]).unwrap();
        for unit in [
            "",
            "|http://unitsofmeasure.org|kg",
            "|http://unitsofmeasure.org|kPa",
        ] {
            parse(
                "Observation",
                &[("value-quantity", &format!("{value}{unit}"))],
            )
            .unwrap();
        }
        parse(
            "Observation",
            &[("component-code-value-quantity", &format!("8480-6${value}"))],
        )
        .unwrap();
    }
    assert!(parse("RiskAssessment", &[("probability", "1e400")]).is_err());
}
