//! The invariants of base R4, evaluated with `fjord-fhirpath`: each expression parsed once, on
//! first use, and kept for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use fjord_definitions::{required_value_set, type_def, Constraint, ElementDef};
use fjord_fhirpath::{EvalError, Expr, Host, Node, Value as Item};
use serde_json::Value;

/// The invariants that apply to a value: its element's own, then its type's and its base types'.
pub(crate) struct Constraints(Vec<&'static Constraint>);

impl Constraints {
    /// Best-practice recommendations (`dom-6`, a narrative; `con-3`) are left out: most writers
    /// (devices, apps) have no narrative to give, and a warning on every write is noise.
    pub(crate) fn of(element: Option<&'static ElementDef>, type_code: &str) -> Constraints {
        let mut all: Vec<&'static Constraint> = element
            .map(|e| e.constraints.iter().collect())
            .unwrap_or_default();
        let mut current = type_def(type_code);
        while let Some(t) = current {
            all.extend(t.constraints);
            current = t.base.and_then(type_def);
        }
        all.retain(|c| !c.best_practice);
        Constraints(all)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Constraint> + '_ {
        self.0.iter().copied()
    }
}

type Compiled = HashMap<String, Option<Arc<Expr>>>;

/// The parsed expression of an invariant; `None` when `fjord-fhirpath` cannot parse it. Base
/// R4's and installed profiles' expressions are few: they are kept for the process's life.
fn compiled(expression: &str) -> Option<Arc<Expr>> {
    static CACHE: LazyLock<RwLock<Compiled>> = LazyLock::new(RwLock::default);
    if let Some(found) = CACHE.read().ok().and_then(|c| c.get(expression).cloned()) {
        return found;
    }
    let parsed = fjord_fhirpath::parse(expression).ok().map(Arc::new);
    if let Ok(mut cache) = CACHE.write() {
        cache.insert(expression.to_owned(), parsed.clone());
    }
    parsed
}

/// Whether `constraint` holds of `node`, in `resource`, contained in `container` (or itself),
/// in the validated `root` (a bundle's entries are what `resolve()` finds); an empty result
/// counts as holding (the element it speaks of is absent).
pub(crate) fn holds(
    constraint: &'static Constraint,
    node: Node<'_>,
    resource: &Value,
    container: &Value,
    root: &Value,
) -> Result<bool, EvalError> {
    evaluate(constraint.expression, node, resource, container, root)
        .map_err(|e| EvalError::Semantic(format!("{}: {e}", constraint.key)))
}

/// Whether a profile's invariant holds of `node` in `resource`.
pub(crate) fn holds_expression(
    expression: &str,
    node: Node<'_>,
    resource: &Value,
) -> Result<bool, EvalError> {
    evaluate(expression, node, resource, resource, resource)
}

fn evaluate(
    expression: &str,
    node: Node<'_>,
    resource: &Value,
    container: &Value,
    root: &Value,
) -> Result<bool, EvalError> {
    let Some(expr) = compiled(expression) else {
        return Err(EvalError::Semantic("the expression does not parse".into()));
    };
    let host = Resolver { root, resource };
    let env = fjord_fhirpath::Environment {
        resource: Some(resource),
        root_resource: Some(container),
        variables: vec![(
            "ucum".to_owned(),
            vec![Item::String("http://unitsofmeasure.org".to_owned())],
        )],
        host: Some(&host),
        // Some of the specification's invariants name elements their type lacks (`cid-0`).
        lenient: true,
    };
    let result = fjord_fhirpath::evaluate(&expr, vec![Item::Node(node)], &env)?;
    Ok(match result.as_slice() {
        [single] => single.as_bool().unwrap_or(true),
        _ => true,
    })
}

/// What `resolve()` and `memberOf()` can reach during validation: the resource's contained
/// resources and the entries of the bundle being validated; the value sets base R4 enumerates.
struct Resolver<'r> {
    root: &'r Value,
    resource: &'r Value,
}

impl Host for Resolver<'_> {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        if let Some(id) = reference.strip_prefix('#') {
            return self.resource["contained"]
                .as_array()?
                .iter()
                .find(|c| c["id"].as_str() == Some(id));
        }
        self.root["entry"].as_array()?.iter().find_map(|entry| {
            let full_url = entry["fullUrl"].as_str().unwrap_or("");
            let resource = &entry["resource"];
            let local = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap_or(""),
                resource["id"].as_str().unwrap_or("")
            );
            (full_url == reference
                || local == reference
                || full_url.ends_with(&format!("/{reference}")))
            .then_some(resource)
        })
    }

    fn member_of(&self, code: &Item, value_set: &str) -> Option<bool> {
        let value_set = required_value_set(value_set)?;
        match code {
            Item::Node(node) => match node.json? {
                Value::String(code) => Some(value_set.contains_code(code)),
                Value::Object(map) if map.contains_key("coding") => {
                    Some(map["coding"].as_array()?.iter().any(|c| {
                        value_set.contains(
                            c["system"].as_str().unwrap_or(""),
                            c["code"].as_str().unwrap_or(""),
                        )
                    }))
                }
                Value::Object(map) => Some(
                    value_set.contains(map.get("system")?.as_str()?, map.get("code")?.as_str()?),
                ),
                _ => None,
            },
            Item::String(code) => Some(value_set.contains_code(code)),
            _ => None,
        }
    }
}
