//! Postgres storage for Fjord.
//!
//! Owns the schema (`migrations/`, embedded here), tenants and their partitions, immutable resource
//! versions, the current-version pointer, history and the change log. Resource bodies arrive and
//! leave as canonical JSON text; this crate never interprets them. Every tenant-scoped statement
//! runs on a connection of that tenant's own pool, opened with the setting `fjord.tenant` that the
//! row-level security policies check: a statement can see no other tenant's rows.

mod admin;
mod changes;
mod error;
mod export;
mod index;
mod pool;
mod reindex;
mod resources;
mod search;
mod subscriptions;
mod tenants;
mod work;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use pool::{Lease, TenantPool};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use changes::{Change, ChangeBatch, ChangeCursor};
pub use error::StoreError;
pub use export::Snapshot;
pub use fjord_search::IndexTerms;
pub use resources::{
    Expected, HistoryPage, HistoryScope, NewVersion, Op, StoredVersion, WriteOutcome,
};
pub use search::{PreviousPage, SearchPage, UnknownCursor};
pub use subscriptions::{Delivery, DispatchRound, Started, SubscriptionEvent, SubscriptionState};
pub use tenants::{
    CorsPolicy, RateLimit, Tenant, TenantKey, TenantLimits, TenantSettings, UnknownProfile,
    ValidationMode,
};
pub use work::{Locked, Work};

/// Connections of one kind of pool, summed over its pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// `tenant` (every tenant's pools on every runtime) or `admin`.
    pub pool: &'static str,
    pub open: usize,
    /// Open and not lent out.
    pub idle: usize,
    /// Requests waiting for a connection (not counted for the administrative pool).
    pub waiting: usize,
}

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Connections without a tenant: tenants, migrations, readiness.
    pool: PgPool,
    /// One pool per tenant, opened lazily, each connection bound to its tenant.
    tenant_pools: Arc<RwLock<HashMap<TenantKey, TenantPool>>>,
    /// The tenant pools of every runtime's handle, for [`Store::pool_use`].
    every_tenant_pool: Arc<Mutex<Vec<TenantPool>>>,
    /// Which index keys are common per tenant, shared by every runtime's handle.
    common_keys: search::CommonKeys,
    options: PgConnectOptions,
    max_connections: u32,
    /// The longest a statement on a tenant's connection may run (`statement_timeout`).
    statement_timeout: Option<std::time::Duration>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

impl Store {
    /// Connects; every tenant's pool holds at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::database)?;
        let pool = pool_options(4)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::database)?;
        let tenant_pools = Default::default();
        Ok(Store {
            pool,
            tenant_pools,
            every_tenant_pool: Default::default(),
            common_keys: Default::default(),
            options,
            max_connections,
            statement_timeout: None,
        })
    }

    /// Stops any statement on a tenant's connection after `limit` (Postgres cancels it: a
    /// request past its time limit stops costing the database). Long exports lift it for their
    /// snapshot.
    pub fn with_statement_timeout(mut self, limit: std::time::Duration) -> Store {
        self.statement_timeout = Some(limit);
        self
    }

    /// A handle sharing the administrative pool but with tenant pools of its own, for one async
    /// runtime: a connection wakes the runtime that opened it, so an HTTP worker thread that uses
    /// connections opened by another pays a cross-thread wake-up on every statement.
    pub fn for_runtime(&self) -> Store {
        Store {
            tenant_pools: Default::default(),
            ..self.clone()
        }
    }

    /// A connection of the tenant's pool: its connections carry `fjord.tenant`, so row-level
    /// security confines every statement on them to the tenant.
    pub(crate) async fn tenant_connection(&self, tenant: TenantKey) -> Result<Lease, StoreError> {
        let pool = self
            .tenant_pools
            .read()
            .expect("tenant pools")
            .get(&tenant)
            .cloned();
        let pool = match pool {
            Some(pool) => pool,
            None => {
                // JIT compiles plans whose estimates look big and costs tens of milliseconds
                // per statement; searches answer in a few.
                let mut options = self.options.clone().options([
                    ("fjord.tenant", tenant.0.to_string()),
                    ("jit", "off".to_owned()),
                ]);
                if let Some(limit) = self.statement_timeout {
                    let millis = limit.as_millis().to_string();
                    options = options.options([("statement_timeout", millis)]);
                }
                let created = pool::tenant_pool(options, self.max_connections)?;
                let mut pools = self.tenant_pools.write().expect("tenant pools");
                match pools.entry(tenant) {
                    Entry::Occupied(entry) => entry.get().clone(),
                    Entry::Vacant(entry) => {
                        (self.every_tenant_pool.lock().expect("tenant pools"))
                            .push(created.clone());
                        entry.insert(created).clone()
                    }
                }
            }
        };
        Lease::acquire(&pool).await
    }

    /// Applies the migrations that are not applied yet.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Whether the database answers and every embedded migration is applied.
    pub async fn is_ready(&self) -> bool {
        let applied: Result<Vec<i64>, _> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await;
        match applied {
            Ok(applied) => MIGRATOR.iter().all(|m| applied.contains(&m.version)),
            Err(_) => false,
        }
    }

    /// How the connection pools are used right now: the tenant pools of every runtime, and
    /// the administrative pool.
    pub fn pool_use(&self) -> [PoolUse; 2] {
        let mut tenants = PoolUse {
            pool: "tenant",
            ..Default::default()
        };
        for pool in self.every_tenant_pool.lock().expect("tenant pools").iter() {
            let status = pool.status();
            tenants.open += status.size;
            tenants.idle += status.available;
            tenants.waiting += status.waiting;
        }
        let admin = PoolUse {
            pool: "admin",
            open: self.pool.size() as usize,
            idle: self.pool.num_idle(),
            waiting: 0,
        };
        [tenants, admin]
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        // Tenant connections are idle between statements: closing the pools drops them.
        for pool in self.tenant_pools.read().expect("tenant pools").values() {
            pool.close();
        }
        self.pool.close().await;
    }
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .idle_timeout(std::time::Duration::from_secs(300))
        // sqlx pings every connection it hands out unless told not to: a second round trip per
        // statement. A broken connection fails its statement instead, which the client retries.
        .test_before_acquire(false)
        .acquire_timeout(std::time::Duration::from_secs(10))
}
