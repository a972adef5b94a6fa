//! FHIRPath for Fjord: a parser and an evaluator over FHIR JSON.
//!
//! Navigation is typed by the R4 definitions (`fjord-definitions`): `Observation.value` finds
//! `valueQuantity`, a `date` element compares as a date, `ofType(Quantity)` knows that `Age` is
//! one. Used for search parameter expressions, invariants, PATCH paths and subscription filters.
//! Pure: no I/O; `resolve()` and `memberOf()` ask a [`Host`].
//!
//! Measured against the official R4 suite by `tests/it/fhirpath.rs`; not complete yet (see that
//! test's recorded pass count).

mod convert;
mod eval;
mod functions;
mod math;
mod parser;
mod temporal;
mod text;
mod units;
mod value;

use serde_json::Value as Json;

pub use parser::{parse, BinaryOp, Expr, Literal};
pub use temporal::{Temporal, TemporalKind};
pub use units::ucum_canonical;
pub use value::{Node, Value};

/// The expression is not FHIRPath.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("FHIRPath syntax: {0}")]
pub struct ParseError(pub String);

/// Evaluation failed (the specification's "execution error").
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("a single item was expected, found {0}")]
    Singleton(String),
    #[error("type error: {0}")]
    Type(String),
    #[error("{0}")]
    Semantic(String),
    #[error("unknown function {0}()")]
    UnknownFunction(String),
    #[error("wrong arguments to {0}()")]
    Arguments(String),
    #[error("unknown variable %{0}")]
    UnknownVariable(String),
}

/// What an evaluation may ask of its surroundings.
pub trait Host {
    /// The resource a reference (`Patient/1`, an absolute URL) names, when it can be had.
    fn resolve(&self, reference: &str) -> Option<&Json>;
    /// Whether a code (a `code`, `Coding` or `CodeableConcept` item) is in a value set; `None`
    /// when the value set is unknown.
    fn member_of(&self, code: &Value, value_set: &str) -> Option<bool>;
}

/// The resource (`%resource`), extra variables, and the host of an evaluation.
#[derive(Default)]
pub struct Environment<'a> {
    pub resource: Option<&'a Json>,
    /// The resource that contains `resource` (`%rootResource`), when that is a contained one.
    pub root_resource: Option<&'a Json>,
    pub variables: Vec<(String, Vec<Value<'a>>)>,
    pub host: Option<&'a dyn Host>,
    /// Evaluate as the specification's reference implementation does its own invariants: a name
    /// no element has is empty rather than an error, `as()` filters a collection.
    pub lenient: bool,
}

/// Evaluates `expr` on `input` (a resource, or any element given as JSON with its FHIR type).
pub fn evaluate<'a>(
    expr: &Expr,
    input: Vec<Value<'a>>,
    env: &Environment<'a>,
) -> Result<Vec<Value<'a>>, EvalError> {
    let evaluator = eval::Evaluator {
        env,
        context: input.clone(),
    };
    evaluator.eval(expr, &input, &eval::Scope::default())
}

/// Evaluates `expr` on a resource, which is also `%resource`.
pub fn evaluate_resource<'a>(expr: &Expr, resource: &'a Json) -> Result<Vec<Value<'a>>, EvalError> {
    let env = Environment {
        resource: Some(resource),
        ..Environment::default()
    };
    evaluate(expr, vec![Value::Node(Node::resource(resource))], &env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_on(expression: &str, resource: &Json) -> Vec<String> {
        let expr = parse(expression).unwrap();
        evaluate_resource(&expr, resource)
            .unwrap()
            .iter()
            .map(|v| v.to_text().unwrap_or_else(|| "<node>".into()))
            .collect()
    }

    #[test]
    fn every_r4_search_parameter_expression_parses() {
        let expressions: Vec<&str> = fjord_definitions::search_parameters()
            .iter()
            .flat_map(|p| p.bases.iter().filter_map(|b| b.expression))
            .collect();
        assert_eq!(expressions.len(), 1703);
        for expression in expressions {
            assert!(parse(expression).is_ok(), "{expression}");
        }
    }

    #[test]
    fn typed_navigation_of_choices_primitives_and_backbones() {
        let observation = serde_json::json!({
            "resourceType": "Observation",
            "status": "final",
            "effectiveDateTime": "2026-11-01T08:00:00+01:00",
            "component": [
                {"code": {"text": "sys"}, "valueQuantity": {"value": 128, "code": "mm[Hg]"}},
                {"code": {"text": "dia"}, "valueQuantity": {"value": 82, "code": "mm[Hg]"}}
            ]
        });
        assert_eq!(eval_on("Observation.status", &observation), ["final"]);
        assert_eq!(
            eval_on(
                "component.where(value > 100 'mm[Hg]').code.text",
                &observation
            ),
            ["sys"]
        );
        assert_eq!(
            eval_on("effective > @2026-10-31T00:00:00Z", &observation),
            ["true"]
        );
        assert_eq!(
            eval_on("component.value.ofType(Quantity).count()", &observation),
            ["2"]
        );
        assert_eq!(eval_on("Resource.id.exists()", &observation), ["false"]);
    }

    /// Found by the `fhirpath` fuzz target (the quantity product); the rest are its neighbours.
    /// Overflow gives the empty collection, as integer overflow does in FHIRPath.
    #[test]
    fn arithmetic_beyond_the_range_of_numbers_is_empty() {
        let patient = serde_json::json!({"resourceType": "Patient", "birthDate": "1980-02-29"});
        for expression in [
            "-44444444444444444444444444443'b'*3-1'a'*2",
            "79228162514264337593543950335 'kg' * 79228162514264337593543950335 'kg'",
            "79228162514264337593543950335 'g' + 79228162514264337593543950335 'g'",
            "79228162514264337593543950335 'g' / 0.0000000000000000000000000001",
            "-(-9223372036854775807 - 1)",
            "(-9223372036854775807 - 1).abs()",
            "'79228162514264337593543950335'.toDecimal().highBoundary()",
            "10.log(1)",
            "birthDate + 9223372036854775807 years",
            "birthDate + 9223372036854775807 'ms'",
            "birthDate - 9000 years",
            "@2020-01-01T00:00:00Z + 9223372036854775807 seconds",
        ] {
            let expr = parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
            let result = evaluate_resource(&expr, &patient);
            assert!(
                matches!(result.as_deref(), Ok([])),
                "{expression}: {result:?}"
            );
        }
        assert_eq!(eval_on("birthDate + 1 year", &patient), ["1981-02-28"]);
        assert_eq!(
            eval_on("0.0000000000000000000000000001.lowBoundary()", &patient),
            ["0.00000000"]
        );
        assert_eq!(
            eval_on("0.0000000000000000000000000001.lowBoundary(28)", &patient),
            ["0.0000000000000000000000000001"]
        );
    }
}
