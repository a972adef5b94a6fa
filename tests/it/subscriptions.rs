//! Subscriptions against a real receiver: topic-based (R5 Backport, STU 1.1) notifications with
//! every field, classic R4 criteria, what a subscriber's token lets it see, and delivery that
//! loses nothing across a receiver outage, a SIGKILL of the server and 10,000 events.

use std::collections::BTreeMap;
use std::time::Duration;

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::receiver::{event_numbers, focuses, notification_type, status_parameter, Receiver};
use crate::smart::{load, observation, Smart, VITAL};

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const TOPICS: &str = "https://fjord.no/fhir/SubscriptionTopic/";

/// A topic-based Subscription to `topic` with these filters, payload content and channel
/// extensions.
pub(crate) fn topic_subscription(
    topic: &str,
    filters: &[&str],
    content: &str,
    endpoint: &str,
    channel: &[Value],
) -> Value {
    let filters: Vec<Value> = filters
        .iter()
        .map(|f| json!({ "url": format!("{BACKPORT}backport-filter-criteria"), "valueString": f }))
        .collect();
    let mut subscription = json!({
        "resourceType": "Subscription",
        "meta": { "profile": [format!("{BACKPORT}backport-subscription")] },
        "status": "requested",
        "reason": "test",
        "criteria": format!("{TOPICS}{topic}"),
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{BACKPORT}backport-payload-content"), "valueCode": content }] },
        },
    });
    if !filters.is_empty() {
        subscription["_criteria"] = json!({ "extension": filters });
    }
    if !channel.is_empty() {
        subscription["channel"]["extension"] = Value::Array(channel.to_vec());
    }
    subscription
}

pub(crate) fn channel_extension(name: &str, kind: &str, value: u64) -> Value {
    json!({ "url": format!("{BACKPORT}{name}"), kind: value })
}

