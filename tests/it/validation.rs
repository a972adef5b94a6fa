//! The tenant's validation mode over the REST API: strict refuses with every issue, lenient
//! stores and tells, off stores; the checks are base R4 and the Norwegian identifier rules.

use fjord_tests::{send, Reply};
use serde_json::{json, Value};

use crate::searching::ids;
use crate::{a_patient, server_with_tenant};

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");
const FNR: &str = "urn:oid:2.16.578.1.12.4.1.4.1";
const ORGNR: &str = "urn:oid:2.16.578.1.12.4.1.4.101";

fn set_settings(base: &str, settings: Value) {
    let (origin, tenant) = base.rsplit_once("/fhir/").unwrap();
    let reply = send(
        "PUT",
        &format!("{origin}/admin/tenants/{tenant}/settings"),
        &[],
        Some(&settings.to_string()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn patient(fnr: &str, orgnr: &str) -> String {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": FNR, "value": fnr }],
        "managingOrganization": { "identifier": { "system": ORGNR, "value": orgnr } },
    })
    .to_string()
}

fn post_patient(base: &str, body: &str, prefer: Option<&str>) -> Reply {
    let mut headers = vec![JSON];
    if let Some(prefer) = prefer {
        headers.push(("Prefer", prefer));
    }
    send("POST", &format!("{base}/Patient"), &headers, Some(body))
}

/// (severity, expression) of each issue of an OperationOutcome.
fn issues(outcome: &Value) -> Vec<(String, String)> {
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["severity"].as_str().unwrap().to_owned(),
                i["expression"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn strict_validation_refuses_every_broken_identifier_and_stores_nothing() {
    let (_server, base) = server_with_tenant();
    // Off (the default until profiles are validated): stored as sent.
    let bad = patient("02016126008", "974760674");
    assert_eq!(post_patient(&base, &bad, None).status, 201);

    set_settings(&base, json!({ "validation": "strict" }));
    let refused = post_patient(&base, &bad, None);
    assert_eq!(refused.status, 422, "{}", refused.body);
    let outcome = refused.json();
    assert_eq!(
        issues(&outcome),
        [
            ("error".into(), "Patient.identifier[0].value".into()),
            (
                "error".into(),
                "Patient.managingOrganization.identifier.value".into()
            ),
        ]
    );
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("fødselsnummer"));
    assert_eq!(ids(&base, "Patient").len(), 1);
    let good = patient("02016126007", "974760673");
    assert_eq!(post_patient(&base, &good, None).status, 201);

    // Synthetic test numbers only where the tenant allows test data.
    let synthetic = patient("03432287806", "974760673");
    assert_eq!(post_patient(&base, &synthetic, None).status, 422);
    set_settings(
        &base,
        json!({ "validation": "strict", "allowTestData": true }),
    );
    assert_eq!(post_patient(&base, &synthetic, None).status, 201);

    // An update, a patch and a transaction entry are validated alike.
    let id = post_patient(&base, &good, None).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut update: Value = serde_json::from_str(&bad).unwrap();
    update["id"] = json!(id);
    let url = format!("{base}/Patient/{id}");
    assert_eq!(
        send("PUT", &url, &[JSON], Some(&update.to_string())).status,
        422
    );
    let patch = json!([{ "op": "replace", "path": "/identifier/0/value", "value": "02016126008" }]);
    let patched = send(
        "PATCH",
        &url,
        &[("Content-Type", "application/json-patch+json")],
        Some(&patch.to_string()),
    );
    assert_eq!(patched.status, 422, "{}", patched.body);
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{ "resource": serde_json::from_str::<Value>(&bad).unwrap(),
                    "request": { "method": "POST", "url": "Patient" } }],
    });
    let refused = send("POST", &base, &[JSON], Some(&transaction.to_string()));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        issues(&refused.json())[1].1,
        "Bundle.entry[0].resource.managingOrganization.identifier.value"
    );
    assert_eq!(
        send("GET", &url, &[], None).json()["meta"]["versionId"],
        "1"
    );
}

