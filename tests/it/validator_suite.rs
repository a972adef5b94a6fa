//! The FHIR validator's own test cases (`../shared/validator-tests`, `R4-index.tsv`): every R4
//! case Fjord can run without a terminology server, supporting files or packages is validated
//! against base R4, and Fjord's verdict (valid or not) and error count are compared with the
//! reference validator's. The test fails below the recorded counts, which may only rise.

use fjord_model::{Format, ParseLimits, Resource};
use fjord_tests::shared_dir;
use fjord_validation::{validate, IdentifierRules};

/// Cases whose verdict agrees with the reference validator's (of those run).
const SAME_VERDICT_FLOOR: usize = 256;
/// Cases whose error count is also the same.
const SAME_COUNT_FLOOR: usize = 225;

struct Case {
    name: String,
    file: String,
    module: String,
    expected_errors: usize,
}

fn runnable_cases() -> Vec<Case> {
    let index = std::fs::read_to_string(shared_dir().join("validator-tests/R4-index.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, file, module, needs, errors, ..] = fields.as_slice() else {
                return None;
            };
            // `profile` cases are also validated against base R4, which is what the counts say.
            let runnable = needs.is_empty() || *needs == "profile";
            let format_known = file.ends_with(".json") || file.ends_with(".xml");
            (runnable && format_known).then(|| Case {
                name: (*name).to_owned(),
                file: (*file).to_owned(),
                module: (*module).to_owned(),
                expected_errors: errors.parse().unwrap_or(0),
            })
        })
        .collect()
}

/// Fjord's error count for a case: a body `fjord-model` refuses counts as one.
fn error_count(case: &Case) -> usize {
    let path = shared_dir().join("validator-tests").join(&case.file);
    let Ok(bytes) = std::fs::read(&path) else {
        return 1;
    };
    let format = if case.file.ends_with(".xml") {
        Format::Xml
    } else {
        Format::Json
    };
    match Resource::parse(&bytes, format, &ParseLimits::default()) {
        Ok(resource) => {
            let report = validate(&resource.to_value(), IdentifierRules::default());
            if std::env::var("FJORD_SUITE_DEBUG").is_ok() && case.expected_errors == 0 {
                for issue in report.errors() {
                    println!(
                        "DEBUG {}: {} {}",
                        case.name, issue.expression, issue.message
                    );
                }
            }
            report.errors().count() + resource.invariant_violations().len()
        }
        Err(error) => {
            if std::env::var("FJORD_SUITE_DEBUG").is_ok() && case.expected_errors == 0 {
                println!("DEBUG {}: parse {error}", case.name);
            }
            1
        }
    }
}

#[test]
fn the_validator_suite_agrees_at_least_as_often_as_recorded() {
    let cases = runnable_cases();
    let (mut same_verdict, mut same_count) = (0, 0);
    let mut disagreements = Vec::new();
    for case in &cases {
        let found = error_count(case);
        if (found == 0) == (case.expected_errors == 0) {
            same_verdict += 1;
        } else {
            disagreements.push(format!(
                "{} ({}): expected {} errors, found {found}",
                case.name, case.module, case.expected_errors
            ));
        }
        if found == case.expected_errors {
            same_count += 1;
        }
    }
    println!(
        "validator suite: {} cases run; same verdict {same_verdict}, same error count {same_count}",
        cases.len()
    );
    for disagreement in &disagreements {
        println!("  {disagreement}");
    }
    assert!(
        same_verdict >= SAME_VERDICT_FLOOR,
        "{same_verdict} < {SAME_VERDICT_FLOOR}"
    );
    assert!(
        same_count >= SAME_COUNT_FLOOR,
        "{same_count} < {SAME_COUNT_FLOOR}"
    );
}
