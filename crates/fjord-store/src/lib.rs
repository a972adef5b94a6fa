//! Postgres storage for Fjord.
//!
//! Owns the schema (`migrations/`, embedded here), tenants and their partitions, immutable resource
//! versions, the current-version pointer, history and the change log. Resource bodies arrive and
//! leave as canonical JSON text; this crate never interprets them. Every tenant-scoped statement
//! runs with the transaction-local `fjord.tenant` setting that the row-level security policies check.

mod error;
mod resources;
mod tenants;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use error::StoreError;
pub use resources::{Expected, HistoryPage, HistoryScope, NewVersion, Op, StoredVersion};
pub use tenants::{Tenant, TenantKey};

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

impl Store {
    /// Connects with a pool of at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::database)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(StoreError::database)?;
        Ok(Store { pool })
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

    /// Makes `role` (a login role without superuser rights, so row-level security applies to it)
    /// and its database `database`, connecting as a superuser through `superuser_url`. Idempotent.
    pub async fn prepare_database(
        superuser_url: &str,
        role: &str,
        database: &str,
    ) -> Result<(), StoreError> {
        use sqlx::Connection;
        let is_name = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !is_name(role) || !is_name(database) {
            return Err(StoreError::Database(format!(
                "invalid role or database name '{role}'/'{database}'"
            )));
        }
        let mut conn = sqlx::PgConnection::connect(superuser_url)
            .await
            .map_err(StoreError::database)?;
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut conn)
                .await
                .map_err(StoreError::database)?;
        if !role_exists {
            // Names are checked above to be plain lowercase identifiers.
            sqlx::query(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"))
                .execute(&mut conn)
                .await
                .map_err(StoreError::database)?;
        }
        let db_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut conn)
                .await
                .map_err(StoreError::database)?;
        if !db_exists {
            sqlx::query(&format!("CREATE DATABASE {database} OWNER {role}"))
                .execute(&mut conn)
                .await
                .map_err(StoreError::database)?;
        }
        conn.close().await.map_err(StoreError::database)
    }

    /// Creates database `name` as a copy of `template`, owned by `owner` (test databases).
    pub async fn create_database_from_template(
        superuser_url: &str,
        name: &str,
        template: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        use sqlx::Connection;
        let is_name =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ![name, template, owner].iter().all(|n| is_name(n)) {
            return Err(StoreError::Database(format!(
                "invalid database name '{name}'"
            )));
        }
        let mut conn = sqlx::PgConnection::connect(superuser_url)
            .await
            .map_err(StoreError::database)?;
        sqlx::query(&format!(
            "CREATE DATABASE {name} TEMPLATE {template} OWNER {owner}"
        ))
        .execute(&mut conn)
        .await
        .map_err(StoreError::database)?;
        conn.close().await.map_err(StoreError::database)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
