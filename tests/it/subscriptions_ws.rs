//! Subscriptions over a websocket: binding with a token from `$get-ws-binding-token`, the
//! handshake, events that waited for the connection, heartbeats, pings; classic R4's
//! `bind`/`ping`; tokens confined to their tenant.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::receiver::{event_numbers, focuses, notification_type, status_parameter};
use crate::smart::{load, observation, Smart, VITAL};
use crate::subscriptions::{new_measurement, resource_status, wait_until};

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(url: &str) -> Socket {
    let (socket, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    socket
}

/// The next text message (answering protocol pings on the way).
fn next_text(socket: &mut Socket) -> String {
    loop {
        match socket.read().expect("a message within 20 s") {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next notification of `kind`, skipping others (heartbeats).
fn next_notification(socket: &mut Socket, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no {kind} within 20 s");
        let bundle: Value = serde_json::from_str(&next_text(socket)).unwrap();
        if notification_type(&bundle).as_deref() == Some(kind) {
            return bundle;
        }
    }
}

fn wait_active(smart: &Smart, token: &str, id: &str) {
    wait_until(20, "active", || {
        resource_status(smart, token, id) == "active"
    });
}

#[test]
fn websocket_subscriptions_bind_with_a_token_and_get_every_event() {
    let smart = Smart::start("subs-ws", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let subscription = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "app",
        "criteria": "https://fjord.no/fhir/SubscriptionTopic/dho-observation-created",
        "_criteria": { "extension": [{ "url": format!("{BACKPORT}backport-filter-criteria"), "valueString": "patient=Patient/a" }] },
        "channel": {
            "type": "websocket", "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{BACKPORT}backport-payload-content"), "valueCode": "id-only" }] },
            "extension": [{ "url": format!("{BACKPORT}backport-heartbeat-period"), "valueUnsignedInt": 1 }],
        },
    });
    let reply = smart.call(&writer, "POST", "/Subscription", Some(&subscription));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    wait_active(&smart, &writer, &id);

    // An event before any connection waits for one.
    let put = |obs: &str| new_measurement(&smart, &writer, obs);
    put("w-1");

    let reply = smart.call(
        &writer,
        "GET",
        &format!("/Subscription/{id}/$get-ws-binding-token"),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let parameters = reply.json();
    let parameter = |name: &str| {
        parameters["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {parameters}"))
    };
    let token = parameter("token")["valueString"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = parameter("websocket-url")["valueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(parameter("subscription")["valueString"], id.as_str());
    assert!(parameter("expiration")["valueDateTime"]
        .as_str()
        .unwrap()
        .contains('T'));
    assert_eq!(
        url,
        format!(
            "{}/$subscription-websocket",
            smart.server.base("t1").replacen("http", "ws", 1)
        )
    );

    // A wrong token binds nothing; the right one gets the handshake, then the waiting event.
    let mut socket = connect(&url);
    socket
        .send(Message::text("bind-with-token nonsense"))
        .unwrap();
    assert!(
        next_text(&mut socket).starts_with("error"),
        "a wrong token is refused"
    );
    socket
        .send(Message::text(format!("bind-with-token {token}")))
        .unwrap();
    let handshake = next_notification(&mut socket, "handshake");
    assert_eq!(
        status_parameter(&handshake, "subscription").unwrap()["valueReference"]["reference"],
        format!("{}/Subscription/{id}", smart.server.base("t1"))
    );
    let first = next_notification(&mut socket, "event-notification");
    assert_eq!(event_numbers(&first), [1]);
    assert_eq!(
        focuses(&first),
        [format!("{}/Observation/w-1", smart.server.base("t1"))]
    );

    // Events while bound arrive at once, in order; heartbeats in between.
    put("w-2");
    put("w-3");
    let mut numbers = Vec::new();
    while numbers.len() < 2 {
        numbers.extend(event_numbers(&next_notification(
            &mut socket,
            "event-notification",
        )));
    }
    assert_eq!(numbers, [2, 3]);
    let heartbeat = next_notification(&mut socket, "heartbeat");
    assert_eq!(
        status_parameter(&heartbeat, "events-since-subscription-start").unwrap()["valueString"],
        "3"
    );
    socket
        .send(Message::Ping(b"still there?".to_vec().into()))
        .unwrap();
    let pong = loop {
        match socket.read().unwrap() {
            Message::Pong(bytes) => break bytes,
            _ => continue,
        }
    };
    assert_eq!(&pong[..], b"still there?");

    // Disconnected: the next event waits, and a new connection gets it.
    drop(socket);
    std::thread::sleep(Duration::from_millis(300));
    put("w-4");
    let reply = smart.call(
        &writer,
        "POST",
        &format!("/Subscription/{id}/$get-ws-binding-token"),
        None,
    );
    let token = reply.json()["parameter"][0]["valueString"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut socket = connect(&url);
    socket
        .send(Message::text(format!("bind-with-token {token}")))
        .unwrap();
    next_notification(&mut socket, "handshake");
    assert_eq!(
        event_numbers(&next_notification(&mut socket, "event-notification")),
        [4]
    );

    // The token is t1's: t2's websocket refuses it.
    let t2 = format!(
        "{}/$subscription-websocket",
        smart.server.base("t2").replacen("http", "ws", 1)
    );
    let mut other = connect(&t2);
    other
        .send(Message::text(format!("bind-with-token {token}")))
        .unwrap();
    assert!(next_text(&mut other).starts_with("error"));

    // A rest-hook subscription has no binding token.
    let hook = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "hook",
        "criteria": "Observation?code=http://loinc.org|8867-4",
        "channel": { "type": "rest-hook", "endpoint": "http://127.0.0.1:9/none" },
    });
    let hook = smart
        .call(&writer, "POST", "/Subscription", Some(&hook))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(500));
    let reply = smart.call(
        &writer,
        "GET",
        &format!("/Subscription/{hook}/$get-ws-binding-token"),
        None,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[test]
fn classic_websocket_subscriptions_bind_and_ping() {
    let smart = Smart::start("subs-ws-classic", &[]);
    load(&smart);
    let writer = smart.token("t1", "system/*.cruds", None);
    let subscription = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "classic",
        "criteria": "Observation?code=http://loinc.org|8867-4",
        "channel": { "type": "websocket" },
    });
    let reply = smart.call(&writer, "POST", "/Subscription", Some(&subscription));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    wait_active(&smart, &writer, &id);
    let url = format!(
        "{}/$subscription-websocket",
        smart.server.base("t1").replacen("http", "ws", 1)
    );
    let mut socket = connect(&url);
    socket.send(Message::text("bind no-such-id")).unwrap();
    assert!(next_text(&mut socket).starts_with("error"));
    socket.send(Message::text(format!("bind {id}"))).unwrap();
    assert_eq!(next_text(&mut socket), format!("bound {id}"));
    for (obs, code) in [("c-1", "8310-5"), ("c-2", "8867-4")] {
        let reply = smart.call(
            &writer,
            "PUT",
            &format!("/Observation/{obs}"),
            Some(&observation(obs, "a", VITAL, code)),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert_eq!(next_text(&mut socket), format!("ping {id}"));
}
