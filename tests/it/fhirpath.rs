//! The official FHIRPath suite for R4 (`../shared/fhirpath-tests/official-r4`), run in full. The
//! pass count may only rise: raise `PASSING` when the engine improves.

use fjord_fhirpath::{evaluate, parse, Environment, Node, Value};
use serde_json::Value as Json;

/// Tests of the suite that pass today (of 935).
const PASSING: usize = 930;

struct Case {
    name: String,
    input: Option<String>,
    expression: String,
    invalid: Option<String>,
    predicate: bool,
    outputs: Vec<(String, String)>,
}

#[test]
fn official_r4_suite() {
    let dir = fjord_tests::shared_dir().join("fhirpath-tests/official-r4");
    let xml = std::fs::read_to_string(dir.join("tests-fhir-r4.xml")).unwrap();
    let document = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<Case> = document
        .descendants()
        .filter(|n| n.has_tag_name("test"))
        .map(|test| {
            let expression = test
                .children()
                .find(|c| c.has_tag_name("expression"))
                .unwrap();
            Case {
                name: test.attribute("name").unwrap_or("").to_owned(),
                input: test
                    .attribute("inputfile")
                    .map(|f| f.replace(".xml", ".json")),
                expression: expression.text().unwrap_or("").to_owned(),
                invalid: expression.attribute("invalid").map(str::to_owned),
                predicate: test.attribute("predicate") == Some("true"),
                outputs: test
                    .children()
                    .filter(|c| c.has_tag_name("output"))
                    .map(|o| {
                        (
                            o.attribute("type").unwrap_or("").to_owned(),
                            o.text().unwrap_or("").to_owned(),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    assert_eq!(cases.len(), 935);
    let mut failures = Vec::new();
    for case in &cases {
        let input: Option<Json> = case.input.as_ref().map(|file| {
            let text = std::fs::read_to_string(dir.join("input-json-all").join(file)).unwrap();
            serde_json::from_str(&text).unwrap()
        });
        if let Err(why) = run(case, input.as_ref()) {
            failures.push(format!("{}: {} — {why}", case.name, case.expression.trim()));
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "FHIRPath official R4 suite: {passed} of {} pass",
        cases.len()
    );
    for failure in &failures {
        println!("  FAIL {failure}");
    }
    assert!(
        passed >= PASSING,
        "{passed} pass, fewer than the recorded {PASSING}"
    );
}

fn run(case: &Case, input: Option<&Json>) -> Result<(), String> {
    let parsed = parse(&case.expression);
    let env = Environment {
        resource: input,
        ..Environment::default()
    };
    let focus: Vec<Value> = input
        .map(|json| Value::Node(Node::resource(json)))
        .into_iter()
        .collect();
    let result = parsed
        .as_ref()
        .map_err(|e| e.to_string())
        .and_then(|expr| evaluate(expr, focus, &env).map_err(|e| e.to_string()));
    match (&case.invalid, result) {
        (Some(kind), Ok(_)) if kind != "syntax" || parsed.is_ok() => {
            if kind == "syntax" {
                Err("parsed, but is a syntax error".into())
            } else {
                Err(format!("evaluated, but is a {kind} error"))
            }
        }
        (Some(_), _) => Ok(()),
        (None, Err(e)) => Err(e),
        (None, Ok(values)) => {
            let values = if case.predicate {
                vec![Value::Boolean(!values.is_empty())]
            } else {
                values
            };
            if values.len() != case.outputs.len() {
                return Err(format!(
                    "{} results, expected {}: {:?}",
                    values.len(),
                    case.outputs.len(),
                    values.iter().map(Value::to_text).collect::<Vec<_>>()
                ));
            }
            for (value, (kind, expected)) in values.iter().zip(&case.outputs) {
                if !matches_output(value, kind, expected) {
                    return Err(format!(
                        "got {:?}, expected {kind} {expected}",
                        value.to_text()
                    ));
                }
            }
            Ok(())
        }
    }
}

fn matches_output(value: &Value, kind: &str, expected: &str) -> bool {
    let Some(text) = value.to_text() else {
        return false;
    };
    let system = value.system();
    match kind {
        "integer" => matches!(system, Value::Integer(_)) && text == expected,
        "decimal" => match (&system, expected.parse::<rust_decimal::Decimal>()) {
            (Value::Decimal(d), Ok(e)) => *d == e,
            _ => false,
        },
        "date" | "dateTime" | "time" => {
            let expected = expected.trim_start_matches('@');
            let expected = expected.strip_prefix('T').unwrap_or(expected);
            matches!(system, Value::Temporal(_)) && text == expected
        }
        "Quantity" => matches!(system, Value::Quantity(..)) && text == expected,
        // Untyped outputs are FHIRPath literals: `@2014-01`, `@T10:30`, `1.5 'cm'`, `0.5`.
        _ => match expected.strip_prefix('@') {
            Some(literal) => {
                matches!(system, Value::Temporal(_))
                    && text == literal.strip_prefix('T').unwrap_or(literal)
            }
            None => text == expected,
        },
    }
}
