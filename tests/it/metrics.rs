//! `/metrics`: every answer counted by tenant, interaction, resource type and status, and timed;
//! made-up tenants and types never become labels; validation failures, connection pools,
//! change-log followers' lag and subscription deliveries; the endpoint itself needs an
//! administration token while authentication is required.

use fjord_tests::send;
use serde_json::json;

use crate::receiver::Receiver;
use crate::smart::{load, Smart};
use crate::subscriptions::{
    created, every_observation, new_measurement, resource_status, wait_until,
};

#[test]
fn metrics_count_requests_and_validation_failures() {
    let smart = Smart::start("metrics", &[]);
    let url = format!("{}/metrics", smart.server.origin);
    let writer = smart.token("t1", "system/*.cruds", None);

    let patient = json!({ "resourceType": "Patient", "id": "p1" });
    assert_eq!(
        smart
            .call(&writer, "PUT", "/Patient/p1", Some(&patient))
            .status,
        201
    );
    for (path, status) in [
        ("/Patient/p1", 200),
        ("/Patient/p1", 200),
        ("/Patient/missing", 404),
        ("/NotAType/x", 404),
        ("/Observation?subject=Patient/p1", 200),
    ] {
        assert_eq!(
            smart.call(&writer, "GET", path, None).status,
            status,
            "{path}"
        );
    }
    // A Patient breaking pat-1 (a contact with neither details nor an organization): refused
    // under strict validation, stored under lenient.
    let breaking_pat_1 = |id: &str| json!({ "resourceType": "Patient", "id": id, "contact": [{ "gender": "male" }] });
    smart.set_t1_settings(&json!({ "validation": "strict" }));
    let refused = smart.call(&writer, "PUT", "/Patient/u1", Some(&breaking_pat_1("u1")));
    assert_eq!(refused.status, 422, "{}", refused.body);
    smart.set_t1_settings(&json!({ "validation": "lenient" }));
    let stored = smart.call(&writer, "PUT", "/Patient/u2", Some(&breaking_pat_1("u2")));
    assert_eq!(stored.status, 201, "{}", stored.body);
    let unknown_tenant = format!("{}/fhir/no-such-tenant/Patient/p1", smart.server.origin);
    assert_eq!(send("GET", &unknown_tenant, &[], None).status, 404);
    let no_token = format!("{}/Patient/p1", smart.server.base("t1"));
    assert_eq!(send("GET", &no_token, &[], None).status, 401);

    let refused = send("GET", &url, &[], None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let fhir_token = [("Authorization", format!("Bearer {writer}"))];
    let fhir_token: Vec<(&str, &str)> = fhir_token.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(send("GET", &url, &fhir_token, None).status, 401);

    let admin = format!("Bearer {}", smart.admin_token());
    let reply = send("GET", &url, &[("Authorization", &admin)], None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let text = reply.body;
    let count = |labels: &str| -> Option<u64> {
        let prefix = format!("fjord_http_requests_total{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().expect("a count"))
    };
    let request = |tenant: &str, interaction: &str, resource_type: &str, status: u16| {
        count(&format!(
            "tenant=\"{tenant}\",interaction=\"{interaction}\",resource_type=\"{resource_type}\",status=\"{status}\""
        ))
    };
    assert_eq!(request("t1", "update", "Patient", 201), Some(2), "{text}");
    assert_eq!(request("t1", "update", "Patient", 422), Some(1), "{text}");
    assert_eq!(request("t1", "read", "Patient", 200), Some(2), "{text}");
    assert_eq!(request("t1", "read", "Patient", 404), Some(1), "{text}");
    assert_eq!(request("t1", "read", "Patient", 401), Some(1), "{text}");
    assert_eq!(request("t1", "read", "", 404), Some(1), "{text}");
    assert_eq!(
        request("t1", "search-type", "Observation", 200),
        Some(1),
        "{text}"
    );
    assert_eq!(request("", "read", "Patient", 404), Some(1), "{text}");
    assert_eq!(request("", "admin", "", 201), Some(2), "{text}");
    assert_eq!(request("", "metrics", "", 401), Some(2), "{text}");
    assert!(
        !text.contains("no-such-tenant") && !text.contains("NotAType"),
        "{text}"
    );
    assert!(
        text.contains(
            "fjord_http_request_duration_seconds_count{tenant=\"t1\",interaction=\"read\"} 5\n"
        ),
        "{text}"
    );
    // The tenant's connections went back to their pool; the scrape takes none of them.
    let connections = |labels| sample(&text, "fjord_db_connections", labels);
    let idle = connections("pool=\"tenant\",state=\"idle\"").expect("tenant pool");
    assert!(idle >= 1.0, "{text}");
    assert_eq!(
        connections("pool=\"tenant\",state=\"waiting\""),
        Some(0.0),
        "{text}"
    );
    assert!(
        connections("pool=\"admin\",state=\"in_use\"").is_some(),
        "{text}"
    );
    // The scrape itself is in flight while the text is written.
    assert!(text.contains("fjord_http_requests_in_flight 1\n"), "{text}");
    assert!(
        text.contains("# TYPE fjord_http_request_duration_seconds histogram"),
        "{text}"
    );
}

/// The value of the sample `name{labels}` in a scrape, if it is there.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().expect("a number"))
}

#[test]
fn metrics_count_notifications_failures_and_pending_events() {
    let smart = Smart::start_with_env(
        "metrics-subscriptions",
        &[],
        &[
            ("FJORD_SUBSCRIPTION_MAX_FAILURES", "2"),
            ("FJORD_SUBSCRIPTION_RETRY_MS", "1500"),
        ],
    );
    let scrape = || {
        let admin = format!("Bearer {}", smart.admin_token());
        let url = format!("{}/metrics", smart.server.origin);
        let reply = send("GET", &url, &[("Authorization", &admin)], None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    };
    let writer = smart.token("t1", "system/*.cruds", None);
    load(&smart);
    let receiver = Receiver::start();
    let subscription = every_observation(&receiver.url);
    let id = created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)));
    wait_until(20, "active", || {
        resource_status(&smart, &writer, &id) == "active"
    });

    new_measurement(&smart, &writer, "m1");
    wait_until(20, "a notification", || {
        !receiver.notifications("event-notification").is_empty()
    });
    let notifications = "fjord_subscription_notifications_total";
    let delivered = "tenant=\"t1\",channel=\"rest-hook\",outcome=\"delivered\"";
    let failed = "tenant=\"t1\",channel=\"rest-hook\",outcome=\"failed\"";
    let pending = |text: &str| {
        sample(text, "fjord_subscription_events_pending", "tenant=\"t1\"").unwrap_or(0.0)
    };
    wait_until(10, "the delivery counted", || {
        sample(&scrape(), notifications, delivered) == Some(1.0)
    });
    assert_eq!(pending(&scrape()), 0.0);
    // Both followers of the change log catch up with it.
    let lag = |text: &str, consumer: &str| {
        let labels = format!("tenant=\"t1\",consumer=\"{consumer}\"");
        sample(text, "fjord_change_log_lag", &labels)
    };
    wait_until(20, "the followers caught up", || {
        let text = scrape();
        lag(&text, "subscriptions") == Some(0.0) && lag(&text, "text-index") == Some(0.0)
    });

    // The receiver goes away: the event waits (pending) through the first failure's back-off,
    // and the second failure puts the subscription in error, which no longer counts it.
    receiver.set_up(false);
    new_measurement(&smart, &writer, "m2");
    wait_until(20, "an event pending", || pending(&scrape()) == 1.0);
    wait_until(20, "error", || {
        resource_status(&smart, &writer, &id) == "error"
    });
    wait_until(10, "the gauge back to 0", || pending(&scrape()) == 0.0);
    let text = scrape();
    assert_eq!(sample(&text, notifications, failed), Some(2.0), "{text}");
    assert_eq!(sample(&text, notifications, delivered), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "fjord_subscription_errors_total", "tenant=\"t1\""),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn requests_carry_an_id_into_json_logs_and_back_to_the_client() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let dir = crate::embedded::data_dir("json-logs");
    let mut child = Command::new(fjord_tests::fjord_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database.url,
        ])
        .args(["--auth", "required", "--dev-issuer", "true", "--data-dir"])
        .arg(&dir)
        .env("FJORD_LOG", "info,sqlx=warn")
        .env("FJORD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fjord");
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().expect("stderr");
    let lines = logged.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let origin = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.strip_prefix("fjord listening on ")?;
            Some(rest.trim_end_matches("/fhir/").to_owned())
        })
        .expect("fjord listens");

    // A gateway's plain id is kept and sent back; anything else is replaced by a new one.
    let health = format!("{origin}/health/live");
    let kept = send("GET", &health, &[("X-Request-Id", "gw-77.a:1")], None);
    assert_eq!(kept.header("x-request-id"), Some("gw-77.a:1"));
    for sent in [None, Some("a b"), Some("x=forged;y")] {
        let headers: Vec<(&str, &str)> = sent.map(|id| ("X-Request-Id", id)).into_iter().collect();
        let reply = send("GET", &health, &headers, None);
        let id = reply.header("x-request-id").expect("an id");
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "a UUID: {id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
    }

    // A refused OAuth request logs inside its request's span: the line names the id.
    let admin = crate::embedded::fjord(&[
        "token",
        "--data-dir",
        dir.to_str().unwrap(),
        "--admin",
        "--audience",
        &format!("{origin}/admin"),
    ]);
    let created = send(
        "POST",
        &format!("{origin}/admin/tenants"),
        &[("Authorization", &format!("Bearer {}", admin.trim()))],
        Some(r#"{"id":"t1","name":"t1"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let token = format!("{origin}/auth/t1/token");
    let refused = send(
        "POST",
        &token,
        &[
            ("X-Request-Id", "gw-78"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some("grant_type=bogus"),
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.header("x-request-id"), Some("gw-78"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let found = (logged.lock().unwrap().iter())
            .find(|line| line.contains("an OAuth request was refused"))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line of the refusal"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(event["span"]["id"], "gw-78", "{event}");
    assert_eq!(event["span"]["name"], "request", "{event}");
    // Every line is JSON, and none carries the request's body.
    for line in logged.lock().unwrap().iter() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line}"
        );
        assert!(!line.contains("bogus"), "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an OTLP endpoint configured, the spans go to the collector: a request's span with its
/// id, the engine's interaction inside it; never a resource id, a search's values or a body.
#[test]
fn traces_are_exported_over_otlp_without_personal_identifiers() {
    let receiver = crate::receiver::Receiver::start();
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    // Its URL's path is `/notify`: the traces go there.
    let endpoint = receiver.url.clone();
    let server = fjord_tests::Server::start_with(
        "127.0.0.1:0",
        &["--database-url", &database.url],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let base = crate::add_tenant(&server, "t1");
    // A person number as a resource id, in an identifier and in a search.
    let person = "13031353453";
    let patient = format!(
        r#"{{"resourceType":"Patient","id":"{person}","identifier":[{{"system":"urn:oid:2.16.578.1.12.4.1.4.1","value":"{person}"}}],"name":[{{"family":"Tracedottir"}}]}}"#
    );
    let json = ("Content-Type", "application/fhir+json");
    let put = send(
        "PUT",
        &format!("{base}/Patient/{person}"),
        &[json, ("X-Request-Id", "otlp-put-1")],
        Some(&patient),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let conditional = send(
        "POST",
        &format!("{base}/Patient"),
        &[json, ("If-None-Exist", &format!("identifier={person}"))],
        Some(&patient),
    );
    assert_eq!(conditional.status, 200, "{}", conditional.body);
    let read = send(
        "GET",
        &format!("{base}/Patient/{person}"),
        &[("X-Request-Id", "otlp-read-1")],
        None,
    );
    assert_eq!(read.status, 200, "{}", read.body);

    // Protobuf keeps strings as they are: the exports can be searched for them.
    let exported = || -> String {
        (receiver.received().into_iter())
            .filter(|r| r.method == "POST" && r.path == "/notify")
            .map(|r| r.body)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !exported().contains("otlp-read-1") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let traces = exported();
    for expected in [
        "otlp-put-1",
        "otlp-read-1",
        "fjord",
        "request",
        "read",
        "update",
    ] {
        assert!(
            traces.contains(expected),
            "no '{expected}' in the exported spans"
        );
    }
    let sent = receiver.received();
    let export = sent.iter().find(|r| r.path == "/notify").unwrap();
    assert_eq!(
        export.header("content-type"),
        Some("application/x-protobuf")
    );
    for secret in [person, "Tracedottir"] {
        assert!(!traces.contains(secret), "'{secret}' was exported");
    }
}
