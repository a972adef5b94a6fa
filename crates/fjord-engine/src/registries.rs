//! Each tenant's search parameters: R4's plus the tenant's own `SearchParameter` resources,
//! built on first use and rebuilt after one of those is written. Shared by every runtime's engine
//! of the process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fjord_search::Registry;
use fjord_store::{Tenant, TenantKey};

use crate::{Engine, EngineError};

/// The type whose resources define custom parameters.
pub(crate) const SEARCH_PARAMETER: &str = "SearchParameter";

#[derive(Debug, Default)]
pub(crate) struct TenantRegistries {
    by_tenant: RwLock<HashMap<TenantKey, Arc<Registry>>>,
}

impl Engine {
    /// The tenant's search parameters, R4's and its own (what subscriptions match with).
    pub async fn search_registry(&self, tenant: &Tenant) -> Result<Arc<Registry>, EngineError> {
        self.registry(tenant).await
    }

    /// The search parameters of a tenant.
    pub(crate) async fn registry(&self, tenant: &Tenant) -> Result<Arc<Registry>, EngineError> {
        let cached = (self.shared.registries.by_tenant.read())
            .expect("registries")
            .get(&tenant.key)
            .cloned();
        if let Some(registry) = cached {
            return Ok(registry);
        }
        let mut parameters = Vec::new();
        for (id, definition) in self.current_definitions(tenant, SEARCH_PARAMETER).await? {
            if !fjord_search::activates(&definition) {
                continue;
            }
            // Checked when written; one that no longer passes must not stop the tenant.
            match self.search.custom(&definition) {
                Ok(compiled) => parameters.extend(compiled),
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, "SearchParameter/{id} left out: {e}")
                }
            }
        }
        let registry = if parameters.is_empty() {
            self.search.clone()
        } else {
            Arc::new(self.search.with_parameters(parameters))
        };
        self.shared
            .registries
            .by_tenant
            .write()
            .expect("registries")
            .insert(tenant.key, registry.clone());
        Ok(registry)
    }

    /// Every current resource of a definition type in the tenant, as (id, JSON).
    pub(crate) async fn current_definitions(
        &self,
        tenant: &Tenant,
        resource_type: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, EngineError> {
        let mut definitions = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .current_page(tenant.key, resource_type, after.as_deref(), 500)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            definitions.extend(page.iter().filter_map(|version| {
                let body = version.body.as_deref()?;
                Some((version.id.clone(), serde_json::from_str(body).ok()?))
            }));
        }
        Ok(definitions)
    }

    /// A SearchParameter about to be stored must be one Fjord can use, when it activates.
    pub(crate) fn check_search_parameter(
        &self,
        definition: &serde_json::Value,
    ) -> Result<(), EngineError> {
        if !fjord_search::activates(definition) {
            return Ok(());
        }
        self.search
            .custom(definition)
            .map(|_| ())
            .map_err(|e| EngineError::Rejected(e.to_string()))
    }

    /// After a SearchParameter of the tenant changed: the next use rebuilds its registry.
    pub(crate) fn forget_registry(&self, tenant: &Tenant) {
        self.shared
            .registries
            .by_tenant
            .write()
            .expect("registries")
            .remove(&tenant.key);
    }
}
