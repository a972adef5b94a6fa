//! The transaction and search proofs on real data: all 120 Synthea patients of
//! `../shared/synthea` (92,114 resources) loaded through the REST API as the files are (two
//! batch bundles of shared resources with conditional creates, then 120 transactions that refer
//! to them by `urn:uuid:` and by condition), then searches whose answers the test computes
//! itself from the raw files, walking every page and checking that no id repeats and none is
//! missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use fjord_tests::{send, shared_dir};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::searching::ids;
use crate::server_with_tenant;

const LOINC: &str = "http://loinc.org";
const BODY_HEIGHT: &str = "8302-2";
/// Prediabetes: a condition of some patients (39 of 120).
const PREDIABETES: &str = "15777000";

/// The counts per type match the files; the stored references of three patients' resources are
/// the ones the bundles meant (conditional references to what the batch files created); the
/// batch files loaded again create nothing new where they are conditional.
fn loaded_as_sent(base: &str, bundles: &[Value], resources: &[Value]) {
    let count = |resource_type: &str| {
        let reply = send(
            "GET",
            &format!("{base}/{resource_type}?_summary=count"),
            &[],
            None,
        );
        reply.json()["total"].as_u64().unwrap() as usize
    };
    let mut per_type: BTreeMap<&str, usize> = BTreeMap::new();
    for resource in resources {
        *per_type.entry(kind(resource)).or_default() += 1;
    }
    for (resource_type, expected) in &per_type {
        assert_eq!(count(resource_type), *expected, "{resource_type}");
    }

    let shared: BTreeSet<String> = resources[..778]
        .iter()
        .map(|r| format!("{}/{}", kind(r), id(r)))
        .collect();
    let mut to_shared = 0;
    for resource in &resources[778..][..3 * 700] {
        let url = format!("{base}/{}/{}", kind(resource), id(resource));
        let stored = send("GET", &url, &[], None).json();
        let (mut found, mut expected) = (Vec::new(), Vec::new());
        references(&stored, &mut found);
        references(resource, &mut expected);
        assert_eq!(found, expected, "{url}");
        to_shared += found.iter().filter(|r| shared.contains(*r)).count();
    }
    assert!(
        to_shared > 100,
        "{to_shared} references to the batch files' resources"
    );

    for bundle in &bundles[..2] {
        for (entry, response) in entries(bundle).iter().zip(post_bundle(base, bundle)) {
            let status = &response["response"]["status"];
            if entry["request"]["ifNoneExist"].is_string() {
                assert_eq!(status, "200 OK", "{response}");
            } else {
                // A POST without a condition creates, as R4 says: the PractitionerRoles.
                assert_eq!(status, "201 Created", "{response}");
            }
        }
    }
    for (resource_type, expected) in per_type {
        let again = if resource_type == "PractitionerRole" {
            2 * expected
        } else {
            expected
        };
        assert_eq!(count(resource_type), again, "{resource_type}");
    }
}

