//! Installing a FHIR package's conformance resources into a tenant: each StructureDefinition,
//! ValueSet, CodeSystem, SearchParameter and NamingSystem is stored under its own id, as an
//! update would store it, so it is readable through the API and takes effect at once
//! (validation, search). Installing the same package again changes nothing.

use fjord_model::Format;
use serde_json::Value;

use crate::{Caller, Engine, EngineError};

/// The resource types a package install takes; the others (examples, ImplementationGuide) are
/// left out.
pub const PACKAGE_TYPES: [&str; 5] = [
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "SearchParameter",
    "NamingSystem",
];

/// What an install did.
#[derive(Debug, Default)]
pub struct Installed {
    /// Stored (new, or changed since the last install).
    pub stored: Vec<String>,
    /// Already there as they are.
    pub unchanged: usize,
    /// Not conformance resources.
    pub skipped: usize,
    /// Refused, with why: `Type/id: error`.
    pub failed: Vec<String>,
}

impl Engine {
    /// Stores a package's conformance resources (FHIR JSON) in the caller.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id))]
    pub async fn install_package(
        &self,
        caller: &Caller,
        resources: Vec<Value>,
    ) -> Result<Installed, EngineError> {
        let mut installed = Installed::default();
        for resource in resources {
            let resource_type = resource["resourceType"].as_str().unwrap_or_default();
            let Some(id) = resource["id"].as_str() else {
                installed.skipped += 1;
                continue;
            };
            if !PACKAGE_TYPES.contains(&resource_type) {
                installed.skipped += 1;
                continue;
            }
            let name = format!("{resource_type}/{id}");
            if self
                .is_stored_as(caller, resource_type, id, &resource)
                .await?
            {
                installed.unchanged += 1;
                continue;
            }
            let body = serde_json::to_vec(&resource).unwrap_or_default();
            match self
                .update(caller, resource_type, id, &body, Format::Json, None)
                .await
            {
                Ok(_) => installed.stored.push(name),
                Err(error) => installed.failed.push(format!("{name}: {error}")),
            }
        }
        Ok(installed)
    }

    /// Whether the current version of `Type/id` is `resource` (server-owned `meta` aside).
    async fn is_stored_as(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        resource: &Value,
    ) -> Result<bool, EngineError> {
        let Some(latest) = self
            .store
            .read_latest(caller.key, resource_type, id)
            .await?
        else {
            return Ok(false);
        };
        // Compared as Fjord stores it: parsed and written back.
        let limits = fjord_model::ParseLimits::default();
        let body = serde_json::to_vec(resource).unwrap_or_default();
        let Ok(parsed) = fjord_model::Resource::from_json(&body, &limits) else {
            return Ok(false);
        };
        Ok(crate::import::is_same(&parsed, &latest))
    }
}
