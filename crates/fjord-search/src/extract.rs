//! A resource → the typed index values of every search parameter of its type.

use fjord_definitions::SearchParamType;
use fjord_fhirpath::{BinaryOp, Expr, Node, Value};
use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::{Registry, SearchError};

/// One value a search parameter takes on a resource, typed for matching.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// A code with its system (`Coding`, `CodeableConcept`, `Identifier`, `code`, `boolean`…)
    /// and the human text that `:text` searches (display, `CodeableConcept.text`, type text).
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// `exact` as written; `normalized` lowercased without accents (the default match).
    String {
        exact: String,
        normalized: String,
    },
    /// The span the value stands for, as UTC milliseconds since 1970, both ends inclusive.
    Date {
        low: i64,
        high: i64,
    },
    /// A number and the range its written precision implies.
    Number {
        value: Decimal,
        low: Decimal,
        high: Decimal,
    },
    Quantity {
        value: Decimal,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
        /// The value in the base unit of common UCUM units (`kg` → `g`), for matching across units.
        canonical: Option<(Decimal, String)>,
    },
    /// A reference: `Type/id` when local, the URL when absolute or canonical, the identifier for
    /// `:identifier`.
    Reference {
        resource_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
        identifier: Option<(Option<String>, String)>,
    },
    Uri(String),
    /// An identifier's value under one coding of its type, for `:of-type`.
    IdentifierOfType {
        type_system: Option<String>,
        type_code: String,
        value: String,
    },
    /// One value per component, in the composite's order.
    Composite(Vec<IndexValue>),
}

/// A value of one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub code: String,
    pub value: IndexValue,
}

/// The index entries of a resource: every search parameter of its type, every value.
pub fn extract(registry: &Registry, resource: &Json) -> Result<Vec<IndexEntry>, SearchError> {
    let resource_type = resource_type(resource)?;
    let mut entries = Vec::new();
    for parameter in registry.parameters_of(resource_type) {
        if parameter.storage != crate::Storage::Indexed {
            continue;
        }
        entries.extend(
            parameter_values(parameter, resource)?
                .into_iter()
                .map(|value| IndexEntry {
                    code: parameter.code.clone(),
                    value,
                }),
        );
    }
    Ok(entries)
}

/// The values of one parameter on a resource (`_include` follows references with it).
pub fn values_of(
    registry: &Registry,
    resource: &Json,
    code: &str,
) -> Result<Vec<IndexValue>, SearchError> {
    match registry.parameter(resource_type(resource)?, code) {
        Some(parameter) => parameter_values(parameter, resource),
        None => Ok(Vec::new()),
    }
}

fn resource_type(resource: &Json) -> Result<&str, SearchError> {
    resource["resourceType"]
        .as_str()
        .ok_or_else(|| SearchError::Extraction("a resource without resourceType".into()))
}

fn parameter_values(
    parameter: &crate::SearchParam,
    resource: &Json,
) -> Result<Vec<IndexValue>, SearchError> {
    let Some(expression) = &parameter.expression else {
        return Ok(Vec::new());
    };
    if finds_nothing(expression, resource) {
        return Ok(Vec::new());
    }
    let env = fjord_fhirpath::Environment {
        resource: Some(resource),
        host: Some(&ReferenceTargets),
        ..Default::default()
    };
    let input = vec![Value::Node(Node::resource(resource))];
    let found = fjord_fhirpath::evaluate(expression, input, &env)
        .map_err(|e| SearchError::Extraction(format!("{}: {e}", parameter.url)))?;
    let mut values = Vec::new();
    for item in found {
        if parameter.kind == SearchParamType::Composite {
            values.extend(composite(&parameter.components, &item, &env)?);
        } else {
            values.extend(index_values(parameter.kind, &item));
        }
    }
    Ok(values)
}

