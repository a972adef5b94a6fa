//! Bulk import (`fjord import`): NDJSON with ids kept, indexed in the same pass, idempotent, and
//! per-line errors reported with their line numbers while the other lines are stored.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fjord_tests::{fjord_binary, send, Server};
use serde_json::json;

/// `fjord ARGS`: whether it succeeded, its stdout and its stderr.
fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(fjord_binary())
        .args(args)
        .env("FJORD_LOG", "warn")
        .output()
        .expect("run fjord");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `Type\tcount` lines `fjord generate` prints.
fn generated(out: &Path) -> BTreeMap<String, usize> {
    let (ok, stdout, stderr) = run(&[
        "generate",
        "--patients",
        "5",
        "--months",
        "1",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    stdout
        .lines()
        .filter_map(|line| {
            let (kind, count) = line.split_once('\t')?;
            Some((kind.to_owned(), count.parse().ok()?))
        })
        .collect()
}

#[test]
fn import_stores_ndjson_once_and_reports_bad_lines_by_number() {
    let dir = crate::embedded::data_dir("import");
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let input = dir.join("input");
    let mut counts = generated(&input);
    let generated_total: usize = counts.values().sum();
    let bad = [
        json!({ "resourceType": "Patient", "id": "extra-1", "active": true }).to_string(),
        "{ not json".to_owned(),
        json!({ "resourceType": "Patient", "active": true }).to_string(),
        json!({
            "resourceType": "Observation", "id": "temporary", "status": "final",
            "code": { "text": "x" }, "subject": { "reference": "urn:uuid:8f0c1d0e-0000-4000-8000-000000000001" },
        })
        .to_string(),
        String::new(),
        json!({ "resourceType": "Nonsense", "id": "n" }).to_string(),
        json!({
            "resourceType": "Subscription", "id": "s", "status": "requested", "reason": "r",
            "criteria": "Observation?", "channel": { "type": "rest-hook", "endpoint": "http://localhost/" },
        })
        .to_string(),
        json!({ "resourceType": "Patient", "id": "extra-2", "gender": "female" }).to_string(),
    ];
    // Named to sort last: the generated files come first.
    std::fs::write(input.join("zz-extra.ndjson"), bad.join("\n") + "\n").unwrap();
    *counts.entry("Patient".into()).or_default() += 2;

    let import = || run(&["import", input.to_str().unwrap(), "--data-dir", data_arg]);
    let (ok, stdout, stderr) = import();
    assert!(!ok, "five lines fail: {stdout}");
    let lines = 7 + generated_total;
    assert!(
        stdout.contains(&format!("{lines} lines in",))
            && stdout.contains(&format!(
                "{} created, 0 updated, 0 unchanged, 5 failed",
                generated_total + 2
            )),
        "{stdout}"
    );
    let file = input.join("zz-extra.ndjson");
    let file = file.display();
    for expected in [
        format!("{file}:2: invalid resource"),
        format!("{file}:3: a Patient without an id"),
        format!("{file}:4: Observation/temporary: Observation.subject refers to urn:uuid:"),
        format!("{file}:6: invalid resource"),
        format!("{file}:7: Subscription/s: Subscriptions are not imported"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
    assert_eq!(stderr.matches(&format!("{file}:")).count(), 5, "{stderr}");

    // Again: nothing changes.
    let (_, again, _) = import();
    assert!(
        again.contains(&format!(
            "0 created, 0 updated, {} unchanged, 5 failed",
            generated_total + 2
        )),
        "{again}"
    );
    // One resource changed: one new version. One named twice: stored in line order.
    let changed = dir.join("changed.ndjson");
    let lines = [
        json!({ "resourceType": "Patient", "id": "extra-3", "gender": "male" }),
        json!({ "resourceType": "Patient", "id": "extra-1", "active": false }),
        json!({ "resourceType": "Patient", "id": "extra-3", "gender": "other" }),
    ];
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&changed, lines.join("\n")).unwrap();
    *counts.entry("Patient".into()).or_default() += 1;
    let (ok, changed_out, stderr) =
        run(&["import", changed.to_str().unwrap(), "--data-dir", data_arg]);
    assert!(ok, "{stderr}");
    assert!(
        changed_out.contains("1 created, 2 updated, 0 unchanged, 0 failed"),
        "{changed_out}"
    );

    let server = Server::start(&["--data-dir", data_arg]);
    let base = server.base("default");
    let total = |query: &str| {
        let reply = send("GET", &format!("{base}/{query}"), &[], None);
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        reply.json()["total"].as_u64().unwrap() as usize
    };
    for (kind, count) in &counts {
        assert_eq!(total(&format!("{kind}?_summary=count")), *count, "{kind}");
    }
    // Indexed as written: searches by reference, token and date find exactly what the input
    // holds.
    let observations: Vec<serde_json::Value> =
        std::fs::read_to_string(input.join("Observation.ndjson"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|o: &serde_json::Value| o["subject"]["reference"] == "Patient/s3-pat-0")
            .collect();
    let coding = &observations[0]["code"]["coding"][0];
    let (system, code) = (
        coding["system"].as_str().unwrap(),
        coding["code"].as_str().unwrap(),
    );
    let with_code = observations
        .iter()
        .filter(|o| {
            o["code"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["code"] == code)
        })
        .count();
    assert!(with_code < observations.len(), "{with_code}");
    let by_subject = "Observation?subject=Patient/s3-pat-0&_summary=count";
    assert_eq!(total(by_subject), observations.len());
    assert_eq!(
        total(&format!("{by_subject}&code={system}%7C{code}")),
        with_code
    );
    let day = &observations[0]["effectiveDateTime"].as_str().unwrap()[..10];
    let on_day = observations
        .iter()
        .filter(|o| {
            o["effectiveDateTime"]
                .as_str()
                .is_some_and(|d| d.starts_with(day))
        })
        .count();
    assert_eq!(total(&format!("{by_subject}&date={day}")), on_day);
    assert_eq!(total("Patient?gender=female&_id=extra-2&_summary=count"), 1);
    assert_eq!(total("Patient?gender=other&_id=extra-3&_summary=count"), 1);
    let history = send(
        "GET",
        &format!("{base}/Patient/extra-1/_history"),
        &[],
        None,
    );
    assert_eq!(
        history.json()["entry"].as_array().map(Vec::len),
        Some(2),
        "{}",
        history.body
    );
    let current = send("GET", &format!("{base}/Patient/extra-1"), &[], None);
    assert_eq!(current.json()["active"], false);
    // The audit trail: imports are DICOM Import events by the local account, naming what they
    // stored (and nothing for the run that changed nothing).
    let imports = "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110107";
    let events = total(&format!("{imports}&_summary=count"));
    assert!(events >= 2, "{events}");
    assert_eq!(
        total(&format!("{imports}&entity=Patient/extra-1&_summary=count")),
        2
    );
    assert_eq!(
        total(&format!(
            "{imports}&agent-name=command%20line&_summary=count"
        )),
        events
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `$import`: an NDJSON body imported in the background; its client polls for progress and the
/// outcome (counts, failed lines by number), nobody else sees it, and each line is stored only
/// as the client's grant allows.
#[test]
fn import_operation_runs_in_the_background_for_its_client_only() {
    let smart = crate::smart::Smart::start("import-op", &[]);
    let base = smart.server.base("t1");
    let token = |client: &str, scope: &str| {
        smart.issuer.mint(&fjord_smart::TokenRequest {
            audience: base.clone(),
            scope: scope.into(),
            client_id: Some(client.into()),
            ..Default::default()
        })
    };
    let writer = token("loader", "system/Patient.cu system/Observation.cu");
    let other = token("someone-else", "system/*.cruds");
    let post = |token: &str, body: &str, content_type: &str| {
        let bearer = format!("Bearer {token}");
        send(
            "POST",
            &format!("{base}/$import"),
            &[("Authorization", &bearer), ("Content-Type", content_type)],
            Some(body),
        )
    };
    let patients = (0..2_500).map(|i| json!({ "resourceType": "Patient", "id": format!("imp-{i}"), "birthDate": "1950-01-01" }));
    let mut lines: Vec<String> = patients.map(|p| p.to_string()).collect();
    // Line 2,501: a type the token may not write; 2,502: not JSON.
    lines.push(json!({ "resourceType": "Practitioner", "id": "pr-1" }).to_string());
    lines.push("{".into());
    let body = lines.join("\n");

    let refused = post(&writer, &body, "application/fhir+json");
    assert_eq!(refused.status, 415, "{}", refused.body);
    let started = post(&writer, &body, "application/fhir+ndjson");
    assert_eq!(started.status, 202, "{}", started.body);
    let status_url = started.header("Content-Location").unwrap().to_owned();
    assert!(
        status_url.starts_with(&format!("{base}/$import/")),
        "{status_url}"
    );
    // Another client of the tenant neither sees nor cancels it.
    assert_eq!(at("GET", &status_url, &other).status, 404);
    assert_eq!(at("DELETE", &status_url, &other).status, 404);
    let (done, progress) = finished(&status_url, &writer);
    assert!(
        progress.iter().all(|p| p.ends_with("of 2502 lines")),
        "{progress:?}"
    );
    let issues = done["issue"].as_array().unwrap();
    assert_eq!(
        issues[0]["diagnostics"],
        "2502 lines: 2500 created, 0 updated, 0 unchanged, 2 failed"
    );
    assert_eq!(issues.len(), 3, "{done}");
    assert_eq!(issues[1]["location"][0], "line 2501");
    assert!(
        issues[1]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("Practitioner/pr-1: "),
        "{done}"
    );
    assert_eq!(issues[2]["location"][0], "line 2502");
    let count = smart.call(
        &other,
        "GET",
        "/Patient?birthdate=1950-01-01&_summary=count",
        None,
    );
    assert_eq!(count.json()["total"], 2500, "{}", count.body);
    assert_eq!(
        smart.call(&other, "GET", "/Practitioner/pr-1", None).status,
        404
    );

    // Done with it: forgotten.
    assert_eq!(at("DELETE", &status_url, &writer).status, 202);
    assert_eq!(at("GET", &status_url, &writer).status, 404);
    // Again: nothing changes.
    let again = post(&writer, &body, "application/fhir+ndjson");
    let (outcome, _) = finished(again.header("Content-Location").unwrap(), &writer);
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "2502 lines: 0 created, 0 updated, 2500 unchanged, 2 failed"
    );
    // Cancelled while it runs (or just after): forgotten at once.
    let more: Vec<String> = (0..5_000)
        .map(|i| json!({ "resourceType": "Patient", "id": format!("more-{i}") }).to_string())
        .collect();
    let started = post(&writer, &more.join("\n"), "application/x-ndjson");
    let status_url = started.header("Content-Location").unwrap().to_owned();
    assert_eq!(at("DELETE", &status_url, &writer).status, 202);
    assert_eq!(at("GET", &status_url, &writer).status, 404);
    // The tenant's JSON depth limit holds for imported lines too.
    smart.set_t1_settings(&json!({"limits": {"maxJsonDepth": 12}}));
    let mut extension = json!({"url": "http://example.org/leaf", "valueString": "x"});
    for _ in 0..8 {
        extension = json!({"url": "http://example.org/nested", "extension": [extension]});
    }
    let deep = json!({"resourceType": "Patient", "id": "deep", "extension": [extension]});
    let shallow = json!({"resourceType": "Patient", "id": "shallow"});
    let body = format!("{deep}\n{shallow}");
    let started = post(&writer, &body, "application/fhir+ndjson");
    let (outcome, _) = finished(started.header("Content-Location").unwrap(), &writer);
    assert_eq!(
        outcome["issue"][0]["diagnostics"], "2 lines: 1 created, 0 updated, 0 unchanged, 1 failed",
        "{outcome}"
    );
    assert_eq!(outcome["issue"][1]["location"][0], "line 1");
    assert!(
        outcome["issue"][1]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("deep"),
        "{outcome}"
    );
    // The CapabilityStatement offers it.
    let metadata = send("GET", &format!("{base}/metadata"), &[], None).json();
    let operations = metadata["rest"][0]["operation"].as_array().unwrap();
    assert!(
        operations.iter().any(|o| o["name"] == "import"),
        "{operations:?}"
    );
}

/// `method` on a job's status URL with a bearer token.
pub(crate) fn at(method: &str, url: &str, token: &str) -> fjord_tests::Reply {
    send(
        method,
        url,
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
}

/// Polls a job until it is done: its outcome, and the progress it reported meanwhile.
pub(crate) fn finished(url: &str, token: &str) -> (serde_json::Value, Vec<String>) {
    let mut progress = Vec::new();
    loop {
        let reply = at("GET", url, token);
        match reply.status {
            202 => {
                assert_eq!(reply.header("Retry-After"), Some("1"));
                progress.push(reply.header("X-Progress").unwrap().to_owned());
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            200 => return (reply.json(), progress),
            status => panic!("{status}: {}", reply.body),
        }
    }
}
