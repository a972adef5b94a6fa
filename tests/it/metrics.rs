//! `/metrics`: every answer counted by tenant, interaction, resource type and status, and timed;
//! made-up tenants and types never become labels; the endpoint itself needs an administration
//! token while authentication is required.

use fjord_tests::send;
use serde_json::json;

use crate::smart::Smart;

#[test]
fn metrics_count_and_time_requests_by_tenant_interaction_type_and_status() {
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
    assert_eq!(request("t1", "update", "Patient", 201), Some(1), "{text}");
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
    // The scrape itself is in flight while the text is written.
    assert!(text.contains("fjord_http_requests_in_flight 1\n"), "{text}");
    assert!(
        text.contains("# TYPE fjord_http_request_duration_seconds histogram"),
        "{text}"
    );
}
