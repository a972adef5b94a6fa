//! Index terms: how the extracted values of a resource are stored so that searches find them.
//!
//! Values that searches only compare for equality (tokens, references, URIs, composites of
//! those, and "has a value" for `:missing`) become 64-bit [`keys`] in one array on the resource's
//! current row, answered by one GIN index: a write adds one row, not one per value. Values that
//! searches compare by order get rows of their own with B-tree indexes: dates (ranges, sorting)
//! and strings (prefix matching). Numbers, quantities and composites with an ordered part are
//! kept as JSON beside the keys ([`IndexTerms::values`]) and checked on the rows the other
//! criteria find. Token texts (`:text`) are the text index's (`fjord-text`).
//!
//! The query side computes its keys with the same functions, so a key means the same thing on
//! both sides by construction.

use serde_json::{json, Map, Value as Json};

use crate::{IndexEntry, IndexValue};

/// The keys of (type, parameter, value) triples. SipHash-1-3 with fixed keys: its definition
/// does not change between releases, so stored keys stay valid. Parts are separated by a byte
/// that FHIR strings do not carry (unit separator).
pub mod keys {
    use std::hash::Hasher;

    use siphasher::sip::SipHasher13;

    fn hash(parts: &[&str]) -> i64 {
        let mut hasher = SipHasher13::new();
        for part in parts {
            hasher.write(part.as_bytes());
            hasher.write_u8(0x1f);
        }
        hasher.finish() as i64
    }

    /// The resource has at least one value of the parameter (`:missing`).
    pub fn presence(resource_type: &str, param: &str) -> i64 {
        hash(&["p", resource_type, param])
    }

    /// The rows of a parameter in the ordered tables (dates, strings).
    pub fn param(resource_type: &str, param: &str) -> i64 {
        hash(&["v", resource_type, param])
    }

    /// A resource's own key, linking its ordered rows to its current row (the store's business).
    pub fn resource(resource_type: &str, id: &str) -> i64 {
        hash(&["res", resource_type, id])
    }

    /// `param=code`: the code in any system.
    pub fn token_code(resource_type: &str, param: &str, code: &str) -> i64 {
        hash(&["tc", resource_type, param, code])
    }

    /// `param=system|code`, and `param=|code` with `system` empty (no system).
    pub fn token_system_code(resource_type: &str, param: &str, system: &str, code: &str) -> i64 {
        hash(&["tsc", resource_type, param, system, code])
    }

    /// `param=system|`: any code of the system.
    pub fn token_system(resource_type: &str, param: &str, system: &str) -> i64 {
        hash(&["ts", resource_type, param, system])
    }

    /// `param=Type/id`: the parameter's [`link`] combined with the target's own key, so that
    /// the store can compute in SQL the key of a reference to a row it has found
    /// (`resource_key # link`), which chaining, `_has` and compartments need.
    pub fn reference(resource_type: &str, param: &str, target_type: &str, id: &str) -> i64 {
        link(resource_type, param) ^ resource(target_type, id)
    }

    /// The half of a `Type/id` reference key that names the referring parameter.
    pub fn link(resource_type: &str, param: &str) -> i64 {
        hash(&["r", resource_type, param])
    }

    /// `param=id`: a local reference to the id, whatever the target's type.
    pub fn reference_id(resource_type: &str, param: &str, id: &str) -> i64 {
        hash(&["ri", resource_type, param, id])
    }

    /// `param=url`: an absolute or canonical reference.
    pub fn reference_url(resource_type: &str, param: &str, url: &str) -> i64 {
        hash(&["ru", resource_type, param, url])
    }

    /// A search, from a description of its types, filters and sort (page tokens name it).
    pub fn search(description: &str) -> i64 {
        hash(&["q", description])
    }

    /// The pseudo-parameter under which `param:identifier` keys its tokens.
    pub fn identifier_param(param: &str) -> String {
        format!("{param}:identifier")
    }

    pub fn uri(resource_type: &str, param: &str, uri: &str) -> i64 {
        hash(&["u", resource_type, param, uri])
    }

    /// `param:below=prefix`: the URI is `prefix` or below it on path segments.
    pub fn uri_below(resource_type: &str, param: &str, prefix: &str) -> i64 {
        hash(&["ub", resource_type, param, prefix])
    }

