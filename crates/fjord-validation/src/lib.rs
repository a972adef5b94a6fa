//! Validation of FHIR resources for Fjord.
//!
//! [`validate`] checks a resource (FHIR JSON that `fjord-model` has parsed) against base R4
//! (`structure`: cardinalities, primitive formats, `ele-1`, required bindings the specification
//! enumerates, and the invariants of every element and type, evaluated with `fjord-fhirpath`)
//! and the Norwegian identifier rules (`norwegian`: which values are valid for the national
//! identifier systems, fødselsnummer, D-nummer, felles hjelpenummer, HPR-nummer,
//! organisasjonsnummer and RESH-id, check digits included). [`validate_with`] adds profiles
//! (`profile`: StructureDefinition snapshots compiled; `profile_check`: cardinality, types,
//! fixed and pattern values, slicing, bindings, type and target profiles, invariants) from a
//! [`Conformance`] set with the value sets it can expand (`conformance`). Pure: no I/O.

mod conformance;
mod invariants;
pub mod norwegian;
mod primitives;
mod profile;
mod profile_check;
pub mod questionnaire;
mod snapshot;
mod structure;

pub use conformance::{ConceptInfo, Conformance, ConformanceError, Expansion};
pub use profile::Profile;

use fjord_model::for_each_object;
use serde_json::Value;

pub use norwegian::{
    check_identifier, with_organisation_check_digit, with_person_check_digits, IdentifierError,
    IdentifierKind, IdentifierRules,
};

/// A rule a resource breaks, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    /// FHIRPath of the offending element, from the resource type (`Patient.identifier[0].value`).
    pub expression: String,
    pub message: String,
}

impl Issue {
    pub(crate) fn new(severity: Severity, code: IssueType, path: &str, message: String) -> Issue {
        Issue {
            severity,
            code,
            expression: path.to_owned(),
            message,
        }
    }
}

/// How serious an issue is (OperationOutcome's `issue.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// What kind of rule an issue breaks (OperationOutcome's `issue.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    /// Unknown or misplaced element, wrong JSON shape.
    Structure,
    /// A required element is missing.
    Required,
    /// A value has the wrong format.
    Value,
    /// A code is not in the value set it is bound to.
    CodeInvalid,
    /// An invariant is false.
    Invariant,
    /// A profile the resource claims or the tenant requires is not known here.
    UnknownProfile,
}

impl IssueType {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::Invariant => "invariant",
            IssueType::UnknownProfile => "not-supported",
        }
    }
}

/// What validation found.
#[derive(Debug, Default)]
pub struct Report {
    pub issues: Vec<Issue>,
    /// Keys of invariants `fjord-fhirpath` could not evaluate (so neither passed nor failed).
    pub unevaluated: Vec<String>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// What to validate a resource against besides base R4.
#[derive(Clone, Copy)]
pub struct Options<'c> {
    pub identifiers: IdentifierRules,
    /// Installed profiles and terminology; the profiles of `meta.profile` are looked up here.
    pub conformance: Option<&'c Conformance>,
    /// Profiles every resource of its type must conform to (the tenant's), by canonical URL;
    /// those of another type than the resource's are skipped.
    pub required_profiles: &'c [String],
    /// How a `meta.profile` that `conformance` does not know is reported.
    pub unknown_profile: Severity,
    /// For a QuestionnaireResponse, the Questionnaire it answers (its answers are checked
    /// against the items).
    pub questionnaire: Option<&'c Value>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            identifiers: IdentifierRules::default(),
            conformance: None,
            required_profiles: &[],
            unknown_profile: Severity::Warning,
            questionnaire: None,
        }
    }
}

/// Validates `resource` (FHIR JSON) against base R4 and the Norwegian identifier rules.
pub fn validate(resource: &Value, rules: IdentifierRules) -> Report {
    validate_with(
        resource,
        &Options {
            identifiers: rules,
            ..Options::default()
        },
    )
}

