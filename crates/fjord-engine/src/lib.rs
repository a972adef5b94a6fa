//! The FHIR interactions as plain functions of (tenant, request) → outcome.
//!
//! REST, the CLI and (later) subscription delivery all call this crate, so each pipeline exists
//! once: parse and check the resource, assign the server-owned parts, write through `fjord-store`.
//! Nothing here knows HTTP.

mod error;
mod interactions;
mod tenants;

pub use error::EngineError;
pub use fjord_model::{Format, ParseLimits, Resource};
pub use fjord_store::{HistoryPage, Op, StoredVersion, Tenant};
pub use interactions::{format_instant, HistoryQuery, Written};

use fjord_store::Store;

/// The interactions over one store.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    tenants: tenants::TenantCache,
    limits: ParseLimits,
}

impl Engine {
    pub fn new(store: Store, limits: ParseLimits) -> Engine {
        Engine {
            store,
            tenants: Default::default(),
            limits,
        }
    }

    /// An engine for one async runtime (one HTTP worker thread): its own database connections,
    /// the same limits.
    pub fn for_runtime(&self) -> Engine {
        Engine::new(self.store.for_runtime(), self.limits)
    }

    /// The underlying store, for administration (migrations, readiness).
    pub fn store(&self) -> &Store {
        &self.store
    }
}
