//! The type and element tables of `fjord-definitions`: every R4 type with its base, and every
//! element a type introduces (inherited ones are found through the base), with its types and
//! cardinality.

use serde_json::Value;

use crate::{entries, literal, text, HEADER};

pub(crate) fn structures_source(bundles: &[&Value]) -> anyhow::Result<String> {
    let mut types = Vec::new();
    let mut elements = Vec::new();
    for definition in bundles.iter().flat_map(|b| entries(b)) {
        let is_base_definition = definition["resourceType"] == "StructureDefinition"
            && definition["derivation"] != "constraint"
            && definition["kind"] != "logical";
        if !is_base_definition {
            continue;
        }
        let name = text(&definition["id"]);
        let kind = match text(&definition["kind"]) {
            "primitive-type" => "Primitive",
            "complex-type" => "Complex",
            _ => "Resource",
        };
        let base = text(&definition["baseDefinition"])
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty());
        let source = format!(
            "TypeDef {{ name: {}, kind: TypeKind::{kind}, base: {}, is_abstract: {} }}",
            literal(name),
            crate::option(base),
            definition["abstract"] == true
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
            elements.push((path.to_owned(), element_source(element)));
        }
    }
    elements.sort_by(|a, b| a.0.cmp(&b.0));
    types.sort_by(|a, b| a.0.cmp(b.0));
    let types: Vec<String> = types.into_iter().map(|(_, source)| source).collect();
    let mut out = String::from(HEADER);
    out += "use crate::{ElementDef, TypeDef, TypeKind};\n\n";
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

fn element_source(element: &Value) -> String {
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
    format!(
        "ElementDef {{ path: {}, types: &[{}], min: {}, many: {}, summary: {}, \
         content_reference: {} }}",
        literal(text(&element["path"])),
        types.join(", "),
        element["min"].as_u64().unwrap_or(0),
        max != "1" && max != "0",
        element["isSummary"].as_bool().unwrap_or(false),
        crate::option(content_reference)
    )
}
