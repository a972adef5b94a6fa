//! The type and element tables of `fjord-definitions`: every R4 type with its base, and every
//! element a type introduces (inherited ones are found through the base), with its types,
//! cardinality, binding and invariants.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::{entries, literal, text, HEADER};

/// The base (non-profile, non-logical) structure definitions, by type name.
fn base_definitions<'a>(bundles: &[&'a Value]) -> HashMap<&'a str, &'a Value> {
    bundles
        .iter()
        .flat_map(|b| entries(b))
        .filter(|d| {
            d["resourceType"] == "StructureDefinition"
                && d["derivation"] != "constraint"
                && d["kind"] != "logical"
        })
        .map(|d| (text(&d["id"]), d))
        .collect()
}

/// The invariant keys on a type's root element, its own and inherited.
fn root_constraint_keys(definition: &Value) -> HashSet<&str> {
    definition["snapshot"]["element"][0]["constraint"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| text(&c["key"]))
        .collect()
}

pub(crate) fn structures_source(bundles: &[&Value]) -> anyhow::Result<String> {
    let definitions = base_definitions(bundles);
    let base_of = |name: &str| -> Option<&str> {
        definitions
            .get(name)
            .and_then(|d| text(&d["baseDefinition"]).rsplit('/').next())
            .filter(|b| !b.is_empty())
    };
    let mut types = Vec::new();
    let mut elements = Vec::new();
    for (&name, definition) in &definitions {
        let kind = match text(&definition["kind"]) {
            "primitive-type" => "Primitive",
            "complex-type" => "Complex",
            _ => "Resource",
        };
        // The root's invariants that its base types do not already have; ele-1 is checked
        // natively on every element.
        let mut inherited: HashSet<&str> = HashSet::from(["ele-1"]);
        let mut ancestor = base_of(name);
        while let Some(a) = ancestor {
            inherited.extend(
                definitions
                    .get(a)
                    .map(|d| root_constraint_keys(d))
                    .unwrap_or_default(),
            );
            ancestor = base_of(a);
        }
        let root = &definition["snapshot"]["element"][0];
        let source = format!(
            "TypeDef {{ name: {}, kind: TypeKind::{kind}, base: {}, is_abstract: {}, \
             regex: {}, constraints: &[{}] }}",
            literal(name),
            crate::option(base_of(name)),
            definition["abstract"] == true,
            crate::option(primitive_regex(definition)),
            constraints_source(root, &inherited)
        );
        types.push((name, source));
        for element in definition["snapshot"]["element"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let path = text(&element["path"]);
            // Inherited elements are looked up on the base type; the type's own root is no element.
            if text(&element["base"]["path"]) != path || !path.contains('.') {
                continue;
            }
            // Invariants a value has by its type are checked with the type, not repeated here.
            let mut by_type: HashSet<&str> = HashSet::from(["ele-1"]);
            for code in element["type"].as_array().into_iter().flatten() {
                if let Some(d) = definitions.get(text(&code["code"])) {
                    by_type.extend(root_constraint_keys(d));
                }
            }
            elements.push((path.to_owned(), element_source(element, &by_type)));
        }
    }
    elements.sort_by(|a, b| a.0.cmp(&b.0));
    types.sort_by(|a, b| a.0.cmp(b.0));
    let types: Vec<String> = types.into_iter().map(|(_, source)| source).collect();
    let mut out = String::from(HEADER);
    out += "use crate::{Binding, BindingStrength as B, Constraint, ElementDef, Severity as S, TypeDef, TypeKind};\n\n";
    out += "/// Every R4 type (primitive, complex, resource; abstract ones included), sorted by name.\n";
    out += &format!(
        "pub(crate) static TYPES: &[TypeDef] = &[{}];\n\n",
        types.join(",\n")
    );
    out += "/// Every element a type introduces, sorted by path.\n";
    let elements: Vec<String> = elements.into_iter().map(|(_, source)| source).collect();
    out += &format!(
        "pub(crate) static ELEMENTS: &[ElementDef] = &[{}];\n",
        elements.join(",\n")
    );
    Ok(out)
}

/// The regular expression a primitive type's values match (on the `value` element's type).
fn primitive_regex(definition: &Value) -> Option<&str> {
    if definition["kind"] != "primitive-type" {
        return None;
    }
    definition["snapshot"]["element"]
        .as_array()?
        .iter()
        .filter(|e| text(&e["path"]).ends_with(".value"))
        .flat_map(|e| e["type"].as_array().into_iter().flatten())
        .flat_map(|t| t["extension"].as_array().into_iter().flatten())
        .find(|x| text(&x["url"]) == "http://hl7.org/fhir/StructureDefinition/regex")
        .and_then(|x| x["valueString"].as_str())
}

fn constraints_source(element: &Value, skip: &HashSet<&str>) -> String {
    let constraints: Vec<String> = element["constraint"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| !skip.contains(text(&c["key"])) && c["expression"].is_string())
        .map(|c| {
            let severity = if c["severity"] == "error" {
                "Error"
            } else {
                "Warning"
            };
            let best_practice = c["extension"].as_array().into_iter().flatten().any(|x| {
                text(&x["url"]).ends_with("/elementdefinition-bestpractice")
                    && x["valueBoolean"] == true
            });
            format!(
                "Constraint {{ key: {}, severity: S::{severity}, expression: {}, human: {}, \
                 best_practice: {best_practice} }}",
                literal(text(&c["key"])),
                literal(text(&c["expression"])),
                literal(text(&c["human"]))
            )
        })
        .collect();
    constraints.join(", ")
}

fn element_source(element: &Value, by_type: &HashSet<&str>) -> String {
    let types: Vec<String> = element["type"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let code = text(&t["code"]);
            // System types are spelled as FHIRPath URLs: `http://hl7.org/fhirpath/System.String`.
            literal(
                code.strip_prefix("http://hl7.org/fhirpath/")
                    .unwrap_or(code),
            )
        })
        .collect();
    let content_reference = element["contentReference"]
        .as_str()
        .map(|r| r.trim_start_matches('#'));
    let max = text(&element["max"]);
    let binding = &element["binding"];
    let strength = match text(&binding["strength"]) {
        "required" => Some("Required"),
        "extensible" => Some("Extensible"),
        "preferred" => Some("Preferred"),
        _ => None,
    };
    let binding = match (strength, binding["valueSet"].as_str()) {
        (Some(strength), Some(value_set)) => format!(
            "Some(Binding {{ strength: B::{strength}, value_set: {} }})",
            literal(value_set.split('|').next().unwrap_or(value_set))
        ),
        _ => "None".to_owned(),
    };
    format!(
        "ElementDef {{ path: {}, types: &[{}], min: {}, many: {}, summary: {}, \
         content_reference: {}, binding: {binding}, constraints: &[{}] }}",
        literal(text(&element["path"])),
        types.join(", "),
        element["min"].as_u64().unwrap_or(0),
        max != "1" && max != "0",
        element["isSummary"].as_bool().unwrap_or(false),
        crate::option(content_reference),
        constraints_source(element, by_type)
    )
}
