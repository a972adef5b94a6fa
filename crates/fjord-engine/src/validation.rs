//! The tenant's validation of what it stores (`TenantSettings::validation`): the checks of
//! `fjord-validation` on every resource a create, update, patch or bundle entry writes.

use fjord_model::ParseError;
use fjord_validation::{check_resource, IdentifierRules};
use serde_json::Value;

use crate::{Engine, EngineError, Tenant, ValidationIssue, ValidationMode};

impl Engine {
    /// The issues of `resource` under the tenant's rules: none when validation is off; an
    /// error naming every issue when it is strict; kept for the client when it is lenient.
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
        let issues = check_resource(resource, rules);
        if settings.validation == ValidationMode::Strict && !issues.is_empty() {
            return Err(EngineError::Unprocessable(
                issues
                    .into_iter()
                    .map(|issue| ParseError {
                        message: issue.message,
                        path: Some(issue.expression),
                    })
                    .collect(),
            ));
        }
        Ok(issues)
    }
}
