//! The audit trail: an AuditEvent for every interaction, writes in their own transaction,
//! reads within a second, refusals too; searchable by audit readers, never changed, and no part
//! of the tenant's data (deletes, system history and searches go on as before).

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::receiver::Receiver;
use crate::smart::{load, observation, Smart, VITAL};
use crate::subscriptions::{created, every_observation, new_observation, wait_until};

/// The AuditEvents of t1 a search of the audit reader finds.
pub(crate) fn events(smart: &Smart, query: &str) -> Vec<Value> {
    let reader = smart.token("t1", "user/AuditEvent.rs", None);
    let reply = smart.call(
        &reader,
        "GET",
        &format!("/AuditEvent?{query}&_count=1000"),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| e["resource"].clone()).collect())
        .unwrap_or_default()
}

fn subtype(event: &Value) -> &str {
    event["subtype"][0]["code"].as_str().unwrap_or_default()
}

fn entities(event: &Value) -> Vec<&str> {
    event["entity"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["what"]["reference"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_flush() {
    std::thread::sleep(std::time::Duration::from_millis(2500));
}

#[test]
fn every_interaction_leaves_an_audit_event() {
    let smart = Smart::start("audit-trail", &[]);
    load(&smart);
    let mut request = fjord_smart::TokenRequest {
        audience: smart.server.base("t1"),
        scope: "user/*.cruds".into(),
        fhir_user: Some("Practitioner/pr".into()),
        subject: Some("kari".into()),
        client_id: Some("dho-app".into()),
        ..Default::default()
    };
    request.extra.insert("role".into(), json!("sykepleier"));
    let nurse = smart.issuer.mint(&request);

    // A write: its event is there as soon as the write is (same transaction).
    let created = smart.call(
        &nurse,
        "POST",
        "/Observation",
        Some(&observation("ignored", "a", VITAL, "8310-5")),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let written = events(&smart, "action=C&patient=Patient/a");
    let event = written
        .iter()
        .find(|e| entities(e).contains(&format!("Observation/{id}/_history/1").as_str()))
        .expect("the create's event");
    assert_eq!(subtype(event), "create");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["agent"][0]["who"]["reference"], "Practitioner/pr");
    assert_eq!(event["agent"][0]["altId"], "kari");
    assert_eq!(event["agent"][1]["who"]["identifier"]["value"], "dho-app");
    assert!(event["agent"][0]["network"]["address"].is_string());
    assert_eq!(
        event["extension"][0]["valueReference"]["reference"],
        "Patient/a"
    );

    // Fjord's events are valid R4.
    let validator = smart.token("t1", "system/AuditEvent.r", None);
    let checked = smart.call(&validator, "POST", "/AuditEvent/$validate", Some(event));
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(!checked.body.contains("\"error\""), "{}", checked.body);

    // A read and a search: within a second or so.
    assert_eq!(
        smart
            .call(&nurse, "GET", "/Observation/a-vital", None)
            .status,
        200
    );
    assert_eq!(
        smart
            .call(&nurse, "GET", "/Observation?code=8867-4", None)
            .status,
        200
    );
    // Refusals: no token, a token without the scope.
    assert_eq!(
        send(
            "GET",
            &format!("{}/Patient/b", smart.server.base("t1")),
            &[],
            None
        )
        .status,
        401
    );
    let reader = smart.token("t1", "user/Observation.rs", None);
    assert_eq!(smart.call(&reader, "GET", "/Patient/b", None).status, 403);
    let system = smart.token("t1", "system/*.rs", None);
    assert_eq!(smart.call(&system, "GET", "/Patient/a", None).status, 200);
    wait_for_flush();
    let reads = events(&smart, "action=R");
    // A Patient read names the patient, with the Norwegian profile's extension.
    assert!(reads.iter().any(|e| subtype(e) == "read"
        && entities(e).contains(&"Patient/a/_history/1")
        && e["extension"][0]["valueReference"]["reference"] == "Patient/a"));
    assert!(reads.iter().any(|e| subtype(e) == "read"
        && entities(e).contains(&"Observation/a-vital/_history/1")
        && entities(e).contains(&"Patient/a")));
    let search = reads
        .iter()
        .find(|e| subtype(e) == "search-type")
        .expect("the search's event");
    assert!(search["entity"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["query"].is_string()));
    let refused = events(&smart, "outcome=4");
    assert!(refused
        .iter()
        .any(|e| e["agent"][0]["who"]["display"] == "no valid access token"));
    assert!(refused.iter().any(|e| subtype(e) == "read"
        && e["outcomeDesc"]
            .as_str()
            .unwrap_or_default()
            .contains("Patient")));

    // A transaction that fails writes nothing, and no event claims it did.
    let before = events(&smart, "action=C").len();
    let failing = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation("t", "a", VITAL, "1"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/nobody"}}, "request": {"method": "POST", "url": "Observation"}},
        ],
    });
    assert_eq!(smart.call(&nurse, "POST", "", Some(&failing)).status, 422);
    assert_eq!(events(&smart, "action=C").len(), before);

    // A transaction for two patients leaves one event per patient, each naming only what it
    // wrote of that patient's.
    let both = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation("t", "a", VITAL, "2"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": observation("t", "b", VITAL, "3"), "request": {"method": "POST", "url": "Observation"}},
        ],
    });
    let reply = smart.call(&nurse, "POST", "", Some(&both));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let written_as: Vec<String> = reply.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["location"].as_str().unwrap().to_owned())
        .collect();
    for (patient, own, other) in [
        ("a", &written_as[0], &written_as[1]),
        ("b", &written_as[1], &written_as[0]),
    ] {
        let found = events(&smart, &format!("action=C&patient=Patient/{patient}"));
        let event = found
            .iter()
            .find(|e| entities(e).contains(&own.as_str()))
            .unwrap_or_else(|| panic!("{patient}'s part of the transaction"));
        assert_eq!(subtype(event), "create");
        assert!(!entities(event).contains(&other.as_str()), "{event}");
        assert!(!entities(event)
            .iter()
            .any(|e| e.starts_with("Patient/") && *e != format!("Patient/{patient}")));
    }

    // Immutable, even for a token that may do everything.
    let everything = smart.token("t1", "system/*.cruds", None);
    let id = written[0]["id"].as_str().unwrap();
    let mut changed = written[0].clone();
    changed["outcome"] = json!("8");
    let refuse = |reply: Reply| assert_eq!(reply.status, 405, "{}", reply.body);
    refuse(smart.call(
        &everything,
        "PUT",
        &format!("/AuditEvent/{id}"),
        Some(&changed),
    ));
    refuse(smart.call(&everything, "DELETE", &format!("/AuditEvent/{id}"), None));
    // An app with a scope to create AuditEvents may add its own; that one is fixed too.
    let own = smart.call(&everything, "POST", "/AuditEvent", Some(&changed));
    assert_eq!(own.status, 201, "{}", own.body);
    let own_id = own.json()["id"].as_str().unwrap().to_owned();
    refuse(smart.call(
        &everything,
        "DELETE",
        &format!("/AuditEvent/{own_id}"),
        None,
    ));

    // The trail holds no delete back, and system-wide history and searches leave it out.
    let deleted = smart.call(&everything, "DELETE", "/Observation/a-lab", None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let history = smart.call(&everything, "GET", "/_history?_count=1000", None);
    assert!(!history.body.contains("\"AuditEvent\""), "system history");
    let all = smart.call(&everything, "GET", "/?_count=1000", None);
    assert!(!all.body.contains("\"AuditEvent\""), "system search");
    let named = smart.call(&everything, "GET", "/?_type=AuditEvent&_count=1", None);
    assert!(named.body.contains("\"AuditEvent\""), "asked for by name");

    // The full-text index leaves the trail out, and says so.
    let text = smart.call(&everything, "GET", "/AuditEvent?_content=Observation", None);
    assert_eq!(text.status, 400, "{}", text.body);

    // A patient's token finds the events of its own patient only, and no other patient in
    // them: the searches above found both patients' events, and their events are written by
    // now, one per patient.
    wait_for_flush();
    let patient_a = smart.token("t1", "patient/*.rs", Some("a"));
    let reply = smart.call(&patient_a, "GET", "/AuditEvent?_count=1000", None);
    assert_eq!(reply.status, 200);
    let own = reply.json()["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!own.is_empty());
    assert!(!reply.body.contains("Patient/b\""), "{}", reply.body);
}

/// Reads of one patient's resources by one actor between two flushes are one event, naming
/// each version read once and the period the reads took place in; another actor's reads, or
/// another patient's resources, are events of their own.
#[test]
fn reads_of_a_patient_by_an_actor_are_one_event() {
    let smart = Smart::start("audit-reads", &[]);
    load(&smart);
    let user = |subject: &str| {
        smart.issuer.mint(&fjord_smart::TokenRequest {
            audience: smart.server.base("t1"),
            scope: "user/*.rs".into(),
            fhir_user: Some("Practitioner/pr".into()),
            subject: Some(subject.into()),
            client_id: Some("dho-app".into()),
            ..Default::default()
        })
    };
    let (kari, ola) = (user("kari"), user("ola"));
    let read = |token: &str, path: &str| {
        let reply = smart.call(token, "GET", path, None);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    };
    let of_a = [
        "Patient/a/_history/1",
        "Observation/a-vital/_history/1",
        "Observation/a-lab/_history/1",
    ];
    for _ in 0..3 {
        for entity in of_a {
            read(
                &kari,
                &format!("/{}", entity.trim_end_matches("/_history/1")),
            );
        }
    }
    read(&kari, "/Observation/b-vital");
    read(&ola, "/Observation/a-vital");
    wait_for_flush();

    let reads = events(&smart, "action=R");
    let by = |subject: &str, patient: &str| -> Vec<Value> {
        reads
            .iter()
            .filter(|e| subtype(e) == "read" && e["agent"][0]["altId"] == subject)
            .filter(|e| entities(e).contains(&patient))
            .cloned()
            .collect()
    };
    let karis = by("kari", "Patient/a");
    // Nine reads in a few milliseconds: one event, or two if a flush fell between them.
    assert!(
        (1..=2).contains(&karis.len()),
        "{} events: {karis:?}",
        karis.len()
    );
    let mut named: Vec<&str> = karis.iter().flat_map(entities).collect();
    let total = named.len();
    named.sort_unstable();
    named.dedup();
    assert_eq!(named.len(), total, "a version named twice in one event");
    for entity in of_a {
        assert!(named.contains(&entity), "{entity} in {karis:?}");
    }
    assert!(!named.contains(&"Observation/b-vital/_history/1"));
    let merged = karis
        .iter()
        .max_by_key(|e| entities(e).len())
        .expect("an event");
    assert!(entities(merged).len() >= 3, "{merged}");
    let period = &merged["period"];
    assert!(
        period["start"].as_str() <= period["end"].as_str(),
        "{merged}"
    );
    assert_eq!(period["end"], merged["recorded"]);

    // Another patient's resource, another actor: events of their own.
    let b = by("kari", "Patient/b");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(
        entities(&b[0]),
        ["Observation/b-vital/_history/1", "Patient/b"]
    );
    let olas = by("ola", "Patient/a");
    assert_eq!(olas.len(), 1, "{olas:?}");
    assert_eq!(
        entities(&olas[0]),
        ["Observation/a-vital/_history/1", "Patient/a"]
    );

    let validator = smart.token("t1", "system/AuditEvent.r", None);
    let checked = smart.call(&validator, "POST", "/AuditEvent/$validate", Some(merged));
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(!checked.body.contains("\"error\""), "{}", checked.body);
}

/// A notification is a disclosure: those that carry events leave an AuditEvent (DICOM Export)
/// naming the subscription, what they carried, the patients and the endpoint's origin, with the
/// subscriber's user as the agent. A subscription's notifications within a few seconds are one
/// event, its `period` the time they went in; one that failed is an event of its own, at once,
/// and says why. Handshakes and heartbeats carry nothing and leave none.
#[test]
fn notifications_leave_audit_events() {
    let smart = Smart::start("audit-notifications", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let app = smart.issuer.mint(&fjord_smart::TokenRequest {
        audience: smart.server.base("t1"),
        scope: "patient/Observation.rs user/Subscription.cruds".into(),
        patient: Some("a".into()),
        fhir_user: Some("Patient/a".into()),
        subject: Some("ola".into()),
        client_id: Some("dho-app".into()),
        ..Default::default()
    });
    let receiver = Receiver::start();
    // The endpoint carries a secret in its user part and its query; the trail keeps neither.
    let endpoint = receiver.url.replacen("http://", "http://hook:s3cret@", 1) + "?key=s3cret";
    let origin = receiver.url.trim_end_matches("/notify").to_owned();
    let subscription = every_observation(&endpoint);
    let id = created(&smart.call(&app, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    for (obs, patient) in [("a-n1", "a"), ("b-n1", "b")] {
        new_observation(&smart, &writer, obs, patient, VITAL);
    }
    receiver.wait_for(20, "a's event", |r| {
        r.iter().any(|r| r.body.contains("event-notification"))
    });
    new_observation(&smart, &writer, "a-n3", "a", VITAL);
    receiver.wait_for(20, "a's second event", |r| {
        r.iter()
            .filter(|r| r.body.contains("event-notification"))
            .count()
            == 2
    });
    // The receiver goes down: the next notification fails, and says so.
    receiver.set_up(false);
    new_observation(&smart, &writer, "a-n2", "a", VITAL);
    let export = "type=http://dicom.nema.org/resources/ontology/DCM|110106";
    let query = format!("{export}&entity=Subscription/{id}");
    wait_until(20, "the failed notification's event", || {
        events(&smart, &query).iter().any(|e| e["outcome"] == "4")
    });
    // The two delivered notifications' event comes when their window closes.
    wait_until(30, "the delivered notifications' event", || {
        events(&smart, &query).iter().any(|e| e["outcome"] == "0")
    });
    wait_for_flush();

    let exports = events(&smart, &query);
    let delivered: Vec<&Value> = exports.iter().filter(|e| e["outcome"] == "0").collect();
    assert_eq!(
        delivered.len(),
        1,
        "one event for a's two notifications, none for the handshake: {exports:?}"
    );
    let event = delivered[0];
    assert_eq!(event["action"], "R");
    assert!(event.get("subtype").is_none(), "{event}");
    assert_eq!(
        entities(event),
        [
            format!("Subscription/{id}").as_str(),
            "Observation/a-n1/_history/1",
            "Observation/a-n3/_history/1",
            "Patient/a"
        ]
    );
    let (start, end) = (
        event["period"]["start"].as_str().unwrap_or_default(),
        event["period"]["end"].as_str().unwrap_or_default(),
    );
    assert!(!start.is_empty() && start <= end, "{event}");
    assert!(
        end <= event["recorded"].as_str().unwrap_or_default(),
        "{event}"
    );
    assert_eq!(event["entity"][0]["role"]["code"], "9", "the subscriber");
    assert_eq!(
        event["extension"][0]["valueReference"]["reference"],
        "Patient/a"
    );
    assert_eq!(event["agent"][0]["who"]["reference"], "Patient/a");
    assert_eq!(event["agent"][0]["altId"], "ola");
    assert_eq!(event["agent"][1]["who"]["identifier"]["value"], "dho-app");
    assert_eq!(event["agent"][2]["network"]["address"], origin.as_str());
    assert!(!event.to_string().contains("s3cret"), "{event}");
    let validator = smart.token("t1", "system/AuditEvent.r", None);
    let checked = smart.call(&validator, "POST", "/AuditEvent/$validate", Some(event));
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(!checked.body.contains("\"error\""), "{}", checked.body);

    let failed = exports
        .iter()
        .find(|e| e["outcome"] == "4")
        .expect("the failed notification");
    assert!(entities(failed).contains(&"Observation/a-n2/_history/1"));
    let why = failed["outcomeDesc"].as_str().unwrap_or_default();
    assert!(why.contains("endpoint"), "{failed}");
    // Patient b's Observation was never sent, and no event says it was.
    assert!(
        exports
            .iter()
            .all(|e| !entities(e).contains(&"Observation/b-n1/_history/1")),
        "{exports:?}"
    );
    // A's own audit view finds what was sent about a.
    assert!(!events(&smart, &format!("{export}&patient=Patient/a")).is_empty());
}

/// A shutdown records the notifications whose window is still open: nothing sent goes
/// unrecorded because the server stopped.
#[test]
fn a_shutdown_records_the_notifications_not_yet_audited() {
    let mut smart = Smart::start("audit-notifications-shutdown", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let subscriber = smart.token(
        "t1",
        "system/Observation.rs system/Subscription.cruds",
        None,
    );
    let receiver = Receiver::start();
    let subscription = every_observation(&receiver.url);
    let id = created(&smart.call(&subscriber, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    new_observation(&smart, &writer, "a-s1", "a", VITAL);
    receiver.wait_for(20, "the event", |r| {
        r.iter().any(|r| r.body.contains("event-notification"))
    });
    // Well within the notification's 10 s window.
    smart.restart();
    let query = format!(
        "type=http://dicom.nema.org/resources/ontology/DCM|110106&entity=Subscription/{id}"
    );
    let exports = events(&smart, &query);
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert!(
        entities(&exports[0]).contains(&"Observation/a-s1/_history/1"),
        "{exports:?}"
    );
}
