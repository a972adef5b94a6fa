//! The change log as consumers read it: positions committed out of order are still delivered,
//! and a position whose writer rolled back stops holding the cursor back.

use fjord_store::{ChangeCursor, Expected, NewVersion, Op, Store, TenantKey, WriteOutcome};
use sqlx::Connection;
use time::OffsetDateTime;

static NO_TERMS: fjord_store::IndexTerms = fjord_store::IndexTerms {
    keys: Vec::new(),
    values: None,
    strings: Vec::new(),
    dates: Vec::new(),
};

async fn create(store: &Store, tenant: TenantKey, id: &str) {
    let new = NewVersion {
        resource_type: "Patient",
        id,
        expected: Expected::Absent,
        last_updated: OffsetDateTime::now_utc(),
        op: Op::Create,
        body: Some("{}"),
        index: &NO_TERMS,
        targets: &[],
    };
    assert_eq!(
        store.write_version(tenant, &new).await.unwrap(),
        WriteOutcome::Written
    );
}

/// A writer that takes its position and keeps its transaction open, in the write statement's
/// order: the pointer row (which gives it a transaction id) before the position.
async fn open_writer(url: &str, tenant: TenantKey, id: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = format!(
        "SELECT set_config('fjord.tenant', '{k}', false); BEGIN; \
         INSERT INTO resource_current (tenant, type, id, version, last_updated, deleted) \
           VALUES ({k}, 'Patient', '{id}', 1, now(), false); \
         INSERT INTO resource_version (tenant, type, id, version, seq, last_updated, op, body) \
           VALUES ({k}, 'Patient', '{id}', 1, nextval('change_seq_{k}'), now(), 'create', '{{}}');",
        k = tenant.0
    );
    sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
    conn
}

async fn read(
    store: &Store,
    tenant: TenantKey,
    cursor: &ChangeCursor,
) -> (Vec<String>, ChangeCursor) {
    let batch = store.changes(tenant, cursor, 100).await.unwrap();
    (
        batch.changes.into_iter().map(|c| c.id).collect(),
        batch.cursor,
    )
}

#[tokio::test]
async fn late_commits_are_delivered_and_rolled_back_positions_skipped() {
    let db = fjord_testkit::database().await;
    let tenant = db.store.create_tenant("feed", "Feed").await.unwrap().key;
    let store = &db.store;

    create(store, tenant, "a").await; // position 1
    let mut late = open_writer(&db.url, tenant, "late").await; // position 2, open
    create(store, tenant, "b").await; // position 3

    let (ids, cursor) = read(store, tenant, &ChangeCursor::default()).await;
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(cursor.through, 1, "position 2 may still be committed");
    let (ids, cursor) = read(store, tenant, &cursor).await;
    assert!(ids.is_empty(), "nothing is delivered twice");
    assert_eq!(cursor.through, 1);

    sqlx::raw_sql("COMMIT").execute(&mut late).await.unwrap();
    let (ids, cursor) = read(store, tenant, &cursor).await;
    assert_eq!(ids, ["late"]);
    assert_eq!(cursor.through, 3);
    assert!(cursor.holes.is_empty() && cursor.settled.is_empty());

    let mut failed = open_writer(&db.url, tenant, "failed").await; // position 4
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut failed)
        .await
        .unwrap();
    create(store, tenant, "c").await; // position 5
    let (ids, mut cursor) = read(store, tenant, &cursor).await;
    assert_eq!(ids, ["c"]);
    assert_eq!(cursor.through, 3);
    // The hole closes once every transaction of the cluster older than the read has ended
    // (other tests share the cluster, so it may take a few reads).
    for _ in 0..200 {
        let (ids, next) = read(store, tenant, &cursor).await;
        assert!(ids.is_empty());
        cursor = next;
        if cursor.through == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(cursor.through, 5);
    assert!(cursor.holes.is_empty() && cursor.settled.is_empty());
}