/// The data set's bundles: the two batch files of organizations, locations and practitioners
/// (`0-*`) first, then the 120 patient transactions.
fn synthea_bundles() -> Vec<Value> {
    let dir = shared_dir().join("synthea/blaze-120-patients-bz2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "bz2"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 122, "120 patients and two shared files");
    files
        .iter()
        .map(|path| {
            let mut text = String::new();
            bzip2::read::BzDecoder::new(std::fs::File::open(path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

fn entries(bundle: &Value) -> &[Value] {
    bundle["entry"].as_array().unwrap()
}

/// POSTs a bundle; the response's entries.
pub(crate) fn post_bundle(base: &str, bundle: &Value) -> Vec<Value> {
    let reply = send(
        "POST",
        base,
        &[("Content-Type", "application/fhir+json")],
        Some(&bundle.to_string()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let response = reply.json();
    let entries = response["entry"].as_array().unwrap().clone();
    assert_eq!(entries.len(), bundle["entry"].as_array().unwrap().len());
    entries
}

/// `Type/id` of a response entry's `location` (`Type/id/_history/v`).
fn located(response: &Value) -> String {
    let location = response["response"]["location"].as_str().unwrap();
    let mut parts = location.split('/');
    format!("{}/{}", parts.next().unwrap(), parts.next().unwrap())
}

/// Loads the bundles through the REST API as they are: the batch files one after the other,
/// then the transactions from four clients at once, each entry answered `201 Created`. Returns
/// what each `fullUrl`, and each identifier condition the transactions refer by, became.
fn load(base: &str, bundles: &[Value]) -> HashMap<String, String> {
    let (batches, transactions) = bundles.split_at(2);
    let mut located_at = HashMap::new();
    for bundle in batches {
        assert_eq!(bundle["type"], "batch");
        for (entry, response) in entries(bundle).iter().zip(post_bundle(base, bundle)) {
            assert_eq!(response["response"]["status"], "201 Created", "{response}");
            let local = located(&response);
            let resource = &entry["resource"];
            for identifier in resource["identifier"].as_array().into_iter().flatten() {
                let (Some(system), Some(value)) =
                    (identifier["system"].as_str(), identifier["value"].as_str())
                else {
                    continue;
                };
                located_at.insert(
                    format!("{}?identifier={system}|{value}", kind(resource)),
                    local.clone(),
                );
            }
            located_at.insert(entry["fullUrl"].as_str().unwrap().to_owned(), local);
        }
    }
    let located_at = std::sync::Mutex::new(located_at);
    std::thread::scope(|scope| {
        for chunk in transactions.chunks(transactions.len().div_ceil(4)) {
            let located_at = &located_at;
            scope.spawn(move || {
                for bundle in chunk {
                    assert_eq!(bundle["type"], "transaction");
                    let responses = post_bundle(base, bundle);
                    let mut located_at = located_at.lock().unwrap();
                    for (entry, response) in entries(bundle).iter().zip(responses) {
                        assert_eq!(response["response"]["status"], "201 Created");
                        located_at.insert(
                            entry["fullUrl"].as_str().unwrap().to_owned(),
                            located(&response),
                        );
                    }
                }
            });
        }
    });
    located_at.into_inner().unwrap()
}

/// Every resource of the bundles as the server should hold it: its id the one the server gave
/// it, its references resolved to `Type/id`.
fn as_loaded(bundles: &[Value], located_at: &HashMap<String, String>) -> Vec<Value> {
    let mut resources = Vec::new();
    for entry in bundles.iter().flat_map(entries) {
        let mut resource = entry["resource"].clone();
        let local = &located_at[entry["fullUrl"].as_str().unwrap()];
        resource["id"] = Value::String(local.split_once('/').unwrap().1.to_owned());
        resolve(&mut resource, located_at);
        resources.push(resource);
    }
    resources
}

/// Every `reference` in `value`, in document order.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match child {
                    Value::String(reference) if key == "reference" => found.push(reference.clone()),
                    _ => references(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

fn resolve(value: &mut Value, by_reference: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match child {
                    Value::String(reference)
                        if key == "reference" && !reference.starts_with('#') =>
                    {
                        if let Some(local) = by_reference.get(reference.as_str()) {
                            *reference = local.clone();
                        } else {
                            assert!(!reference.contains([':', '?']), "unresolved {reference}");
                        }
                    }
                    _ => resolve(child, by_reference),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| resolve(item, by_reference)),
        _ => {}
    }
}

fn kind(resource: &Value) -> &str {
    resource["resourceType"].as_str().unwrap()
}

fn id(resource: &Value) -> &str {
    resource["id"].as_str().unwrap()
}

fn codes(concept: &Value) -> impl Iterator<Item = (&str, &str)> {
    concept["coding"].as_array().into_iter().flatten().map(|c| {
        (
            c["system"].as_str().unwrap_or(""),
            c["code"].as_str().unwrap_or(""),
        )
    })
}

fn has_code(concept: &Value, system: Option<&str>, code: &str) -> bool {
    codes(concept).any(|(s, c)| c == code && system.is_none_or(|system| s == system))
}

fn of_type<'a>(resources: &'a [Value], resource_type: &'a str) -> impl Iterator<Item = &'a Value> {
    resources.iter().filter(move |r| kind(r) == resource_type)
}

fn id_set<'a>(resources: impl Iterator<Item = &'a Value>) -> BTreeSet<String> {
    resources.map(|r| id(r).to_owned()).collect()
}

/// The id of the `Patient/…` a reference element points at.
fn patient_of(reference: &Value) -> Option<&str> {
    reference["reference"].as_str()?.strip_prefix("Patient/")
}

fn epoch_ms(date_time: &str) -> i64 {
    (OffsetDateTime::parse(date_time, &Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
        / 1_000_000) as i64
}

/// Whether any name part of the patient starts with `prefix` (lowercase ASCII: Synthea's names are).
fn name_starts_with(patient: &Value, prefix: &str) -> bool {
    patient["name"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|name| {
            let mut parts: Vec<&str> = name["family"].as_str().into_iter().collect();
            for key in ["given", "prefix", "suffix"] {
                parts.extend(
                    name[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
            }
            parts.extend(name["text"].as_str());
            parts.iter().any(|p| p.to_lowercase().starts_with(prefix))
        })
}

/// Every page of a search: (match ids, include `Type/id`s), checking that no match repeats.
fn walk(base: &str, query: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut url = format!("{base}/{query}");
    let mut matches = Vec::new();
    let mut included = BTreeSet::new();
    loop {
        let reply = send("GET", &url, &[], None);
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        let page = reply.json();
        for entry in page["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            if entry["search"]["mode"] == "include" {
                included.insert(format!("{}/{}", kind(resource), id(resource)));
            } else {
                matches.push(id(resource).to_owned());
            }
        }
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => return (matches, included),
        }
    }
}

#[test]
fn synthea_loads_through_bundles_and_searches_match_the_raw_files() {
    let bundles = synthea_bundles();
    let (_server, base) = server_with_tenant();
    let located_at = load(&base, &bundles);
    let resources = as_loaded(&bundles, &located_at);
    assert_eq!(resources.len(), 92_114);
    loaded_as_sent(&base, &bundles, &resources);

    let patients: Vec<&Value> = of_type(&resources, "Patient").collect();
    assert_eq!(patients.len(), 120);
    let observations: Vec<&Value> = of_type(&resources, "Observation").collect();
    let heights: Vec<&Value> = observations
        .iter()
        .copied()
        .filter(|o| has_code(&o["code"], Some(LOINC), BODY_HEIGHT))
        .collect();
    let gender = |patient_id: &str, wanted: &str| {
        patients
            .iter()
            .any(|p| id(p) == patient_id && p["gender"] == wanted)
    };
    let since_2015 = epoch_ms("2015-01-01T00:00:00Z");
    let effective = |o: &Value| epoch_ms(o["effectiveDateTime"].as_str().unwrap());
    let prefix = patients[0]["name"][0]["family"].as_str().unwrap()[..3].to_lowercase();
    let named: BTreeSet<&str> = patients
        .iter()
        .filter(|p| name_starts_with(p, &prefix))
        .map(|p| id(p))
        .collect();
    let prediabetic: BTreeSet<String> = of_type(&resources, "Condition")
        .filter(|c| has_code(&c["code"], None, PREDIABETES))
        .filter_map(|c| patient_of(&c["subject"]).map(str::to_owned))
        .collect();
    assert!(!prediabetic.is_empty() && prediabetic.len() < 120);

    let cases: Vec<(String, BTreeSet<String>)> = vec![
        ("Patient?gender=female&_count=7".into(), id_set(patients.iter().copied().filter(|p| p["gender"] == "female"))),
        (
            "Patient?birthdate=ge1960&birthdate=lt1980".into(),
            id_set(patients.iter().copied().filter(|p| {
                let born = p["birthDate"].as_str().unwrap();
                ("1960-01-01"..="1979-12-31").contains(&born)
            })),
        ),
        (format!("Observation?code={LOINC}|{BODY_HEIGHT}&_count=100"), id_set(heights.iter().copied())),
        (
            format!("Observation?code={LOINC}|{BODY_HEIGHT}&date=ge2015-01-01"),
            id_set(heights.iter().copied().filter(|o| effective(o) >= since_2015)),
        ),
        (
            "Observation?category=laboratory&_count=500".into(),
            id_set(observations.iter().copied().filter(|o| {
                o["category"].as_array().into_iter().flatten().any(|c| has_code(c, None, "laboratory"))
            })),
        ),
        (
            format!(
                "Observation?code={LOINC}|{BODY_HEIGHT}&value-quantity=gt170|http://unitsofmeasure.org|cm"
            ),
            // A value is a point, the search value `170` the range [169.5, 170.5].
            id_set(heights.iter().copied().filter(|o| {
                o["valueQuantity"]["code"] == "cm" && o["valueQuantity"]["value"].as_f64().unwrap() > 170.5
            })),
        ),
        (
            format!("Observation?code={LOINC}|{BODY_HEIGHT}&subject:Patient.gender=female"),
            id_set(heights.iter().copied().filter(|o| patient_of(&o["subject"]).is_some_and(|p| gender(p, "female")))),
        ),
        (
            format!("Observation?code={LOINC}|{BODY_HEIGHT}&subject.name={prefix}"),
            id_set(heights.iter().copied().filter(|o| patient_of(&o["subject"]).is_some_and(|p| named.contains(p)))),
        ),
        (format!("Patient?_has:Condition:subject:code={PREDIABETES}"), prediabetic.clone()),
        (
            format!("Patient?_has:Condition:subject:code={PREDIABETES}&gender=male"),
            prediabetic.iter().filter(|p| gender(p, "male")).cloned().collect(),
        ),
        (
            "Observation?category=vital-signs&_sort=-date&_count=1000".into(),
            id_set(observations.iter().copied().filter(|o| {
                o["category"].as_array().into_iter().flatten().any(|c| has_code(c, None, "vital-signs"))
            })),
        ),
    ];
    let mut failures = Vec::new();
    for (query, expected) in &cases {
        let found = ids(&base, query);
        let found_set: BTreeSet<String> = found.iter().cloned().collect();
        if &found_set != expected {
            failures.push(format!(
                "{query}: expected {}, found {} ({} missing, {} extra)",
                expected.len(),
                found_set.len(),
                expected.difference(&found_set).count(),
                found_set.difference(expected).count()
            ));
        }
        let total = send("GET", &format!("{base}/{query}&_summary=count"), &[], None).json();
        if total["total"] != expected.len() {
            failures.push(format!(
                "{query}: _summary=count says {}, expected {}",
                total["total"],
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Sorted by date, latest first, across pages.
    let (sorted, _) = walk(
        &base,
        &format!("Observation?code={LOINC}|{BODY_HEIGHT}&_sort=-date&_count=50"),
    );
    let when: HashMap<&str, i64> = heights.iter().map(|o| (id(o), effective(o))).collect();
    assert_eq!(sorted.len(), heights.len());
    assert!(sorted
        .windows(2)
        .all(|w| when[w[0].as_str()] >= when[w[1].as_str()]));

    // _include: the subjects of the matches; _revinclude: the allergies of the matches.
    let (matched, included) = walk(&base, &format!("Observation?code={LOINC}|{BODY_HEIGHT}&date=ge2015-01-01&_include=Observation:subject&_count=40"));
    let subjects: BTreeSet<String> = heights
        .iter()
        .filter(|o| matched.iter().any(|m| m == id(o)))
        .filter_map(|o| o["subject"]["reference"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(included, subjects);
    let (men, included) = walk(
        &base,
        "Patient?gender=male&_revinclude=AllergyIntolerance:patient&_count=20",
    );
    let allergies: BTreeSet<String> = of_type(&resources, "AllergyIntolerance")
        .filter(|a| patient_of(&a["patient"]).is_some_and(|p| men.iter().any(|m| m == p)))
        .map(|a| format!("AllergyIntolerance/{}", id(a)))
        .collect();
    assert!(!allergies.is_empty());
    assert_eq!(included, allergies);
}
