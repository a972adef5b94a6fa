//! Behind the region's gateways: the URLs a server names (`Location`, `fullUrl`, paging links,
//! the CapabilityStatement, discovery) and the client address it audits come from a tenant's
//! public base URL, the server's public URL, or forwarding headers of trusted proxies only.

use fjord_tests::{send, Reply, Server};
use serde_json::{json, Value};

use crate::add_tenant;
use crate::receiver::Receiver;
use crate::subscriptions::{created, topic_subscription};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

/// A server of a fresh database with extra environment, and its tenant `t1`'s base URL.
fn server_with(env: &[(&str, &str)], args: &[&str]) -> (Server, String) {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let mut all = vec!["--database-url", &database.url];
    all.extend_from_slice(args);
    let server = Server::start_with("127.0.0.1:0", &all, env);
    let base = add_tenant(&server, "t1");
    (server, base)
}

fn set_settings(server: &Server, tenant: &str, settings: Value) -> Reply {
    send(
        "PUT",
        &format!("{}/admin/tenants/{tenant}/settings", server.origin),
        &[("Content-Type", "application/json")],
        Some(&settings.to_string()),
    )
}

fn create_patient(base: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    let reply = send(
        "POST",
        &format!("{base}/Patient"),
        &all,
        Some(r#"{"resourceType":"Patient","active":true}"#),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply
}

fn location(reply: &Reply) -> &str {
    reply.header("Location").expect("a Location")
}

/// How many of the tenant's AuditEvents name `address` as the client's network address.
fn audited_from(base: &str, address: &str) -> u64 {
    let reply = send(
        "GET",
        &format!("{base}/AuditEvent?address={address}&_summary=count"),
        &[],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["total"].as_u64().expect("a total")
}

const SPOOFED: [(&str, &str); 4] = [
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "gw.hf.no"),
    ("X-Forwarded-For", "203.0.113.7"),
    ("Forwarded", "for=203.0.113.8;proto=https;host=other.hf.no"),
];

#[test]
fn forwarding_headers_of_an_untrusted_peer_change_nothing() {
    let (_server, base) = server_with(&[], &[]);
    let created = create_patient(&base, &SPOOFED);
    assert!(
        location(&created).starts_with(&format!("{base}/Patient/")),
        "{created:?}"
    );
    assert_eq!(audited_from(&base, "203.0.113.7"), 0);
    assert_eq!(audited_from(&base, "203.0.113.8"), 0);
    assert!(audited_from(&base, "127.0.0.1") >= 1);
}

#[test]
fn a_trusted_proxys_forwarding_headers_name_the_public_address_and_the_client() {
    let (_server, base) = server_with(&[("FJORD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")], &[]);

    // `Forwarded` (RFC 7239) first, when both kinds are sent.
    let created = create_patient(&base, &SPOOFED);
    assert!(
        location(&created).starts_with("https://other.hf.no/fhir/t1/Patient/"),
        "{created:?}"
    );
    assert_eq!(audited_from(&base, "203.0.113.8"), 1);

    // `X-Forwarded-*`, with a client behind two proxies, the inner one trusted.
    let created = create_patient(
        &base,
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "gw.hf.no"),
            ("X-Forwarded-Port", "8443"),
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3"),
        ],
    );
    let public = "https://gw.hf.no:8443/fhir/t1";
    assert!(
        location(&created).starts_with(&format!("{public}/Patient/")),
        "{created:?}"
    );
    // The nearest untrusted address is the client; what it claims further left is not.
    assert_eq!(audited_from(&base, "203.0.113.9"), 1);
    assert_eq!(audited_from(&base, "198.51.100.1"), 0);

    let forwarded = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "gw.hf.no:8443"),
    ];
    let searched = send("GET", &format!("{base}/Patient?_count=1"), &forwarded, None);
    assert_eq!(searched.status, 200, "{}", searched.body);
    let bundle = searched.json();
    assert_all_under(&bundle, public);
    let metadata = send("GET", &format!("{base}/metadata"), &forwarded, None).json();
    assert_eq!(metadata["implementation"]["url"], public);

    // A forwarded host that is no host is ignored.
    let created = create_patient(&base, &[("X-Forwarded-Host", "evil.example/x?")]);
    assert!(location(&created).starts_with(&base), "{created:?}");
}