    /// `param:of-type=system|code|value`: an identifier's value under a coding of its type;
    /// `type_system` empty for any system.
    pub fn of_type(
        resource_type: &str,
        param: &str,
        type_system: &str,
        type_code: &str,
        value: &str,
    ) -> i64 {
        hash(&["ot", resource_type, param, type_system, type_code, value])
    }

    /// The pseudo-parameter under which part `index` of a composite keys its values.
    pub fn component_param(param: &str, index: usize) -> String {
        format!("{param}${index}")
    }

    /// One combination of part keys of a composite parameter.
    pub fn composite(resource_type: &str, param: &str, part_keys: &[i64]) -> i64 {
        let parts: Vec<String> = part_keys.iter().map(i64::to_string).collect();
        let mut all = vec!["c", resource_type, param];
        all.extend(parts.iter().map(String::as_str));
        hash(&all)
    }
}

/// What the store writes for one version of a resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexTerms {
    /// Equality keys, sorted, without repeats.
    pub keys: Vec<i64>,
    /// Values checked on found rows, by parameter code: a JSON object of arrays, `None` if empty.
    pub values: Option<String>,
    pub strings: Vec<StringTerm>,
    pub dates: Vec<DateTerm>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StringTerm {
    pub param_key: i64,
    pub normalized: String,
    pub exact: String,
}

/// UTC milliseconds since 1970, both ends inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct DateTerm {
    pub param_key: i64,
    pub low: i64,
    pub high: i64,
}

/// The terms of one resource from its extracted entries.
pub fn index_terms(resource_type: &str, entries: &[IndexEntry]) -> IndexTerms {
    let mut terms = IndexTerms::default();
    let mut values: Map<String, Json> = Map::new();
    let (mut smallest, mut largest) = (Map::new(), Map::new());
    for IndexEntry { code, value } in entries {
        terms.keys.push(keys::presence(resource_type, code));
        if let Some(text) = sort_text(value) {
            keep_extreme(&mut smallest, code, &text, std::cmp::Ordering::Less);
            keep_extreme(&mut largest, code, &text, std::cmp::Ordering::Greater);
        }
        match value {
            IndexValue::String { exact, normalized } => terms.strings.push(StringTerm {
                param_key: keys::param(resource_type, code),
                normalized: normalized.clone(),
                exact: exact.clone(),
            }),
            IndexValue::Date { low, high } => terms.dates.push(DateTerm {
                param_key: keys::param(resource_type, code),
                low: *low,
                high: *high,
            }),
            IndexValue::Number { .. } | IndexValue::Quantity { .. } => {
                if let Some(value) = ordered_value(value) {
                    push_value(&mut values, code, value);
                }
            }
            // Token texts (`:text`) are the text index's business.
            IndexValue::Token { .. }
            | IndexValue::Reference { .. }
            | IndexValue::Uri(_)
            | IndexValue::IdentifierOfType { .. } => {
                terms.keys.extend(equality_keys(resource_type, code, value));
            }
            IndexValue::Composite(parts) => {
                composite_terms(resource_type, code, parts, &mut terms.keys, &mut values)
            }
        }
    }
    terms.keys.sort_unstable();
    terms.keys.dedup();
    // The largest only where it differs from the smallest: most parameters have one value.
    largest.retain(|code, text| smallest.get(code) != Some(text));
    if !smallest.is_empty() {
        values.insert(SORT_SMALLEST.into(), Json::Object(smallest));
    }
    if !largest.is_empty() {
        values.insert(SORT_LARGEST.into(), Json::Object(largest));
    }
    if !values.is_empty() {
        terms.values = Some(Json::Object(values).to_string());
    }
    terms
}

/// Under these names [`IndexTerms::values`] keeps, per token, reference and URI parameter, the
/// smallest and (when different) the largest of its values as text, for `_sort`. No parameter
/// code has these characters.
pub const SORT_SMALLEST: &str = "~";
pub const SORT_LARGEST: &str = "^";

/// What a token (its code), reference (`Type/id`, else its URL) or URI sorts by.
fn sort_text(value: &IndexValue) -> Option<String> {
    match value {
        IndexValue::Token { code, .. } => code.clone(),
        IndexValue::Reference {
            resource_type: Some(target),
            id: Some(id),
            ..
        } => Some(format!("{target}/{id}")),
        IndexValue::Reference { url, .. } => url.clone(),
        IndexValue::Uri(uri) => Some(uri.clone()),
        _ => None,
    }
}

