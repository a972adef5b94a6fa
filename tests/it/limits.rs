//! Request limits per tenant: a tenant's `limits` setting tightens the server's body size,
//! bundle entries, JSON depth and request time for its requests alone; a request past its time
//! is answered 503 `timeout`, and the statement it waited on is cancelled by Postgres.

use std::time::{Duration, Instant};

use fjord_tests::{send, Reply, Server};
use serde_json::{json, Value};

use crate::add_tenant;

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

fn set_limits(server: &Server, tenant: &str, limits: Value) -> Reply {
    send(
        "PUT",
        &format!("{}/admin/tenants/{tenant}/settings", server.origin),
        &[("Content-Type", "application/json")],
        Some(&json!({ "limits": limits }).to_string()),
    )
}

/// A Patient whose extensions nest `depth` objects deep, and about `bytes` long.
fn patient(depth: usize, bytes: usize) -> String {
    let mut extension = json!({"url": "http://example.org/leaf", "valueString": "x".repeat(bytes)});
    for _ in 0..depth {
        extension = json!({"url": "http://example.org/nested", "extension": [extension]});
    }
    json!({"resourceType": "Patient", "extension": [extension]}).to_string()
}

fn transaction(entries: usize) -> String {
    let entry = json!({"resource": {"resourceType": "Patient"},
                       "request": {"method": "POST", "url": "Patient"}});
    json!({"resourceType": "Bundle", "type": "transaction", "entry": vec![entry; entries]})
        .to_string()
}

#[test]
fn a_tenant_s_limits_tighten_the_server_s_for_its_requests_alone() {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = Server::start(&["--database-url", &database.url]);
    let strict = add_tenant(&server, "t1");
    let open = add_tenant(&server, "t2");
    for bad in [
        json!({"maxBodyBytes": 0}),
        json!({"maxBundleEntries": -1}),
        json!({"maxJsonDepth": "deep"}),
        json!({"requestTimeoutSeconds": 0}),
        json!({"maxRequests": 5}),
    ] {
        let refused = set_limits(&server, "t1", bad.clone());
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let limits = json!({"maxBodyBytes": 4000, "maxBundleEntries": 2, "maxJsonDepth": 12});
    let set = set_limits(&server, "t1", limits.clone());
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["limits"], limits);
    std::thread::sleep(Duration::from_secs(3));

    let post = |base: &str, path: &str, body: &str| {
        send("POST", &format!("{base}{path}"), &[JSON], Some(body))
    };
    let outcome_code = |reply: &Reply| reply.json()["issue"][0]["code"].clone();
    // Body size.
    let large = patient(1, 5000);
    let refused = post(&strict, "/Patient", &large);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert_eq!(outcome_code(&refused), "too-costly");
    assert!(refused.body.contains("4000 bytes"), "{}", refused.body);
    assert_eq!(post(&open, "/Patient", &large).status, 201);
    // Bundle entries.
    let refused = post(&strict, "", &transaction(3));
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body.contains("at most 2"), "{}", refused.body);
    assert_eq!(post(&strict, "", &transaction(2)).status, 200);
    assert_eq!(post(&open, "", &transaction(3)).status, 200);
    // JSON depth: each nested extension is an object in an array.
    let deep = patient(8, 10);
    let refused = post(&strict, "/Patient", &deep);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("deep"), "{}", refused.body);
    assert_eq!(post(&strict, "/Patient", &patient(3, 10)).status, 201);
    assert_eq!(post(&open, "/Patient", &deep).status, 201);
    // Never looser than the server's: a tenant's limit above it changes nothing.
    let set = set_limits(&server, "t1", json!({"maxBundleEntries": 1_000_000_000}));
    assert_eq!(set.status, 200, "{}", set.body);
}

#[test]
fn a_request_past_its_time_limit_is_answered_503_and_its_statement_cancelled() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(fjord_testkit::database());
    let server = Server::start_with(
        "127.0.0.1:0",
        &["--database-url", &database.url],
        &[("FJORD_REQUEST_TIMEOUT_SECONDS", "3")],
    );
    let quick = add_tenant(&server, "t1");
    let server_limited = add_tenant(&server, "t2");
    for base in [&quick, &server_limited] {
        crate::a_patient(base, "p1");
    }
    let set = set_limits(&server, "t1", json!({"requestTimeoutSeconds": 1}));
    assert_eq!(set.status, 200, "{}", set.body);
    std::thread::sleep(Duration::from_secs(3));

    // Another session locks the resources away: reads wait for it.
    use sqlx::Connection;
    let mut blocker = runtime
        .block_on(sqlx::PgConnection::connect(&database.url))
        .unwrap();
    runtime.block_on(async {
        sqlx::raw_sql(
            "BEGIN; LOCK TABLE resource_current, resource_version IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut blocker)
        .await
        .unwrap();
    });
    let timed = |base: &str| {
        let started = Instant::now();
        let reply = send("GET", &format!("{base}/Patient/p1"), &[], None);
        (reply, started.elapsed())
    };
    // The reads of Patient/p1 queued behind the lock (the audit trail's writes and background
    // followers queue there too, and are left out).
    let waiting_reads = || -> i64 {
        runtime.block_on(async {
            let mut monitor = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database() \
                 AND query LIKE '%FROM resource_version WHERE tenant = $1 AND type = $2 AND id = $3%'",
            )
            .fetch_one(&mut monitor)
            .await
            .unwrap()
        })
    };
    let ((tenant_limit, tenant_took), (server_limit, server_took)) = std::thread::scope(|s| {
        let tenant = s.spawn(|| timed(&quick));
        let server = s.spawn(|| timed(&server_limited));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(waiting_reads(), 2, "both reads wait for the lock");
        (tenant.join().unwrap(), server.join().unwrap())
    });
    for reply in [&tenant_limit, &server_limit] {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(
            reply.json()["issue"][0]["code"],
            "timeout",
            "{}",
            reply.body
        );
    }
    assert!(tenant_took >= Duration::from_millis(900), "{tenant_took:?}");
    assert!(tenant_took < Duration::from_millis(2500), "{tenant_took:?}");
    assert!(
        server_took >= Duration::from_millis(2900),
        "{server_took:?}"
    );
    assert!(server_took < Duration::from_secs(5), "{server_took:?}");

    // Postgres cancels the statements left waiting (statement_timeout = the server's limit),
    // while the lock is still held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting_reads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(waiting_reads(), 0, "reads still wait for the lock");
    runtime.block_on(async {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .unwrap();
    });
    assert_eq!(timed(&quick).0.status, 200);
}
