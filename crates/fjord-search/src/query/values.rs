//! Search values: tokens, references, composites, dates, numbers and quantities as written in
//! a URL, turned into filters over index terms.

use fjord_definitions::SearchParamType;
use rust_decimal::Decimal;

use super::{Filter, Prefix, QueryError, UnitMatch, ValueTest};
use crate::terms::keys;
use crate::SearchParam;

/// `code`, `system|code`, `|code` or `system|`: the OR of nothing else, one key.
pub(super) fn token(resource_type: &str, param: &str, value: &str) -> Filter {
    Filter::Key(token_key(resource_type, param, value))
}

pub(super) fn token_key(resource_type: &str, param: &str, value: &str) -> i64 {
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
pub(super) fn reference(
    resource_type: &str,
    param: &str,
    target: Option<&str>,
    value: &str,
) -> Filter {
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

pub(super) fn composite(
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

pub(super) fn prefixed(value: &str) -> (Prefix, &str) {
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
pub(super) fn date_value(value: &str) -> Result<(Prefix, i64, i64), QueryError> {
    let (prefix, text) = prefixed(value);
    let temporal = fjord_fhirpath::Temporal::parse(text, fjord_fhirpath::TemporalKind::DateTime)
        .and_then(|t| t.epoch_range())
        .ok_or_else(|| QueryError(format!("'{text}' is not a FHIR date or dateTime")))?;
    Ok((prefix, temporal.0, temporal.1))
}

pub(super) fn decimal(text: &str) -> Result<Decimal, QueryError> {
    text.parse()
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| QueryError(format!("'{text}' is not a number")))
}

pub(super) fn number_test(value: &str) -> Result<ValueTest, QueryError> {
    let (prefix, text) = prefixed(value);
    let (low, high) = crate::extract::precision_range(decimal(text)?);
    Ok(ValueTest::Number { prefix, low, high })
}

/// `[prefix]number|system|code`, `number||code` or `number`.
pub(super) fn quantity_test(value: &str) -> Result<ValueTest, QueryError> {
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
pub(super) fn split_unescaped(value: &str, separator: char) -> Vec<String> {
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
pub(super) fn unescape(value: &str) -> String {
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
