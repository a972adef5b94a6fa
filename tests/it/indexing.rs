//! Search index terms are written with the version that produced them, replace the previous
//! version's, disappear with a deletion, and stay behind the tenant wall.

use fjord_engine::{Engine, Format, ParseLimits, TenantSettings};
use fjord_search::keys;

use crate::store::as_tenant_scalar;

fn observation(id: &str, code: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Observation","id":"{id}","status":"final",
            "code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},
            "subject":{{"reference":"Patient/p1"}},
            "effectiveDateTime":"2026-11-01T08:00:00+01:00",
            "valueQuantity":{{"value":70,"system":"http://unitsofmeasure.org","code":"kg"}}}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn index_rows_follow_the_current_version() {
    let db = fjord_testkit::database().await;
    let a = db.store.create_tenant("hf-a", "A").await.unwrap();
    let b = db.store.create_tenant("hf-b", "B").await.unwrap();
    let engine = Engine::new(db.store.clone(), ParseLimits::default());
    let count = |tenant: i32, sql: &str| {
        let url = db.url.clone();
        let sql = sql.to_owned();
        async move {
            as_tenant_scalar::<i64>(&url, tenant, &sql)
                .await
                .unwrap_or(-1)
        }
    };
    let has_key = |key: i64| {
        format!(
            "SELECT count(*) FROM resource_current WHERE type = 'Observation' AND id = 'o1' \
             AND keys @> ARRAY[{key}]::bigint[]"
        )
    };
    let loinc = |code| keys::token_system_code("Observation", "code", "http://loinc.org", code);
    let codes = has_key(loinc("29463-7"));
    let new_codes = has_key(loinc("3141-9"));
    // The rows of the tenant's data: the AuditEvents of the writes have rows of their own.
    let all_rows = "SELECT (SELECT count(*) FROM search_date WHERE type <> 'AuditEvent') \
                    + (SELECT count(*) FROM resource_current WHERE type <> 'AuditEvent' \
                       AND (keys <> '{}' OR vals IS NOT NULL))";

    // The observations refer to a patient the test does not store.
    let lenient = TenantSettings {
        referential_integrity: false,
        ..TenantSettings::default()
    };
    let tenant_a =
        fjord_engine::Caller::trusted(engine.set_tenant_settings("hf-a", &lenient).await.unwrap());
    engine
        .update(
            &tenant_a,
            "Observation",
            "o1",
            &observation("o1", "29463-7"),
            Format::Json,
            None,
        )
        .await
        .unwrap();
    assert_eq!(count(a.key.0, &codes).await, 1);
    let weights = "SELECT count(*) FROM resource_current, \
                   jsonb_array_elements(vals->'value-quantity') q \
                   WHERE q->>'cc' = 'g' AND (q->>'cv')::numeric = 70000";
    assert_eq!(count(a.key.0, weights).await, 1);
    let patients = has_key(keys::reference("Observation", "patient", "Patient", "p1"));
    assert_eq!(count(a.key.0, &patients).await, 1);
    let dates = "SELECT count(*) FROM search_date WHERE id = 'o1' AND low = 1793516400000";
    assert_eq!(count(a.key.0, dates).await, 1);
    let rows_of_one_version = count(a.key.0, all_rows).await;
    assert_eq!(rows_of_one_version, 2);

    // An update replaces the rows: the old code is gone, the new one is there, no row doubles.
    engine
        .update(
            &tenant_a,
            "Observation",
            "o1",
            &observation("o1", "3141-9"),
            Format::Json,
            None,
        )
        .await
        .unwrap();
    assert_eq!(count(a.key.0, &codes).await, 0);
    assert_eq!(count(a.key.0, &new_codes).await, 1);
    assert_eq!(count(a.key.0, all_rows).await, rows_of_one_version);

    // A writer that loses (stale If-Match) writes no rows either.
    let stale = engine
        .update(
            &tenant_a,
            "Observation",
            "o1",
            &observation("o1", "29463-7"),
            Format::Json,
            Some(1),
        )
        .await;
    assert!(stale.is_err());
    assert_eq!(count(a.key.0, &codes).await, 0);

    // Another tenant sees none of them.
    assert_eq!(count(b.key.0, all_rows).await, 0);

    // A deletion removes them (its empty key array and the date row).
    engine
        .delete(&tenant_a, "Observation", "o1", None, false)
        .await
        .unwrap();
    assert_eq!(count(a.key.0, all_rows).await, 0);
}