/// Every `fullUrl` and link of a search Bundle is under `base`.
fn assert_all_under(bundle: &Value, base: &str) {
    let links = bundle["link"].as_array().expect("links");
    assert!(links.len() >= 2, "{bundle}");
    for link in links {
        let url = link["url"].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("{base}/")), "{url} of {bundle}");
    }
    let entries = bundle["entry"].as_array().expect("entries");
    assert!(!entries.is_empty(), "{bundle}");
    for entry in entries {
        let url = entry["fullUrl"].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("{base}/")), "{url} of {bundle}");
    }
}

#[test]
fn a_tenants_public_base_url_is_what_it_names_itself() {
    let (server, base) = server_with(
        &[
            ("FJORD_PUBLIC_URL", "https://fhir.region.no"),
            ("FJORD_TRUSTED_PROXIES", "127.0.0.1"),
        ],
        &[],
    );
    // The server's public URL wins over forwarding headers.
    let created = create_patient(&base, &SPOOFED);
    assert!(
        location(&created).starts_with("https://fhir.region.no/fhir/t1/Patient/"),
        "{created:?}"
    );

    let set = |settings: Value| set_settings(&server, "t1", settings);
    for bad in [
        "fhir.hf.no/r4",
        "https://fhir.hf.no/r4?x=1",
        "ftp://fhir.hf.no",
    ] {
        let refused = set(json!({ "publicBaseUrl": bad }));
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let stored = set(json!({ "publicBaseUrl": "https://fhir.helse-bergen.no/r4/" }));
    assert_eq!(stored.status, 200, "{}", stored.body);
    let public = "https://fhir.helse-bergen.no/r4";
    assert_eq!(stored.json()["publicBaseUrl"], public);

    let created = create_patient(&base, &[]);
    assert!(
        location(&created).starts_with(&format!("{public}/Patient/")),
        "{created:?}"
    );
    create_patient(&base, &[]);
    let searched = send("GET", &format!("{base}/Patient?_count=1"), &[], None);
    let bundle = searched.json();
    assert_all_under(&bundle, public);
    assert!(
        bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next"),
        "{bundle}"
    );
    let history = send("GET", &format!("{base}/Patient/_history"), &[], None).json();
    for entry in history["entry"].as_array().expect("history entries") {
        let url = entry["fullUrl"].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("{public}/Patient/")), "{url}");
    }
    let metadata = send("GET", &format!("{base}/metadata"), &[], None).json();
    assert_eq!(metadata["implementation"]["url"], public);
}

