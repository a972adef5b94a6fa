//! Profiles: the Norwegian basis profiles (`hl7.fhir.no.basis` 2.2.0 with snapshots, from the
//! shared data) against their own examples, and mutated copies that must fail where expected.

use fjord_tests::{json_files, shared_dir};
use fjord_validation::{validate_with, Conformance, IdentifierRules, Options, Report, Severity};
use serde_json::Value;

fn read_dir_json(dir: &std::path::Path) -> Vec<(String, Value)> {
    json_files(dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((name, value))
        })
        .collect()
}

fn no_basis_dir() -> std::path::PathBuf {
    shared_dir().join("no-basis/package-2.2.0-snapshots-official/package")
}

/// The no-basis package loaded as a tenant would install it.
pub(crate) fn no_basis() -> Conformance {
    let mut conformance = Conformance::default();
    for (name, resource) in read_dir_json(&no_basis_dir()) {
        if name == "package.json" {
            continue;
        }
        conformance
            .add(resource)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    conformance
}

/// The no-basis profile of a resource's type, which the examples are validated against.
fn profile_of(resource: &Value) -> Vec<String> {
    vec![format!(
        "http://hl7.no/fhir/StructureDefinition/no-basis-{}",
        resource["resourceType"].as_str().unwrap()
    )]
}

fn check(conformance: &Conformance, resource: &Value) -> Report {
    let required = profile_of(resource);
    validate_with(
        resource,
        &Options {
            identifiers: IdentifierRules {
                allow_test_data: true,
            },
            conformance: Some(conformance),
            required_profiles: &required,
            unknown_profile: Severity::Error,
            questionnaire: None,
        },
    )
}

/// Examples of the package that are not valid as published, with the reason: placeholders
/// where a national identifier belongs (the Norwegian identifier rules refuse them).
const INVALID_EXAMPLES: &[(&str, &str)] = &[
    (
        "no-basis-HealthcareService-example.json",
        "HealthcareService.providedBy.identifier.value a organisasjonsnummer is 9 digits, not 'test'",
    ),
    (
        "no-basis-Patient-Espen-Eksempel.json",
        "Patient.identifier[0].value a fødselsnummer is 11 digits, not '210377xxxxx'",
    ),
];

#[test]
fn the_no_basis_examples_conform_to_their_profiles() {
    let conformance = no_basis();
    assert_eq!(conformance.profiles().count(), 33);
    let mut failures = Vec::new();
    for (name, example) in read_dir_json(&no_basis_dir().join("examples")) {
        let report = check(&conformance, &example);
        assert!(
            report.unevaluated.is_empty(),
            "{name}: {:?}",
            report.unevaluated
        );
        let errors: Vec<String> = report
            .errors()
            .map(|i| format!("{} {}", i.expression, i.message))
            .collect();
        let known = INVALID_EXAMPLES
            .iter()
            .any(|(file, error)| *file == name && errors == [*error]);
        if !errors.is_empty() && !known {
            failures.push((name, errors));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn example(name: &str) -> Value {
    let path = no_basis_dir().join("examples").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// (expression, message) of every error.
fn errors(conformance: &Conformance, resource: &Value) -> Vec<(String, String)> {
    let report = check(conformance, resource);
    assert!(report.unevaluated.is_empty(), "{:?}", report.unevaluated);
    report
        .errors()
        .map(|i| (i.expression.clone(), i.message.clone()))
        .collect()
}

fn only_error_at(conformance: &Conformance, resource: &Value, expression: &str, says: &str) {
    let found = errors(conformance, resource);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, expression, "{found:#?}");
    assert!(found[0].1.contains(says), "{found:#?}");
}

#[test]
fn mutated_examples_fail_with_the_expected_issue_and_expression() {
    let conformance = no_basis();
    let jannice = example("no-basis-Patient-Jannice-Søreng.json");
    assert_eq!(errors(&conformance, &jannice), []);

    // A fødselsnummer whose check digit is wrong.
    let mut bad = jannice.clone();
    bad["identifier"][0]["value"] = "21030550232".into();
    only_error_at(
        &conformance,
        &bad,
        "Patient.identifier[0].value",
        "fødselsnummer",
    );

    // An extension value of a type its definition does not allow, two profiles down:
    // Patient.contact.name is a no-basis-HumanName, whose middlename extension is a string.
    let mut bad = jannice.clone();
    let middlename = &mut bad["contact"][0]["name"]["extension"][0];
    middlename.as_object_mut().unwrap().remove("valueString");
    middlename["valueInteger"] = 3.into();
    only_error_at(
        &conformance,
        &bad,
        "Patient.contact[0].name.extension[0].value.ofType(integer)",
        "type integer is not allowed",
    );

    // A reference to a type the profile does not allow.
    let mut bad = jannice.clone();
    bad["managingOrganization"] = serde_json::json!({ "reference": "Patient/p2" });
    only_error_at(
        &conformance,
        &bad,
        "Patient.managingOrganization",
        "a reference to Patient is not allowed",
    );

    // A required binding: the marital-status slice (chosen by its coding's system) takes only
    // the codes of no-basis-marital-status.
    let mut related = example("no-basis-RelatedPerson-Ærlend-Sørgård.json");
    assert_eq!(errors(&conformance, &related), []);
    related["relationship"][0]["coding"][0]["code"] = "forlovet".into();
    only_error_at(
        &conformance,
        &related,
        "RelatedPerson.relationship[0]",
        "no-basis-marital-status",
    );

    // A required slice: a no-basis Medication needs a FEST coding.
    let mut medication = serde_json::json!({
        "resourceType": "Medication",
        "code": { "coding": [
            { "system": "http://ehelse.no/fhir/CodeSystem/FEST", "code": "ID_1", "display": "Ramipril 5 mg" },
            { "system": "http://www.whocc.no/atc", "code": "C09AA05", "display": "ramipril" },
        ] },
        "form": { "coding": [{ "system": "urn:oid:2.16.578.1.12.4.1.1.7448", "code": "53", "display": "Tablett" }] },
    });
    assert_eq!(errors(&conformance, &medication), []);
    medication["code"]["coding"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    only_error_at(
        &conformance,
        &medication,
        "Medication.code.coding",
        "FEST-Medication: minimum required = 1",
    );
}

#[test]
fn unknown_profiles_are_reported_as_the_tenant_chooses() {
    let conformance = no_basis();
    let mut patient = example("no-basis-Patient-Jannice-Søreng.json");
    patient["meta"]["profile"] =
        serde_json::json!(["http://example.org/StructureDefinition/unknown"]);
    for severity in [Severity::Warning, Severity::Error] {
        let report = validate_with(
            &patient,
            &Options {
                conformance: Some(&conformance),
                unknown_profile: severity,
                ..Options::default()
            },
        );
        let issues: Vec<_> = report
            .issues
            .iter()
            .map(|i| (i.severity, i.expression.as_str()))
            .collect();
        assert_eq!(issues, [(severity, "Patient.meta.profile")]);
    }
}

/// Deliberate handling of a defect of the published package: no-basis-AppointmentResponse's
/// `inv-1` says `and` where it means `implies`; it is checked as a warning.
#[test]
fn a_known_defect_of_the_package_is_a_warning() {
    let conformance = no_basis();
    let mut response = example("no-basis-AppointmentResponse-example.json");
    response.as_object_mut().unwrap().remove("extension");
    let report = check(&conformance, &response);
    assert!(!report.has_errors(), "{:?}", report.issues);
    let warning = report
        .issues
        .iter()
        .find(|i| i.message.starts_with("inv-1"));
    assert_eq!(
        warning.map(|w| w.severity),
        Some(Severity::Warning),
        "{:?}",
        report.issues
    );
}

/// A change that should make a resource fail.
type Mutation = Box<dyn Fn(&mut Value)>;

/// Fjord's DHO profiles (`profiles/`, differentials on core types and on the national
/// vital-signs profiles) with generated snapshots, installed with what they build on.
pub(crate) fn dho() -> Conformance {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut conformance = vital_signs();
    let resources: Vec<Value> = read_dir_json(&dir)
        .into_iter()
        .filter(|(name, _)| name != "package.json")
        .map(|(_, resource)| resource)
        .collect();
    assert_eq!(resources.len(), 9);
    let failed = conformance.add_all(resources);
    assert!(failed.is_empty(), "{failed:?}");
    conformance
}

fn dho_example(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles/examples")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Errors of a resource against the profiles it claims, with Fjord's DHO profiles installed.
fn dho_errors(conformance: &Conformance, resource: &Value) -> Vec<(String, String)> {
    let report = validate_with(
        resource,
        &Options {
            conformance: Some(conformance),
            unknown_profile: Severity::Error,
            ..Options::default()
        },
    );
    assert!(report.unevaluated.is_empty(), "{:?}", report.unevaluated);
    report
        .errors()
        .map(|i| (i.expression.clone(), i.message.clone()))
        .collect()
}

#[test]
fn the_dho_profiles_get_snapshots_and_their_examples_conform() {
    let conformance = dho();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples");
    let examples = read_dir_json(&dir);
    assert_eq!(examples.len(), 6);
    for (name, example) in &examples {
        assert_eq!(dho_errors(&conformance, example), [], "{name}");
    }
}

#[test]
fn dho_profiles_refuse_what_they_should() {
    let conformance = dho();
    // The generic home measurement (glucose has no national profile).
    let observation = dho_example("Observation-dho-glucose.json");
    let cases: Vec<(&str, Mutation, &str, &str)> = vec![
        (
            "no vital-signs category",
            Box::new(|o| o["category"] = serde_json::json!([{ "text": "other" }])),
            "Observation.category",
            "category:vitalSigns: minimum required = 1",
        ),
        (
            "a local code",
            Box::new(|o| {
                o["code"] =
                    serde_json::json!({ "coding": [{ "system": "urn:local", "code": "w" }] })
            }),
            "Observation.code",
            "dho-obs-3",
        ),
        (
            "the patient without fødselsnummer",
            Box::new(|o| o["subject"]["identifier"]["system"] = "urn:local".into()),
            "Observation.subject.identifier",
            "dho-obs-4",
        ),
        (
            "no device",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("device");
            }),
            "Observation.device",
            "minimum required = 1",
        ),
        (
            "a quantity without UCUM",
            Box::new(|o| o["valueQuantity"]["system"] = "urn:local".into()),
            "Observation",
            "dho-obs-1",
        ),
        (
            "a string value",
            Box::new(|o| {
                o.as_object_mut().unwrap().remove("valueQuantity");
                o["valueString"] = "81 kg".into();
            }),
            "Observation.value.ofType(string)",
            "type string is not allowed",
        ),
    ];
    for (what, mutate, expression, says) in cases {
        let mut bad = observation.clone();
        mutate(&mut bad);
        let found = dho_errors(&conformance, &bad);
        assert!(
            found
                .iter()
                .any(|(e, m)| e == expression && m.contains(says)),
            "{what}: {found:#?}"
        );
    }
    // On the national body-weight profile: its LOINC code, and Fjord's own rules on top.
    let weight = dho_example("Observation-dho-body-weight.json");
    let mut bad = weight.clone();
    bad["code"] =
        serde_json::json!({ "coding": [{ "system": "http://loinc.org", "code": "3141-9" }] });
    let found = dho_errors(&conformance, &bad);
    assert!(
        found
            .iter()
            .any(|(_, m)| m.contains("coding:BodyWeightCode: minimum required = 1")),
        "{found:#?}"
    );
    let mut bad = weight.clone();
    bad["subject"]["identifier"]["system"] = "urn:local".into();
    bad.as_object_mut().unwrap().remove("device");
    let found = dho_errors(&conformance, &bad);
    let at: Vec<&str> = found.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        at,
        ["Observation.subject.identifier", "Observation.device"],
        "{found:#?}"
    );

    let mut plan = dho_example("CarePlan-dho-selftreatment.json");
    plan["intent"] = "proposal".into();
    let found = dho_errors(&conformance, &plan);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, "CarePlan.intent");
    let mut appointment = dho_example("Appointment-dho-control.json");
    appointment["participant"].as_array_mut().unwrap().remove(0);
    let found = dho_errors(&conformance, &appointment);
    assert!(
        found.iter().any(|(_, m)| m.starts_with("dho-app-1")),
        "{found:#?}"
    );
}

/// A differential on a profile with a snapshot (no-basis-Patient): the snapshot is the base's
/// with the changes merged, slices included.
#[test]
fn a_differential_on_a_national_profile_gets_its_snapshot() {
    let mut conformance = no_basis();
    let url = "https://fjord.example/fhir/StructureDefinition/test-patient-with-fnr";
    let failed = conformance.add_all(vec![serde_json::json!({
        "resourceType": "StructureDefinition",
        "url": url,
        "type": "Patient",
        "kind": "resource",
        "derivation": "constraint",
        "baseDefinition": "http://hl7.no/fhir/StructureDefinition/no-basis-Patient",
        "differential": { "element": [
            { "id": "Patient.identifier:FNR", "path": "Patient.identifier", "min": 1 },
            { "id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1 },
        ] },
    })]);
    assert!(failed.is_empty(), "{failed:?}");
    let mut patient = example("no-basis-Patient-Jannice-Søreng.json");
    patient["meta"]["profile"] = serde_json::json!([url]);
    patient["birthDate"] = "2005-03-21".into();
    assert_eq!(errors(&conformance, &patient), []);
    patient["identifier"].as_array_mut().unwrap().remove(0);
    patient.as_object_mut().unwrap().remove("birthDate");
    let found = errors(&conformance, &patient);
    let messages: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        messages[0].contains("identifier:FNR: minimum required = 1"),
        "{found:#?}"
    );
    assert!(
        messages[1].contains("Patient.birthDate: minimum required = 1"),
        "{found:#?}"
    );
    // Its base's rules still hold: the middlename of a contact is still a string.
    patient["contact"][0]["name"]["extension"][0] = serde_json::json!({
        "url": "http://hl7.no/fhir/StructureDefinition/no-basis-middlename", "valueBoolean": true,
    });
    assert_eq!(errors(&conformance, &patient).len(), 3);
}

/// An extension whose definition is installed is checked wherever it is, whether or not a
/// profile of the resource names it.
#[test]
fn known_extensions_are_checked_anywhere() {
    let conformance = no_basis();
    let mut patient = serde_json::json!({
        "resourceType": "Patient",
        "address": [{ "city": "Oslo", "extension": [{
            "url": "http://hl7.no/fhir/StructureDefinition/no-basis-address-official",
            "valueBoolean": true,
        }] }],
    });
    let options = Options {
        conformance: Some(&conformance),
        ..Options::default()
    };
    assert!(!validate_with(&patient, &options).has_errors());
    patient["address"][0]["extension"][0] = serde_json::json!({
        "url": "http://hl7.no/fhir/StructureDefinition/no-basis-address-official",
        "valueString": "ja",
    });
    let report = validate_with(&patient, &options);
    let errors: Vec<&str> = report.errors().map(|i| i.expression.as_str()).collect();
    assert_eq!(
        errors,
        ["Patient.address[0].extension[0].value.ofType(string)"],
        "{:?}",
        report.issues
    );
}

/// The national vital-signs profiles (`hl7.fhir.no.domain.vitalsigns` 0.9.74, on no-basis)
/// with no-basis installed.
fn vital_signs() -> Conformance {
    let dir = shared_dir().join("no-profiles/hl7.fhir.no.domain.vitalsigns-0.9.74/package");
    let mut conformance = no_basis();
    let resources: Vec<Value> = read_dir_json(&dir)
        .into_iter()
        .filter(|(name, _)| name != "package.json")
        .map(|(_, resource)| resource)
        .collect();
    let failed = conformance.add_all(resources);
    assert!(failed.is_empty(), "{failed:?}");
    conformance
}

/// The vital-signs examples conform to the national profiles they claim (component slices by
/// LOINC and SNOMED CT codes reached through re-sliced codings, UCUM units, target types), but
/// for what is wrong in them: placeholder national identifiers (`1000808`), and a blood pressure
/// measured on a finger coded 7569003 where the profile's value set has Finger as 125685002.
#[test]
fn the_national_vital_signs_examples_conform_but_for_their_own_errors() {
    let conformance = vital_signs();
    let dir = shared_dir().join("no-profiles/hl7.fhir.no.domain.vitalsigns-0.9.74/package/example");
    let mut checked = 0;
    for (name, example) in read_dir_json(&dir) {
        let report = validate_with(
            &example,
            &Options {
                conformance: Some(&conformance),
                unknown_profile: Severity::Error,
                ..Options::default()
            },
        );
        assert!(
            report.unevaluated.is_empty(),
            "{name}: {:?}",
            report.unevaluated
        );
        let unexpected: Vec<String> = report
            .errors()
            .filter(|i| !i.message.contains("is 11 digits, not '10"))
            .filter(|i| !(name.contains("blood-pressure") && i.message.contains("sct|7569003")))
            .map(|i| format!("{} {}", i.expression, i.message))
            .collect();
        assert!(unexpected.is_empty(), "{name}: {unexpected:#?}");
        checked += 1;
    }
    assert_eq!(checked, 13);
}

/// The resources of a bundle's entries and contained resources are checked against the
/// profiles they claim.
#[test]
fn nested_resources_are_checked_against_the_profiles_they_claim() {
    let conformance = no_basis();
    let medication = serde_json::json!({
        "resourceType": "Medication",
        "id": "m1",
        "meta": { "profile": ["http://hl7.no/fhir/StructureDefinition/no-basis-Medication"] },
        "code": { "coding": [{ "system": "http://www.whocc.no/atc", "code": "C09AA05", "display": "ramipril" }] },
        "form": { "coding": [{ "system": "urn:oid:2.16.578.1.12.4.1.1.7448", "code": "53", "display": "Tablett" }] },
    });
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{ "fullUrl": "urn:uuid:8d2e2f5e-0b8c-4a67-9d61-2f1b6f0e7a10", "resource": medication.clone() }],
    });
    let options = Options {
        conformance: Some(&conformance),
        ..Options::default()
    };
    let report = validate_with(&bundle, &options);
    let errors: Vec<&str> = report.errors().map(|i| i.expression.as_str()).collect();
    assert_eq!(
        errors,
        ["Bundle.entry[0].resource.code.coding"],
        "{:?}",
        report.issues
    );
    let statement = serde_json::json!({
        "resourceType": "MedicationStatement",
        "status": "active",
        "contained": [medication],
        "medicationReference": { "reference": "#m1" },
        "subject": { "reference": "Patient/p1" },
    });
    let report = validate_with(&statement, &options);
    let errors: Vec<&str> = report.errors().map(|i| i.expression.as_str()).collect();
    assert_eq!(
        errors,
        ["MedicationStatement.contained[0].code.coding"],
        "{:?}",
        report.issues
    );
}