fn keep_extreme(kept: &mut Map<String, Json>, code: &str, text: &str, wanted: std::cmp::Ordering) {
    let replace = match kept.get(code).and_then(Json::as_str) {
        Some(current) => text.cmp(current) == wanted,
        None => true,
    };
    if replace {
        kept.insert(code.to_owned(), Json::String(text.to_owned()));
    }
}

/// The keys an equality search on one value of `param` may ask for.
pub fn equality_keys(resource_type: &str, param: &str, value: &IndexValue) -> Vec<i64> {
    let mut found = Vec::new();
    match value {
        IndexValue::Token { system, code, .. } => {
            if let Some(code) = code {
                found.push(keys::token_code(resource_type, param, code));
                found.push(keys::token_system_code(
                    resource_type,
                    param,
                    system.as_deref().unwrap_or(""),
                    code,
                ));
            }
            if let Some(system) = system {
                found.push(keys::token_system(resource_type, param, system));
            }
        }
        IndexValue::Reference {
            resource_type: target_type,
            id,
            url,
            identifier,
        } => {
            if let (Some(target_type), Some(id)) = (target_type, id) {
                found.push(keys::reference(resource_type, param, target_type, id));
                found.push(keys::reference_id(resource_type, param, id));
            }
            if let Some(url) = url {
                found.push(keys::reference_url(resource_type, param, url));
            }
            if let Some((system, value)) = identifier {
                let token = IndexValue::Token {
                    system: system.clone(),
                    code: Some(value.clone()),
                    text: None,
                };
                found.extend(equality_keys(
                    resource_type,
                    &keys::identifier_param(param),
                    &token,
                ));
            }
        }
        IndexValue::Uri(uri) => {
            found.push(keys::uri(resource_type, param, uri));
            found.extend(
                uri_parents(uri)
                    .chain([uri.as_str()])
                    .map(|parent| keys::uri_below(resource_type, param, parent)),
            );
        }
        IndexValue::IdentifierOfType {
            type_system,
            type_code,
            value,
        } => {
            if let Some(type_system) = type_system {
                found.push(keys::of_type(
                    resource_type,
                    param,
                    type_system,
                    type_code,
                    value,
                ));
            }
            found.push(keys::of_type(resource_type, param, "", type_code, value));
        }
        _ => {}
    }
    found
}

/// The parents of a URI on its path segments, nearest last: `http://a.org/fhir/ValueSet/1` has
/// `http://a.org`, `http://a.org/fhir` and `http://a.org/fhir/ValueSet` (`:above`, `:below`).
pub fn uri_parents(uri: &str) -> impl Iterator<Item = &str> {
    let path_start = uri.find("://").map_or(0, |at| at + 3);
    uri.char_indices()
        .filter(move |(at, c)| *c == '/' && *at > path_start)
        .map(move |(at, _)| &uri[..at])
}

/// A value checked on found rows, as stored under its parameter in [`IndexTerms::values`]:
/// numbers and quantities as decimal strings (`v`, with `lo`/`hi` the range the written
/// precision implies), quantity units (`s`, `c`, `u`) and the canonical value and unit (`cv`,
/// `cc`), dates as `lo`/`hi`, strings as `n` (normalized) and `x` (exact).
fn ordered_value(value: &IndexValue) -> Option<Json> {
    Some(match value {
        IndexValue::Number { value, low, high } => json!({
            "v": value.to_string(), "lo": low.to_string(), "hi": high.to_string(),
        }),
        IndexValue::Quantity {
            value,
            system,
            code,
            unit,
            canonical,
        } => {
            let mut object = json!({ "v": value.to_string(), "s": system, "c": code, "u": unit });
            if let Some((canonical_value, canonical_code)) = canonical {
                object["cv"] = json!(canonical_value.to_string());
                object["cc"] = json!(canonical_code);
            }
            object
        }
        IndexValue::Date { low, high } => json!({ "lo": low, "hi": high }),
        IndexValue::String { exact, normalized } => json!({ "n": normalized, "x": exact }),
        _ => return None,
    })
}

