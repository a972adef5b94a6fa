//! What one search may ask for at most, checked before it is parsed: a request past these is
//! refused as too costly rather than run. Chains have their own bound
//! ([`super::MAX_CHAIN_DEPTH`]); `_count` is capped, not refused ([`super::MAX_COUNT`]).

use super::values::split_unescaped;

/// Parameters of one search (the response-shaping ones included).
pub const MAX_SEARCH_PARAMETERS: usize = 64;
/// Values one parameter may list as alternatives (`code=a,b,c`).
pub const MAX_ALTERNATIVES: usize = 1_000;
/// `_include` and `_revinclude` parameters of one search.
pub const MAX_INCLUDES: usize = 20;

/// A search past one of the bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TooCostly(pub String);

/// Checks a search's parameters against the bounds.
pub fn check_cost(params: &[(String, String)]) -> Result<(), TooCostly> {
    if params.len() > MAX_SEARCH_PARAMETERS {
        return Err(TooCostly(format!(
            "the search has {} parameters; at most {MAX_SEARCH_PARAMETERS} are allowed",
            params.len()
        )));
    }
    let includes = params
        .iter()
        .filter(|(name, _)| {
            let code = name.split(':').next().unwrap_or_default();
            code == "_include" || code == "_revinclude"
        })
        .count();
    if includes > MAX_INCLUDES {
        return Err(TooCostly(format!(
            "the search has {includes} _include and _revinclude parameters; at most \
             {MAX_INCLUDES} are allowed"
        )));
    }
    for (name, value) in params {
        // Cheap bound first: a value with fewer commas cannot have more alternatives.
        if value.bytes().filter(|b| *b == b',').count() < MAX_ALTERNATIVES {
            continue;
        }
        let alternatives = split_unescaped(value, ',').len();
        if alternatives > MAX_ALTERNATIVES {
            return Err(TooCostly(format!(
                "{name} lists {alternatives} values; at most {MAX_ALTERNATIVES} are allowed"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn searches_within_the_bounds_pass() {
        let ids = vec!["x"; MAX_ALTERNATIVES].join(",");
        let escaped = vec!["a\\,b"; MAX_ALTERNATIVES].join(",");
        let includes = vec![("_include", "Observation:subject".to_owned()); MAX_INCLUDES];
        assert_eq!(check_cost(&params(&[("_id", ids)])), Ok(()));
        assert_eq!(check_cost(&params(&[("code", escaped)])), Ok(()));
        assert_eq!(check_cost(&params(&includes)), Ok(()));
    }

    #[test]
    fn searches_past_a_bound_are_too_costly() {
        let ids = vec!["x"; MAX_ALTERNATIVES + 1].join(",");
        let error = check_cost(&params(&[("_id", ids)])).unwrap_err();
        assert!(error.0.contains("_id lists 1001 values"), "{error}");

        let mut includes = vec![("_revinclude:iterate", "Provenance:target".to_owned())];
        includes.extend(vec![
            ("_include", "Observation:subject".to_owned());
            MAX_INCLUDES
        ]);
        let error = check_cost(&params(&includes)).unwrap_err();
        assert!(error.0.contains("21 _include"), "{error}");

        let many = vec![("name", "a".to_owned()); MAX_SEARCH_PARAMETERS + 1];
        let error = check_cost(&params(&many)).unwrap_err();
        assert!(error.0.contains("65 parameters"), "{error}");
    }
}
