//! The formats of primitive values: each type's regular expression from the definitions, matched
//! whole, and for dates the calendar (the expressions let 2026-02-30 through).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// Every primitive type's expression, anchored, compiled once.
fn expressions() -> &'static HashMap<&'static str, Regex> {
    static EXPRESSIONS: OnceLock<HashMap<&'static str, Regex>> = OnceLock::new();
    EXPRESSIONS.get_or_init(|| {
        fjord_definitions::types()
            .iter()
            .filter_map(|t| {
                // The definitions' expressions are Java's, where `\s` is ASCII white space only:
                // a no-break space is a character of a string, not white space.
                let ascii = t
                    .regex?
                    .replace("\\s", "[ \\t\\n\\x0B\\f\\r]")
                    .replace("\\S", "[^ \\t\\n\\x0B\\f\\r]");
                let regex = Regex::new(&format!("^(?:{ascii})$")).ok()?;
                Some((t.name, regex))
            })
            .collect()
    })
}

/// What is wrong with `value` as a `type_code`, if anything.
pub(crate) fn check(type_code: &str, value: &Value) -> Option<String> {
    let numeric = matches!(
        type_code,
        "integer" | "positiveInt" | "unsignedInt" | "decimal"
    );
    let text = match value {
        Value::Bool(_) if type_code == "boolean" => return None,
        // Numbers are checked by their text as written (decimals keep it).
        Value::Number(n) if numeric => n.to_string(),
        Value::String(s) if !numeric && type_code != "boolean" => s.clone(),
        _ => return Some(format!("a {type_code} cannot be written as JSON {value}")),
    };
    let regex = expressions().get(type_code)?;
    if !regex.is_match(&text) {
        return Some(format!("'{}' is not a valid {type_code}", shorten(&text)));
    }
    if matches!(type_code, "date" | "dateTime" | "instant") && !day_exists(&text) {
        return Some(format!("'{text}' is not a date of the calendar"));
    }
    None
}

/// Whether the day of a `YYYY-MM-DD…` value exists (shorter values have no day).
fn day_exists(text: &str) -> bool {
    let (Some(year), Some(month), Some(day)) = (
        text.get(0..4).and_then(|y| y.parse::<u32>().ok()),
        text.get(5..7).and_then(|m| m.parse::<u32>().ok()),
        text.get(8..10).and_then(|d| d.parse::<u32>().ok()),
    ) else {
        return true;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

/// A value cut short for a message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_follow_the_definitions_and_the_calendar() {
        assert_eq!(check("date", &json!("2026-11-23")), None);
        assert_eq!(check("date", &json!("2026-11")), None);
        assert!(check("date", &json!("23.11.2026")).is_some());
        assert!(check("date", &json!("2026-02-29")).is_some());
        assert_eq!(check("date", &json!("2028-02-29")), None);
        assert_eq!(check("dateTime", &json!("2026-11-23T10:00:00+01:00")), None);
        assert!(check("dateTime", &json!("2026-11-23T10:00")).is_some());
        assert!(check("instant", &json!("2026-11-23")).is_some());
        assert_eq!(check("id", &json!("a-1.b")), None);
        assert!(check("id", &json!("a_1")).is_some());
        assert!(check("code", &json!(" final")).is_some());
        assert!(check("string", &json!("")).is_some());
        assert_eq!(check("positiveInt", &json!(3)), None);
        assert!(check("positiveInt", &json!(0)).is_some());
        assert!(check("uri", &json!("has space")).is_some());
        assert!(check("boolean", &json!("true")).is_some());
        assert_eq!(check("string", &json!("Seul\u{a0}")), None);
    }
}