/// Whether `expression` surely finds nothing in `resource`: every path it takes starts at an
/// element the resource lacks. Evaluating it would say the same at far greater cost, and most
/// of a type's parameters name elements that a given resource does not have.
fn finds_nothing(expression: &Expr, resource: &Json) -> bool {
    let mut roots = Vec::new();
    let Json::Object(elements) = resource else {
        return false;
    };
    roots_of(expression, &mut roots)
        && !roots
            .iter()
            .any(|root| elements.keys().any(|key| names_element(key, root)))
}

/// Functions whose result is empty when their input is.
const EMPTY_IN_EMPTY_OUT: [&str; 12] = [
    "where",
    "select",
    "ofType",
    "as",
    "first",
    "last",
    "tail",
    "skip",
    "take",
    "resolve",
    "extension",
    "distinct",
];

/// Adds the resource elements `expression` starts its paths at; false when it may find
/// something without them (a function of the whole resource, a variable, a boolean test).
fn roots_of<'e>(expression: &'e Expr, roots: &mut Vec<&'e str>) -> bool {
    match expression {
        // `Observation.code`: the type name, then the element.
        Expr::Member(inner, name) => match &**inner {
            Expr::Identifier(first) if starts_uppercase(first) => {
                roots.push(name);
                true
            }
            inner => roots_of(inner, roots),
        },
        // `code` alone: an element of the resource.
        Expr::Identifier(name) if !starts_uppercase(name) => {
            roots.push(name);
            true
        }
        Expr::Call(Some(inner), function, _) if EMPTY_IN_EMPTY_OUT.contains(&function.as_str()) => {
            roots_of(inner, roots)
        }
        Expr::Indexer(inner, _) | Expr::As(inner, _) => roots_of(inner, roots),
        Expr::Binary(BinaryOp::Union, left, right) => {
            roots_of(left, roots) && roots_of(right, roots)
        }
        _ => false,
    }
}

fn starts_uppercase(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
}

/// Whether a JSON member holds element `name`: itself, a primitive's `_name`, or a choice
/// type's `nameQuantity`.
fn names_element(key: &str, name: &str) -> bool {
    let key = key.strip_prefix('_').unwrap_or(key);
    match key.strip_prefix(name) {
        Some(rest) => rest.is_empty() || starts_uppercase(rest),
        None => false,
    }
}

/// What `resolve()` gives while indexing: a stand-in of the type the reference names, so that
/// `subject.where(resolve() is Patient)` indexes without reading the target (which may not even
/// exist yet, or belong to a transaction still being written).
struct ReferenceTargets;

impl fjord_fhirpath::Host for ReferenceTargets {
    fn resolve(&self, reference: &str) -> Option<&Json> {
        static STAND_INS: std::sync::OnceLock<std::collections::HashMap<&'static str, Json>> =
            std::sync::OnceLock::new();
        let stand_ins = STAND_INS.get_or_init(|| {
            fjord_definitions::types()
                .iter()
                .filter(|t| t.kind == fjord_definitions::TypeKind::Resource && !t.is_abstract)
                .map(|t| (t.name, serde_json::json!({ "resourceType": t.name })))
                .collect()
        });
        let (resource_type, _) = type_and_id(reference)?;
        stand_ins.get(resource_type.as_str())
    }

    fn member_of(&self, _: &Value, _: &str) -> Option<bool> {
        None
    }
}

/// Every combination of the components' values on one value of a composite.
fn composite<'a>(
    components: &[(SearchParamType, fjord_fhirpath::Expr)],
    item: &Value<'a>,
    env: &fjord_fhirpath::Environment<'a>,
) -> Result<Vec<IndexValue>, SearchError> {
    let mut combinations: Vec<Vec<IndexValue>> = vec![Vec::new()];
    for (kind, expression) in components {
        let found = fjord_fhirpath::evaluate(expression, vec![item.clone()], env)
            .map_err(|e| SearchError::Extraction(e.to_string()))?;
        let values: Vec<IndexValue> = found.iter().flat_map(|v| index_values(*kind, v)).collect();
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect();
    }
    Ok(combinations
        .into_iter()
        .map(IndexValue::Composite)
        .collect())
}

