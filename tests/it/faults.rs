//! Faults under load: the database stopped and started again while clients write. The server
//! answers 503 while the database is away, `/health/ready` says so, it reconnects by itself,
//! and every write it acknowledged reads back afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_pg::{Binaries, Cluster, ClusterOptions, SUPERUSER};
use fjord_store::Store;
use fjord_tests::{send, Server};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");
const ROLE: &str = "fjord";

/// A cluster of this test alone, so that stopping it disturbs no other test.
fn private_cluster(dir: &std::path::Path) -> Cluster {
    let binaries = Binaries::locate().expect("PostgreSQL server binaries");
    let options = ClusterOptions {
        fast_init: true,
        ..Default::default()
    };
    Cluster::start(&binaries, dir, &options).expect("starting the private cluster")
}

/// Statuses answered to creates, and the ids of those acknowledged.
#[derive(Default)]
struct Outcomes {
    statuses: BTreeMap<u16, usize>,
    acknowledged: Vec<String>,
}

#[test]
fn a_database_restart_under_load_is_answered_with_503_and_loses_no_acknowledged_write() {
    let dir = std::env::temp_dir().join(format!("fjord-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster = private_cluster(&dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = cluster.url(ROLE, "fjord");
    runtime.block_on(async {
        Store::prepare_database(&cluster.url(SUPERUSER, "postgres"), ROLE, "fjord")
            .await
            .expect("database");
        let store = Store::connect(&url, 2).await.expect("connect");
        store.migrate().await.expect("migrate");
        store.ensure_tenant("t1", "T1").await.expect("tenant");
        store.close().await;
    });
    let server = Server::start(&["--database-url", &url]);
    let base = server.base("t1");
    let ready = || send("GET", &format!("{}/health/ready", server.origin), &[], None).status;
    assert_eq!(ready(), 200);

    let running = Arc::new(AtomicBool::new(true));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (running, outcomes, base) = (running.clone(), outcomes.clone(), base.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::SeqCst) {
                    let reply = send(
                        "POST",
                        &format!("{base}/Patient"),
                        &[JSON],
                        Some(r#"{"resourceType":"Patient","active":true}"#),
                    );
                    let mut outcomes = outcomes.lock().unwrap();
                    *outcomes.statuses.entry(reply.status).or_default() += 1;
                    if reply.status == 201 {
                        outcomes
                            .acknowledged
                            .push(reply.json()["id"].as_str().unwrap().into());
                    } else {
                        assert_eq!(reply.status, 503, "{}", reply.body);
                        assert_eq!(reply.header("Retry-After"), Some("1"));
                        assert_eq!(reply.json()["issue"][0]["code"], "transient");
                        drop(outcomes);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    let acknowledged = || outcomes.lock().unwrap().acknowledged.len();
    let wait_for_more = |than: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged() <= than {
            assert!(Instant::now() < deadline, "no write succeeded {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for_more(20, "before the fault");

    cluster.stop();
    std::thread::sleep(Duration::from_secs(2));
    let during = acknowledged();
    assert_eq!(ready(), 503, "the database is down");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        acknowledged(),
        during,
        "a write was acknowledged without a database"
    );
    let refused = outcomes.lock().unwrap().statuses.get(&503).copied();
    assert!(
        refused.unwrap_or(0) > 0,
        "no 503 while the database was away"
    );

    let _cluster = private_cluster(&dir);
    wait_for_more(during + 20, "after the database came back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    running.store(false, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("a writer failed");
    }

    let outcomes = outcomes.lock().unwrap();
    for id in &outcomes.acknowledged {
        let read = send("GET", &format!("{base}/Patient/{id}"), &[], None);
        assert_eq!(read.status, 200, "acknowledged Patient/{id} was lost");
    }
    // Nothing beyond them but writes whose answer was lost with the connection.
    let searched = send("GET", &format!("{base}/Patient?_summary=count"), &[], None);
    let total = searched.json()["total"].as_u64().unwrap_or_default() as usize;
    assert!(
        total >= outcomes.acknowledged.len(),
        "{total} Patients for {} acknowledged creates",
        outcomes.acknowledged.len()
    );
    // Each refused create left its AuditEvent (a serious failure, 8), buffered while the
    // database was away and written once it was back.
    let refused = outcomes.statuses.get(&503).copied().unwrap_or_default() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audited = send(
            "GET",
            &format!("{base}/AuditEvent?outcome=8&_summary=count"),
            &[],
            None,
        );
        let total = audited.json()["total"].as_u64().unwrap_or_default();
        if total == refused {
            break;
        }
        assert!(
            Instant::now() < deadline && total < refused,
            "{total} failure events for {refused} refusals"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
