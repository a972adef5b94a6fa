//! The tenant's validation of what it stores (`TenantSettings::validation`): the checks of
//! `fjord-validation` (base R4, the Norwegian identifier rules, the profiles a resource claims
//! in `meta.profile` and those the tenant requires for its type, against the tenant's installed
//! conformance resources) on every resource a create, update, patch or bundle entry writes.

use fjord_validation::{validate_with, IdentifierRules, Options, Severity};
use serde_json::Value;

use crate::{Engine, EngineError, Tenant, UnknownProfile, ValidationIssue, ValidationMode};

impl Engine {
    /// The issues of `resource` under the tenant's rules: none when validation is off; when it is
    /// strict, an error naming every issue if one is an error; otherwise kept for the client.
    pub(crate) async fn validate(
        &self,
        tenant: &Tenant,
        resource: &Value,
    ) -> Result<Vec<ValidationIssue>, EngineError> {
        let settings = &tenant.settings;
        if settings.validation == ValidationMode::Off {
            return Ok(Vec::new());
        }
        let conformance = self.conformance(tenant).await?;
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        let required = settings
            .required_profiles
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let options = Options {
            identifiers: IdentifierRules {
                allow_test_data: settings.allow_test_data,
            },
            conformance: Some(&conformance),
            required_profiles: required,
            unknown_profile: match settings.unknown_profile {
                UnknownProfile::Warning => Severity::Warning,
                UnknownProfile::Error => Severity::Error,
            },
        };
        let mut report = validate_with(resource, &options);
        for unevaluated in &report.unevaluated {
            tracing::debug!(tenant = %tenant.id, "invariant not evaluated: {unevaluated}");
        }
        report.issues.sort_by_key(|issue| issue.severity);
        if settings.validation == ValidationMode::Strict && report.has_errors() {
            return Err(EngineError::NotConformant(report.issues));
        }
        Ok(report.issues)
    }
}