#[test]
fn lenient_validation_stores_and_tells_the_client_that_asks() {
    let (_server, base) = server_with_tenant();
    set_settings(&base, json!({ "validation": "lenient" }));
    let bad = patient("02016126008", "974760673");
    let stored = post_patient(&base, &bad, Some("return=OperationOutcome"));
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(
        issues(&stored.json()),
        [
            ("information".into(), String::new()),
            ("warning".into(), "Patient.identifier[0].value".into()),
        ]
    );
    // Without asking, the usual answer.
    let plain = post_patient(&base, &bad, None);
    assert_eq!(plain.status, 201);
    assert_eq!(plain.json()["resourceType"], "Patient");

    // A batch entry stored with issues says so in its response.
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            { "resource": serde_json::from_str::<Value>(&bad).unwrap(),
              "request": { "method": "POST", "url": "Patient" } },
            { "resource": serde_json::from_str::<Value>(&patient("02016126007", "974760673")).unwrap(),
              "request": { "method": "POST", "url": "Patient" } },
        ],
    });
    let reply = send("POST", &base, &[JSON], Some(&batch.to_string()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entries = reply.json()["entry"].clone();
    assert_eq!(
        issues(&entries[0]["response"]["outcome"])[1],
        ("warning".into(), "Patient.identifier[0].value".into())
    );
    assert!(
        entries[1]["response"].get("outcome").is_none(),
        "{reply:?}",
        reply = reply.body
    );
    assert_eq!(ids(&base, "Patient").len(), 4);
}

#[test]
fn strict_validation_checks_base_r4_cardinality_formats_bindings_and_invariants() {
    let (_server, base) = server_with_tenant();
    set_settings(&base, json!({ "validation": "strict" }));
    let observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "text": "pulse" },
        "effectiveDateTime": "2026-02-30T08:00:00+01:00",
        "valueQuantity": { "value": 72, "comparator": "about" },
        "dataAbsentReason": { "text": "device off" },
    });
    let url = format!("{base}/Observation");
    let refused = send("POST", &url, &[JSON], Some(&observation.to_string()));
    assert_eq!(refused.status, 422, "{}", refused.body);
    let outcome = refused.json();
    let found: Vec<(String, String)> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let code = i["code"].as_str().unwrap().to_owned();
            (code, i["expression"][0].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [
        ("value", "Observation.effective.ofType(dateTime)"),
        (
            "code-invalid",
            "Observation.value.ofType(Quantity).comparator",
        ),
        ("invariant", "Observation"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, e)| (c.to_string(), e.to_string()))
        .collect();
    assert_eq!(found, expected, "{outcome}");
    assert_eq!(ids(&base, "Observation").len(), 0);
    // A missing 1..1 element is a parse error (400, `fjord-model`); a missing 1..* list is
    // validation's.
    let appointment = json!({ "resourceType": "Appointment", "status": "proposed" });
    let refused = send(
        "POST",
        &format!("{base}/Appointment"),
        &[JSON],
        Some(&appointment.to_string()),
    );
    assert_eq!(refused.status, 422, "{}", refused.body);
    let issue = &refused.json()["issue"][0];
    assert_eq!(issue["code"], "required");
    assert_eq!(issue["expression"][0], "Appointment.participant");

    // Lenient: stored, and the client that asks hears every issue as a warning.
    set_settings(&base, json!({ "validation": "lenient" }));
    let stored = send(
        "POST",
        &url,
        &[JSON, ("Prefer", "return=OperationOutcome")],
        Some(&observation.to_string()),
    );
    assert_eq!(stored.status, 201, "{}", stored.body);
    let severities: Vec<String> = issues(&stored.json()).into_iter().map(|(s, _)| s).collect();
    assert_eq!(severities, ["information", "warning", "warning", "warning"]);
}

