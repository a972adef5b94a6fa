//! A snapshot generated from a differential: what a profile written as changes to its base (as
//! Fjord's own profiles in `profiles/` are) needs before it can be compiled.
//!
//! The base is either a profile with a snapshot, whose elements are taken and the differential's
//! changes merged into them by element id, or a core type, whose elements come from the compiled
//! R4 definitions (path, cardinality, types) for the paths the differential names and their
//! ancestors: the rest of the core structure is base R4's, which `structure` checks anyway.
//! Constraints are added to the base's, everything else the differential states replaces it.

use serde_json::{json, Value};

use crate::conformance::ConformanceError;

const CORE: &str = "http://hl7.org/fhir/StructureDefinition/";

/// `definition` with a snapshot, generated from its differential on `base` (the base profile's
/// StructureDefinition, or `None` for a core type).
pub fn generate(definition: &Value, base: Option<&Value>) -> Result<Value, ConformanceError> {
    let url = definition["url"].as_str().unwrap_or_default().to_owned();
    let bad = |message: String| ConformanceError::BadProfile {
        url: url.clone(),
        message,
    };
    let differential = definition["differential"]["element"]
        .as_array()
        .ok_or_else(|| ConformanceError::NoSnapshot(url.clone()))?;
    let type_name = definition["type"]
        .as_str()
        .ok_or_else(|| bad("no type".into()))?;
    let mut elements: Vec<Value> = match base {
        Some(base) => base["snapshot"]["element"]
            .as_array()
            .cloned()
            .ok_or_else(|| bad("its base has no snapshot".into()))?,
        None => vec![json!({ "id": type_name, "path": type_name, "min": 0, "max": "*" })],
    };
    for change in differential {
        let id = change["id"]
            .as_str()
            .or_else(|| change["path"].as_str())
            .ok_or_else(|| bad("an element without id or path".into()))?;
        ensure_ancestors(&mut elements, id, &bad)?;
        match elements.iter().position(|e| e["id"] == id) {
            Some(at) => merge(&mut elements[at], change),
            None => {
                let mut element = base_element(&elements, id)
                    .ok_or_else(|| bad(format!("{id}: no such element in the base")))?;
                merge(&mut element, change);
                let at = insertion_point(&elements, id);
                elements.insert(at, element);
            }
        }
    }
    let mut with_snapshot = definition.clone();
    with_snapshot["snapshot"] = json!({ "element": elements });
    Ok(with_snapshot)
}

/// Adds the elements between the root and `id` that the snapshot does not have yet (core
/// elements, from the definitions).
fn ensure_ancestors(
    elements: &mut Vec<Value>,
    id: &str,
    bad: &impl Fn(String) -> ConformanceError,
) -> Result<(), ConformanceError> {
    let segments: Vec<&str> = id.split('.').collect();
    for depth in 2..segments.len() {
        let ancestor = segments[..depth].join(".");
        if elements.iter().any(|e| e["id"] == ancestor.as_str()) {
            continue;
        }
        if ancestor
            .rsplit('.')
            .next()
            .is_some_and(|last| last.contains(':'))
        {
            return Err(bad(format!("{id}: the slice {ancestor} is not declared")));
        }
        let element = base_element(elements, &ancestor)
            .ok_or_else(|| bad(format!("{ancestor}: no such element in the base")))?;
        let at = insertion_point(elements, &ancestor);
        elements.insert(at, element);
    }
    Ok(())
}

/// The element a new id starts from: for a slice (`…identifier:FNR`), the sliced element
/// without its slicing; for an element inside a slice, the same element of the sliced one;
/// otherwise the core definition of its path.
fn base_element(elements: &[Value], id: &str) -> Option<Value> {
    let (parent, last) = id.rsplit_once('.')?;
    if let Some((name, slice)) = last.split_once(':') {
        let sliced = format!("{parent}.{name}");
        let mut element = elements
            .iter()
            .find(|e| e["id"] == sliced.as_str())?
            .clone();
        let object = element.as_object_mut()?;
        object.remove("slicing");
        object.insert("id".into(), json!(id));
        object.insert("sliceName".into(), json!(slice));
        return Some(element);
    }
    // Inside a slice: the same element of the sliced one, if the snapshot has it.
    let unsliced: String = id
        .split('.')
        .map(|s| s.split(':').next().unwrap_or(s))
        .collect::<Vec<_>>()
        .join(".");
    if unsliced != id {
        if let Some(found) = elements.iter().find(|e| e["id"] == unsliced.as_str()) {
            let mut element = found.clone();
            element["id"] = json!(id);
            return Some(element);
        }
    }
    core_element(&unsliced).map(|mut element| {
        element["id"] = json!(id);
        element
    })
}

/// A core element by its path (`Observation.component.code`), from the definitions.
fn core_element(path: &str) -> Option<Value> {
    let (parent, name) = path.rsplit_once('.')?;
    let name = name.trim_end_matches("[x]");
    let structure = structure_of_path(parent)?;
    let definition = fjord_definitions::child_element(&structure, name)?;
    let types: Vec<Value> = definition
        .types
        .iter()
        .map(|t| json!({ "code": t }))
        .collect();
    let mut element = json!({
        "path": path,
        "min": definition.min,
        "max": if definition.many { "*" } else { "1" },
        "type": types,
    });
    if definition.types.is_empty() {
        element["type"] = json!([{ "code": "BackboneElement" }]);
    }
    Some(element)
}

/// Where the children of a core path are defined: `Observation.component` is an inline
/// structure, `Observation.code` a CodeableConcept.
fn structure_of_path(path: &str) -> Option<String> {
    let mut segments = path.split('.');
    let mut structure = segments.next()?.to_owned();
    for segment in segments {
        let definition =
            fjord_definitions::child_element(&structure, segment.trim_end_matches("[x]"))?;
        let type_code = definition
            .types
            .first()
            .copied()
            .unwrap_or("BackboneElement");
        structure = definition.structure_of(type_code).to_owned();
    }
    Some(structure)
}

/// After the last element whose id starts with `id`'s parent (its siblings and their
/// descendants), so parents come before children.
fn insertion_point(elements: &[Value], id: &str) -> usize {
    let parent = id.rsplit_once('.').map_or(id, |(p, _)| p);
    let prefix = format!("{parent}.");
    elements
        .iter()
        .rposition(|e| {
            let other = e["id"].as_str().unwrap_or_default();
            other == parent || other.starts_with(&prefix)
        })
        .map_or(elements.len(), |i| i + 1)
}

/// The differential's statements over the base element's: constraints added, the rest replaced.
fn merge(element: &mut Value, change: &Value) {
    let (Some(target), Some(change)) = (element.as_object_mut(), change.as_object()) else {
        return;
    };
    for (key, value) in change {
        if key == "constraint" {
            let mut all = target
                .get("constraint")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            all.extend(value.as_array().into_iter().flatten().cloned());
            target.insert(key.clone(), Value::Array(all));
        } else {
            // A new fixed/pattern value replaces any of another type.
            if key.starts_with("fixed") || key.starts_with("pattern") {
                let prefix = if key.starts_with("fixed") {
                    "fixed"
                } else {
                    "pattern"
                };
                target.retain(|k, _| !k.starts_with(prefix));
            }
            target.insert(key.clone(), value.clone());
        }
    }
}

/// Whether a base definition URL names a core type.
pub(crate) fn is_core(url: &str) -> bool {
    url.starts_with(CORE)
}