#[test]
fn discovery_names_the_servers_public_url() {
    let config = std::env::temp_dir().join(format!("fjord-gateway-{}.toml", std::process::id()));
    std::fs::write(&config, "dev_issuer = true\n").unwrap();
    let (_server, base) = server_with(
        &[("FJORD_PUBLIC_URL", "https://fhir.region.no/")],
        &["--auth", "off", "--config", config.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&config);
    let discovery = send(
        "GET",
        &format!("{base}/.well-known/smart-configuration"),
        &[],
        None,
    );
    assert_eq!(discovery.status, 200, "{}", discovery.body);
    let document = discovery.json();
    for endpoint in ["authorization_endpoint", "token_endpoint"] {
        let url = document[endpoint].as_str().unwrap_or_default();
        assert!(
            url.starts_with("https://fhir.region.no/auth/t1/"),
            "{endpoint}: {document}"
        );
    }
}

#[test]
fn notifications_name_resources_under_the_tenants_public_base_url() {
    let (server, base) = server_with(&[], &[]);
    let public = "https://fhir.helse-bergen.no/r4";
    let stored = set_settings(&server, "t1", json!({ "publicBaseUrl": public }));
    assert_eq!(stored.status, 200, "{}", stored.body);
    let receiver = Receiver::start();
    let subscription = topic_subscription(
        "resource-created",
        &["Patient?active=true"],
        "id-only",
        &receiver.url,
        &[],
    );
    let id = created(&send(
        "POST",
        &format!("{base}/Subscription"),
        &[JSON],
        Some(&subscription.to_string()),
    ));
    receiver.wait_for(20, "the handshake", |r| !r.is_empty());
    let patient = create_patient(&base, &[]);
    let patient_id = location(&patient)
        .trim_start_matches(&format!("{public}/Patient/"))
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    receiver.wait_for(20, "a notification", |_| {
        !receiver.notifications("event-notification").is_empty()
    });
    let bundle = receiver.notifications("event-notification").remove(0);
    let entries = bundle["entry"].as_array().expect("entries");
    assert_eq!(
        entries[0]["request"]["url"],
        format!("{public}/Subscription/{id}/$status"),
        "{bundle}"
    );
    assert_eq!(
        entries[1]["fullUrl"],
        format!("{public}/Patient/{patient_id}"),
        "{bundle}"
    );
}

#[test]
fn a_tenants_cors_policy_decides_which_pages_may_call_it() {
    // Without authentication the server's own policy lets only this machine's pages in.
    let (server, base) = server_with(&[], &[]);
    let other = add_tenant(&server, "t2");
    let set = |settings: Value| set_settings(&server, "t1", settings);
    for bad in [
        json!({ "cors": { "allowedOrigins": ["https://app.hf.no/path"] } }),
        json!({ "cors": { "allowedOrigins": ["app.hf.no"] } }),
        json!({ "cors": { "allowedMethods": ["GET POST"] } }),
        json!({ "cors": { "origins": ["https://app.hf.no"] } }),
    ] {
        let refused = set(bad.clone());
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let stored = set(json!({ "cors": {
        "allowedOrigins": ["https://app.hf.no/"],
        "allowedMethods": ["get", "POST"],
        "allowedHeaders": ["Authorization", "Content-Type"],
    }}));
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(
        stored.json()["cors"]["allowedOrigins"],
        json!(["https://app.hf.no"])
    );

    let preflight = |base: &str, origin: &str, method: &str, headers: &str| {
        let mut sent = vec![
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
        ];
        if !headers.is_empty() {
            sent.push(("Access-Control-Request-Headers", headers));
        }
        send("OPTIONS", &format!("{base}/Patient"), &sent, None)
    };
    let allowed = preflight(
        &base,
        "https://app.hf.no",
        "POST",
        "authorization, content-type",
    );
    assert_eq!(allowed.status, 204, "{allowed:?}");
    assert_eq!(
        allowed.header("Access-Control-Allow-Origin"),
        Some("https://app.hf.no")
    );
    assert!(allowed
        .header("Access-Control-Allow-Methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(allowed
        .header("Access-Control-Allow-Headers")
        .is_some_and(|h| h.contains("content-type")));
    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("http://localhost:3000", "GET", ""),
        ("https://app.hf.no", "DELETE", ""),
        ("https://app.hf.no", "GET", "X-Secret"),
    ] {
        let refused = preflight(&base, origin, method, headers);
        assert_eq!(
            refused.header("Access-Control-Allow-Origin"),
            None,
            "{origin} {method} {headers}: {refused:?}"
        );
    }

    let read = |base: &str, origin: &str| {
        let reply = send(
            "GET",
            &format!("{base}/Patient?_count=1"),
            &[("Origin", origin)],
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
            .header("Access-Control-Allow-Origin")
            .map(str::to_owned)
    };
    assert_eq!(
        read(&base, "https://app.hf.no").as_deref(),
        Some("https://app.hf.no")
    );
    assert_eq!(read(&base, "https://evil.example"), None);
    // The tenant's policy replaces the server's: this machine's pages are not in it.
    assert_eq!(read(&base, "http://localhost:3000"), None);
    // Another tenant keeps the server's policy.
    assert_eq!(read(&other, "https://app.hf.no"), None);
    assert_eq!(
        read(&other, "http://localhost:3000").as_deref(),
        Some("http://localhost:3000")
    );
}
