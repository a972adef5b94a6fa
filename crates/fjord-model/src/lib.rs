//! FHIR R4 resources in memory.
//!
//! Parses resources from JSON and XML into fhirbolt's typed R4 model (which is what rejects unknown
//! elements and wrong primitive types), writes the server-owned parts (`id`, `meta.versionId`,
//! `meta.lastUpdated`), and serializes them back. Fjord's *canonical JSON* is fhirbolt's compact
//! output: elements in the order of the specification, decimals kept lexically. Nothing here does I/O.

mod error;
mod format;
mod generated;
mod locate;
mod narrative;
mod paths;
mod resource;

pub use error::ParseError;
pub use format::Format;
pub use generated::RESOURCE_TYPES;
pub use paths::for_each_object;
pub use resource::{is_valid_id, resource_type, ParseLimits, Resource};