/// `fjord package install` stores no-basis in a tenant, where it is readable and validates
/// what the tenant requires; a definition changed through the API takes effect without a
/// restart.
#[test]
fn an_installed_package_validates_and_changes_without_a_restart() {
    let dir = crate::embedded::data_dir("package");
    let dir_arg = dir.to_str().unwrap();
    let package = fjord_tests::shared_dir().join("no-basis/hl7.fhir.no.basis-2.2.0-snapshots.tgz");
    let installed = crate::embedded::fjord(&[
        "package",
        "install",
        package.to_str().unwrap(),
        "--data-dir",
        dir_arg,
    ]);
    assert!(installed.contains("53 stored, 0 unchanged"), "{installed}");
    // Again: nothing changes.
    let again = crate::embedded::fjord(&[
        "package",
        "install",
        package.to_str().unwrap(),
        "--data-dir",
        dir_arg,
    ]);
    assert!(again.contains("0 stored, 53 unchanged"), "{again}");

    let server = fjord_tests::Server::start(&["--data-dir", dir_arg]);
    let base = server.base("default");
    // The audit trail names the local account that installed it.
    let installs = send(
        "GET",
        &format!("{base}/AuditEvent?agent-name=command%20line&_summary=count"),
        &[],
        None,
    );
    assert_eq!(installs.json()["total"], 53, "{}", installs.body);
    let profile = "http://hl7.no/fhir/StructureDefinition/no-basis-Patient";
    let middlename = format!("{base}/StructureDefinition/no-basis-middlename");
    let stored = send("GET", &middlename, &[], None);
    assert_eq!(stored.status, 200);
    let found = send(
        "GET",
        &format!("{base}/StructureDefinition?url={profile}"),
        &[],
        None,
    );
    assert_eq!(found.json()["entry"].as_array().map(Vec::len), Some(1));

    set_settings(
        &base,
        json!({ "validation": "strict", "requiredProfiles": { "Patient": [profile] } }),
    );
    // no-basis-HumanName's middlename extension is a string.
    let patient = json!({
        "resourceType": "Patient",
        "name": [{
            "family": "Nordmann",
            "extension": [{ "url": "http://hl7.no/fhir/StructureDefinition/no-basis-middlename", "valueInteger": 3 }],
        }],
    })
    .to_string();
    let post = || post_patient(&base, &patient, None);
    let refused = post();
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.json()["issue"][0]["expression"][0],
        "Patient.name[0].extension[0].value.ofType(integer)"
    );
    // The extension's definition deleted: the extension is no longer checked, at once.
    assert_eq!(send("DELETE", &middlename, &[], None).status, 200);
    assert_eq!(post().status, 201);
    // And back.
    let body = stored.body.clone();
    assert_eq!(send("PUT", &middlename, &[JSON], Some(&body)).status, 201);
    assert_eq!(post().status, 422);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `$validate` answers 200 with every issue, whatever the tenant's mode, at type and instance