/// The index values of one item for a parameter type; none when the item has nothing to index
/// for that type.
pub(crate) fn index_values(kind: SearchParamType, item: &Value) -> Vec<IndexValue> {
    match kind {
        SearchParamType::Token => tokens(item),
        SearchParamType::String => strings(item),
        SearchParamType::Date => dates(item),
        SearchParamType::Number => number(item).into_iter().collect(),
        SearchParamType::Quantity => quantity(item).into_iter().collect(),
        SearchParamType::Reference => reference(item).into_iter().collect(),
        SearchParamType::Uri => item.as_string().map(IndexValue::Uri).into_iter().collect(),
        SearchParamType::Composite | SearchParamType::Special => Vec::new(),
    }
}

fn node<'v, 'a>(item: &'v Value<'a>) -> Option<&'v Node<'a>> {
    match item {
        Value::Node(n) => Some(n),
        _ => None,
    }
}

fn field<'a>(item: &Value<'a>, name: &str) -> Option<&'a Json> {
    node(item)?.json?.get(name).filter(|v| !v.is_null())
}

fn text(item: &Value, name: &str) -> Option<String> {
    field(item, name)?.as_str().map(str::to_owned)
}

fn texts(item: &Value, name: &str) -> Vec<String> {
    match field(item, name) {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn type_code<'a>(item: &Value<'a>) -> &'a str {
    node(item).map(|n| n.type_code).unwrap_or("")
}

fn token(system: Option<String>, code: Option<String>, text: Option<String>) -> IndexValue {
    IndexValue::Token { system, code, text }
}

fn coding(json: &Json) -> IndexValue {
    let get = |name: &str| json.get(name).and_then(Json::as_str).map(str::to_owned);
    token(get("system"), get("code"), get("display"))
}

fn tokens(item: &Value) -> Vec<IndexValue> {
    match type_code(item) {
        "Coding" => node(item)
            .and_then(|n| n.json)
            .map(coding)
            .into_iter()
            .collect(),
        "CodeableConcept" => {
            let mut out: Vec<IndexValue> = match field(item, "coding") {
                Some(Json::Array(codings)) => codings.iter().map(coding).collect(),
                _ => Vec::new(),
            };
            if let Some(concept_text) = text(item, "text") {
                out.push(token(None, None, Some(concept_text)));
            }
            out
        }
        "Identifier" => {
            let type_text = field(item, "type")
                .and_then(|t| t.get("text"))
                .and_then(Json::as_str)
                .map(str::to_owned);
            let mut out = vec![token(text(item, "system"), text(item, "value"), type_text)];
            if let (Some(value), Some(Json::Array(codings))) = (
                text(item, "value"),
                field(item, "type").and_then(|t| t.get("coding")),
            ) {
                for type_coding in codings {
                    if let Some(type_code) = type_coding.get("code").and_then(Json::as_str) {
                        out.push(IndexValue::IdentifierOfType {
                            type_system: type_coding
                                .get("system")
                                .and_then(Json::as_str)
                                .map(str::to_owned),
                            type_code: type_code.to_owned(),
                            value: value.clone(),
                        });
                    }
                }
            }
            out
        }
        "ContactPoint" => vec![token(None, text(item, "value"), None)],
        _ => match item.system() {
            Value::Boolean(b) => vec![token(None, Some(b.to_string()), None)],
            Value::String(s) => vec![token(None, Some(s), None)],
            Value::Integer(i) => vec![token(None, Some(i.to_string()), None)],
            _ => Vec::new(),
        },
    }
}

