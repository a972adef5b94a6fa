//! Profile checking on synthetic profiles: slicing by each discriminator and rule, bindings by
//! strength.

use serde_json::{json, Value};

use crate::{validate_with, Conformance, Options, Severity};

/// A home-measurement Observation profile written as a snapshot: a closed, ordered slicing
/// of `category` by pattern, `component` sliced by `code` (pattern) with one required
/// slice, `value[x]` limited to Quantity and sliced by type, and an `exists` slicing of
/// `performer`.
fn profile() -> Value {
    let element = |id: &str, min: u32, max: &str, extra: Value| {
        let path: String = id
            .split('.')
            .map(|s| s.split(':').next().unwrap())
            .collect::<Vec<_>>()
            .join(".");
        let mut e = json!({ "id": id, "path": path, "min": min, "max": max });
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let vital = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] });
    let systolic = json!({ "coding": [{ "system": "http://loinc.org", "code": "8480-6" }] });
    json!({
        "resourceType": "StructureDefinition",
        "url": "urn:test:home-observation",
        "type": "Observation",
        "snapshot": { "element": [
            element("Observation", 0, "*", json!({})),
            element("Observation.category", 1, "*", json!({
                "type": [{ "code": "CodeableConcept" }],
                "slicing": { "discriminator": [{ "type": "pattern", "path": "$this" }], "rules": "closed", "ordered": true },
            })),
            element("Observation.category:vital", 1, "1", json!({ "sliceName": "vital", "patternCodeableConcept": vital })),
            element("Observation.category:other", 0, "1", json!({ "sliceName": "other", "patternCodeableConcept": { "text": "other" } })),
            element("Observation.value[x]", 0, "1", json!({
                "type": [{ "code": "Quantity" }],
                "slicing": { "discriminator": [{ "type": "type", "path": "$this" }], "rules": "closed" },
            })),
            element("Observation.value[x]:valueQuantity", 0, "1", json!({ "sliceName": "valueQuantity", "type": [{ "code": "Quantity" }] })),
            element("Observation.value[x]:valueQuantity.system", 1, "1", json!({ "type": [{ "code": "uri" }], "fixedUri": "http://unitsofmeasure.org" })),
            element("Observation.performer", 0, "*", json!({
                "type": [{ "code": "Reference" }],
                "slicing": { "discriminator": [{ "type": "exists", "path": "identifier" }], "rules": "open" },
            })),
            element("Observation.performer:byIdentifier", 0, "1", json!({ "sliceName": "byIdentifier" })),
            element("Observation.performer:byIdentifier.identifier", 1, "1", json!({ "type": [{ "code": "Identifier" }] })),
            element("Observation.component", 0, "*", json!({
                "type": [{ "code": "BackboneElement" }],
                "slicing": { "discriminator": [{ "type": "pattern", "path": "code" }], "rules": "open" },
            })),
            element("Observation.component:systolic", 1, "1", json!({ "sliceName": "systolic" })),
            element("Observation.component:systolic.code", 1, "1", json!({ "type": [{ "code": "CodeableConcept" }], "patternCodeableConcept": systolic })),
        ] },
    })
}

fn errors(resource: &Value) -> Vec<(String, String)> {
    let mut conformance = Conformance::default();
    conformance.add(profile()).unwrap();
    let required = ["urn:test:home-observation".to_owned()];
    let report = validate_with(
        resource,
        &Options {
            conformance: Some(&conformance),
            required_profiles: &required,
            ..Options::default()
        },
    );
    assert!(report.unevaluated.is_empty(), "{:?}", report.unevaluated);
    report
        .errors()
        .map(|i| (i.expression.clone(), i.message.clone()))
        .collect()
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs" }] }],
        "code": { "text": "blood pressure" },
        "performer": [{ "identifier": { "system": "urn:x", "value": "1" } }, { "reference": "Practitioner/p1" }],
        "component": [
            { "code": { "coding": [{ "system": "http://loinc.org", "code": "8462-4" }] }, "valueQuantity": { "value": 82 } },
            { "code": { "coding": [{ "system": "http://loinc.org", "code": "8480-6" }] }, "valueQuantity": { "value": 128 } },
        ],
    })
}

#[test]
fn a_conforming_resource_matches_every_slice() {
    assert_eq!(errors(&observation()), []);
    let mut with_value = observation();
    with_value["valueQuantity"] =
        json!({ "value": 1, "system": "http://unitsofmeasure.org", "code": "1" });
    assert_eq!(errors(&with_value), []);
}