/// level, with `mode` and `profile` as query or `Parameters`.
#[test]
fn validate_operation_reports_without_storing() {
    let (_server, base) = server_with_tenant();
    let bad = json!({ "resourceType": "Observation", "status": "done", "code": { "text": "x" } });
    let url = format!("{base}/Observation/$validate");
    let reply = send("POST", &url, &[JSON], Some(&bad.to_string()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let outcome = reply.json();
    assert_eq!(outcome["issue"][0]["severity"], "error");
    assert_eq!(outcome["issue"][0]["code"], "code-invalid");
    assert_eq!(outcome["issue"][0]["expression"][0], "Observation.status");
    assert_eq!(ids(&base, "Observation").len(), 0);

    // A valid one: one informational issue. As Parameters, with a profile Fjord does not have.
    let good = json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" } });
    let reply = send("POST", &url, &[JSON], Some(&good.to_string()));
    assert_eq!(
        reply.json()["issue"][0]["severity"],
        "information",
        "{}",
        reply.body
    );
    let parameters = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "resource", "resource": good },
        { "name": "profile", "valueUri": "http://example.org/StructureDefinition/none" },
    ] });
    let reply = send("POST", &url, &[JSON], Some(&parameters.to_string()));
    assert_eq!(
        reply.json()["issue"][0]["code"],
        "not-supported",
        "{}",
        reply.body
    );

    // A body that does not parse is an issue, not a failure.
    let reply = send(
        "POST",
        &url,
        &[JSON],
        Some(r#"{"resourceType":"Observation","bogus":1}"#),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["issue"][0]["code"], "structure");

    // Instance level: the stored resource; mode=update needs the URL's id in the body; and
    // mode=delete tells what still refers to it.
    a_patient(&base, "p1");
    let observation = json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p1" } });
    let created = send(
        "POST",
        &format!("{base}/Observation"),
        &[JSON],
        Some(&observation.to_string()),
    );
    assert_eq!(created.status, 201);
    let reply = send("GET", &format!("{base}/Patient/p1/$validate"), &[], None);
    assert_eq!(
        reply.json()["issue"][0]["severity"],
        "information",
        "{}",
        reply.body
    );
    let other = json!({ "resourceType": "Patient", "id": "p2" });
    let reply = send(
        "POST",
        &format!("{base}/Patient/p1/$validate?mode=update"),
        &[JSON],
        Some(&other.to_string()),
    );
    assert!(reply.json()["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("needs that id"));
    let reply = send(
        "POST",
        &format!("{base}/Patient/p1/$validate?mode=delete"),
        &[],
        None,
    );
    let outcome = reply.json();
    assert_eq!(outcome["issue"][0]["severity"], "error", "{outcome}");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("is referred to by Observation/"));
    assert_eq!(
        send("GET", &format!("{base}/Patient/p1"), &[], None).status,
        200
    );
    let reply = send(
        "POST",
        &format!("{base}/Patient/p1/$validate?mode=remove"),
        &[],
        None,
    );
    assert_eq!(reply.status, 400);
}

/// `$expand`, `$lookup` and `$validate-code` over the tenant's code systems and value sets (here
/// no-basis's marital status, stored through the API) and base R4's required value sets.
#[test]
fn terminology_operations_answer_from_the_tenants_definitions() {
    let (_server, base) = server_with_tenant();
    let package =
        fjord_tests::shared_dir().join("no-basis/package-2.2.0-snapshots-official/package");
    for file in [
        "no-basis-marital-status.codesystem.json",
        "no-basis-maritalstatus.valueset.json",
    ] {
        let resource: Value =
            serde_json::from_slice(&std::fs::read(package.join(file)).unwrap()).unwrap();
        let url = format!(
            "{base}/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let stored = send("PUT", &url, &[JSON], Some(&resource.to_string()));
        assert_eq!(stored.status, 201, "{}", stored.body);
    }
    let value_set = "http://hl7.no/fhir/ValueSet/no-basis-marital-status";
    let system = "http://hl7.no/fhir/CodeSystem/no-basis-marital-status";

    let expanded = send(
        "GET",
        &format!("{base}/ValueSet/$expand?url={value_set}"),
        &[],
        None,
    );
    assert_eq!(expanded.status, 200, "{}", expanded.body);
    let expansion = &expanded.json()["expansion"];
    let codes: Vec<&str> = expansion["contains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"gift") && codes.contains(&"skilt"),
        "{codes:?}"
    );
    assert_eq!(expansion["total"], codes.len());
    let gift = expansion["contains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "gift")
        .unwrap();
    assert_eq!(gift["display"], "Gift");
    // Instance level, and a base R4 required value set.
    let by_id = send(
        "GET",
        &format!("{base}/ValueSet/no-basis-marital-status.valueset/$expand"),
        &[],
        None,
    );
    assert_eq!(by_id.json()["expansion"]["total"], codes.len());
    let status = send(
        "GET",
        &format!("{base}/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/observation-status"),
        &[],
        None,
    );
    assert_eq!(status.json()["expansion"]["total"], 8, "{}", status.body);
    assert_eq!(
        send(
            "GET",
            &format!("{base}/ValueSet/$expand?url=urn:none"),
            &[],
            None
        )
        .status,
        404
    );

    let lookup = send(
        "GET",
        &format!("{base}/CodeSystem/$lookup?system={system}&code=skilt"),
        &[],
        None,
    );
    assert_eq!(lookup.status, 200, "{}", lookup.body);
    let parameters = lookup.json();
    let display = parameters["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "display")
        .unwrap();
    assert_eq!(display["valueString"], "Skilt");
    assert_eq!(
        send(
            "GET",
            &format!("{base}/CodeSystem/$lookup?system={system}&code=nope"),
            &[],
            None
        )
        .status,
        404
    );

    let result = |reply: Reply| {
        let parameters = reply.json();
        parameters["parameter"][0]["valueBoolean"].as_bool()
    };
    let check = |query: &str| {
        send(
            "GET",
            &format!("{base}/ValueSet/$validate-code?url={value_set}&{query}"),
            &[],
            None,
        )
    };
    assert_eq!(
        result(check(&format!("system={system}&code=gift"))),
        Some(true)
    );
    assert_eq!(
        result(check(&format!("system={system}&code=forlovet"))),
        Some(false)
    );
    // As Parameters with a Coding, POSTed.
    let parameters = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "url", "valueUri": value_set },
        { "name": "coding", "valueCoding": { "system": system, "code": "ugift" } },
    ] });
    let posted = send(
        "POST",
        &format!("{base}/ValueSet/$validate-code"),
        &[JSON],
        Some(&parameters.to_string()),
    );
    assert_eq!(result(posted), Some(true));
    let in_system = send(
        "GET",
        &format!("{base}/CodeSystem/$validate-code?url={system}&code=skilt"),
        &[],
        None,
    );
    assert_eq!(result(in_system), Some(true));

    // The search modifiers `:in`/`:not-in` use the same expansions.
    let coded = json!({ "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": system, "code": "gift" }] } });
    let created = send(
        "POST",
        &format!("{base}/Observation"),
        &[JSON],
        Some(&coded.to_string()),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let count = |query: &str| {
        let found = send("GET", &format!("{base}/Observation?{query}"), &[], None);
        assert_eq!(found.status, 200, "{query}: {}", found.body);
        found.json()["entry"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(&format!("code:in={value_set}")), 1);
    assert_eq!(count(&format!("code:not-in={value_set}")), 0);
}

/// A QuestionnaireResponse is checked against the tenant's Questionnaire it names.
#[test]
fn questionnaire_responses_are_checked_against_their_questionnaire() {
    let (_server, base) = server_with_tenant();
    let questionnaire = json!({
        "resourceType": "Questionnaire", "id": "kols", "url": "https://fjord.example/fhir/Questionnaire/kols",
        "status": "active",
        "item": [
            { "linkId": "breath", "text": "Mer tungpust enn vanlig?", "type": "boolean", "required": true },
            { "linkId": "colour", "type": "choice", "answerOption": [
                { "valueCoding": { "system": "urn:colour", "code": "white" } },
                { "valueCoding": { "system": "urn:colour", "code": "green" } },
            ] },
        ],
    });
    let stored = send(
        "PUT",
        &format!("{base}/Questionnaire/kols"),
        &[JSON],
        Some(&questionnaire.to_string()),
    );
    assert_eq!(stored.status, 201, "{}", stored.body);
    set_settings(&base, json!({ "validation": "strict" }));
    let response = |answers: Value| {
        json!({
            "resourceType": "QuestionnaireResponse", "status": "completed",
            "questionnaire": "https://fjord.example/fhir/Questionnaire/kols",
            "item": answers,
        })
        .to_string()
    };
    let url = format!("{base}/QuestionnaireResponse");
    let good = response(json!([
        { "linkId": "breath", "answer": [{ "valueBoolean": true }] },
        { "linkId": "colour", "answer": [{ "valueCoding": { "system": "urn:colour", "code": "white" } }] },
    ]));
    let created = send("POST", &url, &[JSON], Some(&good));
    assert_eq!(created.status, 201, "{}", created.body);
    let bad = response(json!([
        { "linkId": "colour", "answer": [{ "valueCoding": { "system": "urn:colour", "code": "red" } }] },
    ]));
    let refused = send("POST", &url, &[JSON], Some(&bad));
    assert_eq!(refused.status, 422, "{}", refused.body);
    let outcome = refused.json();
    let expressions: Vec<&str> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        expressions,
        [
            "QuestionnaireResponse.item[0].answer[0]",
            "QuestionnaireResponse"
        ],
        "{outcome}"
    );
    // A Questionnaire the tenant does not have: stored, with a warning that says so.
    let elsewhere = good.replace("Questionnaire/kols", "Questionnaire/other");
    let reply = send(
        "POST",
        &format!("{url}/$validate"),
        &[JSON],
        Some(&elsewhere),
    );
    assert_eq!(
        reply.json()["issue"][0]["severity"],
        "warning",
        "{}",
        reply.body
    );
    assert_eq!(
        reply.json()["issue"][0]["expression"][0],
        "QuestionnaireResponse.questionnaire"
    );
}
