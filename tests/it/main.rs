//! Integration tests: storage against a real Postgres, the REST API through the real `fjord`
//! binary, the official R4 examples, and the embedded default with crash recovery.

mod audit;
mod authz;
mod bundles;
mod change_feed;
mod conditional;
mod custom_parameters;
mod definitions;
mod disk_full;
mod e2e;
mod embedded;
mod examples;
mod export;
mod faults;
mod fhirpath;
mod gateway;
mod generate;
mod import;
mod indexing;
mod integrity;
mod layers;
mod limits;
mod metrics;
mod modifiers;
mod paging;
mod patch;
mod receiver;
mod rest;
mod search;
mod search_scopes;
mod searching;
mod sharing;
mod smart;
mod smart_scopes;
mod smart_tls;
mod store;
mod subscriptions;
mod subscriptions_durable;
mod subscriptions_tls;
mod subscriptions_ws;
mod synthea;
mod tenants;
mod text_search;
mod validation;
mod validation_profiles;
mod validation_r4;
mod validator_suite;

use fjord_tests::{send, Server};

/// A fresh database, a server on it and a tenant `t1`; returns the server and the tenant's base URL.
fn server_with_tenant() -> (Server, String) {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = Server::start(&["--database-url", &database.url]);
    let base = add_tenant(&server, "t1");
    (server, base)
}

/// Stores a minimal `Patient/{id}`: what the references of test resources point at, now that
/// references must resolve.
fn a_patient(base: &str, id: &str) {
    let body = format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#);
    let reply = send(
        "PUT",
        &format!("{base}/Patient/{id}"),
        &[("Content-Type", "application/fhir+json")],
        Some(&body),
    );
    assert!(matches!(reply.status, 200 | 201), "{}", reply.body);
}

/// Creates the tenant `id` on `server`; returns its base URL.
fn add_tenant(server: &Server, id: &str) -> String {
    let created = send(
        "POST",
        &format!("{}/admin/tenants", server.origin),
        &[],
        Some(&format!(r#"{{"id":"{id}","name":"Tenant {id}"}}"#)),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    server.base(id)
}

/// Runs `request` on `clients` threads released at the same instant; their results in order.
fn all_at_once<T: Send>(clients: usize, request: impl Fn() -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(clients);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    request()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
