//! Filters decided in memory from a resource's index terms, without the database: what an
//! access rule asks of a version about to be written (a SMART scope's compartment and
//! parameters) before it is stored.

use crate::query::Filter;
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
            Filter::Date { .. }
            | Filter::String { .. }
            | Filter::Value { .. }
            | Filter::Chain { .. }
            | Filter::Has { .. }
            | Filter::Text { .. }
            | Filter::Concepts { .. } => None,
        }
    }
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
