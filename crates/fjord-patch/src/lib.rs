//! FHIR PATCH for Fjord: JSON Patch (RFC 6902, `application/json-patch+json`) and FHIRPath
//! Patch (a `Parameters` resource of operations) applied to a resource's FHIR JSON.
//!
//! Pure: the caller reads the current version, applies the patch here, and then validates and
//! stores the result as it would an update. Measured against the official test cases by
//! `tests/it/patch.rs`.

mod fhirpath_patch;
mod locate;

use serde_json::Value as Json;

pub use fhirpath_patch::apply_fhirpath_patch;

/// Why a patch was not applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch document itself is malformed (HTTP 400).
    #[error("the patch is malformed: {0}")]
    Malformed(String),
    /// The patch is well formed but does not apply to this resource (HTTP 422).
    #[error("the patch does not apply: {0}")]
    NotApplicable(String),
}

/// Applies a JSON Patch document (an array of operations) to `resource`. All or nothing: on an
/// error `resource` is as it was.
pub fn apply_json_patch(resource: &mut Json, patch: &Json) -> Result<(), PatchError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("not a JSON Patch document: {e}")))?;
    json_patch::patch(resource, &operations).map_err(|e| PatchError::NotApplicable(e.to_string()))
}
