//! The tenant's validation of what it stores (`TenantSettings::validation`): the checks of
//! `fjord-validation` (base R4, the Norwegian identifier rules, the profiles a resource claims
//! in `meta.profile` and those the tenant requires for its type, against the tenant's installed
//! conformance resources) on every resource a create, update, patch or bundle entry writes.

use fjord_validation::{validate_with, IdentifierRules, Options, Severity};
use serde_json::Value;

use crate::{
    Caller, Engine, EngineError, Permission, UnknownProfile, ValidationIssue, ValidationMode,
};

impl Engine {
    /// The issues of `resource` under the tenant's rules: none when validation is off; when it is
    /// strict, an error naming every issue if one is an error; otherwise kept for the client.
    pub(crate) async fn validate(
        &self,
        caller: &Caller,
        resource: &Value,
    ) -> Result<Vec<ValidationIssue>, EngineError> {
        let settings = &caller.settings;
        if settings.validation == ValidationMode::Off {
            return Ok(Vec::new());
        }
        let conformance = self.conformance(caller).await?;
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        let required = settings
            .required_profiles
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (questionnaire, unknown) = self.questionnaire_of(caller, resource).await?;
        let options = options(caller, &conformance, required, questionnaire.as_ref());
        let mut report = validate_with(resource, &options);
        report.issues.extend(unknown);
        for unevaluated in &report.unevaluated {
            tracing::debug!(tenant = %caller.id, "invariant not evaluated: {unevaluated}");
        }
        report.issues.sort_by_key(|issue| issue.severity);
        if report.has_errors() {
            let strict = settings.validation == ValidationMode::Strict;
            let resource_type = self.resource_type(resource_type).unwrap_or_default();
            (self.metrics).not_conformant(&caller.id, resource_type, strict);
            if strict {
                return Err(EngineError::NotConformant(report.issues));
            }
        }
        Ok(report.issues)
    }
}

/// What validation checks for the tenant: its identifier rules and unknown-profile choice, its
/// conformance resources, the profiles required here and a QuestionnaireResponse's Questionnaire.
fn options<'c>(
    caller: &Caller,
    conformance: &'c fjord_validation::Conformance,
    required_profiles: &'c [String],
    questionnaire: Option<&'c Value>,
) -> Options<'c> {
    Options {
        identifiers: IdentifierRules {
            allow_test_data: caller.settings.allow_test_data,
        },
        conformance: Some(conformance),
        required_profiles,
        unknown_profile: match caller.settings.unknown_profile {
            UnknownProfile::Warning => Severity::Warning,
            UnknownProfile::Error => Severity::Error,
        },
        questionnaire,
    }
}

/// What `$validate` checks a resource for (its `mode` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidateMode {
    /// Whether the resource is valid (no mode given).
    General,
    /// Whether it could be created.
    Create,
    /// Whether it could replace the resource of the instance URL.
    Update,
    /// Whether the resource of the instance URL could be deleted.
    Delete,
}

impl ValidateMode {
    pub fn parse(mode: &str) -> Option<ValidateMode> {
        match mode {
            "create" => Some(ValidateMode::Create),
            "update" => Some(ValidateMode::Update),
            "delete" => Some(ValidateMode::Delete),
            _ => None,
        }
    }
}

/// A `$validate` request.
#[derive(Debug)]
pub struct ValidateRequest<'a> {
    pub resource_type: &'a str,
    /// The instance, for `[type]/[id]/$validate`.
    pub id: Option<&'a str>,
    /// The resource sent; without one, the instance's current version is validated.
    pub body: Option<(&'a [u8], fjord_model::Format)>,
    pub mode: ValidateMode,
    /// A profile to check against besides those the resource claims and the tenant requires.
    pub profile: Option<&'a str>,
}

