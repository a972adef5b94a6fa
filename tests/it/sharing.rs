//! Cross-HF sharing (the region's "§9" shared record): a tenant's sharing policy lets named
//! tenants' users read named resource types, only with a token claim asserting a purpose the
//! policy accepts, each access audited as cross-tenant in the owner's trail; without the
//! policy, or from any other tenant, isolation is absolute.

use fjord_smart::TokenRequest;
use fjord_tests::send;
use serde_json::{json, Value};

use crate::smart::{load, Smart};

const PURPOSE_CLAIM: &str = "purpose_of_use";
const TREATMENT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT";

/// A token of `tenant` (its audience) with the purpose claim `purpose`, if any.
fn token_of(smart: &Smart, tenant: &str, scope: &str, purpose: Option<&str>) -> String {
    let mut request = TokenRequest {
        audience: smart.server.base(tenant),
        scope: scope.into(),
        subject: Some(format!("nurse-of-{tenant}")),
        ..Default::default()
    };
    if let Some(purpose) = purpose {
        request.extra.insert(PURPOSE_CLAIM.into(), json!([purpose]));
    }
    smart.issuer.mint(&request)
}

fn put_settings(smart: &Smart, tenant: &str, settings: &Value) -> u16 {
    let reply = send(
        "PUT",
        &format!("{}/admin/tenants/{tenant}/settings", smart.server.origin),
        &[("Authorization", &format!("Bearer {}", smart.admin_token()))],
        Some(&settings.to_string()),
    );
    reply.status
}