/// Lowercase, accents removed: what string search compares by default.
pub fn normalize(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    // Letters that Unicode does not decompose into a base letter and a mark, folded the way a
    // reader without the letter on the keyboard writes them (Ødegård → odegard).
    let mut folded = String::with_capacity(s.len());
    for c in s.nfd().filter(|c| !is_combining_mark(*c)) {
        match c {
            'Ø' | 'ø' => folded.push('o'),
            'Æ' | 'æ' => folded.push_str("ae"),
            'Đ' | 'đ' => folded.push('d'),
            'Ł' | 'ł' => folded.push('l'),
            'ß' => folded.push_str("ss"),
            c => folded.extend(c.to_lowercase()),
        }
    }
    folded
}

fn string_value(s: String) -> IndexValue {
    IndexValue::String {
        normalized: normalize(&s),
        exact: s,
    }
}

fn strings(item: &Value) -> Vec<IndexValue> {
    let parts: Vec<String> = match type_code(item) {
        "HumanName" => ["family", "given", "prefix", "suffix", "text"]
            .iter()
            .flat_map(|name| texts(item, name))
            .collect(),
        "Address" => [
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "text",
        ]
        .iter()
        .flat_map(|name| texts(item, name))
        .collect(),
        _ => item.as_string().into_iter().collect(),
    };
    parts.into_iter().map(string_value).collect()
}

fn date_range(json: Option<&Json>, kind: fjord_fhirpath::TemporalKind) -> Option<(i64, i64)> {
    fjord_fhirpath::Temporal::parse(json?.as_str()?, kind)?.epoch_range()
}

fn dates(item: &Value) -> Vec<IndexValue> {
    use fjord_fhirpath::TemporalKind::DateTime;
    match type_code(item) {
        "Period" => {
            let start = date_range(field(item, "start"), DateTime);
            let end = date_range(field(item, "end"), DateTime);
            if start.is_none() && end.is_none() {
                return Vec::new();
            }
            vec![IndexValue::Date {
                low: start.map_or(i64::MIN, |s| s.0),
                high: end.map_or(i64::MAX, |e| e.1),
            }]
        }
        "Timing" => match field(item, "event") {
            Some(Json::Array(events)) => events
                .iter()
                .filter_map(|e| date_range(Some(e), DateTime))
                .map(|(low, high)| IndexValue::Date { low, high })
                .collect(),
            _ => Vec::new(),
        },
        _ => match item.system() {
            Value::Temporal(t) => t
                .epoch_range()
                .map(|(low, high)| IndexValue::Date { low, high })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        },
    }
}

/// Half a unit in the last written digit: `1.5` stands for [1.45, 1.55). A value written to
/// more places than a decimal holds (28) stands for itself; the range saturates at the
/// decimal's bounds rather than overflow.
pub(crate) fn precision_range(value: Decimal) -> (Decimal, Decimal) {
    let half = Decimal::try_new(5, value.scale() + 1).unwrap_or(Decimal::ZERO);
    (value.saturating_sub(half), value.saturating_add(half))
}

fn number(item: &Value) -> Option<IndexValue> {
    let value = match item.system() {
        Value::Integer(i) => Decimal::from(i),
        Value::Decimal(d) => d,
        _ => return None,
    };
    let (low, high) = precision_range(value);
    Some(IndexValue::Number { value, low, high })
}

fn decimal_field(item: &Value, name: &str) -> Option<Decimal> {
    let number = field(item, name)?.as_number()?.to_string();
    number
        .parse()
        .ok()
        .or_else(|| Decimal::from_scientific(&number).ok())
}

