//! Index extraction over the official R4 examples: every search parameter of every example's type
//! evaluates, and the values land in the types their parameters have.

use std::collections::BTreeMap;

use fjord_search::{extract, IndexValue, Registry};
use serde_json::Value as Json;

#[test]
fn every_r4_example_is_indexed() {
    let registry = Registry::r4().unwrap();
    let (mut resources, mut failures) = (0, Vec::new());
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for path in fjord_tests::r4_example_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(json) = serde_json::from_str::<Json>(&text) else {
            continue;
        };
        if json["resourceType"].as_str().is_none() {
            continue;
        }
        resources += 1;
        match extract(&registry, &json) {
            Ok(entries) => {
                for entry in entries {
                    *by_kind.entry(kind(&entry.value)).or_default() += 1;
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    println!("{resources} examples indexed: {by_kind:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(resources > 5000);
    // Every kind of value is produced somewhere in the examples.
    for kind in [
        "token",
        "string",
        "date",
        "number",
        "quantity",
        "reference",
        "uri",
        "composite",
    ] {
        assert!(
            by_kind.get(kind).is_some_and(|n| *n > 0),
            "no {kind} values"
        );
    }
}

fn kind(value: &IndexValue) -> &'static str {
    match value {
        IndexValue::Token { .. } | IndexValue::IdentifierOfType { .. } => "token",
        IndexValue::String { .. } => "string",
        IndexValue::Date { .. } => "date",
        IndexValue::Number { .. } => "number",
        IndexValue::Quantity { .. } => "quantity",
        IndexValue::Reference { .. } => "reference",
        IndexValue::Uri(_) => "uri",
        IndexValue::Composite(_) => "composite",
    }
}
