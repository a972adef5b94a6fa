//! The storage layer against a real Postgres: partitions, versions, the row-level security wall.

use fjord_store::{Expected, HistoryScope, NewVersion, Op, StoreError, WriteOutcome};
use time::OffsetDateTime;

static NO_TERMS: fjord_store::IndexTerms = fjord_store::IndexTerms {
    keys: Vec::new(),
    values: None,
    strings: Vec::new(),
    dates: Vec::new(),
};

fn version<'a>(id: &'a str, expected: Expected, body: &'a str) -> NewVersion<'a> {
    NewVersion {
        resource_type: "Patient",
        id,
        expected,
        last_updated: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        op: if expected == Expected::Absent {
            Op::Create
        } else {
            Op::Update
        },
        body: Some(body),
        index: &NO_TERMS,
        targets: &[],
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
    // Its partition of the equality-key index bounds the pending list searches scan (0011).
    let options: Option<String> = raw_scalar(
        &db.url,
        &format!(
            "SELECT array_to_string(c.reloptions, ',') FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_index x ON x.indexrelid = c.oid \
             WHERE i.inhparent = 'resource_current_by_key'::regclass \
               AND x.indrelid = 'resource_current_{}'::regclass",
            a.key.0
        ),
    )
    .await;
    assert_eq!(options.as_deref(), Some("gin_pending_list_limit=256"));
    // And its keys the default statistics target (0013 undid 0012's 1,000, which a new
    // tenant's partition must not get back).
    let target: Option<String> = raw_scalar(
        &db.url,
        &format!(
            "SELECT attstattarget::text FROM pg_attribute \
             WHERE attrelid = 'resource_current_{}'::regclass AND attname = 'keys'",
            a.key.0
        ),
    )
    .await;
    // -1 up to Postgres 16, NULL since 17.
    assert!(matches!(target.as_deref(), None | Some("-1")), "{target:?}");
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
    let url = fjord_testkit::unmigrated_database().await;
    let store = fjord_store::Store::connect(&url, 2).await.unwrap();
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
    assert_eq!(
        db.store
            .write_version(t, &version("p", Expected::Absent, "{\"v\":1}"))
            .await
            .unwrap(),
        WriteOutcome::Written
    );
    // A second creator of the same id loses.
    assert_eq!(
        db.store
            .write_version(t, &version("p", Expected::Absent, "{\"v\":9}"))
            .await
            .unwrap(),
        WriteOutcome::NotExpected
    );
    assert_eq!(
        db.store
            .write_version(t, &version("p", Expected::Version(1), "{\"v\":2}"))
            .await
            .unwrap(),
        WriteOutcome::Written
    );
    // A writer that read version 1 loses against the one that wrote version 2.
    assert_eq!(
        db.store
            .write_version(t, &version("p", Expected::Version(1), "{\"v\":3}"))
            .await
            .unwrap(),
        WriteOutcome::NotExpected
    );
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
    let changes: i64 = raw_scalar(&db.url, "SELECT count(*) FROM resource_version")
        .await
        .unwrap_or(-1);
    assert_eq!(changes, 0, "without fjord.tenant the wall hides every row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_version_produce_exactly_one() {
    let db = fjord_testkit::database().await;
    let t = db.store.create_tenant("hf", "HF").await.unwrap().key;
    let race = |expected: Expected| {
        let store = db.store.clone();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
        let writers: Vec<_> = (0..32)
            .map(|n| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let body = format!("{{\"writer\":{n}}}");
                    barrier.wait().await;
                    store
                        .write_version(t, &version("p", expected, &body))
                        .await
                        .unwrap()
                        == WriteOutcome::Written
                })
            })
            .collect();
        async move {
            let mut winners = 0;
            for writer in writers {
                winners += usize::from(writer.await.unwrap());
            }
            winners
        }
    };
    for round in 0..5 {
        let expected = match round {
            0 => Expected::Absent,
            n => Expected::Version(n),
        };
        assert_eq!(race(expected).await, 1, "round {round}");
    }
    let history = db
        .store
        .history(t, HistoryScope::Instance("Patient", "p"), None, None, 100)
        .await
        .unwrap();
    let versions: Vec<i64> = history.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let db = fjord_testkit::database().await;
    let a = db.store.create_tenant("hf-a", "A").await.unwrap().key;
    let b = db.store.create_tenant("hf-b", "B").await.unwrap().key;
    db.store
        .write_version(a, &version("x", Expected::Absent, "{}"))
        .await
        .unwrap();
    db.store
        .write_version(b, &version("y", Expected::Absent, "{}"))
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
    let insert = |into: i32| {
        format!(
            "SELECT set_config('fjord.tenant', '{}', false); \
             INSERT INTO resource_version (tenant, type, id, version, seq, last_updated, op, body) \
             VALUES ({into}, 'Patient', 'z', 1, 1000, now(), 'create', '{{}}')",
            a.0
        )
    };
    let refused = raw_execute(&db.url, &insert(b.0))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("row-level security"), "{refused}");
    // The same statement into the session's own tenant is accepted: the check is what refused.
    raw_execute(&db.url, &insert(a.0)).await.unwrap();
    // Store reads never cross tenants.
    assert!(db
        .store
        .read_latest(b, "Patient", "x")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn cancelled_statements_neither_leak_connections_nor_mix_answers() {
    let db = fjord_testkit::database().await;
    let t = db.store.create_tenant("hf", "HF").await.unwrap().key;
    for (id, body) in [("a", "{\"id\":\"a\"}"), ("b", "{\"id\":\"b\"}")] {
        db.store
            .write_version(t, &version(id, Expected::Absent, body))
            .await
            .unwrap();
    }
    // One connection per tenant: a lease lost by a cancelled statement would starve every later
    // read, and a connection returned mid-answer would hand one read another's row.
    let store = fjord_store::Store::connect(&db.url, 1).await.unwrap();
    let read = |id: &'static str| {
        let store = store.clone();
        async move { store.read_latest(t, "Patient", id).await }
    };
    for step in 0..200u64 {
        let id = if step % 2 == 0 { "a" } else { "b" };
        // Cancel at points spread over connecting, sending and receiving.
        let cut = std::time::Duration::from_micros(step * 5);
        let _ = tokio::time::timeout(cut, read(id)).await;
        let other = if id == "a" { "b" } else { "a" };
        let answer = read(other).await.unwrap().unwrap();
        assert_eq!(answer.id, other);
        assert_eq!(
            answer.body.as_deref(),
            Some(format!("{{\"id\":\"{other}\"}}").as_str()),
            "step {step}"
        );
    }
}

