//! Validation of FHIR resources for Fjord.
//!
//! So far the Norwegian identifier rules (`norwegian`): which values are valid for the
//! national identifier systems (fødselsnummer, D-nummer, felles hjelpenummer, HPR-nummer,
//! organisasjonsnummer, RESH-id), check digits included, applied to every identifier of a
//! resource by `check_resource`. Pure; profiles, bindings and terminology come on top of it.

pub mod norwegian;

use fjord_model::for_each_object;
use serde_json::Value;

pub use norwegian::{check_identifier, IdentifierError, IdentifierKind, IdentifierRules};

/// A rule a resource breaks, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// FHIRPath of the offending element, from the resource type (`Patient.identifier[0].value`).
    pub expression: String,
    pub message: String,
}

/// What this crate can check of `resource` (FHIR JSON): the values of its national identifiers,
/// wherever they are (`identifier`, a Reference's `identifier`, contained resources).
pub fn check_resource(resource: &Value, rules: IdentifierRules) -> Vec<Issue> {
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
        let issues = check_resource(&observation, IdentifierRules::default());
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
