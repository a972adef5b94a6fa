//! Each tenant's conformance resources for validation: its StructureDefinitions (snapshots
//! generated for those written as differentials), ValueSets and CodeSystems, stored as any resource is (installed by `fjord package
//! install` or written through the API), compiled on first use and again after one of them is
//! written. Shared by every runtime's engine of the process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjord_store::{Tenant, TenantKey};
use fjord_validation::Conformance;

use crate::{Engine, EngineError};

/// The types whose resources change what validation knows.
pub(crate) const CONFORMANCE_TYPES: [&str; 3] = ["StructureDefinition", "ValueSet", "CodeSystem"];

#[derive(Default)]
pub(crate) struct TenantConformance {
    by_tenant: RwLock<HashMap<TenantKey, Arc<Conformance>>>,
}

impl std::fmt::Debug for TenantConformance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants = self.by_tenant.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "TenantConformance {{ {tenants} tenants }}")
    }
}

impl Engine {
    /// What a tenant's validation knows beyond base R4.
    pub(crate) async fn conformance(
        &self,
        tenant: &Tenant,
    ) -> Result<Arc<Conformance>, EngineError> {
        let cached = (self.shared.conformance.by_tenant.read())
            .expect("conformance")
            .get(&tenant.key)
            .cloned();
        if let Some(conformance) = cached {
            return Ok(conformance);
        }
        let mut conformance = Conformance::default();
        let mut resources = Vec::new();
        for resource_type in CONFORMANCE_TYPES {
            let stored = self.current_definitions(tenant, resource_type).await?;
            resources.extend(stored.into_iter().map(|(_, resource)| resource));
        }
        // One that cannot be used (no snapshot and no known base) is stored all the same.
        for (resource, e) in conformance.add_all(resources) {
            let name = resource["url"].as_str().unwrap_or_default().to_owned();
            tracing::debug!(tenant = %tenant.id, "{name} not used for validation: {e}");
        }
        let conformance = Arc::new(conformance);
        self.shared
            .conformance
            .by_tenant
            .write()
            .expect("conformance")
            .insert(tenant.key, conformance.clone());
        Ok(conformance)
    }

    /// After a definition of the tenant changed (a SearchParameter, a profile, a value set or
    /// code system): the next use rebuilds what depends on it.
    pub(crate) fn forget_definitions(&self, tenant: &Tenant) {
        self.forget_registry(tenant);
        self.shared
            .conformance
            .by_tenant
            .write()
            .expect("conformance")
            .remove(&tenant.key);
    }
}

/// Whether writing a resource of this type changes a tenant's definitions.
pub(crate) fn is_definition(resource_type: &str) -> bool {
    resource_type == crate::registries::SEARCH_PARAMETER
        || CONFORMANCE_TYPES.contains(&resource_type)
}
