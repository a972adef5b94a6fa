//! Filters decided in memory from a resource's index terms, without the database: what an
//! access rule asks of a version about to be written (a SMART scope's compartment and
//! parameters) before it is stored. Keys, ids, dates, strings and kept values (numbers,
//! quantities, composites) are decided here as the store's SQL decides them (`fjord-store`,
//! `search/sql.rs`); `_lastUpdated`, chains, `_has` and text are not.

use rust_decimal::Decimal;

use crate::query::{Filter, Prefix, StringMatch, UnitMatch, ValueTest};
use crate::terms::IndexTerms;

impl Filter {
    /// Whether the filter holds on the resource `resource_type/id` with these index terms;
    /// `None` where memory cannot tell (date, string and value comparisons, chains, `_has`,
    /// unanswered text and terminology filters): the caller must treat that as "no".
    pub fn holds_on(&self, resource_type: &str, id: &str, terms: &IndexTerms) -> Option<bool> {
        match self {
            Filter::Key(key) => Some(terms.keys.binary_search(key).is_ok()),
            Filter::Id(wanted) => Some(wanted == id),
            Filter::Among {
                resource_type: t,
                ids,
            } => Some(t == resource_type && ids.iter().any(|i| i == id)),
            Filter::OfType(t, inner) if t == resource_type => {
                inner.holds_on(resource_type, id, terms)
            }
            Filter::OfType(..) => Some(false),
            Filter::Not(inner) => inner.holds_on(resource_type, id, terms).map(|b| !b),
            Filter::Any(parts) => decide(parts, true, resource_type, id, terms),
            Filter::All(parts) => decide(parts, false, resource_type, id, terms),
            Filter::Date {
                param_key: Some(param_key),
                prefix,
                low,
                high,
            } => {
                let (low, high) = date_bounds(*prefix, *low, *high);
                Some(
                    terms
                        .dates
                        .iter()
                        .filter(|d| d.param_key == *param_key)
                        .any(|d| admits(*prefix, d.low, d.high, low, high)),
                )
            }
            Filter::String {
                param_key,
                matching,
            } => Some(
                terms
                    .strings
                    .iter()
                    .filter(|s| s.param_key == *param_key)
                    .any(|s| match matching {
                        StringMatch::Prefix(text) => s.normalized.starts_with(text.as_str()),
                        StringMatch::Exact(text) => s.exact == *text,
                        StringMatch::Contains(text) => s.normalized.contains(text.as_str()),
                    }),
            ),
            Filter::Value { param, test } => {
                let values: serde_json::Map<String, serde_json::Value> =
                    match terms.values.as_deref() {
                        None => return Some(false),
                        Some(text) => serde_json::from_str(text).ok()?,
                    };
                let kept = values.get(param).and_then(|v| v.as_array());
                Some(kept.is_some_and(|kept| kept.iter().any(|e| value_passes(test, e))))
            }
            // `_lastUpdated` is not among the terms: the version's own column.
            Filter::Date {
                param_key: None, ..
            }
            | Filter::Chain { .. }
            | Filter::Has { .. }
            | Filter::Text { .. }
            | Filter::Concepts { .. } => None,
        }
    }
}

/// Whether a kept value (a number's, quantity's or composite's object, as the store keeps it in
/// `vals`) passes `test`; a missing field fails, as SQL's NULL does.
fn value_passes(test: &ValueTest, kept: &serde_json::Value) -> bool {
    let decimal = |field: &str| -> Option<Decimal> {
        match kept.get(field)? {
            serde_json::Value::String(text) => text.parse().ok(),
            serde_json::Value::Number(number) => number.to_string().parse().ok(),
            _ => None,
        }
    };
    let text = |field: &str| kept.get(field).and_then(serde_json::Value::as_str);
    match test {
        ValueTest::Number { prefix, low, high } => {
            let (sl, sh) = number_bounds(*prefix, *low, *high);
            match (decimal("lo"), decimal("hi")) {
                (Some(tl), Some(th)) => admits(*prefix, tl, th, sl, sh),
                _ => false,
            }
        }
        ValueTest::Quantity {
            prefix,
            low,
            high,
            unit,
        } => {
            let (sl, sh) = number_bounds(*prefix, *low, *high);
            let stored = match unit {
                UnitMatch::Any => decimal("v"),
                UnitMatch::Canonical(canonical) => {
                    decimal("cv").filter(|_| text("cc") == Some(canonical.as_str()))
                }
                UnitMatch::Code {
                    system: Some(system),
                    code,
                } => decimal("v").filter(|_| {
                    text("s") == Some(system.as_str()) && text("c") == Some(code.as_str())
                }),
                UnitMatch::Code { system: None, code } => decimal("v").filter(|_| {
                    text("c") == Some(code.as_str()) || text("u") == Some(code.as_str())
                }),
            };
            stored.is_some_and(|v| admits(*prefix, v, v, sl, sh))
        }
        ValueTest::Date { prefix, low, high } => {
            let (sl, sh) = date_bounds(*prefix, *low, *high);
            let bound = |field: &str| kept.get(field).and_then(serde_json::Value::as_i64);
            match (bound("lo"), bound("hi")) {
                (Some(tl), Some(th)) => admits(*prefix, tl, th, sl, sh),
                _ => false,
            }
        }
        ValueTest::Composite { key, last } => {
            let has_key = kept
                .get("k")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|keys| keys.iter().any(|k| k.as_i64() == Some(*key)));
            has_key && value_passes(last, kept)
        }
    }
}

