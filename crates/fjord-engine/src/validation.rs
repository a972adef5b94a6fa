//! The tenant's validation of what it stores (`TenantSettings::validation`): the checks of
//! `fjord-validation` (base R4 and the Norwegian identifier rules) on every resource a create,
//! update, patch or bundle entry writes.

use fjord_validation::{validate, IdentifierRules};
use serde_json::Value;

use crate::{Engine, EngineError, Tenant, ValidationIssue, ValidationMode};

impl Engine {
    /// The issues of `resource` under the tenant's rules: none when validation is off; when it is
    /// strict, an error naming every issue if one is an error; otherwise kept for the client.
    pub(crate) fn validate(
        &self,
        tenant: &Tenant,
        resource: &Value,
    ) -> Result<Vec<ValidationIssue>, EngineError> {
        let settings = &tenant.settings;
        if settings.validation == ValidationMode::Off {
            return Ok(Vec::new());
        }
        let rules = IdentifierRules {
            allow_test_data: settings.allow_test_data,
        };
        let mut report = validate(resource, rules);
        report.issues.sort_by_key(|issue| issue.severity);
        if settings.validation == ValidationMode::Strict && report.has_errors() {
            return Err(EngineError::NotConformant(report.issues));
        }
        Ok(report.issues)
    }
}
