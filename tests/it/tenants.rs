//! Tenant administration through `/admin` and the `fjord tenant` command: rename, suspend
//! (requests refused with 503, data kept) and resume, taking effect without a restart.

use std::time::{Duration, Instant};

use fjord_tests::{fjord_binary, send, Reply};
use serde_json::json;

use crate::add_tenant;

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

fn change(origin: &str, tenant: &str, body: &str) -> Reply {
    send(
        "PATCH",
        &format!("{origin}/admin/tenants/{tenant}"),
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

#[test]
fn a_suspended_tenant_is_refused_until_resumed_and_keeps_its_data() {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = fjord_tests::Server::start(&["--database-url", &database.url]);
    let base = add_tenant(&server, "t1");
    let other = add_tenant(&server, "t2");
    let body = json!({ "resourceType": "Patient", "id": "p1", "active": true }).to_string();
    for base in [&base, &other] {
        let stored = send("PUT", &format!("{base}/Patient/p1"), &[JSON], Some(&body));
        assert_eq!(stored.status, 201, "{}", stored.body);
    }

    for bad in [
        r#"{"status":"closed"}"#,
        r#"{"id":"t9"}"#,
        r#"{"name":" "}"#,
    ] {
        let refused = change(&server.origin, "t1", bad);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    assert_eq!(change(&server.origin, "nobody", "{}").status, 404);

    let renamed = change(&server.origin, "t1", r#"{"name":"Helse Bergen HF"}"#);
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.json()["name"], "Helse Bergen HF");
    assert_eq!(renamed.json()["status"], "active");

    let suspended = change(&server.origin, "t1", r#"{"status":"suspended"}"#);
    assert_eq!(suspended.status, 200, "{}", suspended.body);
    assert_eq!(suspended.json()["status"], "suspended");
    assert!(suspended.json()["suspendedAt"].is_string());
    for (method, path, body) in [
        ("GET", "/Patient/p1", None),
        ("GET", "/Patient?active=true", None),
        ("GET", "/metadata", None),
        ("GET", "/.well-known/smart-configuration", None),
        ("PUT", "/Patient/p1", Some(body.as_str())),
    ] {
        let refused = send(method, &format!("{base}{path}"), &[JSON], body);
        assert_eq!(refused.status, 503, "{method} {path}: {}", refused.body);
        if path != "/.well-known/smart-configuration" {
            let outcome = refused.json();
            assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
            assert_eq!(outcome["issue"][0]["code"], "suspended", "{outcome}");
        }
    }
    // Other tenants go on, and the administrator still sees the suspended one.
    assert_eq!(
        send("GET", &format!("{other}/Patient/p1"), &[], None).status,
        200
    );
    let listed = send(
        "GET",
        &format!("{}/admin/tenants", server.origin),
        &[],
        None,
    )
    .json();
    let t1 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "t1")
        .cloned()
        .unwrap();
    assert_eq!(t1["status"], "suspended");

    let resumed = change(&server.origin, "t1", r#"{"status":"active"}"#);
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let read = send("GET", &format!("{base}/Patient/p1"), &[], None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["meta"]["versionId"], "1");
    assert_eq!(read.json()["active"], true);

    // The command line changes the same rows; a running server follows within seconds.
    let fjord = |args: &[&str]| {
        let out = std::process::Command::new(fjord_binary())
            .args(["tenant"])
            .args(args)
            .args(["--database-url", &database.url])
            .env("FJORD_LOG", "warn")
            .output()
            .expect("fjord tenant");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    fjord(&["suspend", "t1"]);
    assert!(fjord(&["list"]).contains("t1\tHelse Bergen HF\tsuspended"));
    let status_within = |wanted: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = send("GET", &format!("{base}/Patient/p1"), &[], None).status;
            if status == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "still {status}, not {wanted}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    status_within(503);
    fjord(&["resume", "t1"]);
    fjord(&["rename", "t1", "Helse Vest IKT"]);
    status_within(200);
    let shown = send(
        "GET",
        &format!("{}/admin/tenants/t1", server.origin),
        &[],
        None,
    )
    .json();
    assert_eq!(shown["name"], "Helse Vest IKT");

    // Settings from the command line: checked as the API checks them, followed by the server.
    let settings_file = std::env::temp_dir().join(format!("fjord-settings-{}", std::process::id()));
    std::fs::write(
        &settings_file,
        r#"{"requireIfMatch": true, "limits": {"maxBodyBytes": 0}}"#,
    )
    .unwrap();
    let refused = std::process::Command::new(fjord_binary())
        .args(["tenant", "settings", "t1", "--set"])
        .arg(&settings_file)
        .args(["--database-url", &database.url])
        .env("FJORD_LOG", "warn")
        .output()
        .expect("fjord tenant settings");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("limits"),
        "{refused:?}"
    );
    std::fs::write(&settings_file, r#"{"requireIfMatch": true}"#).unwrap();
    let set = fjord(&["settings", "t1", "--set", settings_file.to_str().unwrap()]);
    let set: serde_json::Value = serde_json::from_str(&set).expect("the settings as JSON");
    assert_eq!(set["requireIfMatch"], true);
    let _ = std::fs::remove_file(&settings_file);
    let shown: serde_json::Value = serde_json::from_str(&fjord(&["settings", "t1"])).unwrap();
    assert_eq!(shown, set);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let put = send("PUT", &format!("{base}/Patient/p1"), &[JSON], Some(&body));
        if put.status == 400 {
            assert!(put.body.contains("If-Match"), "{}", put.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "If-Match still not required: {}",
            put.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_client_past_its_rate_limit_is_answered_429_by_tenant_and_address() {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = fjord_tests::Server::start_with(
        "127.0.0.1:0",
        &["--database-url", &database.url],
        &[
            ("FJORD_RATE_LIMIT_PER_SECOND", "2"),
            ("FJORD_RATE_LIMIT_BURST", "5"),
            // Clients told apart by the addresses this proxy (the test) forwards.
            ("FJORD_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let limited = add_tenant(&server, "t1");
    let own = add_tenant(&server, "t2");
    let settings = |tenant: &str, body: serde_json::Value| {
        send(
            "PUT",
            &format!("{}/admin/tenants/{tenant}/settings", server.origin),
            &[("Content-Type", "application/json")],
            Some(&body.to_string()),
        )
    };
    let refused = settings("t2", json!({ "rateLimit": { "perSecond": 0, "burst": 5 } }));
    assert_eq!(refused.status, 400, "{}", refused.body);
    let stored = settings(
        "t2",
        json!({ "rateLimit": { "perSecond": 1000, "burst": 1000 } }),
    );
    assert_eq!(stored.status, 200, "{}", stored.body);

    let read = |base: &str, client: &str| {
        send(
            "GET",
            &format!("{base}/Patient?_count=1"),
            &[("X-Forwarded-For", client)],
            None,
        )
    };
    for n in 0..5 {
        let reply = read(&limited, "203.0.113.1");
        assert_eq!(reply.status, 200, "request {n}: {}", reply.body);
    }
    let throttled = read(&limited, "203.0.113.1");
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert_eq!(throttled.json()["issue"][0]["code"], "throttled");
    let wait: u64 = throttled
        .header("Retry-After")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&wait), "{wait}");
    // Another client, and the same client at a tenant with a limit of its own, go on.
    assert_eq!(read(&limited, "203.0.113.2").status, 200);
    for _ in 0..20 {
        assert_eq!(read(&own, "203.0.113.1").status, 200);
    }
    // Administration and health checks are not limited.
    for _ in 0..10 {
        let ready = send("GET", &format!("{}/health/ready", server.origin), &[], None);
        assert_eq!(ready.status, 200);
    }
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(read(&limited, "203.0.113.1").status, 200);
}