#[test]
fn a_sharing_policy_opens_reads_for_a_purpose_and_every_access_is_audited_as_cross_tenant() {
    let smart = Smart::start("sharing", &[]);
    load(&smart);
    let admin = smart.admin_token();
    let reply = send(
        "POST",
        &format!("{}/admin/tenants", smart.server.origin),
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(&json!({"id": "t3", "name": "t3"}).to_string()),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let t2_nurse = token_of(&smart, "t2", "user/*.cruds", Some(TREATMENT));
    let t3_nurse = token_of(&smart, "t3", "user/*.cruds", Some(TREATMENT));

    // Without a policy, isolation is absolute: t2's token does not open t1.
    let read = smart.call(&t2_nurse, "GET", "/Observation/a-vital", None);
    assert_eq!(read.status, 401, "{}", read.body);

    // A policy that cannot hold is refused.
    let grant = |tenant: &str, types: Value| {
        json!({"tenant": tenant, "resourceTypes": types,
               "purpose": {"claim": PURPOSE_CLAIM, "values": [TREATMENT]}})
    };
    for bad in [
        json!({"sharing": [grant("t1", json!(["Observation"]))]}),
        json!({"sharing": [grant("t2", json!(["Observasjon"]))]}),
        json!({"sharing": [grant("t2", json!([]))]}),
        json!({"sharing": [{"tenant": "t2", "resourceTypes": ["Patient"],
                            "purpose": {"claim": PURPOSE_CLAIM, "values": []}}]}),
        json!({"sharing": [{"tenant": "t2", "resourceTypes": ["Patient"]}]}),
    ] {
        assert_eq!(put_settings(&smart, "t1", &bad), 400, "{bad}");
    }
    // t1 shares Patients and Observations with t2, for treatment.
    let policy = json!({"sharing": [grant("t2", json!(["Patient", "Observation"]))]});
    assert_eq!(put_settings(&smart, "t1", &policy), 200);
    std::thread::sleep(std::time::Duration::from_secs(3));

    // With the purpose: reads and searches of the shared types.
    let read = smart.call(&t2_nurse, "GET", "/Observation/a-vital", None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["subject"]["reference"], "Patient/a");
    let search = smart.call(&t2_nurse, "GET", "/Observation?patient=a", None);
    assert_eq!(search.status, 200, "{}", search.body);
    assert_eq!(search.json()["entry"].as_array().unwrap().len(), 2);
    let patient = smart.call(&t2_nurse, "GET", "/Patient/b", None);
    assert_eq!(patient.status, 200, "{}", patient.body);

    // Not a type the policy shares, and never a write, whatever the token's scopes say.
    let practitioner = smart.call(&t2_nurse, "GET", "/Practitioner/pr", None);
    assert_eq!(practitioner.status, 403, "{}", practitioner.body);
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "puls"}, "subject": {"reference": "Patient/a"}});
    let create = smart.call(&t2_nurse, "POST", "/Observation", Some(&observation));
    assert_eq!(create.status, 403, "{}", create.body);
    let delete = smart.call(&t2_nurse, "DELETE", "/Observation/a-vital", None);
    assert_eq!(delete.status, 403, "{}", delete.body);
    // Included resources of other types are left out.
    let included = smart.call(
        &t2_nurse,
        "GET",
        "/Observation?_id=a-vital&_include=Observation:performer",
        None,
    );
    assert_eq!(included.status, 200, "{}", included.body);
    assert!(
        !included.body.contains("\"Practitioner\""),
        "{}",
        included.body
    );

    // The purpose must be asserted, and be one the policy accepts.
    let no_purpose = token_of(&smart, "t2", "user/*.cruds", None);
    let refused = smart.call(&no_purpose, "GET", "/Observation/a-vital", None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains(PURPOSE_CLAIM), "{}", refused.body);
    let research = token_of(&smart, "t2", "user/*.cruds", Some("RESEARCH"));
    let refused = smart.call(&research, "GET", "/Observation/a-vital", None);
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Another tenant the policy does not name stays out, purpose or not.
    let refused = smart.call(&t3_nurse, "GET", "/Observation/a-vital", None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    // The grant opens t1 to t2, not t2 to t1.
    let t1_nurse = token_of(&smart, "t1", "user/*.cruds", Some(TREATMENT));
    let refused = smart.call_in("t2", &t1_nurse, "GET", "/Patient/c", None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    // t2's token still works at home, with all its scopes.
    let home = smart.call_in("t2", &t2_nurse, "GET", "/Patient/c", None);
    assert_eq!(home.status, 200, "{}", home.body);

    // Every access under the grant is in t1's trail, marked cross-tenant, with the purpose
    // and the caller's home tenant; t1's own callers' events are not marked.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let events = crate::audit::events(&smart, "subtype=urn:fjord:audit|cross-tenant");
    let by_outcome = |outcome: &str| events.iter().filter(|e| e["outcome"] == outcome).count();
    // read, search, Patient read, and the include search succeeded; the Practitioner read,
    // the create and the delete were refused by the narrowed scopes.
    assert_eq!((by_outcome("0"), by_outcome("4")), (4, 3), "{events:#?}");
    for event in &events {
        assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(
            event["purposeOfEvent"][0]["coding"][0]["system"],
            "http://terminology.hl7.org/CodeSystem/v3-ActReason"
        );
        let home = event["agent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["who"]["identifier"]["system"] == "urn:fjord:tenant");
        assert_eq!(home.unwrap()["who"]["identifier"]["value"], "t2", "{event}");
        assert_eq!(event["agent"][0]["altId"], "nurse-of-t2");
        assert_eq!(event["source"]["site"], "t1");
    }
    let reads: Vec<String> = events
        .iter()
        .filter(|e| e["subtype"][0]["code"] == "read" && e["outcome"] == "0")
        .map(|e| e["entity"][0]["what"]["reference"].to_string())
        .collect();
    assert!(
        reads.contains(&"\"Observation/a-vital/_history/1\"".to_owned()),
        "{reads:?}"
    );
    // Withdrawn, the grant opens nothing again.
    assert_eq!(put_settings(&smart, "t1", &json!({"sharing": []})), 200);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let read = smart.call(&t2_nurse, "GET", "/Observation/a-vital", None);
    assert_eq!(read.status, 401, "{}", read.body);
}