/// Whether a stored range `[tl, th]` compares to the searched range `[sl, sh]` under `prefix`,
/// both ends inclusive: the table the store's SQL uses.
pub fn admits<T: PartialOrd>(prefix: Prefix, tl: T, th: T, sl: T, sh: T) -> bool {
    let within = tl >= sl && th <= sh;
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => !within,
        Prefix::Gt => th > sh,
        Prefix::Lt => tl < sl,
        Prefix::Ge => th > sh || within,
        Prefix::Le => tl < sl || within,
        Prefix::Sa => tl > sh,
        Prefix::Eb => th < sl,
        Prefix::Ap => tl <= sh && th >= sl,
    }
}

/// The searched range of a date: `ap` widens the value's span by a tenth of its distance from
/// now (UTC milliseconds).
pub fn date_bounds(prefix: Prefix, low: i64, high: i64) -> (i64, i64) {
    if prefix != Prefix::Ap {
        return (low, high);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let middle = low / 2 + high / 2;
    let margin = (now - middle).abs() / 10;
    (low.saturating_sub(margin), high.saturating_add(margin))
}

/// The searched range of a number: `ap` widens it by a tenth of the value.
pub fn number_bounds(prefix: Prefix, low: Decimal, high: Decimal) -> (Decimal, Decimal) {
    if prefix != Prefix::Ap {
        return (low, high);
    }
    let middle = low / Decimal::TWO + high / Decimal::TWO;
    let margin = middle.abs() / Decimal::TEN;
    (low.saturating_sub(margin), high.saturating_add(margin))
}

/// `Any` (`decisive` true) or `All` (false) of `parts`: one part with the decisive answer
/// decides; otherwise the other answer, unless some part is unknown.
fn decide(
    parts: &[Filter],
    decisive: bool,
    resource_type: &str,
    id: &str,
    terms: &IndexTerms,
) -> Option<bool> {
    let mut unknown = false;
    for part in parts {
        match part.holds_on(resource_type, id, terms) {
            Some(answer) if answer == decisive => return Some(decisive),
            Some(_) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(!decisive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(keys: &[i64]) -> IndexTerms {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        IndexTerms {
            keys,
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_their_combinations() {
        let t = terms(&[3, 7]);
        let holds = |f: Filter| f.holds_on("Observation", "o1", &t);
        assert_eq!(holds(Filter::Key(7)), Some(true));
        assert_eq!(holds(Filter::Key(8)), Some(false));
        assert_eq!(
            holds(Filter::Any(vec![Filter::Key(1), Filter::Key(3)])),
            Some(true)
        );
        assert_eq!(
            holds(Filter::All(vec![Filter::Key(3), Filter::Key(4)])),
            Some(false)
        );
        assert_eq!(holds(Filter::Not(Box::new(Filter::Key(4)))), Some(true));
        assert_eq!(
            holds(Filter::OfType("Patient".into(), Box::new(Filter::Key(3)))),
            Some(false)
        );
        assert_eq!(holds(Filter::Id("o1".into())), Some(true));
    }

    /// The filters of `query` on a resource, decided on its extracted terms.
    fn holds(resource: &serde_json::Value, query: &[(&str, &str)]) -> Option<bool> {
        let resource_type = resource["resourceType"].as_str().unwrap();
        let registry = crate::Registry::r4().unwrap();
        let entries = crate::extract(&registry, resource).unwrap();
        let terms = crate::index_terms(resource_type, &entries);
        let params: Vec<(String, String)> = query
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let parsed = registry
            .parse_query(crate::Scope::Type(resource_type), &params, true)
            .unwrap();
        Filter::All(parsed.filters).holds_on(resource_type, "p1", &terms)
    }

    #[test]
    fn numbers_quantities_and_composites_are_decided_as_the_database_would() {
        let blood_pressure = serde_json::json!({
            "resourceType": "Observation", "id": "p1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 150, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 95, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            ],
        });
        for (query, expected) in [
            (vec![("value-quantity", "72")], true),
            (vec![("value-quantity", "gt70")], true),
            (vec![("value-quantity", "lt70")], false),
            (
                vec![("value-quantity", "72|http://unitsofmeasure.org|/min")],
                true,
            ),
            (vec![("value-quantity", "72||mm[Hg]")], false),
            (vec![("component-value-quantity", "gt140")], true),
            (vec![("component-value-quantity", "gt160")], false),
            (
                vec![(
                    "component-code-value-quantity",
                    "http://loinc.org|8480-6$gt140",
                )],
                true,
            ),
            (
                vec![(
                    "component-code-value-quantity",
                    "http://loinc.org|8462-4$gt140",
                )],
                false,
            ),
            (vec![("date", "ge2026-11-01")], true),
            (vec![("date", "lt2026-11-01")], false),
        ] {
            assert_eq!(holds(&blood_pressure, &query), Some(expected), "{query:?}");
        }
    }

    #[test]
    fn dates_and_strings_are_decided_as_the_database_would() {
        let patient = serde_json::json!({
            "resourceType": "Patient", "id": "p1", "birthDate": "1984-06-15",
            "name": [{"family": "Nordmann", "given": ["Kåre"]}],
        });
        for (query, expected) in [
            (vec![("birthdate", "1984")], true),
            (vec![("birthdate", "1984-06-15")], true),
            (vec![("birthdate", "1984-06-16")], false),
            (vec![("birthdate", "ge1980")], true),
            (vec![("birthdate", "lt1980")], false),
            (vec![("birthdate", "ne1984-06-15")], false),
            (vec![("birthdate", "sa1983-12-31")], true),
            (vec![("birthdate", "eb1983-12-31")], false),
            (vec![("family", "nord")], true),
            (vec![("family", "NORDM")], true),
            (vec![("family", "mann")], false),
            (vec![("family:contains", "rdma")], true),
            (vec![("family:exact", "Nordmann")], true),
            (vec![("family:exact", "nordmann")], false),
            (vec![("given", "kare")], true),
            (vec![("name", "kå")], true),
            (vec![("family", "nord"), ("birthdate", "lt1980")], false),
        ] {
            assert_eq!(holds(&patient, &query), Some(expected), "{query:?}");
        }
        // `_lastUpdated` is no term: unknown, so a caller refuses.
        assert_eq!(holds(&patient, &[("_lastUpdated", "gt2020")]), None);
    }

    #[test]
    fn prefixes_compare_ranges_both_ends_inclusive() {
        // A stored day [10, 19] against searched [10, 19], [20, 29] and [0, 9].
        assert!(admits(Prefix::Eq, 10, 19, 10, 19));
        assert!(admits(Prefix::Ge, 10, 19, 10, 19));
        assert!(admits(Prefix::Le, 10, 19, 10, 19));
        assert!(!admits(Prefix::Gt, 10, 19, 10, 19));
        assert!(admits(Prefix::Eb, 10, 19, 20, 29));
        assert!(admits(Prefix::Sa, 10, 19, 0, 9));
        assert!(admits(Prefix::Ap, 10, 19, 15, 25));
        assert!(admits(Prefix::Ne, 10, 19, 20, 29));
    }

    #[test]
    fn what_memory_cannot_tell_is_unknown_unless_decided_otherwise() {
        let t = terms(&[3]);
        let text = Filter::Text {
            resource_type: "Observation".into(),
            field: crate::TextField::Narrative,
            text: "x".into(),
        };
        let holds = |f: Filter| f.holds_on("Observation", "o1", &t);
        assert_eq!(holds(text.clone()), None);
        assert_eq!(
            holds(Filter::Any(vec![text.clone(), Filter::Key(3)])),
            Some(true)
        );
        assert_eq!(holds(Filter::Any(vec![text.clone(), Filter::Key(4)])), None);
        assert_eq!(
            holds(Filter::All(vec![text.clone(), Filter::Key(4)])),
            Some(false)
        );
        assert_eq!(holds(Filter::All(vec![text, Filter::Key(3)])), None);
    }
}
