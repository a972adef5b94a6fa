//! A resource as the text index sees it: its narrative without markup, all its strings, and the
//! texts of its token parameters.

use fjord_search::{IndexValue, Registry, SearchParamType};
use serde_json::Value as Json;

/// The texts of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDocument {
    pub resource_type: String,
    pub id: String,
    pub narrative: String,
    pub content: String,
    /// (token parameter, text): displays, `CodeableConcept.text`, identifier type texts.
    pub tokens: Vec<(String, String)>,
}

/// The document of `resource`, a current version of `resource_type/id`; token texts as the
/// tenant's `registry` extracts them.
pub fn document(
    registry: &Registry,
    resource_type: &str,
    id: &str,
    resource: &Json,
) -> TextDocument {
    let narrative = resource
        .get("text")
        .and_then(|text| text.get("div"))
        .and_then(Json::as_str)
        .map(narrative_text)
        .unwrap_or_default();
    let mut content = String::new();
    collect_strings(resource, &mut content);
    let mut tokens = Vec::new();
    for parameter in registry.parameters_of(resource_type) {
        if parameter.kind != SearchParamType::Token || !parameter.is_searchable() {
            continue;
        }
        // A parameter whose expression fails on this resource has no texts; the write that
        // stored it indexed the same way.
        let Ok(values) = fjord_search::values_of(registry, resource, &parameter.code) else {
            continue;
        };
        for value in values {
            if let IndexValue::Token {
                text: Some(text), ..
            } = value
            {
                tokens.push((parameter.code.clone(), text));
            }
        }
    }
    TextDocument {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        narrative,
        content,
        tokens,
    }
}

/// Every string value, one per line; the narrative as text, not markup; not `resourceType`.
fn collect_strings(value: &Json, out: &mut String) {
    match value {
        Json::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Json::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Json::Object(members) => {
            for (name, member) in members {
                match (name.as_str(), member) {
                    ("resourceType", _) => {}
                    ("div", Json::String(xhtml)) => {
                        out.push_str(&narrative_text(xhtml));
                        out.push('\n');
                    }
                    _ => collect_strings(member, out),
                }
            }
        }
        _ => {}
    }
}

/// The text of an XHTML narrative: tags become spaces, entities their characters.
pub fn narrative_text(xhtml: &str) -> String {
    let mut text = String::with_capacity(xhtml.len());
    let mut rest = xhtml;
    while let Some(at) = rest.find(['<', '&']) {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => rest = "",
            }
            text.push(' ');
        } else {
            match rest.find(';').filter(|end| *end <= 10) {
                Some(end) => {
                    match entity(&rest[1..end]) {
                        Some(c) => text.push(c),
                        None => text.push_str(&rest[..=end]),
                    }
                    rest = &rest[end + 1..];
                }
                None => {
                    text.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    text.push_str(rest);
    text
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}
