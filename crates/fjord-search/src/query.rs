//! Search URLs parsed into a [`SearchQuery`]: filters over index terms, sort keys and page size.
//! The store turns one into SQL; nothing here knows SQL.

use fjord_definitions::SearchParamType;
use rust_decimal::Decimal;

use crate::terms::keys;
#[cfg(test)]
use crate::IndexValue;
use crate::{Registry, SearchParam, Storage};

/// A search over one resource type: every filter must hold (AND).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub resource_type: String,
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub total: Total,
    /// The parameters the query applied, as given: what the `self` link shows.
    pub applied: Vec<(String, String)>,
}

/// A condition on a resource, as a tree of index terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// At least one holds (a comma-separated list, or a parameter that is a union of others).
    Any(Vec<Filter>),
    Not(Box<Filter>),
    /// The resource has this equality key (see [`keys`]).
    Key(i64),
    Id(String),
    /// A date row of the parameter (`param_key`), or `_lastUpdated` when `None`, compares.
    Date {
        param_key: Option<i64>,
        prefix: Prefix,
        low: i64,
        high: i64,
    },
    String {
        param_key: i64,
        matching: StringMatch,
    },
    /// A value of `param` kept beside the keys (numbers, quantities, token texts, composites).
    Value {
        param: String,
        test: ValueTest,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringMatch {
    /// Starts with, ignoring case and accents (normalized).
    Prefix(String),
    /// Equal as written (`:exact`).
    Exact(String),
    /// Contains, ignoring case and accents (`:contains`).
    Contains(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueTest {
    /// A number's stored range against the search range.
    Number {
        prefix: Prefix,
        low: Decimal,
        high: Decimal,
    },
    /// A quantity's value (canonical when `canonical_code`, else as written with the unit
    /// constraints) against the search range.
    Quantity {
        prefix: Prefix,
        low: Decimal,
        high: Decimal,
        unit: UnitMatch,
    },
    /// A token's text starts with this (normalized).
    Text(String),
    /// A composite whose leading parts have `key` and whose ordered last part passes `last`.
    Composite { key: i64, last: Box<ValueTest> },
    /// A composite's date part (`lo`/`hi` in the value) against the range.
    Date { prefix: Prefix, low: i64, high: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum UnitMatch {
    Any,
    /// Compare canonical values in this canonical unit.
    Canonical(String),
    /// `system|code`, or `|code` (`system` `None`: the code or the unit text).
    Code {
        system: Option<String>,
        code: String,
    },
}

/// Comparison prefixes of numbers, dates and quantities: the comparators of the definitions.
pub use fjord_definitions::Comparator as Prefix;

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SortBy {
    Id,
    LastUpdated,
    /// The earliest (ascending) or latest (descending) date of the parameter.
    Date(i64),
    /// The first (ascending) or last (descending) normalized string of the parameter.
    String(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Total {
    #[default]
    None,
    Accurate,
}

/// Page sizes: the default when `_count` is absent, and the largest served.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;

/// Why a search cannot run: the REST layer answers 400 with the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Parameters that control the result rather than filter it, and that Fjord applies.
const RESULT_PARAMETERS: [&str; 4] = ["_count", "_sort", "_total", "_cursor"];
/// Parameters about the response format, applied by the REST layer.
const FORMAT_PARAMETERS: [&str; 2] = ["_format", "_pretty"];

impl Registry {
    /// Parses the parameters of a type-level search. Unknown parameters are ignored (left out of
    /// [`SearchQuery::applied`]) unless `strict`, when they are an error, as are malformed values
    /// and features Fjord does not offer (chaining, `_has`, unsupported modifiers).
    pub fn parse_query(
        &self,
        resource_type: &str,
        params: &[(String, String)],
        strict: bool,
    ) -> Result<SearchQuery, QueryError> {
        let mut query = SearchQuery {
            resource_type: resource_type.to_owned(),
            filters: Vec::new(),
            sort: Vec::new(),
            count: DEFAULT_COUNT,
            total: Total::None,
            applied: Vec::new(),
        };
        for (name, value) in params {
            let (code, modifier) = match name.split_once(':') {
                Some((code, modifier)) => (code, Some(modifier)),
                None => (name.as_str(), None),
            };
            if FORMAT_PARAMETERS.contains(&code) || code == "_cursor" {
                continue;
            }
            if RESULT_PARAMETERS.contains(&code) {
                self.result_parameter(&mut query, code, value)?;
                query.applied.push((name.clone(), value.clone()));
                continue;
            }
            if code.contains('.') || code == "_has" {
                return Err(QueryError(format!(
                    "{name}: chained and reverse-chained parameters are not supported yet"
                )));
            }
            let Some(parameter) = self
                .parameter(resource_type, code)
                .filter(|p| p.is_searchable())
            else {
                if strict {
                    return Err(QueryError(format!(
                        "unknown or unsupported search parameter '{name}' for {resource_type}"
                    )));
                }
                continue;
            };
            let filter = self
                .filter(resource_type, parameter, modifier, value)
                .map_err(|QueryError(message)| QueryError(format!("{name}={value}: {message}")))?;
            query.filters.push(filter);
            query.applied.push((name.clone(), value.clone()));
        }
        Ok(query)
    }

    fn result_parameter(
        &self,
        query: &mut SearchQuery,
        code: &str,
        value: &str,
    ) -> Result<(), QueryError> {
        match code {
            "_count" => {
                let count: usize = value.parse().map_err(|_| {
                    QueryError(format!("_count={value}: not a non-negative integer"))
                })?;
                query.count = count.min(MAX_COUNT);
            }
            "_total" => {
                query.total = match value {
                    "none" => Total::None,
                    // An estimate would cost the same query here; give the exact figure.
                    "accurate" | "estimate" => Total::Accurate,
                    _ => {
                        return Err(QueryError(format!(
                            "_total={value}: use none, estimate or accurate"
                        )))
                    }
                }
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (descending, code) = match key.strip_prefix('-') {
                        Some(code) => (true, code),
                        None => (false, key),
                    };
                    query.sort.push(SortKey {
                        by: self.sort_by(&query.resource_type, code)?,
                        descending,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn sort_by(&self, resource_type: &str, code: &str) -> Result<SortBy, QueryError> {
        let parameter = self.parameter(resource_type, code).ok_or_else(|| {
            QueryError(format!(
                "_sort: unknown parameter '{code}' for {resource_type}"
            ))
        })?;
        match (parameter.code.as_str(), parameter.kind, &parameter.storage) {
            ("_id", ..) => Ok(SortBy::Id),
            ("_lastUpdated", ..) => Ok(SortBy::LastUpdated),
            (_, SearchParamType::Date, Storage::Indexed) => {
                Ok(SortBy::Date(keys::param(resource_type, code)))
            }
            (_, SearchParamType::String, Storage::Indexed) => {
                Ok(SortBy::String(keys::param(resource_type, code)))
            }
            _ => Err(QueryError(format!(
                "_sort: sorting by '{code}' is not supported (dates, strings, _id and \
                 _lastUpdated are)"
            ))),
        }
    }

    /// The filter of one `name=value` pair: the OR of its comma-separated values.
    fn filter(
        &self,
        resource_type: &str,
        parameter: &SearchParam,
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Filter, QueryError> {
        let code = parameter.code.as_str();
        if modifier == Some("missing") {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(QueryError("use :missing=true or :missing=false".into())),
            };
            let present = self.presence(resource_type, parameter)?;
            return Ok(if missing {
                Filter::Not(Box::new(present))
            } else {
                present
            });
        }
        if let Storage::UnionOf(sources) = &parameter.storage {
            let mut alternatives = Vec::new();
            for source in sources {
                let source = self
                    .parameter(resource_type, source)
                    .ok_or_else(|| QueryError(format!("{code}: unknown part {source}")))?;
                alternatives.push(self.filter(resource_type, source, modifier, value)?);
            }
            return Ok(Filter::Any(alternatives));
        }
        let values = split_unescaped(value, ',');
        if values.iter().any(String::is_empty) {
            return Err(QueryError("empty value".into()));
        }
        let (negate, modifier) = match modifier {
            Some("not") if parameter.kind == SearchParamType::Token => (true, None),
            other => (false, other),
        };
        let alternatives = values
            .iter()
            .map(|v| self.one_value(resource_type, parameter, modifier, v))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = if alternatives.len() == 1 {
            alternatives.into_iter().next().expect("one alternative")
        } else {
            Filter::Any(alternatives)
        };
        Ok(if negate {
            Filter::Not(Box::new(filter))
        } else {
            filter
        })
    }

    /// "Has a value": the presence key, or always for what every resource has.
    fn presence(&self, resource_type: &str, parameter: &SearchParam) -> Result<Filter, QueryError> {
        match &parameter.storage {
            // Every resource has an id and a last-updated time: NOT (nothing) holds for all.
            Storage::Resource => Ok(Filter::Not(Box::new(Filter::Any(Vec::new())))),
            Storage::Indexed => Ok(Filter::Key(keys::presence(resource_type, &parameter.code))),
            Storage::UnionOf(sources) => Ok(Filter::Any(
                sources
                    .iter()
                    .map(|source| Filter::Key(keys::presence(resource_type, source)))
                    .collect(),
            )),
        }
    }

    fn one_value(
        &self,
        resource_type: &str,
        parameter: &SearchParam,
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Filter, QueryError> {
        let code = parameter.code.as_str();
        let unsupported = |modifier: &str| {
            Err(QueryError(format!(
                "the modifier :{modifier} is not supported on {code}"
            )))
        };
        match (code, parameter.kind) {
            ("_id", _) => {
                if let Some(m) = modifier {
                    return unsupported(m);
                }
                return Ok(Filter::Id(unescape(value)));
            }
            ("_lastUpdated", _) => {
                if let Some(m) = modifier {
                    return unsupported(m);
                }
                let (prefix, low, high) = date_value(value)?;
                return Ok(Filter::Date {
                    param_key: None,
                    prefix,
                    low,
                    high,
                });
            }
            _ => {}
        }
        let ordered = !matches!(
            parameter.kind,
            SearchParamType::Token
                | SearchParamType::Reference
                | SearchParamType::Uri
                | SearchParamType::String
        );
        if let (true, Some(m)) = (ordered, modifier) {
            return unsupported(m);
        }
        match parameter.kind {
            SearchParamType::Token => match modifier {
                None => Ok(token(resource_type, code, value)),
                Some("text") => Ok(Filter::Value {
                    param: code.to_owned(),
                    test: ValueTest::Text(crate::normalize(&unescape(value))),
                }),
                Some(m) => unsupported(m),
            },
            SearchParamType::Reference => match modifier {
                None => Ok(reference(resource_type, code, None, value)),
                Some("identifier") => {
                    Ok(token(resource_type, &keys::identifier_param(code), value))
                }
                Some(target) if fjord_definitions::type_def(target).is_some() => {
                    Ok(reference(resource_type, code, Some(target), value))
                }
                Some(m) => unsupported(m),
            },
            SearchParamType::Uri => match modifier {
                None => Ok(Filter::Key(keys::uri(
                    resource_type,
                    code,
                    &unescape(value),
                ))),
                Some(m) => unsupported(m),
            },
            SearchParamType::String => {
                let text = unescape(value);
                let matching = match modifier {
                    None => StringMatch::Prefix(crate::normalize(&text)),
                    Some("exact") => StringMatch::Exact(text),
                    Some("contains") => StringMatch::Contains(crate::normalize(&text)),
                    Some(m) => return unsupported(m),
                };
                Ok(Filter::String {
                    param_key: keys::param(resource_type, code),
                    matching,
                })
            }
            SearchParamType::Date => {
                let (prefix, low, high) = date_value(value)?;
                Ok(Filter::Date {
                    param_key: Some(keys::param(resource_type, code)),
                    prefix,
                    low,
                    high,
                })
            }
            SearchParamType::Number => Ok(Filter::Value {
                param: code.to_owned(),
                test: number_test(value)?,
            }),
            SearchParamType::Quantity => Ok(Filter::Value {
                param: code.to_owned(),
                test: quantity_test(value)?,
            }),
            SearchParamType::Composite => composite(resource_type, parameter, value),
            SearchParamType::Special => Err(QueryError(format!("{code} is not supported"))),
        }
    }
}

/// `code`, `system|code`, `|code` or `system|`: the OR of nothing else, one key.
fn token(resource_type: &str, param: &str, value: &str) -> Filter {
    Filter::Key(token_key(resource_type, param, value))
}

fn token_key(resource_type: &str, param: &str, value: &str) -> i64 {
    let parts = split_unescaped(value, '|');
    match parts.as_slice() {
        [code] => keys::token_code(resource_type, param, code),
        [system, code] if code.is_empty() => keys::token_system(resource_type, param, system),
        [system, code] => keys::token_system_code(resource_type, param, system, code),
        // More bars than FHIR allows: no stored token has this key.
        _ => keys::token_system_code(resource_type, param, "|", &unescape(value)),
    }
}

/// `id`, `Type/id` or an absolute URL; `target` is the `:Type` modifier.
fn reference(resource_type: &str, param: &str, target: Option<&str>, value: &str) -> Filter {
    let value = unescape(value);
    if value.contains("://") || value.starts_with("urn:") {
        return Filter::Key(keys::reference_url(resource_type, param, &value));
    }
    match (value.split_once('/'), target) {
        // `subject:Patient=Group/1` can match nothing.
        (Some((t, _)), Some(target)) if t != target => Filter::Any(Vec::new()),
        (Some((t, id)), _) => Filter::Key(keys::reference(resource_type, param, t, id)),
        (None, Some(target)) => Filter::Key(keys::reference(resource_type, param, target, &value)),
        (None, None) => Filter::Key(keys::reference_id(resource_type, param, &value)),
    }
}

fn composite(
    resource_type: &str,
    parameter: &SearchParam,
    value: &str,
) -> Result<Filter, QueryError> {
    let parts = split_unescaped(value, '$');
    if parts.len() != parameter.components.len() {
        return Err(QueryError(format!(
            "a value of {} has {} parts separated by '$'",
            parameter.code,
            parameter.components.len()
        )));
    }
    let kinds: Vec<SearchParamType> = parameter.components.iter().map(|c| c.0).collect();
    let equality = |kind: SearchParamType| {
        matches!(
            kind,
            SearchParamType::Token | SearchParamType::Reference | SearchParamType::Uri
        )
    };
    let last_ordered = !equality(*kinds.last().expect("composites have parts"));
    let leading = if last_ordered {
        &kinds[..kinds.len() - 1]
    } else {
        &kinds[..]
    };
    if !leading.iter().all(|k| equality(*k)) {
        return Err(QueryError(format!(
            "{} combines parts Fjord cannot search together",
            parameter.code
        )));
    }
    let mut part_keys = Vec::new();
    for (index, kind) in leading.iter().enumerate() {
        let part_param = keys::component_param(&parameter.code, index);
        let text = &parts[index];
        let key = match kind {
            SearchParamType::Token => token_key(resource_type, &part_param, text),
            SearchParamType::Uri => keys::uri(resource_type, &part_param, text),
            _ => match reference(resource_type, &part_param, None, text) {
                Filter::Key(key) => key,
                _ => return Err(QueryError(format!("{text}: not a reference"))),
            },
        };
        part_keys.push(key);
    }
    let key = keys::composite(resource_type, &parameter.code, &part_keys);
    if !last_ordered {
        return Ok(Filter::Key(key));
    }
    let last = parts.last().expect("composites have parts");
    let test = match kinds.last() {
        Some(SearchParamType::Quantity) => quantity_test(last)?,
        Some(SearchParamType::Number) => number_test(last)?,
        Some(SearchParamType::Date) => {
            let (prefix, low, high) = date_value(last)?;
            ValueTest::Date { prefix, low, high }
        }
        _ => {
            return Err(QueryError(format!(
                "{} combines parts Fjord cannot search together",
                parameter.code
            )))
        }
    };
    Ok(Filter::Value {
        param: parameter.code.clone(),
        test: ValueTest::Composite {
            key,
            last: Box::new(test),
        },
    })
}

fn prefixed(value: &str) -> (Prefix, &str) {
    const PREFIXES: [(&str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, prefix) in PREFIXES {
        if let Some(rest) = value.strip_prefix(text) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

/// A date search value: its prefix and the span it stands for in UTC milliseconds. A dateTime
/// without a zone is taken as UTC.
fn date_value(value: &str) -> Result<(Prefix, i64, i64), QueryError> {
    let (prefix, text) = prefixed(value);
    let temporal = fjord_fhirpath::Temporal::parse(text, fjord_fhirpath::TemporalKind::DateTime)
        .and_then(|t| t.epoch_range())
        .ok_or_else(|| QueryError(format!("'{text}' is not a FHIR date or dateTime")))?;
    Ok((prefix, temporal.0, temporal.1))
}

fn decimal(text: &str) -> Result<Decimal, QueryError> {
    text.parse()
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| QueryError(format!("'{text}' is not a number")))
}

fn number_test(value: &str) -> Result<ValueTest, QueryError> {
    let (prefix, text) = prefixed(value);
    let (low, high) = crate::extract::precision_range(decimal(text)?);
    Ok(ValueTest::Number { prefix, low, high })
}

/// `[prefix]number|system|code`, `number||code` or `number`.
fn quantity_test(value: &str) -> Result<ValueTest, QueryError> {
    let parts = split_unescaped(value, '|');
    let (prefix, number) = prefixed(&parts[0]);
    let number = decimal(number)?;
    let (system, code) = match parts.as_slice() {
        [_] => (None, None),
        [_, system, code] => (
            Some(system.as_str()).filter(|s| !s.is_empty()),
            Some(code.as_str()).filter(|c| !c.is_empty()),
        ),
        _ => return Err(QueryError("use number|system|code".into())),
    };
    let (low, high) = crate::extract::precision_range(number);
    let canonical = match (system, code) {
        (Some("http://unitsofmeasure.org") | None, Some(code)) => {
            fjord_fhirpath::ucum_canonical(number, code)
        }
        _ => None,
    };
    Ok(match (canonical, code) {
        (Some((_, unit)), Some(code)) => {
            // The search range converted with the same factor as the value.
            let (low, _) = fjord_fhirpath::ucum_canonical(low, code).expect("same unit");
            let (high, _) = fjord_fhirpath::ucum_canonical(high, code).expect("same unit");
            ValueTest::Quantity {
                prefix,
                low,
                high,
                unit: UnitMatch::Canonical(unit),
            }
        }
        (None, Some(code)) => ValueTest::Quantity {
            prefix,
            low,
            high,
            unit: UnitMatch::Code {
                system: system.map(str::to_owned),
                code: code.to_owned(),
            },
        },
        (_, None) => ValueTest::Quantity {
            prefix,
            low,
            high,
            unit: UnitMatch::Any,
        },
    })
}

/// Splits at `separator` unless escaped with a backslash, and unescapes the parts.
fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next != separator {
                        parts.last_mut().expect("one part").push('\\');
                    }
                    parts.last_mut().expect("one part").push(next);
                }
            }
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    if separator == ',' {
        parts
    } else {
        parts.iter().map(|p| unescape(p)).collect()
    }
}

/// Removes the backslash before `\,`, `\|`, `\$` and `\\`.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next @ (',' | '|' | '$' | '\\')) => out.push(next),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

// The index side must produce the keys the query side asks for; `equality_keys` is that side.
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(resource_type: &str, query: &[(&str, &str)]) -> Result<SearchQuery, QueryError> {
        let registry = Registry::r4().unwrap();
        let params: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        registry.parse_query(resource_type, &params, false)
    }

    fn stored_token(system: Option<&str>, code: &str) -> IndexValue {
        IndexValue::Token {
            system: system.map(str::to_owned),
            code: Some(code.to_owned()),
            text: None,
        }
    }

    #[test]
    fn token_forms_ask_for_keys_the_index_has() {
        let stored = crate::equality_keys(
            "Observation",
            "code",
            &stored_token(Some("http://loinc.org"), "8480-6"),
        );
        let without_system =
            crate::equality_keys("Observation", "code", &stored_token(None, "8480-6"));
        let key_of =
            |value: &str| match &parse("Observation", &[("code", value)]).unwrap().filters[0] {
                Filter::Key(key) => *key,
                other => panic!("{other:?}"),
            };
        for (value, with_system, without) in [
            ("8480-6", true, true),
            ("http://loinc.org|8480-6", true, false),
            ("|8480-6", false, true),
            ("http://loinc.org|", true, false),
            ("http://snomed.info/sct|8480-6", false, false),
        ] {
            assert_eq!(stored.contains(&key_of(value)), with_system, "{value}");
            assert_eq!(without_system.contains(&key_of(value)), without, "{value}");
        }
    }

    #[test]
    fn lists_modifiers_and_unknowns() {
        let query = parse(
            "Observation",
            &[
                ("code", "a,b"),
                ("code:not", "c"),
                ("bogus", "1"),
                ("_count", "10"),
            ],
        )
        .unwrap();
        assert!(matches!(&query.filters[0], Filter::Any(list) if list.len() == 2));
        assert!(matches!(&query.filters[1], Filter::Not(_)));
        assert_eq!(query.count, 10);
        assert_eq!(
            query.applied,
            [("code", "a,b"), ("code:not", "c"), ("_count", "10")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let strict = Registry::r4().unwrap().parse_query(
            "Observation",
            &[("bogus".into(), "1".into())],
            true,
        );
        assert!(strict.is_err());
        assert!(parse("Observation", &[("date", "2026-13-01")]).is_err());
        assert!(parse("Observation", &[("value-quantity", "abc")]).is_err());
        assert!(parse("Observation", &[("code:below", "x")]).is_err());
        assert!(parse("Observation", &[("subject.name", "x")]).is_err());
        assert!(parse("Observation", &[("_sort", "status")]).is_err());
    }

    #[test]
    fn quantities_compare_in_canonical_units() {
        let query = parse(
            "Observation",
            &[("value-quantity", "gt70|http://unitsofmeasure.org|kg")],
        )
        .unwrap();
        let Filter::Value {
            test: ValueTest::Quantity {
                prefix, low, unit, ..
            },
            ..
        } = &query.filters[0]
        else {
            panic!("{query:?}")
        };
        assert_eq!(*prefix, Prefix::Gt);
        assert_eq!(*low, Decimal::new(69500, 0));
        assert_eq!(*unit, UnitMatch::Canonical("g".into()));
    }

    #[test]
    fn escapes() {
        assert_eq!(split_unescaped(r"a\,b,c", ','), ["a,b", "c"]);
        assert_eq!(unescape(r"a\,b"), "a,b");
        assert_eq!(split_unescaped(r"s\|x|c", '|'), ["s|x", "c"]);
    }
}