impl Engine {
    /// `$validate`: every issue of a resource under base R4, the Norwegian rules, its claimed
    /// profiles, the tenant's required ones and the one asked for, whatever the tenant's mode;
    /// errors first. A body that does not parse is an issue of its own, not a failure.
    pub async fn validate_operation(
        &self,
        caller: &Caller,
        request: ValidateRequest<'_>,
    ) -> Result<Vec<ValidationIssue>, EngineError> {
        let resource_type = self.resource_type(request.resource_type)?;
        self.authorize_any(
            caller,
            resource_type,
            &[Permission::Create, Permission::Update, Permission::Read],
        )?;
        let issue = |code, message: String| ValidationIssue {
            severity: Severity::Error,
            code,
            expression: resource_type.to_owned(),
            message,
        };
        if request.mode == ValidateMode::Delete {
            let id = request.id.ok_or_else(|| {
                EngineError::BadRequest(
                    "mode=delete validates an instance: [type]/[id]/$validate".into(),
                )
            })?;
            return self.validate_delete(caller, resource_type, id).await;
        }
        let value: Value = match request.body {
            Some((body, format)) => match self.parse_for(caller, resource_type, body, format) {
                Ok(resource) => resource.to_value(),
                Err(EngineError::Invalid(error)) => {
                    let mut found = issue(fjord_validation::IssueType::Structure, error.message);
                    found.expression = error.path.unwrap_or(found.expression);
                    return Ok(vec![found]);
                }
                Err(other) => return Err(other),
            },
            None => {
                let id = request
                    .id
                    .ok_or_else(|| EngineError::BadRequest("$validate needs a resource".into()))?;
                let stored = self.read(caller, resource_type, id).await?;
                let body = stored.body.as_deref().unwrap_or("{}");
                serde_json::from_str(body).map_err(|e| {
                    EngineError::Internal(format!("stored {resource_type}/{id}: {e}"))
                })?
            }
        };
        let mut issues = Vec::new();
        if request.mode == ValidateMode::Update {
            let body_id = value["id"].as_str();
            match (request.id, body_id) {
                (Some(url_id), Some(body_id)) if url_id == body_id => {}
                (Some(url_id), _) => issues.push(issue(
                    fjord_validation::IssueType::Value,
                    format!("an update of {resource_type}/{url_id} needs that id in the body"),
                )),
                (None, _) => {
                    return Err(EngineError::BadRequest(
                        "mode=update validates an instance: [type]/[id]/$validate".into(),
                    ))
                }
            }
        }
        let conformance = self.conformance(caller).await?;
        let settings = &caller.settings;
        let mut profiles: Vec<String> = settings
            .required_profiles
            .get(resource_type)
            .cloned()
            .unwrap_or_default();
        profiles.extend(request.profile.map(str::to_owned));
        if let Some(profile) = request.profile {
            if conformance.profile(profile).is_none() {
                issues.push(issue(
                    fjord_validation::IssueType::UnknownProfile,
                    format!("the profile {profile} is not installed in this tenant"),
                ));
            }
        }
        let (questionnaire, unknown) = self.questionnaire_of(caller, &value).await?;
        issues.extend(unknown);
        let options = options(caller, &conformance, &profiles, questionnaire.as_ref());
        issues.extend(validate_with(&value, &options).issues);
        issues.sort_by_key(|issue| issue.severity);
        Ok(issues)
    }

    /// The Questionnaire a QuestionnaireResponse answers: contained (`#id`) or the tenant's by
    /// canonical URL; when it cannot be found, a warning that the answers were not checked.
    async fn questionnaire_of(
        &self,
        caller: &Caller,
        resource: &Value,
    ) -> Result<(Option<Value>, Option<ValidationIssue>), EngineError> {
        if resource["resourceType"] != "QuestionnaireResponse" {
            return Ok((None, None));
        }
        let Some(canonical) = resource["questionnaire"].as_str() else {
            return Ok((None, None));
        };
        let found = match canonical.strip_prefix('#') {
            Some(id) => resource["contained"]
                .as_array()
                .and_then(|c| c.iter().find(|r| r["id"] == id))
                .cloned(),
            None => match self.canonical(caller, "Questionnaire", canonical).await {
                Ok(questionnaire) => Some(questionnaire),
                Err(EngineError::BadRequest(_)) => None,
                Err(other) => return Err(other),
            },
        };
        let warning = found.is_none().then(|| ValidationIssue {
            severity: Severity::Warning,
            code: fjord_validation::IssueType::UnknownProfile,
            expression: "QuestionnaireResponse.questionnaire".into(),
            message: format!("the Questionnaire {canonical} is not known here, so the answers are not checked against it"),
        });
        Ok((found, warning))
    }

    /// Whether deleting `Type/id` would be refused: what still refers to it, under the tenant's
    /// referential integrity.
    async fn validate_delete(
        &self,
        caller: &Caller,
        resource_type: &'static str,
        id: &str,
    ) -> Result<Vec<ValidationIssue>, EngineError> {
        self.read(caller, resource_type, id).await?;
        self.authorize_current(caller, Permission::Delete, resource_type, id)
            .await?;
        if !caller.settings.referential_integrity {
            return Ok(Vec::new());
        }
        let referrers = self.referrers_of(caller, resource_type, id).await?;
        Ok(referrers
            .into_iter()
            .map(|referrer| ValidationIssue {
                severity: Severity::Error,
                code: fjord_validation::IssueType::Structure,
                expression: resource_type.to_owned(),
                message: format!(
                    "{resource_type}/{id} is referred to by {referrer}, so a delete is refused"
                ),
            })
            .collect())
    }
}