/// A reference to a contained resource: the target must conform to one of the target profiles
/// (no-basis-MedicationStatement refers to a no-basis-Medication).
#[test]
fn a_contained_target_must_conform_to_a_target_profile() {
    let conformance = no_basis();
    let mut statement = serde_json::json!({
        "resourceType": "MedicationStatement",
        "meta": { "profile": ["http://hl7.no/fhir/StructureDefinition/no-basis-MedicationStatement"] },
        "status": "active",
        "contained": [{
            "resourceType": "Medication", "id": "m1",
            "code": { "coding": [
                { "system": "http://ehelse.no/fhir/CodeSystem/FEST", "code": "ID_1", "display": "Ramipril 5 mg" },
            ] },
            "form": { "coding": [{ "system": "urn:oid:2.16.578.1.12.4.1.1.7448", "code": "53", "display": "Tablett" }] },
        }],
        "medicationReference": { "reference": "#m1" },
        "subject": { "reference": "Patient/p1" },
    });
    let options = Options {
        conformance: Some(&conformance),
        ..Options::default()
    };
    let report = validate_with(&statement, &options);
    assert!(!report.has_errors(), "{:?}", report.issues);
    // Without its FEST coding the medication is no no-basis-Medication.
    statement["contained"][0]["code"]["coding"][0]["system"] = "urn:local".into();
    let report = validate_with(&statement, &options);
    let errors: Vec<(&str, &str)> = report
        .errors()
        .map(|i| (i.expression.as_str(), i.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].0,
        "MedicationStatement.medication.ofType(Reference)"
    );
    assert!(errors[0].1.contains("conforms to none of"), "{errors:#?}");
}
