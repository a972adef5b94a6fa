//! `_summary` and `_elements`: the parts of a resource a client asked for, marked `SUBSETTED`
//! so that nobody mistakes them for the whole.

use fjord_definitions::ElementDef;
use fjord_search::Summary;
use serde_json::{json, Value};

/// The tag of a resource with elements left out.
const SUBSETTED: (&str, &str) = (
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "SUBSETTED",
);

/// Reduces `resource` (a JSON object) to what `summary` and `elements` ask for; `elements`
/// names top-level elements (`value` for `valueQuantity`). Nothing changes when neither asks
/// for less than everything.
pub fn subset(resource: &mut Value, summary: Summary, elements: &[String]) {
    let Some(resource_type) = resource["resourceType"].as_str().map(str::to_owned) else {
        return;
    };
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let before = object.len();
    let keep = |key: &str| -> bool {
        if matches!(key, "resourceType" | "id" | "meta") {
            return true;
        }
        let element = element_of(&resource_type, key);
        if !elements.is_empty() {
            let name = element
                .map(ElementDef::name)
                .unwrap_or(key.trim_start_matches('_'));
            return elements.iter().any(|e| e == name);
        }
        match summary {
            Summary::False | Summary::Count => true,
            Summary::Data => key != "text",
            Summary::Text => key == "text" || element.is_some_and(|e| e.min > 0),
            Summary::True => element.is_some_and(|e| e.summary),
        }
    };
    object.retain(|key, _| keep(key));
    if object.len() == before && summary != Summary::Data {
        return;
    }
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({ "system": SUBSETTED.0, "code": SUBSETTED.1 }));
        }
    }
}

/// The definition of a top-level JSON key: `code`, `_code` (its extensions) or `valueQuantity`
/// (the choice `value[x]`).
fn element_of(resource_type: &str, key: &str) -> Option<&'static ElementDef> {
    let key = key.strip_prefix('_').unwrap_or(key);
    if let Some(element) = fjord_definitions::child_element(resource_type, key) {
        return Some(element);
    }
    key.char_indices()
        .filter(|(_, c)| c.is_ascii_uppercase())
        .find_map(|(at, _)| {
            fjord_definitions::child_element(resource_type, &key[..at]).filter(|e| e.is_choice())
        })
}