fn quantity(item: &Value) -> Option<IndexValue> {
    let value = match type_code(item) {
        t if fjord_definitions::is_subtype(t, "Quantity") => decimal_field(item, "value")?,
        "Money" => {
            return Some(IndexValue::Quantity {
                value: decimal_field(item, "value")?,
                system: Some("urn:iso:std:iso:4217".into()),
                code: text(item, "currency"),
                unit: None,
                canonical: None,
            })
        }
        _ => {
            return match item.system() {
                Value::Quantity(value, unit) => Some(IndexValue::Quantity {
                    value,
                    system: None,
                    code: Some(unit),
                    unit: None,
                    canonical: None,
                }),
                _ => None,
            }
        }
    };
    let system = text(item, "system");
    let code = text(item, "code");
    let canonical = match (system.as_deref(), code.as_deref()) {
        (Some("http://unitsofmeasure.org"), Some(code)) => {
            fjord_fhirpath::ucum_canonical(value, code).map(|(v, unit)| (v.normalize(), unit))
        }
        _ => None,
    };
    Some(IndexValue::Quantity {
        value,
        system,
        code,
        unit: text(item, "unit"),
        canonical,
    })
}

fn reference(item: &Value) -> Option<IndexValue> {
    let (reference, identifier) = match type_code(item) {
        "Reference" => {
            let identifier = field(item, "identifier").and_then(|i| {
                let value = i.get("value")?.as_str()?.to_owned();
                let system = i.get("system").and_then(Json::as_str).map(str::to_owned);
                Some((system, value))
            });
            (text(item, "reference"), identifier)
        }
        _ => (item.as_string(), None),
    };
    let (resource_type, id, url) = match reference.as_deref() {
        // A reference into the resource's own contained resources names no stored resource.
        Some(r) if r.starts_with('#') => (None, None, None),
        Some(r) if r.contains("://") || r.starts_with("urn:") => {
            let (t, i) = type_and_id(r).unzip();
            (t, i, Some(r.to_owned()))
        }
        Some(r) => match type_and_id(r) {
            Some((t, i)) => (Some(t), Some(i), None),
            None => (None, None, Some(r.to_owned())),
        },
        None => (None, None, None),
    };
    if resource_type.is_none() && url.is_none() && identifier.is_none() {
        return None;
    }
    Some(IndexValue::Reference {
        resource_type,
        id,
        url,
        identifier,
    })
}

/// `Patient/123`, `…/Patient/123`, `…/Patient/123/_history/2` → (`Patient`, `123`).
fn type_and_id(reference: &str) -> Option<(String, String)> {
    let trimmed = match reference.find("/_history/") {
        Some(at) => &reference[..at],
        None => reference,
    };
    let mut segments = trimmed.rsplit('/');
    let id = segments.next()?;
    let resource_type = segments.next()?;
    let known = fjord_definitions::type_def(resource_type)
        .is_some_and(|t| t.kind == fjord_definitions::TypeKind::Resource);
    (known && !id.is_empty()).then(|| (resource_type.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut never hides a value: on every R4 example, each parameter it skips
    /// evaluates to nothing; and it skips many (41% of the parameters on these examples).
    #[test]
    fn skipped_parameters_find_nothing_in_the_r4_examples() {
        let registry = Registry::r4().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fhir-r4/hl7.fhir.r4.examples-4.0.1/package");
        let (mut skipped, mut evaluated) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(resource) = serde_json::from_slice::<Json>(&bytes) else {
                continue;
            };
            let Some(resource_type) = resource["resourceType"].as_str() else {
                continue;
            };
            for parameter in registry.parameters_of(resource_type) {
                let Some(expression) = &parameter.expression else {
                    continue;
                };
                if !finds_nothing(expression, &resource) {
                    evaluated += 1;
                    continue;
                }
                skipped += 1;
                let env = fjord_fhirpath::Environment {
                    resource: Some(&resource),
                    host: Some(&ReferenceTargets),
                    ..Default::default()
                };
                let input = vec![Value::Node(Node::resource(&resource))];
                let found = fjord_fhirpath::evaluate(expression, input, &env).unwrap_or_default();
                assert!(
                    found.is_empty(),
                    "{} on {}: {found:?}",
                    parameter.url,
                    entry.path().display()
                );
            }
        }
        assert!(
            skipped * 2 > evaluated,
            "{skipped} skipped, {evaluated} evaluated"
        );
    }
}
