//! The storage layer against a real Postgres: partitions, versions, the row-level security wall.

use fjord_store::{Expected, HistoryScope, NewVersion, Op, StoreError};
use time::OffsetDateTime;

fn version<'a>(id: &'a str, expected: Expected, version: i64, body: &'a str) -> NewVersion<'a> {
    NewVersion {
        resource_type: "Patient",
        id,
        expected,
        version,
        last_updated: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        op: if version == 1 { Op::Create } else { Op::Update },
        body: Some(body),
    }
}

#[tokio::test]
async fn tenants_get_partitions_and_reject_bad_ids() {
    let db = fjord_testkit::database().await;
    let a = db.store.create_tenant("hf-a", "A").await.unwrap();
    assert!(matches!(
        db.store.create_tenant("hf-a", "again").await,
        Err(StoreError::TenantExists(_))
    ));
    assert!(matches!(
        db.store.create_tenant("Bad Id", "x").await,
        Err(StoreError::InvalidTenantId(_))
    ));
    let partition: Option<String> = raw_scalar(
        &db.url,
        &format!(
            "SELECT relname::text FROM pg_class WHERE relname = 'resource_version_{}'",
            a.key.0
        ),
    )
    .await;
    assert!(partition.is_some(), "partition of the tenant exists");
    let ids: Vec<String> = db
        .store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["hf-a"]);
}

#[tokio::test]
async fn ready_only_when_migrations_are_applied() {
    let name = format!("fjord_unmigrated_{}", std::process::id());
    fjord_store::Store::prepare_database(
        &fjord_testkit::superuser_url("postgres"),
        fjord_testkit::ROLE,
        &name,
    )
    .await
    .unwrap();
    let store = fjord_store::Store::connect(&fjord_testkit::role_url(&name), 2)
        .await
        .unwrap();
    assert!(!store.is_ready().await);
    store.migrate().await.unwrap();
    assert!(store.is_ready().await);
    // Applying them again changes nothing.
    store.migrate().await.unwrap();
    assert!(store.is_ready().await);
}

#[tokio::test]
async fn versions_are_immutable_and_expectations_serialise_writers() {
    let db = fjord_testkit::database().await;
    let t = db.store.create_tenant("hf", "HF").await.unwrap().key;
    assert!(db
        .store
        .write_version(t, &version("p", Expected::Absent, 1, "{\"v\":1}"))
        .await
        .unwrap());
    // A second creator of the same id loses.
    assert!(!db
        .store
        .write_version(t, &version("p", Expected::Absent, 1, "{\"v\":9}"))
        .await
        .unwrap());
    assert!(db
        .store
        .write_version(t, &version("p", Expected::Version(1), 2, "{\"v\":2}"))
        .await
        .unwrap());
    // A writer that read version 1 loses against the one that wrote version 2.
    assert!(!db
        .store
        .write_version(t, &version("p", Expected::Version(1), 2, "{\"v\":3}"))
        .await
        .unwrap());
    assert_eq!(
        db.store
            .read_latest(t, "Patient", "p")
            .await
            .unwrap()
            .unwrap()
            .body
            .as_deref(),
        Some("{\"v\":2}")
    );
    assert_eq!(
        db.store
            .read_version(t, "Patient", "p", 1)
            .await
            .unwrap()
            .unwrap()
            .body
            .as_deref(),
        Some("{\"v\":1}")
    );
    let history = db
        .store
        .history(t, HistoryScope::Instance("Patient", "p"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        history
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    let changes: i64 = raw_scalar(&db.url, "SELECT count(*) FROM change_log")
        .await
        .unwrap_or(-1);
    assert_eq!(changes, 0, "without fjord.tenant the wall hides every row");
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let db = fjord_testkit::database().await;
    let a = db.store.create_tenant("hf-a", "A").await.unwrap().key;
    let b = db.store.create_tenant("hf-b", "B").await.unwrap().key;
    db.store
        .write_version(a, &version("x", Expected::Absent, 1, "{}"))
        .await
        .unwrap();
    db.store
        .write_version(b, &version("y", Expected::Absent, 1, "{}"))
        .await
        .unwrap();
    // A query that forgets the tenant filter sees only the tenant of the setting.
    let all_ids = "SELECT string_agg(id, ',') FROM resource_version";
    assert_eq!(
        as_tenant_scalar::<String>(&db.url, a.0, all_ids)
            .await
            .as_deref(),
        Some("x")
    );
    assert_eq!(
        as_tenant_scalar::<String>(&db.url, b.0, all_ids)
            .await
            .as_deref(),
        Some("y")
    );
    // And a write into another tenant's rows is refused by the policy's check.
    let forged = format!(
        "SELECT set_config('fjord.tenant', '{}', false); INSERT INTO resource_version VALUES ({}, 'Patient', 'z', 1, now(), 'create', '{{}}')",
        a.0, b.0
    );
    assert!(raw_execute(&db.url, &forged).await.is_err());
    // Store reads never cross tenants.
    assert!(db
        .store
        .read_latest(b, "Patient", "x")
        .await
        .unwrap()
        .is_none());
}

/// Raw SQL as the application role, bypassing the store: what a buggy query would see.
async fn raw_scalar<T>(url: &str, sql: &str) -> Option<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let value: Option<Option<T>> = sqlx::query_scalar(sql)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    value.flatten()
}

/// Raw SQL as the application role with `fjord.tenant` set for the session.
async fn as_tenant_scalar<T>(url: &str, tenant: i32, sql: &str) -> Option<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT set_config('fjord.tenant', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    let value: Option<Option<T>> = sqlx::query_scalar(sql)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    value.flatten()
}

async fn raw_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(sql).execute(&mut conn).await.map(|_| ())
}
