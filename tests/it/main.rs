//! Integration tests: storage against a real Postgres, the REST API through the real `fjord`
//! binary, the official R4 examples, and the embedded default with crash recovery.

mod change_feed;
mod custom_parameters;
mod definitions;
mod embedded;
mod examples;
mod fhirpath;
mod indexing;
mod layers;
mod modifiers;
mod paging;
mod rest;
mod search;
mod search_scopes;
mod searching;
mod store;
mod synthea;
mod text_search;

use fjord_tests::{send, Server};

/// A fresh database, a server on it and a tenant `t1`; returns the server and the tenant's base URL.
fn server_with_tenant() -> (Server, String) {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = Server::start(&["--database-url", &database.url]);
    let created = send(
        "POST",
        &format!("{}/admin/tenants", server.origin),
        &[],
        Some(r#"{"id":"t1","name":"Tenant one"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let base = server.base("t1");
    (server, base)
}