/// Validates `resource` against base R4, the Norwegian identifier rules, the profiles its
/// `meta.profile` names and those `options` require.
pub fn validate_with(resource: &Value, options: &Options) -> Report {
    let root = resource["resourceType"].as_str().unwrap_or("Resource");
    let mut walker = structure::Walker::new(resource);
    walker.resource(resource, root, None);
    let mut report = Report {
        issues: walker.issues,
        unevaluated: walker.unevaluated,
    };
    report
        .issues
        .extend(check_identifiers(resource, options.identifiers));
    if let (Some(questionnaire), "QuestionnaireResponse") = (options.questionnaire, root) {
        report.issues.extend(questionnaire::check_response(
            resource,
            questionnaire,
            options.conformance,
        ));
    }
    if let Some(conformance) = options.conformance {
        let issues = check_known_extensions(resource, conformance);
        merge_issues(&mut report, issues);
    }
    check_profiles(
        &mut report,
        resource,
        root,
        options.required_profiles,
        options,
    );
    // Contained resources and the resources of a bundle's entries, against the profiles they
    // claim themselves.
    let nested = resource["contained"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (r, format!("{root}.contained[{i}]")));
    let entries = resource["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|_| root == "Bundle")
        .map(|(i, e)| (&e["resource"], format!("Bundle.entry[{i}].resource")));
    for (inner, path) in nested.chain(entries) {
        if inner["meta"]["profile"].is_array() {
            check_profiles(&mut report, inner, &path, &[], options);
        }
    }
    report
}

/// `resource` (at `path`) against the profiles it claims and `required`: each one known is
/// checked; an unknown one is reported as the options say.
fn check_profiles(
    report: &mut Report,
    resource: &Value,
    path: &str,
    required: &[String],
    options: &Options,
) {
    let root = resource["resourceType"].as_str().unwrap_or("Resource");
    let claimed = resource["meta"]["profile"].as_array().into_iter().flatten();
    let mut urls: Vec<(&str, bool)> = claimed.filter_map(|p| Some((p.as_str()?, true))).collect();
    urls.extend(required.iter().map(|p| (p.as_str(), false)));
    let mut checked: Vec<&str> = Vec::new();
    for (url, claimed) in urls {
        if checked.contains(&url) {
            continue;
        }
        checked.push(url);
        let profile = options.conformance.and_then(|c| Some((c, c.profile(url)?)));
        match profile {
            Some((conformance, profile)) if profile.type_name == root => {
                let mut check = profile_check::ProfileCheck::new(conformance);
                check.check(profile, resource, root, path, resource);
                report.unevaluated.extend(check.unevaluated);
                merge_issues(report, check.issues);
            }
            Some((_, profile)) if claimed => report.issues.push(Issue {
                severity: Severity::Error,
                code: IssueType::Structure,
                expression: format!("{path}.meta.profile"),
                message: format!("{url} is a profile of {}, not of {root}", profile.type_name),
            }),
            Some(_) => {}
            None => report.issues.push(Issue {
                severity: if claimed {
                    options.unknown_profile
                } else {
                    Severity::Warning
                },
                code: IssueType::UnknownProfile,
                expression: format!("{path}.meta.profile"),
                message: format!("the profile {url} is not known here, so not checked"),
            }),
        }
    }
}

/// Issues added to a report, but those already reported at the same place with the same code
/// (base R4's and a profile's, or two profiles', saying the same).
fn merge_issues(report: &mut Report, issues: Vec<Issue>) {
    for issue in issues {
        let repeated = report
            .issues
            .iter()
            .any(|i| i.expression == issue.expression && i.code == issue.code);
        if !repeated {
            report.issues.push(issue);
        }
    }
}

/// Every extension whose definition is installed, wherever it is, against that definition
/// (a profile's slices check the extensions it names; this checks the others).
fn check_known_extensions(resource: &Value, conformance: &Conformance) -> Vec<Issue> {
    let root = resource["resourceType"].as_str().unwrap_or("Resource");
    let mut issues = Vec::new();
    for_each_object(resource, root, &mut |element, path| {
        let in_extension_list = path.rsplit_once('.').is_some_and(|(_, last)| {
            last.starts_with("extension[") || last.starts_with("modifierExtension[")
        });
        let Some(url) = element["url"].as_str().filter(|_| in_extension_list) else {
            return;
        };
        let Some(profile) = conformance
            .profile(url)
            .filter(|p| p.type_name == "Extension")
        else {
            return;
        };
        if let Some(contexts) = &profile.contexts {
            let holder = path.rsplit_once('.').map_or(path, |(holder, _)| holder);
            if !contexts.iter().any(|c| holder_matches(holder, c)) {
                issues.push(Issue::new(
                    Severity::Error,
                    IssueType::Structure,
                    path,
                    format!(
                        "the extension {url} is not allowed here (its contexts: {})",
                        contexts.join(", ")
                    ),
                ));
            }
        }
        let mut check = profile_check::ProfileCheck::new(conformance);
        check.check(profile, element, "Extension", path, resource);
        issues.extend(check.issues);
    });
    issues
}

/// Whether the element at `holder` (`Patient.address[0]._district`) is one an extension's
/// context names: by its type or a base of it (`Address`, `Element`), its definition's path
/// (`Address.district`), or its path from the resource (`Patient.address.district`).
fn holder_matches(holder: &str, context: &str) -> bool {
    let mut segments = holder.split('.');
    let Some(root) = segments.next() else {
        return false;
    };
    let mut structure = root.to_owned();
    let mut type_code = root.to_owned();
    let mut definition_path = root.to_owned();
    let mut plain_path = root.to_owned();
    for segment in segments {
        let name = segment
            .split('[')
            .next()
            .unwrap_or(segment)
            .trim_start_matches('_');
        let Some((element, member_type)) = structure::member(&structure, name) else {
            return false;
        };
        if member_type == "Resource" {
            // Inside a contained or entry resource: its type is not the definitions' to tell.
            return true;
        }
        type_code = member_type.to_owned();
        definition_path = element.path.trim_end_matches("[x]").to_owned();
        plain_path = format!("{plain_path}.{}", element.name());
        structure = element.structure_of(member_type).to_owned();
    }
    context == definition_path
        || context == plain_path
        || fjord_definitions::is_subtype(&type_code, context)
        || (context == "Element" && !fjord_definitions::is_subtype(&type_code, "Resource"))
}

/// The values of the national identifiers of `resource` (FHIR JSON), wherever they are
/// (`identifier`, a Reference's `identifier`, contained resources).
pub fn check_identifiers(resource: &Value, rules: IdentifierRules) -> Vec<Issue> {
    let mut issues = Vec::new();
    let root = resource["resourceType"].as_str().unwrap_or("Resource");
    for_each_object(resource, root, &mut |element, path| {
        let (Some(system), Some(value)) = (element["system"].as_str(), element["value"].as_str())
        else {
            return;
        };
        let Some(kind) = IdentifierKind::of_system(system) else {
            return;
        };
        if let Err(error) = check_identifier(kind, value, rules) {
            issues.push(Issue {
                severity: Severity::Error,
                code: IssueType::Value,
                expression: format!("{path}.value"),
                message: error.to_string(),
            });
        }
    });
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_national_identifier_of_a_resource_is_checked_where_it_is() {
        let observation = json!({
            "resourceType": "Observation",
            "identifier": [{ "system": "urn:phg", "value": "anything" }],
            "subject": { "identifier": { "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "02016126007" } },
            "performer": [
                { "identifier": { "system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9144889" } },
                { "identifier": { "system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "974760674" } },
            ],
            "contained": [{
                "resourceType": "Patient",
                "identifier": [{ "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "02016126008" }],
            }],
            // Not Identifiers: a ContactPoint's system is no OID, a Quantity's value no string.
            "valueQuantity": { "system": "http://unitsofmeasure.org", "value": 120 },
        });
        let issues = check_identifiers(&observation, IdentifierRules::default());
        let expressions: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        assert_eq!(
            expressions,
            [
                "Observation.performer[1].identifier.value",
                "Observation.contained[0].identifier[0].value",
            ]
        );
        assert!(
            issues[0].message.contains("organisasjonsnummer"),
            "{issues:?}"
        );
    }
}
