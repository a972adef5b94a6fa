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
pub(crate) fn private_cluster(dir: &std::path::Path) -> Cluster {
    let binaries = Binaries::locate().expect("PostgreSQL server binaries");
    let options = ClusterOptions {
        fast_init: true,
        ..Default::default()
    };
    Cluster::start(&binaries, dir, &options).expect("starting the private cluster")
}

/// A private cluster in `dir` with a migrated database and tenant `t1`, and a server on it.
pub(crate) fn private_server(dir: &std::path::Path) -> (Cluster, Server) {
    let cluster = private_cluster(dir);
    let url = cluster.url(ROLE, "fjord");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            Store::prepare_database(&cluster.url(SUPERUSER, "postgres"), ROLE, "fjord")
                .await
                .expect("database");
            let store = Store::connect(&url, 2).await.expect("connect");
            store.migrate().await.expect("migrate");
            store.ensure_tenant("t1", "T1").await.expect("tenant");
            store.close().await;
        });
    (cluster, Server::start(&["--database-url", &url]))
}

/// Statuses answered to creates, and the ids of those acknowledged.
#[derive(Default)]
pub(crate) struct Outcomes {
    pub statuses: BTreeMap<u16, usize>,
    pub acknowledged: Vec<String>,
}

/// Clients creating Patients in a loop until stopped, each refusal checked by `refusal`.
pub(crate) struct Writers {
    running: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    pub fn start(
        clients: usize,
        base: &str,
        body: &str,
        refusal: fn(&fjord_tests::Reply),
    ) -> Writers {
        let running = Arc::new(AtomicBool::new(true));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let threads = (0..clients)
            .map(|_| {
                let (running, outcomes) = (running.clone(), outcomes.clone());
                let (url, body) = (format!("{base}/Patient"), body.to_owned());
                std::thread::spawn(move || {
                    while running.load(Ordering::SeqCst) {
                        let reply = send("POST", &url, &[JSON], Some(&body));
                        let mut outcomes = outcomes.lock().unwrap();
                        *outcomes.statuses.entry(reply.status).or_default() += 1;
                        if reply.status == 201 {
                            let id = reply.json()["id"].as_str().unwrap().to_owned();
                            outcomes.acknowledged.push(id);
                        } else {
                            drop(outcomes);
                            refusal(&reply);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Writers {
            running,
            outcomes,
            threads,
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.outcomes.lock().unwrap().acknowledged.len()
    }

    /// How many creates were answered other than 201.
    pub fn refused(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes
            .statuses
            .iter()
            .filter(|(s, _)| **s != 201)
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until more than `than` creates were acknowledged; panics after `seconds`.
    pub fn wait_for_more(&self, than: usize, seconds: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.acknowledged() <= than {
            assert!(Instant::now() < deadline, "no write succeeded {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(self) -> Outcomes {
        self.running.store(false, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a writer failed");
        }
        Arc::try_unwrap(self.outcomes)
            .ok()
            .expect("the writers are done")
            .into_inner()
            .unwrap()
    }
}

/// The change log of `resource_type` as its history shows it, newest first, page by page: every
/// acknowledged create (`Type/id`) is in it exactly once, and no change is listed twice.
pub(crate) fn change_log_holds_each_once(base: &str, resource_type: &str, acknowledged: &[String]) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    // Pages of 200: the disk-full test's Patients are 20 KB each.
    let mut next = Some(format!("{base}/{resource_type}/_history?_count=200"));
    while let Some(url) = next.take() {
        let page = send("GET", &url, &[], None);
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        for entry in page["entry"].as_array().into_iter().flatten() {
            let resource = &entry["resource"];
            let change = format!(
                "{resource_type}/{}/_history/{}",
                resource["id"].as_str().unwrap_or_default(),
                resource["meta"]["versionId"].as_str().unwrap_or_default()
            );
            *seen.entry(change).or_default() += 1;
        }
        next = (page["link"].as_array().into_iter().flatten())
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str().map(str::to_owned));
    }
    if let Some((change, times)) = seen.iter().find(|(_, n)| **n > 1) {
        panic!("{change} is in the change log {times} times");
    }
    for created in acknowledged {
        let first = format!("{created}/_history/1");
        assert!(
            seen.contains_key(&first),
            "{first} is missing from the change log"
        );
    }
}

/// Every acknowledged create reads back, and the type holds no fewer resources: nothing but
/// writes whose answer was lost with the connection is beyond them; the change log lists each.
pub(crate) fn acknowledged_writes_read_back(base: &str, outcomes: &Outcomes) {
    let created: Vec<String> = (outcomes.acknowledged.iter())
        .map(|id| format!("Patient/{id}"))
        .collect();
    change_log_holds_each_once(base, "Patient", &created);
    for id in &outcomes.acknowledged {
        let read = send("GET", &format!("{base}/Patient/{id}"), &[], None);
        assert_eq!(read.status, 200, "acknowledged Patient/{id} was lost");
    }
    let searched = send("GET", &format!("{base}/Patient?_summary=count"), &[], None);
    let total = searched.json()["total"].as_u64().unwrap_or_default() as usize;
    assert!(
        total >= outcomes.acknowledged.len(),
        "{total} Patients for {} acknowledged creates",
        outcomes.acknowledged.len()
    );
}

#[test]
fn a_database_restart_under_load_is_answered_with_503_and_loses_no_acknowledged_write() {
    let dir = std::env::temp_dir().join(format!("fjord-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut cluster, server) = private_server(&dir);
    let base = server.base("t1");
    let ready = || send("GET", &format!("{}/health/ready", server.origin), &[], None).status;
    assert_eq!(ready(), 200);

    let writers = Writers::start(
        4,
        &base,
        r#"{"resourceType":"Patient","active":true}"#,
        |reply| {
            assert_eq!(reply.status, 503, "{}", reply.body);
            assert_eq!(reply.header("Retry-After"), Some("1"));
            assert_eq!(reply.json()["issue"][0]["code"], "transient");
        },
    );
    writers.wait_for_more(20, 60, "before the fault");

    cluster.stop();
    std::thread::sleep(Duration::from_secs(2));
    let during = writers.acknowledged();
    assert_eq!(ready(), 503, "the database is down");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        writers.acknowledged(),
        during,
        "a write was acknowledged without a database"
    );
    assert!(writers.refused() > 0, "no 503 while the database was away");

    let _cluster = private_cluster(&dir);
    writers.wait_for_more(during + 20, 60, "after the database came back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let outcomes = writers.stop();
    acknowledged_writes_read_back(&base, &outcomes);
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

#[test]
fn sigterm_under_load_drains_requests_writes_the_audit_trail_and_stops_postgres_cleanly() {
    let dir = crate::embedded::data_dir("shutdown");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut server = Server::start(&["--data-dir", &dir_arg]);
    let base = server.base("default");
    // Each reader reads its own patients, each once: reads of one patient by one actor between
    // two flushes are one event, so distinct patients make every answered read one event.
    const PATIENTS_EACH: usize = 1_000;
    let entries: Vec<String> = (0..4)
        .flat_map(|reader| (0..PATIENTS_EACH).map(move |i| format!("p{reader}-{i}")))
        .map(|id| {
            format!(
                r#"{{"resource":{{"resourceType":"Patient","id":"{id}"}},"request":{{"method":"PUT","url":"Patient/{id}"}}}}"#
            )
        })
        .collect();
    let stored = send(
        "POST",
        &base,
        &[JSON],
        Some(&format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
            entries.join(",")
        )),
    );
    assert_eq!(stored.status, 200, "{}", stored.body);

    // Readers until the server stops answering (or run out of patients, which they do not
    // before the server stops); each answered read is audited in the buffer.
    let answered = Arc::new(Mutex::new(0usize));
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (base, answered) = (base.clone(), answered.clone());
            std::thread::spawn(move || {
                for i in 0..PATIENTS_EACH {
                    match ureq::get(&format!("{base}/Patient/p{reader}-{i}")).call() {
                        Ok(reply) => {
                            assert_eq!(reply.status(), 200);
                            *answered.lock().unwrap() += 1;
                        }
                        Err(ureq::Error::Status(status, reply)) => panic!(
                            "{status} while shutting down: {}",
                            reply.into_string().unwrap_or_default()
                        ),
                        // Connections refused: the server has stopped listening.
                        Err(_) => return,
                    }
                }
                panic!("reader {reader} read all its patients before the server stopped");
            })
        })
        .collect();
    while *answered.lock().unwrap() < 500 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = server.terminate();
    assert!(status.success(), "fjord exited with {status}");
    for reader in readers {
        reader.join().expect("a reader saw a failure");
    }
    let answered = *answered.lock().unwrap();
    let log = std::fs::read_to_string(dir.join("postgres/postgres.log")).unwrap_or_default();
    assert!(
        log.contains("database system is shut down"),
        "postgres did not shut down cleanly: {log}"
    );
    assert!(!dir.join("postgres/postmaster.pid").exists());

    // Every answered read left its event, written at shutdown if not before.
    let server = Server::start(&["--data-dir", &dir_arg]);
    let audited = send(
        "GET",
        &format!(
            "{base}/AuditEvent?action=R&_summary=count",
            base = server.base("default")
        ),
        &[],
        None,
    );
    assert_eq!(audited.status, 200, "{}", audited.body);
    assert_eq!(audited.json()["total"].as_u64(), Some(answered as u64));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
