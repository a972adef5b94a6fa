//! `patch`: the current version read under its lock, the patch applied (`fjord-patch`), and
//! the result validated and written as an update of that version.

use base64::Engine as _;
use fjord_model::{Format, ParseLimits, Resource};
use fjord_store::Op;
use serde_json::Value;

use crate::conditional::{several, Condition};
use crate::integrity::Unit;
use crate::interactions::{check_id, require_if_match, update_expectation};
use crate::{Caller, Engine, EngineError, Written};

/// A PATCH body, as its content type says.
#[derive(Debug, Clone, Copy)]
pub enum PatchBody<'b> {
    /// `application/json-patch+json`: a JSON Patch document.
    JsonPatch(&'b [u8]),
    /// A FHIRPath Patch: a `Parameters` resource in JSON or XML.
    FhirPath(&'b [u8], Format),
}

/// A PATCH body, parsed.
#[derive(Debug, Clone)]
pub enum Patch {
    Json(Value),
    FhirPath(Value),
}

impl Engine {
    /// The patch a bundle entry carries as its resource: a `Parameters` (FHIRPath Patch,
    /// checked like any Parameters resource), or a `Binary` whose content type is
    /// `application/json-patch+json` (JSON Patch).
    pub(crate) fn patch_of_entry(
        &self,
        resource: Value,
        limits: &ParseLimits,
    ) -> Result<Patch, EngineError> {
        match resource["resourceType"].as_str() {
            Some("Parameters") => {
                let bytes = serde_json::to_vec(&resource)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                self.parse_patch(PatchBody::FhirPath(&bytes, Format::Json), limits)
            }
            Some("Binary") if resource["contentType"] == "application/json-patch+json" => {
                let data = resource["data"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| {
                        EngineError::BadRequest(format!("Binary.data is not base64: {e}"))
                    })?;
                self.parse_patch(PatchBody::JsonPatch(&bytes), limits)
            }
            _ => Err(EngineError::BadRequest(
                "a PATCH entry carries a Parameters resource (FHIRPath Patch) or a Binary of \
                 application/json-patch+json"
                    .into(),
            )),
        }
    }

    /// Parses a PATCH body: JSON Patch, or a `Parameters` resource checked like any resource.
    pub fn parse_patch(
        &self,
        body: PatchBody<'_>,
        limits: &ParseLimits,
    ) -> Result<Patch, EngineError> {
        match body {
            PatchBody::JsonPatch(bytes) => {
                let document: Value = serde_json::from_slice(bytes).map_err(|e| {
                    EngineError::BadRequest(format!("the JSON Patch is not JSON: {e}"))
                })?;
                if !document.is_array() {
                    return Err(EngineError::BadRequest(
                        "a JSON Patch is an array of operations".into(),
                    ));
                }
                Ok(Patch::Json(document))
            }
            PatchBody::FhirPath(bytes, format) => {
                let parameters =
                    Resource::parse(bytes, format, limits).map_err(EngineError::Invalid)?;
                if parameters.resource_type() != "Parameters" {
                    return Err(EngineError::BadRequest(format!(
                        "a FHIRPath Patch is a Parameters resource, not a {} (JSON Patch needs Content-Type application/json-patch+json)",
                        parameters.resource_type()
                    )));
                }
                Ok(Patch::FhirPath(parameters.to_value()))
            }
        }
    }

    /// `patch`: applies `patch` to the current version of `Type/id` and stores the result as
    /// an update of it, validated like one. `If-Match` must name the current version.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn patch(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        patch: &Patch,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        check_id(id)?;
        let mut work = self.begin(caller).await?;
        let result = self
            .patch_in(&mut work, caller, resource_type, id, patch, if_match)
            .await;
        self.finish(caller, work, result).await
    }

    /// `patch` of `Type?condition`: the one match is patched; none is 404, more than one 412.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn conditional_patch(
        &self,
        caller: &Caller,
        resource_type: &str,
        condition: &str,
        patch: &Patch,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let condition: Condition = self.condition(caller, resource_type, condition).await?;
        let mut work = self.begin(caller).await?;
        let result = match self
            .patch_target(&mut work, resource_type, &condition)
            .await
        {
            Ok(id) => {
                self.patch_in(&mut work, caller, resource_type, &id, patch, if_match)
                    .await
            }
            Err(e) => Err(e),
        };
        self.finish(caller, work, result).await
    }

    /// The id of the one match of a conditional patch; none is 404, more than one 412.
    pub(crate) async fn patch_target(
        &self,
        work: &mut Unit<'_>,
        resource_type: &str,
        condition: &Condition,
    ) -> Result<String, EngineError> {
        match self.matches_in(work, condition).await?.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(EngineError::NotFound(format!(
                "no {resource_type} matches {}",
                condition.text
            ))),
            _ => Err(several(resource_type, condition)),
        }
    }

    /// [`Engine::patch`] in `work`.
    pub(crate) async fn patch_in(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        resource_type: &'static str,
        id: &str,
        patch: &Patch,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let name = format!("{resource_type}/{id}");
        let current = match work.lock_current(resource_type, id).await? {
            None => return Err(EngineError::NotFound(name)),
            Some(current) if current.deleted => return Err(EngineError::Gone(name)),
            Some(current) => current.version,
        };
        require_if_match(caller, if_match, true)?;
        update_expectation(Some(current), if_match, resource_type, id)?;
        let stored = work
            .read_version(resource_type, id, current)
            .await?
            .filter(|v| v.op != Op::Delete)
            .and_then(|v| v.body)
            .ok_or_else(|| {
                EngineError::Internal(format!("{name}: the current version has no body"))
            })?;
        let mut value: Value = serde_json::from_str(&stored)
            .map_err(|e| EngineError::Internal(format!("{name}: stored JSON: {e}")))?;
        match patch {
            Patch::Json(document) => fjord_patch::apply_json_patch(&mut value, document)?,
            Patch::FhirPath(parameters) => {
                fjord_patch::apply_fhirpath_patch(&mut value, parameters)?
            }
        }
        if value["resourceType"] != resource_type || value["id"] != id {
            return Err(EngineError::BadRequest(
                "a patch may not change the resource's type or id".into(),
            ));
        }
        let body = serde_json::to_vec(&value).map_err(|e| EngineError::Internal(e.to_string()))?;
        let resource = self.parse_for(caller, resource_type, &body, Format::Json)?;
        self.update_in(work, caller, id, resource, Some(current))
            .await
    }
}
