//! Database administration that runs as a superuser: the application role, its database, and
//! copies of a template (test databases).

use sqlx::Connection;

use crate::{Store, StoreError};

/// Role and database names are formatted into DDL, so only plain identifiers are accepted.
fn check_identifiers(names: &[&str]) -> Result<(), StoreError> {
    let is_identifier = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match names.iter().find(|n| !is_identifier(n)) {
        Some(name) => Err(StoreError::Database(format!(
            "invalid role or database name '{name}'"
        ))),
        None => Ok(()),
    }
}

async fn superuser(url: &str) -> Result<sqlx::PgConnection, StoreError> {
    sqlx::PgConnection::connect(url)
        .await
        .map_err(StoreError::database)
}

async fn exists(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    name: &str,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(StoreError::database)
}

async fn execute(conn: &mut sqlx::PgConnection, ddl: &str) -> Result<(), StoreError> {
    sqlx::query(ddl)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(StoreError::database)
}

impl Store {
    /// Makes `role` (a login role without superuser rights, so row-level security applies to it)
    /// and its database `database`, connecting as a superuser through `superuser_url`. Idempotent.
    pub async fn prepare_database(
        superuser_url: &str,
        role: &str,
        database: &str,
    ) -> Result<(), StoreError> {
        check_identifiers(&[role, database])?;
        let mut conn = superuser(superuser_url).await?;
        // Two preparers at once (parallel tests, two servers starting) would both see the role
        // missing and one CREATE would fail; a session lock makes them take turns.
        execute(&mut conn, "SELECT pg_advisory_lock(7411027)").await?;
        if !exists(
            &mut conn,
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            role,
        )
        .await?
        {
            execute(
                &mut conn,
                &format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"),
            )
            .await?;
        }
        if !exists(
            &mut conn,
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            database,
        )
        .await?
        {
            execute(
                &mut conn,
                &format!("CREATE DATABASE {database} OWNER {role}"),
            )
            .await?;
        }
        conn.close().await.map_err(StoreError::database)?;
        let url: sqlx::postgres::PgConnectOptions =
            superuser_url.parse().map_err(StoreError::database)?;
        let mut conn = sqlx::PgConnection::connect_with(&url.database(database))
            .await
            .map_err(StoreError::database)?;
        // Row-level security lets an index answer only leakproof operators: without this, the
        // GIN index of the search keys (`@>`, `&&` on bigint[]) is unusable for the application
        // role and every search scans its tenant. These two compare array elements and reveal
        // nothing but their result; the catalog is per database, so it is set here.
        for function in ["arraycontains", "arrayoverlap"] {
            execute(
                &mut conn,
                &format!("ALTER FUNCTION pg_catalog.{function}(anyarray, anyarray) LEAKPROOF"),
            )
            .await?;
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
        check_identifiers(&[name, template, owner])?;
        let mut conn = superuser(superuser_url).await?;
        execute(
            &mut conn,
            &format!("CREATE DATABASE {name} TEMPLATE {template} OWNER {owner}"),
        )
        .await?;
        conn.close().await.map_err(StoreError::database)
    }
}