#[tokio::test]
async fn migrating_to_one_row_per_version_keeps_every_version_and_the_change_order() {
    use sqlx::Connection;
    // A database at migration 1, written the way Fjord wrote it then.
    let url = fjord_testkit::unmigrated_database().await;
    let first_only = std::env::temp_dir().join(format!("fjord-migration-1-{}", std::process::id()));
    std::fs::create_dir_all(&first_only).unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    std::fs::copy(
        migrations.join("0001_storage.sql"),
        first_only.join("0001_storage.sql"),
    )
    .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(first_only.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    std::fs::remove_dir_all(&first_only).unwrap();
    let key: i32 =
        sqlx::query_scalar("INSERT INTO tenant (id, name) VALUES ('hf', 'HF') RETURNING key")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let old_writes = format!(
        "CREATE TABLE resource_version_{key} PARTITION OF resource_version FOR VALUES IN ({key}); \
         CREATE TABLE resource_current_{key} PARTITION OF resource_current FOR VALUES IN ({key}); \
         CREATE TABLE change_log_{key} PARTITION OF change_log FOR VALUES IN ({key}); \
         CREATE SEQUENCE change_seq_{key}; \
         SELECT set_config('fjord.tenant', '{key}', false); \
         SELECT fjord_write_version({key}, 'Patient', 'p', NULL, 1, now(), 'create', '{{\"v\":1}}'); \
         SELECT fjord_write_version({key}, 'Observation', 'o', NULL, 1, now(), 'create', '{{}}'); \
         SELECT fjord_write_version({key}, 'Patient', 'p', 1, 2, now(), 'update', '{{\"v\":2}}');"
    );
    sqlx::raw_sql(&old_writes).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let store = fjord_store::Store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let t = fjord_store::TenantKey(key);
    let latest = store.read_latest(t, "Patient", "p").await.unwrap().unwrap();
    assert_eq!(
        (latest.version, latest.body.as_deref()),
        (2, Some("{\"v\":2}"))
    );
    let changes = store
        .history(t, HistoryScope::System, None, None, 10)
        .await
        .unwrap();
    let order: Vec<(String, i64)> = changes
        .versions
        .iter()
        .map(|v| (v.id.clone(), v.version))
        .collect();
    assert_eq!(order, [("p".into(), 2), ("o".into(), 1), ("p".into(), 1)]);
    // Writers continue where the old ones stopped, still serialised by the version they expect.
    assert_eq!(
        store
            .write_version(t, &version("p", Expected::Version(2), "{\"v\":3}"))
            .await
            .unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        store
            .write_version(t, &version("p", Expected::Version(2), "{\"v\":4}"))
            .await
            .unwrap(),
        WriteOutcome::NotExpected
    );
    store.close().await;
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
pub(crate) async fn as_tenant_scalar<T>(url: &str, tenant: i32, sql: &str) -> Option<T>
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

#[tokio::test]
async fn a_write_with_targets_happens_only_when_they_are_current() {
    let db = fjord_testkit::database().await;
    let t = db.store.create_tenant("hf", "HF").await.unwrap().key;
    let referring = |id, targets| NewVersion {
        targets,
        ..version(id, Expected::Absent, "{}")
    };
    let absent: &[(&str, &str)] = &[("Patient", "p"), ("Patient", "q")];
    assert_eq!(
        db.store
            .write_version(t, &referring("r1", absent))
            .await
            .unwrap(),
        WriteOutcome::MissingTarget
    );
    db.store
        .write_version(t, &version("p", Expected::Absent, "{}"))
        .await
        .unwrap();
    // One of two is not enough; nothing was written by the failed attempts.
    assert_eq!(
        db.store
            .write_version(t, &referring("r1", absent))
            .await
            .unwrap(),
        WriteOutcome::MissingTarget
    );
    assert!(db
        .store
        .read_latest(t, "Patient", "r1")
        .await
        .unwrap()
        .is_none());
    let present: &[(&str, &str)] = &[("Patient", "p")];
    assert_eq!(
        db.store
            .write_version(t, &referring("r1", present))
            .await
            .unwrap(),
        WriteOutcome::Written
    );
}

/// An export's snapshot sees the tenant as it was when taken, whatever commits meanwhile, and
/// blocks none of those writers; its transaction time is not after any version it holds.
#[tokio::test]
async fn a_snapshot_sees_neither_later_writes_nor_blocks_them() {
    let db = fjord_testkit::database().await;
    let t = db.store.create_tenant("hf", "HF").await.unwrap().key;
    for id in ["a", "b"] {
        db.store
            .write_version(t, &version(id, Expected::Absent, "{\"v\":1}"))
            .await
            .unwrap();
    }
    let before = OffsetDateTime::now_utc();
    let mut snapshot = db.store.snapshot(t).await.unwrap();
    assert!(snapshot.transaction_time <= before);
    // Each of these commits while the snapshot is open; a blocked writer would hang here.
    let writes = async {
        db.store
            .write_version(t, &version("a", Expected::Version(1), "{\"v\":2}"))
            .await
            .unwrap();
        db.store
            .write_version(t, &version("c", Expected::Absent, "{\"v\":1}"))
            .await
            .unwrap();
        let mut delete = version("b", Expected::Version(1), "");
        delete.op = Op::Delete;
        delete.body = None;
        db.store.write_version(t, &delete).await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), writes)
        .await
        .expect("writers are not blocked by a snapshot");
    let mut seen = Vec::new();
    let count = snapshot
        .each_current("Patient", &[], |id, body| {
            seen.push((id.to_owned(), body.to_owned()));
            Ok::<_, ()>(())
        })
        .await
        .unwrap()
        .unwrap();
    seen.sort();
    assert_eq!(count, 2);
    assert_eq!(
        seen,
        [
            ("a".to_owned(), "{\"v\":1}".to_owned()),
            ("b".to_owned(), "{\"v\":1}".to_owned())
        ]
    );
    snapshot.finish().await.unwrap();
    // A new snapshot sees the writes.
    let mut now = db.store.snapshot(t).await.unwrap();
    let mut ids = Vec::new();
    now.each_current("Patient", &[], |id, _| {
        ids.push(id.to_owned());
        Ok::<_, ()>(())
    })
    .await
    .unwrap()
    .unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);
    now.finish().await.unwrap();
}

