use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use fjord_store::{StoreError, Tenant, TenantSettings};

use crate::{Engine, EngineError};

/// How long a tenant read from the database is used before it is read again: the settings a
/// tenant changes through another process (another node, the CLI) apply within this time.
const TENANT_FRESHNESS: Duration = Duration::from_secs(2);

/// Tenants recently read, shared by the engines of a process. A change made through this
/// process replaces its entry at once.
#[derive(Debug, Default)]
pub(crate) struct TenantCache {
    by_id: RwLock<HashMap<String, (Tenant, Instant)>>,
}

impl TenantCache {
    fn put(&self, tenant: &Tenant) {
        self.by_id
            .write()
            .expect("tenant cache")
            .insert(tenant.id.clone(), (tenant.clone(), Instant::now()));
    }
}

impl Engine {
    /// The tenant with this id, or `UnknownTenant`.
    pub async fn tenant(&self, id: &str) -> Result<Tenant, EngineError> {
        let cached = self
            .shared
            .tenants
            .by_id
            .read()
            .expect("tenant cache")
            .get(id)
            .cloned();
        if let Some((tenant, read_at)) = &cached {
            if read_at.elapsed() < TENANT_FRESHNESS {
                return Ok(tenant.clone());
            }
        }
        let tenant = match self.store.tenant(id).await {
            Ok(found) => found.ok_or_else(|| EngineError::UnknownTenant(id.to_owned()))?,
            // With the database away the tenant last read still names the partitions its
            // request fails on (503), and the audit trail its event is kept for.
            Err(StoreError::Unavailable(error)) => match cached {
                Some((tenant, _)) => return Ok(tenant),
                None => return Err(EngineError::Unavailable(error)),
            },
            Err(error) => return Err(error.into()),
        };
        self.shared.tenants.put(&tenant);
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

    /// Replaces a tenant's settings; they apply to the next request.
    pub async fn set_tenant_settings(
        &self,
        id: &str,
        settings: &TenantSettings,
    ) -> Result<Tenant, EngineError> {
        let tenant = self
            .store
            .set_tenant_settings(id, settings)
            .await?
            .ok_or_else(|| EngineError::UnknownTenant(id.to_owned()))?;
        self.shared.tenants.put(&tenant);
        Ok(tenant)
    }

    /// The tenant with this id, unless it is suspended (`Suspended`): what requests to it
    /// resolve.
    pub async fn serving_tenant(&self, id: &str) -> Result<Tenant, EngineError> {
        let tenant = self.tenant(id).await?;
        match tenant.suspended_at {
            Some(_) => Err(EngineError::Suspended(tenant.id)),
            None => Ok(tenant),
        }
    }

    /// Renames a tenant (its display name) or suspends or resumes it; applies to the next
    /// request.
    pub async fn change_tenant(
        &self,
        id: &str,
        name: Option<&str>,
        suspended: Option<bool>,
    ) -> Result<Tenant, EngineError> {
        if name.is_some_and(|n| n.trim().is_empty()) {
            return Err(EngineError::BadRequest(
                "a tenant's name is not empty".into(),
            ));
        }
        let tenant = self
            .store
            .change_tenant(id, name, suspended)
            .await?
            .ok_or_else(|| EngineError::UnknownTenant(id.to_owned()))?;
        self.shared.tenants.put(&tenant);
        Ok(tenant)
    }

    /// All tenants.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, EngineError> {
        Ok(self.store.list_tenants().await?)
    }
}
