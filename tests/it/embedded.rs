//! The embedded default: a private cluster under the data directory, the CLI, crash recovery.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fjord_tests::{fjord_binary, send, Server};

/// A data directory the unprivileged cluster account can reach (not under /root).
pub(crate) fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/fjord-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn fjord(args: &[&str]) -> String {
    let output = Command::new(fjord_binary())
        .args(args)
        .env("FJORD_LOG", "warn")
        .output()
        .expect("run fjord");
    assert!(
        output.status.success(),
        "fjord {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn embedded_default_survives_sigkill_during_creates() {
    crash_and_recover("crash", false);
}

/// Postgres killed hard too: a stale postmaster.pid is left, and the next start recovers.
#[test]
fn embedded_default_recovers_from_a_killed_postmaster() {
    crash_and_recover("crash-pg", true);
}

fn crash_and_recover(name: &str, kill_postgres: bool) {
    let dir = data_dir(name);
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut server = Server::start(&["--data-dir", &dir_arg]);
    let base = server.base("default");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (base, acknowledged, stop) = (base.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let body = r#"{"resourceType":"Observation","status":"final","code":{"text":"puls"},"valueQuantity":{"value":72,"unit":"/min"}}"#;
                while !stop.load(Ordering::Relaxed) {
                    let result = ureq::post(&format!("{base}/Observation"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(body);
                    match result {
                        Ok(reply) if reply.status() == 201 => {
                            let location = reply.header("location").unwrap().to_owned();
                            acknowledged.lock().unwrap().push(location);
                        }
                        // The server is gone: every later request fails too.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    // Searches and reads beside the writes: the load is mixed when the kill comes.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (base, acknowledged, stop) = (base.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let last = acknowledged.lock().unwrap().last().cloned();
                    let url = match (answered % 2, last) {
                        (0, Some(location)) => location,
                        _ => format!("{base}/Observation?code:text=puls&_count=20"),
                    };
                    match ureq::get(&url).call() {
                        Ok(reply) => assert_eq!(reply.status(), 200),
                        Err(ureq::Error::Status(status, _)) => panic!("{status} for {url}"),
                        // The server is gone.
                        Err(_) => break,
                    }
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 200 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if kill_postgres {
        let pid_file = std::fs::read_to_string(dir.join("postgres/postmaster.pid")).unwrap();
        let pid: i32 = pid_file.lines().next().unwrap().parse().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0, "no read or search was answered before the kill");
    let acknowledged = acknowledged.lock().unwrap().clone();
    if kill_postgres {
        assert!(
            dir.join("postgres/postmaster.pid").exists(),
            "a killed postmaster leaves its pid file"
        );
    }

    // The same data directory again: the cluster recovers, every acknowledged create is there.
    let restarted = Server::start(&["--data-dir", &dir_arg]);
    let base = restarted.base("default");
    for location in &acknowledged {
        let path = location.split("/fhir/default").nth(1).unwrap();
        let read = send("GET", &format!("{base}{path}"), &[], None);
        assert_eq!(read.status, 200, "{location} was acknowledged but is lost");
    }
    let created: Vec<String> = (acknowledged.iter())
        .map(|l| l.split("/fhir/default/").nth(1).unwrap())
        .map(|path| path.split("/_history").next().unwrap().to_owned())
        .collect();
    crate::faults::change_log_holds_each_once(&base, "Observation", &created);
    println!(
        "{} acknowledged creates all read back after SIGKILL, each once in the change log",
        acknowledged.len()
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_administers_tenants_and_migrates_on_the_embedded_cluster() {
    let dir = data_dir("cli");
    let dir_arg = dir.to_str().unwrap();
    assert!(fjord(&["migrate", "--data-dir", dir_arg]).contains("migrations applied"));
    assert!(fjord(&[
        "tenant",
        "create",
        "helse-vest",
        "--name",
        "Helse Vest",
        "--data-dir",
        dir_arg
    ])
    .contains("helse-vest"));
    let server = Server::start(&["--data-dir", dir_arg]);
    // A fresh embedded start has `default`; the CLI's tenant is served too.
    let body = r#"{"resourceType":"Patient","id":"a"}"#;
    for tenant in ["default", "helse-vest"] {
        let reply = send(
            "PUT",
            &format!("{}/Patient/a", server.base(tenant)),
            &[("Content-Type", "application/fhir+json")],
            Some(body),
        );
        assert_eq!(reply.status, 201, "{tenant}: {}", reply.body);
    }
    // The CLI works while the server runs (it attaches to the running cluster).
    let listed = fjord(&["tenant", "list", "--data-dir", dir_arg]);
    assert!(
        listed.contains("default") && listed.contains("helse-vest"),
        "{listed}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn authentication_is_off_only_for_the_embedded_default_on_loopback() {
    let dir = data_dir("bind");
    let server = Server::start_on("0.0.0.0:0", &["--data-dir", dir.to_str().unwrap()]);
    let reply = send(
        "GET",
        &format!("{}/Patient/x", server.base("default")),
        &[],
        None,
    );
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["issue"][0]["code"], "login");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"fjord\"")
    );
    assert_eq!(
        send("GET", &format!("{}/health/live", server.origin), &[], None).status,
        200
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory the cluster account cannot enter (a clone under /root): the cluster lives under
/// /var/lib/fjord and the data directory links to it; a restart finds the same data.
#[test]
fn data_directory_closed_to_the_cluster_account() {
    use std::os::unix::fs::PermissionsExt;
    let closed = data_dir("closed");
    std::fs::create_dir_all(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = closed.join("data");
    let dir_arg = dir.to_str().unwrap();
    let body = r#"{"resourceType":"Patient","id":"a","active":true}"#;
    let server = Server::start(&["--data-dir", dir_arg]);
    let put = send(
        "PUT",
        &format!("{}/Patient/a", server.base("default")),
        &[("Content-Type", "application/fhir+json")],
        Some(body),
    );
    assert_eq!(put.status, 201);
    drop(server);
    let link = std::fs::read_link(dir.join("postgres/cluster"));
    if nix::unistd::Uid::effective().is_root() {
        assert!(
            link.as_ref()
                .is_ok_and(|l| l.starts_with("/var/lib/fjord/clusters")),
            "{link:?}"
        );
    }
    let server = Server::start(&["--data-dir", dir_arg]);
    assert_eq!(
        send(
            "GET",
            &format!("{}/Patient/a", server.base("default")),
            &[],
            None
        )
        .status,
        200
    );
    drop(server);
    if let Ok(elsewhere) = link {
        let _ = std::fs::remove_dir_all(elsewhere);
    }
    let _ = std::fs::remove_dir_all(&closed);
}

/// A transaction of many entries, with both Fjord and its Postgres killed (SIGKILL) while it
/// runs, then restarted: its resources are all there or none are; all when it was acknowledged.
#[test]
fn a_transaction_killed_midway_is_all_or_nothing_after_restart() {
    const ENTRIES: usize = 1500;
    let dir = data_dir("crash-transaction");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let bundle = |round: usize| {
        let entries: Vec<serde_json::Value> = (0..ENTRIES)
            .map(|i| {
                serde_json::json!({
                    "resource": {
                        "resourceType": "Observation",
                        "meta": { "tag": [{ "system": "urn:crash", "code": format!("round-{round}") }] },
                        "identifier": [{ "system": "urn:crash", "value": format!("{round}-{i}") }],
                        "status": "final",
                        "code": { "text": "puls" },
                        "valueQuantity": { "value": 72, "unit": "/min" }
                    },
                    "request": { "method": "POST", "url": "Observation" }
                })
            })
            .collect();
        serde_json::json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
            .to_string()
    };
    let stored = |base: &str, round: usize| -> usize {
        let reply = send(
            "GET",
            &format!("{base}/Observation?_tag=urn:crash|round-{round}&_summary=count"),
            &[],
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["total"].as_u64().expect("a total") as usize
    };

    // How long one such transaction takes here, to kill the next ones early, midway and late.
    let mut server = Server::start(&["--data-dir", &dir_arg]);
    let started = std::time::Instant::now();
    let whole = send(
        "POST",
        &server.base("default"),
        &[("Content-Type", "application/fhir+json")],
        Some(&bundle(0)),
    );
    assert_eq!(whole.status, 200, "{}", whole.body);
    let duration = started.elapsed();
    assert_eq!(stored(&server.base("default"), 0), ENTRIES);

    let mut interrupted = 0;
    for (round, fraction) in [(1, 0.2), (2, 0.5), (3, 0.8)] {
        let base = server.base("default");
        let body = bundle(round);
        let client = std::thread::spawn(move || {
            ureq::post(&base)
                .set("Content-Type", "application/fhir+json")
                .send_string(&body)
                .map(|reply| reply.status())
                .ok()
        });
        std::thread::sleep(duration.mul_f64(fraction));
        let pid_file = std::fs::read_to_string(dir.join("postgres/postmaster.pid")).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().parse().unwrap();
        server.kill();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(postmaster),
            nix::sys::signal::Signal::SIGKILL,
        );
        let acknowledged = client.join().unwrap() == Some(200);

        server = Server::start(&["--data-dir", &dir_arg]);
        let count = stored(&server.base("default"), round);
        println!(
            "round {round}: killed after {:?} of {duration:?}, acknowledged {acknowledged}, \
             {count} of {ENTRIES} stored",
            duration.mul_f64(fraction)
        );
        if acknowledged {
            assert_eq!(count, ENTRIES, "round {round} was acknowledged");
        } else {
            interrupted += 1;
            assert!(
                count == 0 || count == ENTRIES,
                "round {round}: {count} of {ENTRIES} entries survived the crash"
            );
        }
        assert_eq!(stored(&server.base("default"), 0), ENTRIES);
    }
    // At least one kill hit a running transaction, or the test proved nothing.
    assert!(
        interrupted > 0,
        "every transaction finished before its kill"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