fn event_of(subscription: &str, seq: i64) -> fjord_store::SubscriptionEvent {
    fjord_store::SubscriptionEvent {
        subscription: subscription.into(),
        number: 0,
        seq,
        resource_type: "Observation".into(),
        id: format!("o{seq}"),
        version: 1,
        deleted: false,
        at: OffsetDateTime::now_utc(),
        context: Vec::new(),
        patients: Vec::new(),
    }
}

/// A dispatcher round applies a subscription's changes in their order: turned off and
/// requested again within one round, it ends requested (it used to end off, and was never
/// delivered again); deleted and created again, it starts afresh with a state of its own.
#[tokio::test]
async fn a_dispatch_round_applies_a_subscriptions_changes_in_order() {
    use fjord_store::{ChangeCursor, DispatchRound, Started};
    let db = fjord_testkit::database().await;
    let tenant = db.store.create_tenant("hf-a", "A").await.unwrap();
    let mut work = db.store.begin(tenant.key).await.unwrap();
    work.record_subscription_access("s", "{}").await.unwrap();
    work.commit().await.unwrap();
    let started = |seq| Started {
        id: "s".into(),
        seq,
        access: "{}".into(),
    };
    let cursor = ChangeCursor::default();
    let state = || async {
        let state = db
            .store
            .subscription_state(tenant.key, "s")
            .await
            .unwrap()
            .unwrap();
        (state.status, state.since_seq, state.events)
    };
    let dispatch = |round| db.store.record_dispatch(tenant.key, "test", &cursor, round);

    let mut round = DispatchRound::default();
    round.start(started(1));
    round.events.push(event_of("s", 2));
    round.stop("s".into());
    round.start(started(3));
    dispatch(round).await.unwrap();
    assert_eq!(state().await, ("requested".into(), 3, 1));

    let mut round = DispatchRound::default();
    round.stop("s".into());
    dispatch(round).await.unwrap();
    assert_eq!(state().await.0, "off");

    // Deleted (its earlier event goes with it) and created again in the next round.
    let mut round = DispatchRound::default();
    round.events.push(event_of("s", 4));
    round.remove("s".into());
    round.start(started(5));
    round.events.push(event_of("s", 6));
    let numbered = dispatch(round).await.unwrap();
    assert_eq!(numbered.iter().map(|e| e.number).collect::<Vec<_>>(), [1]);
    assert_eq!(state().await, ("requested".into(), 5, 1));
    let kept = db
        .store
        .subscription_events(tenant.key, "s", 1, 100, 100)
        .await
        .unwrap();
    assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [6]);
}
