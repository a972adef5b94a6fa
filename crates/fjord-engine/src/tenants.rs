use std::collections::HashMap;
use std::sync::RwLock;

use fjord_store::{StoreError, Tenant};

use crate::{Engine, EngineError};

/// Tenants seen so far. Tenants are never deleted, so a hit is always current; a miss asks the
/// database, which sees tenants created by another process (the CLI) too.
#[derive(Debug, Default)]
pub(crate) struct TenantCache {
    by_id: RwLock<HashMap<String, Tenant>>,
}

impl Engine {
    /// The tenant with this id, or `UnknownTenant`.
    pub async fn tenant(&self, id: &str) -> Result<Tenant, EngineError> {
        if let Some(tenant) = self.tenants.by_id.read().expect("tenant cache").get(id) {
            return Ok(tenant.clone());
        }
        let tenant = self
            .store
            .tenant(id)
            .await?
            .ok_or_else(|| EngineError::UnknownTenant(id.to_owned()))?;
        self.tenants
            .by_id
            .write()
            .expect("tenant cache")
            .insert(id.to_owned(), tenant.clone());
        Ok(tenant)
    }

    /// Creates a tenant (and its partitions).
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant, EngineError> {
        match self.store.create_tenant(id, name).await {
            Err(StoreError::InvalidTenantId(id)) => Err(EngineError::BadRequest(
                StoreError::InvalidTenantId(id).to_string(),
            )),
            Err(StoreError::TenantExists(id)) => Err(EngineError::Conflict(format!(
                "tenant '{id}' exists already"
            ))),
            other => Ok(other?),
        }
    }

    /// All tenants.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, EngineError> {
        Ok(self.store.list_tenants().await?)
    }
}