pub(crate) fn created(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn topic_notifications_carry_every_field_of_the_backport() {
    let smart = Smart::start("subs-fields", &[]);
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let base = smart.server.base("t1");
    load(&smart);

    // Refused before they are stored: an unknown topic, a filter memory cannot decide, a
    // channel Fjord does not offer.
    for (subscription, why) in [
        (
            topic_subscription("no-such-topic", &[], "id-only", &receiver.url, &[]),
            "neither a topic",
        ),
        (
            topic_subscription(
                "dho-observation-created",
                &["patient.name=x"],
                "id-only",
                &receiver.url,
                &[],
            ),
            "cannot be matched",
        ),
        (
            topic_subscription(
                "resource-created",
                &["code=x"],
                "id-only",
                &receiver.url,
                &[],
            ),
            "name it",
        ),
        (
            {
                let mut s = topic_subscription(
                    "dho-observation-created",
                    &[],
                    "id-only",
                    &receiver.url,
                    &[],
                );
                s["channel"]["type"] = json!("email");
                s
            },
            "not offered",
        ),
    ] {
        let reply = smart.call(&writer, "POST", "/Subscription", Some(&subscription));
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert!(reply.body.contains(why), "{why}: {}", reply.body);
    }

    let subscription = {
        let mut s = topic_subscription(
            "dho-observation-created",
            &["patient=Patient/a", "Observation?category=vital-signs"],
            "full-resource",
            &receiver.url,
            &[
                channel_extension("backport-heartbeat-period", "valueUnsignedInt", 1),
                channel_extension("backport-timeout", "valueUnsignedInt", 5),
                channel_extension("backport-max-count", "valuePositiveInt", 10),
            ],
        );
        s["channel"]["header"] = json!(["Authorization: Bearer receiver-secret"]);
        s
    };
    let id = created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)));

    // The handshake: status requested, nothing yet, the configured header; then active.
    let received = receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    let handshake = &received[0];
    assert_eq!(handshake.method, "POST");
    assert_eq!(handshake.path, "/notify");
    assert_eq!(
        handshake.header("authorization"),
        Some("Bearer receiver-secret")
    );
    assert!(handshake
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    let bundle = handshake.json();
    assert_eq!(bundle["type"], "history");
    assert_eq!(
        bundle["meta"]["profile"][0],
        fjord_subscriptions::NOTIFICATION_PROFILE
    );
    assert_eq!(notification_type(&bundle).as_deref(), Some("handshake"));
    assert_eq!(
        status_parameter(&bundle, "status").unwrap()["valueCode"],
        "requested"
    );
    assert_eq!(
        status_parameter(&bundle, "events-since-subscription-start").unwrap()["valueString"],
        "0"
    );
    assert_eq!(
        status_parameter(&bundle, "subscription").unwrap()["valueReference"]["reference"],
        format!("{base}/Subscription/{id}")
    );
    assert_eq!(
        status_parameter(&bundle, "topic").unwrap()["valueCanonical"],
        format!("{TOPICS}dho-observation-created")
    );
    wait_until(10, "the subscription is active", || {
        resource_status(&smart, &writer, &id) == "active"
    });

    // b's measurement and a's laboratory result do not pass the filters; a's vital sign does.
    for (obs, patient, category) in [
        ("b-1", "b", VITAL),
        (
            "a-lab-2",
            "a",
            "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        ),
        ("a-1", "a", VITAL),
    ] {
        new_observation(&smart, &writer, obs, patient, category);
    }
    let received = receiver.wait_for(20, "the event notification", |r| {
        r.iter().any(|r| r.body.contains("event-notification"))
    });
    let notifications: Vec<Value> = received
        .iter()
        .map(|r| r.json())
        .filter(|b| notification_type(b).as_deref() == Some("event-notification"))
        .collect();
    assert_eq!(notifications.len(), 1, "one event: {notifications:?}");
    let bundle = &notifications[0];
    assert_eq!(bundle["type"], "history");
    assert_eq!(
        status_parameter(bundle, "status").unwrap()["valueCode"],
        "active"
    );
    assert_eq!(
        status_parameter(bundle, "events-since-subscription-start").unwrap()["valueString"],
        "1"
    );
    assert_eq!(event_numbers(bundle), [1]);
    assert_eq!(focuses(bundle), [format!("{base}/Observation/a-1")]);
    let event = status_parameter(bundle, "notification-event").unwrap();
    let part = |name: &str| {
        event["part"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    };
    assert!(part("timestamp").unwrap()["valueInstant"]
        .as_str()
        .unwrap()
        .contains('T'));
    assert_eq!(
        part("additional-context").unwrap()["valueReference"]["reference"],
        format!("{base}/Patient/a")
    );
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "status, focus, context: {bundle}");
    for entry in entries {
        assert!(
            entry["request"]["method"].is_string() && entry["response"]["status"].is_string(),
            "{entry}"
        );
    }
    assert_eq!(entries[0]["resource"]["resourceType"], "Parameters");
    assert_eq!(
        entries[0]["request"]["url"],
        format!("{base}/Subscription/{id}/$status")
    );
    assert_eq!(entries[1]["fullUrl"], format!("{base}/Observation/a-1"));
    assert_eq!(entries[1]["resource"]["id"], "a-1");
    assert_eq!(entries[1]["request"]["method"], "POST");
    assert_eq!(entries[1]["response"]["status"], "201");
    assert_eq!(entries[2]["resource"]["resourceType"], "Patient");
    assert_eq!(entries[2]["resource"]["id"], "a");

    // Heartbeats while nothing happens.
    receiver.wait_for(10, "a heartbeat", |r| {
        r.iter().any(|r| r.body.contains("\"heartbeat\""))
    });
    let heartbeat = receiver.notifications("heartbeat").remove(0);
    assert_eq!(
        status_parameter(&heartbeat, "events-since-subscription-start").unwrap()["valueString"],
        "1"
    );
    assert_eq!(heartbeat["entry"].as_array().unwrap().len(), 1);

    // $status, GET and POST, instance and type level.
    for (method, path) in [
        ("GET", format!("/Subscription/{id}/$status")),
        ("POST", format!("/Subscription/{id}/$status")),
        ("GET", "/Subscription/$status".to_owned()),
    ] {
        let reply = smart.call(&writer, method, &path, None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let bundle = reply.json();
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(bundle["total"], 1);
        let parameters = &bundle["entry"][0]["resource"];
        assert_eq!(
            parameters["meta"]["profile"][0],
            fjord_subscriptions::STATUS_PROFILE
        );
        let wrapped = json!({ "entry": [{ "resource": parameters }] });
        assert_eq!(notification_type(&wrapped).as_deref(), Some("query-status"));
        assert_eq!(
            status_parameter(&wrapped, "status").unwrap()["valueCode"],
            "active"
        );
        assert_eq!(
            status_parameter(&wrapped, "events-since-subscription-start").unwrap()["valueString"],
            "1"
        );
    }

    // $events replays by number, with the content asked for.
    let reply = smart.call(
        &writer,
        "GET",
        &format!(
            "/Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=1&content=id-only"
        ),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let replay = reply.json();
    assert_eq!(notification_type(&replay).as_deref(), Some("query-event"));
    assert_eq!(event_numbers(&replay), [1]);
    assert_eq!(
        replay["entry"][1]["fullUrl"],
        format!("{base}/Observation/a-1")
    );
    assert!(
        replay["entry"][1].get("resource").is_none(),
        "id-only: {replay}"
    );
    let path = format!("/Subscription/{id}/$events?content=empty");
    let empty = smart.call(&writer, "GET", &path, None).json();
    assert_eq!(event_numbers(&empty), [1]);
    assert!(focuses(&empty).is_empty(), "empty: no focus: {empty}");
    assert_eq!(empty["entry"].as_array().unwrap().len(), 1, "{empty}");
    let reply = smart.call(
        &writer,
        "GET",
        &format!("/Subscription/{id}/$events?eventsSinceNumber=x"),
        None,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);

    // The CapabilityStatement names every topic on Subscription.
    let statement = send("GET", &format!("{base}/metadata"), &[], None).json();
    let subscription = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Subscription")
        .unwrap()
        .clone();
    let topics: Vec<&str> = subscription["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["valueCanonical"].as_str())
        .collect();
    for topic in [
        "dho-observation-created",
        "dho-questionnaireresponse-completed",
        "dho-careplan-changed",
        "dho-appointment-booked",
        "dho-appointment-cancelled",
        "dho-appointment-changed",
        "resource-created",
        "resource-updated",
        "resource-deleted",
        "resource-changed",
    ] {
        assert!(
            topics.contains(&format!("{TOPICS}{topic}").as_str()),
            "{topic}: {topics:?}"
        );
    }
    let operations: Vec<&str> = subscription["operation"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(
        operations.contains(&"status") && operations.contains(&"events"),
        "{operations:?}"
    );
}

#[test]
fn topics_fire_on_their_transitions_only() {
    let smart = Smart::start("subs-topics", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let mut ids = BTreeMap::new();
    for topic in [
        "dho-questionnaireresponse-completed",
        "dho-appointment-booked",
        "dho-appointment-cancelled",
        "dho-careplan-changed",
    ] {
        let subscription = topic_subscription(
            topic,
            &[],
            "id-only",
            &format!("{}/{topic}", receiver.url),
            &[],
        );
        ids.insert(
            topic,
            created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription))),
        );
    }
    receiver.wait_for(20, "four handshakes", |r| r.len() >= 4);
    let put = |path: &str, body: Value| {
        let reply = smart.call(&writer, "PUT", path, Some(&body));
        assert!(reply.status == 200 || reply.status == 201, "{}", reply.body);
    };
    let answers = |status: &str| json!({"resourceType": "QuestionnaireResponse", "id": "qr", "status": status});
    put("/QuestionnaireResponse/qr", answers("in-progress"));
    put("/QuestionnaireResponse/qr", answers("completed"));
    put("/QuestionnaireResponse/qr", answers("completed"));
    let appointment = |status: &str| {
        json!({"resourceType": "Appointment", "id": "ap", "status": status,
        "participant": [{"actor": {"reference": "Patient/a"}, "status": "accepted"}]})
    };
    put("/Appointment/ap", appointment("booked"));
    put("/Appointment/ap", appointment("booked"));
    put("/Appointment/ap", appointment("cancelled"));
    let plan = json!({"resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan", "subject": {"reference": "Patient/a"}});
    put("/CarePlan/cp", plan.clone());
    put("/CarePlan/cp", plan);
    assert!(matches!(
        smart.call(&writer, "DELETE", "/CarePlan/cp", None).status,
        200 | 204
    ));

    // A transaction that fails stores nothing, so it raises nothing: a new plan with an
    // Observation of a patient that does not exist.
    let failing = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/a"}},
         "request": {"method": "POST", "url": "CarePlan"}},
        {"resource": observation("x", "nobody", VITAL, "8867-4"), "request": {"method": "PUT", "url": "Observation/x"}},
    ]});
    let reply = smart.call(&writer, "POST", "", Some(&failing));
    assert!(reply.status >= 400, "{}", reply.body);

    // Expected: completed once (the second completed is no transition), booked once (created
    // booked), cancelled once, the plan three times (create, update, delete), nothing of the
    // failed transaction.
    let expected = [
        ("dho-questionnaireresponse-completed", vec!["PUT"]),
        ("dho-appointment-booked", vec!["POST"]),
        ("dho-appointment-cancelled", vec!["PUT"]),
        ("dho-careplan-changed", vec!["POST", "PUT", "DELETE"]),
    ];
    for (topic, methods) in expected {
        let path = format!("/notify/{topic}");
        let received = receiver.wait_for(20, topic, |r| {
            r.iter()
                .filter(|r| r.path == path && r.body.contains("event-notification"))
                .count()
                >= methods.len()
        });
        std::thread::sleep(Duration::from_millis(500));
        let notifications: Vec<Value> = receiver
            .received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json())
            .filter(|b| notification_type(b).as_deref() == Some("event-notification"))
            .collect();
        let seen: Vec<String> = notifications
            .iter()
            .map(|b| {
                b["entry"][1]["request"]["method"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(seen, methods, "{topic}: {} requests", received.len());
        let numbers: Vec<i64> = notifications.iter().flat_map(event_numbers).collect();
        assert_eq!(
            numbers,
            (1..=methods.len() as i64).collect::<Vec<_>>(),
            "{topic}"
        );
    }
    let _ = ids;
}

#[test]
fn classic_criteria_subscriptions_post_or_put_the_new_version() {
    let smart = Smart::start("subs-classic", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let classic = |payload: Option<&str>, path: &str| {
        let mut s = json!({
            "resourceType": "Subscription", "status": "requested", "reason": "pulse",
            "criteria": "Observation?code=http://loinc.org|8867-4",
            "channel": { "type": "rest-hook", "endpoint": format!("{}/{path}", receiver.url) },
        });
        if let Some(payload) = payload {
            s["channel"]["payload"] = json!(payload);
        }
        s
    };
    let bare = created(&smart.call(
        &writer,
        "POST",
        "/Subscription",
        Some(&classic(None, "bare")),
    ));
    let full = created(&smart.call(
        &writer,
        "POST",
        "/Subscription",
        Some(&classic(Some("application/fhir+json"), "base")),
    ));
    for id in [&bare, &full] {
        wait_until(20, "classic subscriptions are active", || {
            resource_status(&smart, &writer, id) == "active"
        });
    }
    for (id, code) in [("o-1", "8867-4"), ("o-2", "8310-5")] {
        let reply = smart.call(
            &writer,
            "PUT",
            &format!("/Observation/{id}"),
            Some(&observation(id, "a", VITAL, code)),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let received = receiver.wait_for(20, "two classic notifications", |r| r.len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let received = if receiver.received().len() > received.len() {
        receiver.received()
    } else {
        received
    };
    assert_eq!(
        received.len(),
        2,
        "no handshake, one notification each: {received:?}"
    );
    let bare_hook = received.iter().find(|r| r.path == "/notify/bare").unwrap();
    assert_eq!(bare_hook.method, "POST");
    assert!(bare_hook.body.is_empty());
    let put = received
        .iter()
        .find(|r| r.path.starts_with("/notify/base"))
        .unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, "/notify/base/Observation/o-1");
    assert_eq!(put.json()["id"], "o-1");
}

#[test]
fn a_subscriber_sees_only_what_its_token_reads_in_its_tenant() {
    let smart = Smart::start("subs-scopes", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let writer_t2 = smart.token("t2", "system/*.cruds", None);
    let receiver = Receiver::start();
    // A patient app for a: it reads a's Observations only, and subscribes to every Observation.
    let app = smart.token(
        "t1",
        "patient/Observation.rs user/Subscription.cruds",
        Some("a"),
    );
    let subscription = topic_subscription(
        "resource-created",
        &["Observation?"],
        "full-resource",
        &receiver.url,
        &[],
    );
    let id = created(&smart.call(&app, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    for (obs, patient) in [("a-1", "a"), ("b-1", "b"), ("a-2", "a"), ("b-2", "b")] {
        let reply = smart.call(
            &writer,
            "PUT",
            &format!("/Observation/{obs}"),
            Some(&observation(obs, patient, VITAL, "8867-4")),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        // The same ids in the other tenant, where the token's patient means nothing.
        let other = json!({"resourceType": "Observation", "id": obs, "status": "final", "code": {"text": "puls"}});
        let reply = smart.call_in(
            "t2",
            &writer_t2,
            "PUT",
            &format!("/Observation/{obs}"),
            Some(&other),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    receiver.wait_for(20, "a's two events", |r| {
        r.iter()
            .filter(|r| r.body.contains("event-notification"))
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let notifications = receiver.notifications("event-notification");
    assert_eq!(notifications.len(), 2, "{notifications:?}");
    let base = smart.server.base("t1");
    let seen: Vec<String> = notifications.iter().flat_map(focuses).collect();
    assert_eq!(
        seen,
        [
            format!("{base}/Observation/a-1"),
            format!("{base}/Observation/a-2")
        ]
    );
    for bundle in &notifications {
        let text = bundle.to_string();
        assert!(
            !text.contains("Patient/b\"") && !text.contains("Observation/b-"),
            "{text}"
        );
    }
    let numbers: Vec<i64> = notifications.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, [1, 2]);

    // $status of another app's subscription: as if it did not exist.
    let other = smart.token("t1", "user/Subscription.cruds", None);
    let mine = smart
        .call(&other, "GET", "/Subscription/$status", None)
        .json();
    assert_eq!(
        mine["total"], 1,
        "user/Subscription.rs reads every Subscription: {mine}"
    );
    let t2 = smart.call_in(
        "t2",
        &writer_t2,
        "GET",
        &format!("/Subscription/{id}/$status"),
        None,
    );
    assert_eq!(t2.status, 404, "{}", t2.body);
}

#[test]
fn failing_deliveries_end_in_error_until_the_client_sets_the_subscription_back() {
    let smart = Smart::start_with_env(
        "subs-error",
        &[],
        &[
            ("FJORD_SUBSCRIPTION_MAX_FAILURES", "3"),
            ("FJORD_SUBSCRIPTION_RETRY_MS", "100"),
        ],
    );
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let subscription = topic_subscription(
        "resource-created",
        &["Observation?patient=a"],
        "id-only",
        &receiver.url,
        &[],
    );
    let id = created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    wait_until(10, "active", || {
        resource_status(&smart, &writer, &id) == "active"
    });

    // The receiver fails: three attempts, then error, with the reason in the resource.
    receiver.answer(503);
    let put = |obs: &str| new_measurement(&smart, &writer, obs);
    put("e-1");
    let stored = wait_for_error(&smart, &writer, &id, "503");
    let attempts = receiver
        .received()
        .iter()
        .filter(|r| r.body.contains("event-notification"))
        .count();
    assert_eq!(attempts, 3, "max failures 3");

    // In error, events keep counting and nothing is sent.
    put("e-2");
    wait_until(20, "the second event counted", || {
        let status = smart
            .call(&writer, "GET", &format!("/Subscription/{id}/$status"), None)
            .json();
        status["entry"][0]["resource"]["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "events-since-subscription-start" && p["valueString"] == "2")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.body.contains("event-notification"))
            .count(),
        3
    );
    // What was missed can be read meanwhile.
    let replay = smart
        .call(&writer, "GET", &format!("/Subscription/{id}/$events"), None)
        .json();
    assert_eq!(event_numbers(&replay), [1, 2]);
    assert_eq!(
        status_parameter(&replay, "status").unwrap()["valueCode"],
        "error"
    );

    // The receiver is back and the client sets the subscription back: handshake, then both
    // events in order.
    receiver.answer(200);
    let mut back = stored.clone();
    back["status"] = json!("requested");
    back.as_object_mut().unwrap().remove("error");
    assert_eq!(
        smart
            .call(&writer, "PUT", &format!("/Subscription/{id}"), Some(&back))
            .status,
        200
    );
    receiver.wait_for(20, "the backlog", |r| {
        r.iter()
            .filter(|r| r.body.contains("event-notification"))
            .count()
            >= 5
    });
    let delivered: Vec<Value> = receiver.received()[receiver.received().len() - 2..]
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(
        delivered.iter().flat_map(event_numbers).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        notification_type(&receiver.received()[receiver.received().len() - 3].json()).as_deref(),
        Some("handshake")
    );
    wait_until(10, "active again", || {
        resource_status(&smart, &writer, &id) == "active"
    });
}

#[test]
fn a_receiver_slower_than_the_timeout_has_failed() {
    let smart = Smart::start_with_env(
        "subs-timeout",
        &[],
        &[
            ("FJORD_SUBSCRIPTION_MAX_FAILURES", "2"),
            ("FJORD_SUBSCRIPTION_RETRY_MS", "100"),
        ],
    );
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    receiver.delay(2500);
    let timeout = [channel_extension("backport-timeout", "valueUnsignedInt", 1)];
    let subscription = topic_subscription(
        "resource-created",
        &["Observation?"],
        "id-only",
        &receiver.url,
        &timeout,
    );
    let id = created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)));
    wait_for_error(&smart, &writer, &id, "did not answer within 1 s");
    // Both attempts reached the receiver; neither was waited for.
    receiver.wait_for(10, "two handshakes", |r| r.len() >= 2);
}

#[test]
fn failing_heartbeats_count_until_the_subscription_is_in_error() {
    let smart = Smart::start_with_env(
        "subs-heartbeat-error",
        &[],
        &[
            ("FJORD_SUBSCRIPTION_MAX_FAILURES", "3"),
            ("FJORD_SUBSCRIPTION_RETRY_MS", "100"),
        ],
    );
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let heartbeat = [channel_extension(
        "backport-heartbeat-period",
        "valueUnsignedInt",
        1,
    )];
    let subscription = topic_subscription(
        "resource-created",
        &["Observation?"],
        "id-only",
        &receiver.url,
        &heartbeat,
    );
    let id = created(&smart.call(&writer, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    wait_until(10, "active", || {
        resource_status(&smart, &writer, &id) == "active"
    });
    // Idle and caught up, the worker waits in memory; each heartbeat that fails counts, so the
    // third puts the subscription in error rather than starting the count again.
    receiver.answer(503);
    wait_for_error(&smart, &writer, &id, "503");
    let heartbeats = receiver.notifications("heartbeat").len();
    assert!(
        heartbeats >= 3,
        "{heartbeats} heartbeats reached the receiver"
    );
}

#[test]
fn a_subscription_stops_when_the_token_that_made_it_is_revoked() {
    let smart = Smart::start("subs-revoke", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let receiver = Receiver::start();
    let printed = smart.cli(&["client", "add", "pega", "--secret"]);
    let secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("client secret (shown once): "))
        .expect("the secret is printed");
    let auth = format!("{}/auth/t1", smart.server.origin);
    let form = |pairs: &[(&str, &str)]| {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect();
        body.join("&")
    };
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("pega:{secret}")
        )
    );
    let headers = [
        ("Authorization", basic.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let granted = send(
        "POST",
        &format!("{auth}/token"),
        &headers,
        Some(&form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Observation.rs system/Subscription.cruds"),
        ])),
    );
    assert_eq!(granted.status, 200, "{}", granted.body);
    let token = granted.json()["access_token"].as_str().unwrap().to_owned();
    let subscription = topic_subscription(
        "resource-created",
        &["Observation?"],
        "id-only",
        &receiver.url,
        &[],
    );
    let id = created(&smart.call(&token, "POST", "/Subscription", Some(&subscription)));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    new_measurement(&smart, &writer, "r-1");
    receiver.wait_for(20, "the first event", |r| {
        r.iter().any(|r| r.body.contains("event-notification"))
    });

    let revoked = send(
        "POST",
        &format!("{auth}/revoke"),
        &headers,
        Some(&form(&[("token", &token)])),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    new_measurement(&smart, &writer, "r-2");
    wait_for_error(&smart, &writer, &id, "revoked");
    std::thread::sleep(Duration::from_secs(1));
    let events: Vec<Value> = receiver.notifications("event-notification");
    assert_eq!(
        events.iter().flat_map(focuses).count(),
        1,
        "nothing after the revocation"
    );
}

/// Stores a new vital sign `id` of patient a.
pub(crate) fn new_measurement(smart: &Smart, token: &str, id: &str) {
    new_observation(smart, token, id, "a", VITAL);
}

/// Stores a new Observation `id` (a pulse) of `patient` in `category`.
pub(crate) fn new_observation(smart: &Smart, token: &str, id: &str, patient: &str, category: &str) {
    let body = observation(id, patient, category, "8867-4");
    let reply = smart.call(token, "PUT", &format!("/Observation/{id}"), Some(&body));
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// A rest-hook subscription to every new Observation, with `id-only` content.
pub(crate) fn every_observation(endpoint: &str) -> Value {
    topic_subscription(
        "resource-created",
        &["Observation?"],
        "id-only",
        endpoint,
        &[],
    )
}

/// The status the Subscription resource says.
pub(crate) fn resource_status(smart: &Smart, token: &str, id: &str) -> String {
    let reply = smart.call(token, "GET", &format!("/Subscription/{id}"), None);
    reply.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for the Subscription to be in `error` for `reason`; the stored resource.
fn wait_for_error(smart: &Smart, token: &str, id: &str, reason: &str) -> Value {
    wait_until(20, "error", || resource_status(smart, token, id) == "error");
    let stored = smart
        .call(token, "GET", &format!("/Subscription/{id}"), None)
        .json();
    let error = stored["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{stored}");
    stored
}

pub(crate) fn wait_until(seconds: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {seconds} s for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