/// A composite whose parts all compare by equality becomes keys (every combination of its
/// parts' keys); one whose last part is ordered becomes a value with the keys of the parts
/// before it (`k`). Other shapes have no terms (the query side does not offer them).
fn composite_terms(
    resource_type: &str,
    param: &str,
    parts: &[IndexValue],
    keys_out: &mut Vec<i64>,
    values: &mut Map<String, Json>,
) {
    let Some((last, leading)) = parts.split_last() else {
        return;
    };
    let ordered = ordered_value(last);
    let equality_parts = if ordered.is_some() { leading } else { parts };
    let mut combinations: Vec<Vec<i64>> = vec![Vec::new()];
    for (index, part) in equality_parts.iter().enumerate() {
        let part_keys = equality_keys(resource_type, &keys::component_param(param, index), part);
        if part_keys.is_empty() {
            return;
        }
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                part_keys.iter().map(move |key| {
                    let mut next = prefix.clone();
                    next.push(*key);
                    next
                })
            })
            .collect();
    }
    let combined: Vec<i64> = combinations
        .iter()
        .map(|combination| keys::composite(resource_type, param, combination))
        .collect();
    match ordered {
        Some(mut value) => {
            value["k"] = json!(combined);
            push_value(values, param, value);
        }
        None => keys_out.extend(combined),
    }
}

fn push_value(values: &mut Map<String, Json>, param: &str, value: Json) {
    match values
        .entry(param.to_owned())
        .or_insert_with(|| Json::Array(Vec::new()))
    {
        Json::Array(list) => list.push(value),
        _ => unreachable!("values are arrays"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{extract, Registry};

    fn terms(resource: Json) -> IndexTerms {
        let registry = Registry::r4().unwrap();
        let entries = extract(&registry, &resource).unwrap();
        index_terms("Observation", &entries)
    }

    #[test]
    fn tokens_references_and_presence_become_keys() {
        let terms = terms(json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
        }));
        for key in [
            keys::token_code("Observation", "code", "85354-9"),
            keys::token_system_code("Observation", "code", "http://loinc.org", "85354-9"),
            keys::token_system("Observation", "code", "http://loinc.org"),
            keys::token_system_code("Observation", "status", "", "final"),
            keys::reference("Observation", "subject", "Patient", "p1"),
            keys::reference_id("Observation", "patient", "p1"),
            keys::presence("Observation", "subject"),
        ] {
            assert!(terms.keys.binary_search(&key).is_ok(), "{key}");
        }
        assert!(!terms.keys.contains(&keys::token_system_code(
            "Observation",
            "code",
            "",
            "85354-9"
        )));
        assert!(!terms
            .keys
            .contains(&keys::presence("Observation", "encounter")));
    }

    #[test]
    fn tokens_references_and_uris_keep_their_extremes_for_sorting() {
        let terms = terms(json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"code": "vital-signs"}, {"code": "activity"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
        }));
        let values: Json = serde_json::from_str(terms.values.as_deref().unwrap()).unwrap();
        assert_eq!(values[SORT_SMALLEST]["category"], "activity");
        assert_eq!(values[SORT_LARGEST]["category"], "vital-signs");
        assert_eq!(values[SORT_SMALLEST]["status"], "final");
        assert_eq!(values[SORT_SMALLEST]["subject"], "Patient/p1");
        // One value: no separate largest.
        assert!(values[SORT_LARGEST].get("status").is_none());
    }

    #[test]
    fn ordered_values_get_rows_or_values() {
        let terms = terms(json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "effectiveDateTime": "2026-11-01",
            "valueQuantity": {"value": 72.5, "system": "http://unitsofmeasure.org", "code": "kg"},
        }));
        assert_eq!(terms.dates.len(), 1);
        assert_eq!(terms.dates[0].param_key, keys::param("Observation", "date"));
        let values: Json = serde_json::from_str(terms.values.as_deref().unwrap()).unwrap();
        assert_eq!(values["value-quantity"][0]["v"], "72.5");
        assert_eq!(values["value-quantity"][0]["cv"], "72500");
        assert_eq!(values["value-quantity"][0]["cc"], "g");
        let composite = &values["code-value-quantity"][0]["k"];
        let loinc = keys::token_system_code(
            "Observation",
            &keys::component_param("code-value-quantity", 0),
            "http://loinc.org",
            "29463-7",
        );
        let expected = keys::composite("Observation", "code-value-quantity", &[loinc]);
        assert!(composite.as_array().unwrap().contains(&json!(expected)));
    }
}