#[test]
fn bindings_by_strength() {
    let mut conformance = Conformance::default();
    let value_set = json!({ "resourceType": "ValueSet", "url": "urn:vs:methods",
        "compose": { "include": [{ "system": "urn:methods", "concept": [{ "code": "cuff" }] }] } });
    let binding = |strength: &str| {
        json!({
            "resourceType": "StructureDefinition", "url": format!("urn:test:{strength}"), "type": "Observation",
            "snapshot": { "element": [
                { "id": "Observation", "path": "Observation", "min": 0, "max": "*" },
                { "id": "Observation.method", "path": "Observation.method", "min": 0, "max": "1",
                  "type": [{ "code": "CodeableConcept" }],
                  "binding": { "strength": strength, "valueSet": "urn:vs:methods" } },
            ] },
        })
    };
    let failed = conformance.add_all(vec![
        value_set,
        binding("required"),
        binding("extensible"),
        binding("preferred"),
        binding("example"),
    ]);
    assert!(failed.is_empty());
    let mut resource = observation();
    resource["method"] = json!({ "coding": [{ "system": "urn:methods", "code": "finger" }] });
    for (strength, expected) in [
        ("required", Some(Severity::Error)),
        ("extensible", Some(Severity::Warning)),
        ("preferred", Some(Severity::Warning)),
        ("example", None),
    ] {
        let required = [format!("urn:test:{strength}")];
        let report = validate_with(
            &resource,
            &Options {
                conformance: Some(&conformance),
                required_profiles: &required,
                ..Options::default()
            },
        );
        let found = report
            .issues
            .iter()
            .find(|i| i.expression == "Observation.method")
            .map(|i| i.severity);
        assert_eq!(found, expected, "{strength}: {:?}", report.issues);
    }
}

#[test]
fn slicing_by_profile_checks_what_the_path_selects() {
    let kilograms = json!({
        "resourceType": "StructureDefinition", "url": "urn:test:kilograms", "type": "Quantity",
        "snapshot": { "element": [
            { "id": "Quantity", "path": "Quantity", "min": 0, "max": "*" },
            { "id": "Quantity.code", "path": "Quantity.code", "min": 1, "max": "1", "type": [{ "code": "code" }], "fixedCode": "kg" },
        ] },
    });
    let weighed = json!({
        "resourceType": "StructureDefinition", "url": "urn:test:weighed", "type": "Observation",
        "snapshot": { "element": [
            { "id": "Observation", "path": "Observation", "min": 0, "max": "*" },
            { "id": "Observation.component", "path": "Observation.component", "min": 0, "max": "*",
              "type": [{ "code": "BackboneElement" }],
              "slicing": { "discriminator": [{ "type": "profile", "path": "value" }], "rules": "closed" } },
            { "id": "Observation.component:weight", "path": "Observation.component", "sliceName": "weight", "min": 1, "max": "1" },
            { "id": "Observation.component:weight.value[x]", "path": "Observation.component.value[x]", "min": 1, "max": "1",
              "type": [{ "code": "Quantity", "profile": ["urn:test:kilograms"] }] },
        ] },
    });
    let mut conformance = Conformance::default();
    assert!(conformance.add_all(vec![weighed, kilograms]).is_empty());
    let required = ["urn:test:weighed".to_owned()];
    let options = Options {
        conformance: Some(&conformance),
        required_profiles: &required,
        ..Options::default()
    };
    let component = |unit: &str| json!({ "code": { "text": "weight" }, "valueQuantity": { "value": 80, "code": unit, "system": "http://unitsofmeasure.org" } });
    let mut resource = observation();
    resource["component"] = json!([component("kg")]);
    let report = validate_with(&resource, &options);
    assert!(!report.has_errors(), "{:?}", report.issues);
    // In pounds: no slice takes it (closed), and the required slice is empty.
    resource["component"] = json!([component("[lb_av]")]);
    let report = validate_with(&resource, &options);
    let messages: Vec<&str> = report.errors().map(|i| i.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("matches none of the slices"));
    assert!(messages[1].contains("component:weight: minimum required = 1"));
}

#[test]
fn slicing_by_pattern_type_and_exists_with_its_rules() {
    // A category in no slice of a closed slicing; and out of order.
    let mut resource = observation();
    resource["category"] =
        json!([{ "text": "other" }, { "text": "lab" }, resource["category"][0].clone()]);
    let found = errors(&resource);
    let at: Vec<&str> = found.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        at,
        ["Observation.category[1]", "Observation.category[2]"],
        "{found:#?}"
    );
    assert!(found[0].1.contains("matches none of the slices"));
    assert!(found[1].1.contains("out of order"));

    // The required component slice missing.
    let mut resource = observation();
    resource["component"].as_array_mut().unwrap().remove(1);
    let found = errors(&resource);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, "Observation.component");
    assert!(found[0]
        .1
        .contains("component:systolic: minimum required = 1"));

    // value[x] of a type the profile does not allow, and a Quantity slice's fixed system.
    let mut resource = observation();
    resource["valueString"] = json!("high");
    let found = errors(&resource);
    assert!(
        found
            .iter()
            .any(|(e, m)| e == "Observation.value.ofType(string)"
                && m.contains("type string is not allowed")),
        "{found:#?}"
    );
    let mut resource = observation();
    resource["valueQuantity"] = json!({ "value": 1, "system": "urn:other" });
    let found = errors(&resource);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, "Observation.value.ofType(Quantity).system");

    // Two performers with identifiers: the `exists` slice allows one.
    let mut resource = observation();
    resource["performer"][1] = json!({ "identifier": { "system": "urn:x", "value": "2" } });
    let found = errors(&resource);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].1.contains("performer:byIdentifier: at most 1"),
        "{found:#?}"
    );
}
