//! SMART on FHIR at the resource server: tokens checked (forged ones refused), scopes deciding
//! each interaction, and a patient-scoped token confined to its patient's compartment in every
//! request shape, against a real server with `--auth required`.

use std::path::PathBuf;

use fjord_smart::{DevIssuer, TokenRequest};
use fjord_tests::{send, Reply, Server};
use serde_json::{json, Value};

use crate::embedded::{data_dir, fjord};

pub(crate) const VITAL: &str =
    "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";

/// A server that requires tokens and trusts the development issuer, with tenants `t1` and `t2`.
pub(crate) struct Smart {
    pub server: Server,
    pub dir: PathBuf,
    pub issuer: DevIssuer,
    /// The server's arguments and environment, for [`Smart::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Smart {
    pub fn start(name: &str, extra: &[&str]) -> Smart {
        Smart::start_with_env(name, extra, &[])
    }

    /// A server with extra arguments and environment variables.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Smart {
        let database = tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(fjord_testkit::database());
        let dir = data_dir(name);
        let mut args = vec![
            "--database-url",
            &database.url,
            "--auth",
            "required",
            "--dev-issuer",
            "true",
            "--data-dir",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let server = Server::start_with("127.0.0.1:0", &args, env);
        let issuer = DevIssuer::load_or_create(&dir.join("auth").join("dev-issuer.pem")).unwrap();
        let smart = Smart {
            server,
            dir: dir.clone(),
            issuer,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let admin = smart.admin_token();
        for tenant in ["t1", "t2"] {
            let reply = send(
                "POST",
                &format!("{}/admin/tenants", smart.server.origin),
                &[("Authorization", &format!("Bearer {admin}"))],
                Some(&json!({"id": tenant, "name": tenant}).to_string()),
            );
            assert_eq!(reply.status, 201, "{}", reply.body);
        }
        smart
    }

    /// Shuts the server down (SIGTERM), checks it exited cleanly, and starts it again on the
    /// same database and data directory (on a new port).
    pub fn restart(&mut self) {
        let exit = self.server.terminate();
        assert!(exit.success(), "the server's exit: {exit}");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.server = Server::start_with("127.0.0.1:0", &args, &env);
    }

    /// `fjord COMMAND --data-dir DIR ARGS…` on the server's data directory; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec![args[0], "--data-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        fjord(&all)
    }

    /// Sets t1's settings through the administration API and waits out the tenant cache.
    pub fn set_t1_settings(&self, settings: &Value) {
        let reply = send(
            "PUT",
            &format!("{}/admin/tenants/t1/settings", self.server.origin),
            &[("Authorization", &format!("Bearer {}", self.admin_token()))],
            Some(&settings.to_string()),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        std::thread::sleep(std::time::Duration::from_secs(3));
    }

    /// An administration token, printed by `fjord token --admin`.
    pub fn admin_token(&self) -> String {
        fjord(&[
            "token",
            "--data-dir",
            self.dir.to_str().unwrap(),
            "--admin",
            "--audience",
            &format!("{}/admin", self.server.origin),
        ])
        .trim()
        .to_owned()
    }

    pub fn token(&self, tenant: &str, scope: &str, patient: Option<&str>) -> String {
        self.issuer.mint(&TokenRequest {
            audience: self.server.base(tenant),
            scope: scope.into(),
            patient: patient.map(str::to_owned),
            ..Default::default()
        })
    }

    pub fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.call_in("t1", token, method, path, body)
    }

    pub fn call_in(
        &self,
        tenant: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{}{path}", self.server.base(tenant));
        let body = body.map(Value::to_string);
        send(
            method,
            &url,
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/fhir+json"),
            ],
            body.as_deref(),
        )
    }
}

impl Drop for Smart {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Type/id` of every resource of a Bundle, in order.
fn resources(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let r = &e["resource"];
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap(),
                        r["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn challenge(reply: &Reply) -> &str {
    reply.header("www-authenticate").unwrap_or_default()
}

pub(crate) fn observation(id: &str, patient: &str, category: &str, code: &str) -> Value {
    let (system, category_code) = category.split_once('|').unwrap();
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "identifier": [{"system": "urn:test", "value": id}],
        "category": [{"coding": [{"system": system, "code": category_code}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "performer": [{"reference": "Practitioner/pr"}],
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    })
}

/// Patients `a` and `b` in t1 with Observations, a Practitioner, and a patient `c` in t2.
pub(crate) fn load(smart: &Smart) {
    let system = smart.token("t1", "system/*.cruds", None);
    let put = |tenant: &str, token: &str, resource: Value| {
        let path = format!(
            "/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = smart.call_in(tenant, token, "PUT", &path, Some(&resource));
        assert!(matches!(reply.status, 200 | 201), "{path}: {}", reply.body);
    };
    put(
        "t1",
        &system,
        json!({"resourceType": "Practitioner", "id": "pr"}),
    );
    put(
        "t1",
        &system,
        json!({"resourceType": "Patient", "id": "a", "name": [{"family": "Aas"}]}),
    );
    put(
        "t1",
        &system,
        json!({"resourceType": "Patient", "id": "b", "name": [{"family": "Berg"}]}),
    );
    put("t1", &system, observation("a-vital", "a", VITAL, "8867-4"));
    put(
        "t1",
        &system,
        observation(
            "a-lab",
            "a",
            "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "2339-0",
        ),
    );
    put("t1", &system, observation("b-vital", "b", VITAL, "only-b"));
    let other = smart.token("t2", "system/*.cruds", None);
    put("t2", &other, json!({"resourceType": "Patient", "id": "c"}));
}

#[test]
fn tokens_are_checked_and_forged_ones_refused() {
    let smart = Smart::start("smart-tokens", &[]);
    load(&smart);
    let url = format!("{}/Observation", smart.server.base("t1"));

    // No token: 401 with a bare challenge and an OperationOutcome.
    let reply = send("GET", &url, &[], None);
    assert_eq!(reply.status, 401);
    assert_eq!(challenge(&reply), "Bearer realm=\"fjord\"");
    assert_eq!(reply.json()["issue"][0]["code"], "login");

    // A token from the CLI works.
    let cli = fjord(&[
        "token",
        "--data-dir",
        smart.dir.to_str().unwrap(),
        "--tenant",
        "t1",
        "--scope",
        "user/*.rs",
        "--audience",
        &smart.server.base("t1"),
    ]);
    assert_eq!(
        resources(&smart.call(cli.trim(), "GET", "/Observation", None)).len(),
        3
    );

    let good = TokenRequest {
        audience: smart.server.base("t1"),
        scope: "user/*.rs".into(),
        ..Default::default()
    };
    let with = |name: &str, value: Value| {
        let mut request = good.clone();
        request.extra.insert(name.into(), value);
        smart.issuer.mint(&request)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forger = DevIssuer::generate().unwrap();
    let forged = forger.mint(&good);
    let parts: Vec<&str> = forged.split('.').collect();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    // HS256 keyed with the issuer's published key: the classic algorithm confusion.
    let hs256 = {
        let public = serde_json::to_string(&smart.issuer.jwks()).unwrap();
        let claims: Value = {
            use base64::Engine;
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap();
            serde_json::from_slice(&payload).unwrap()
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        ("garbage", "not-a-token".to_owned()),
        ("another key", forged.clone()),
        ("alg none", none),
        ("HS256 with the public key", hs256),
        ("expired", with("exp", json!(now - 600))),
        ("not yet valid", with("nbf", json!(now + 600))),
        (
            "wrong audience",
            with("aud", json!("http://elsewhere.test/fhir/t1")),
        ),
        ("wrong issuer", with("iss", json!("https://idp.example"))),
        ("ID token", with("nonce", json!("abc"))),
        (
            "another tenant's audience",
            with("aud", json!(smart.server.base("t2"))),
        ),
    ];
    for (what, token) in &cases {
        let reply = smart.call(token, "GET", "/Observation", None);
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert!(
            challenge(&reply).contains("error=\"invalid_token\""),
            "{what}: {}",
            challenge(&reply)
        );
        assert_eq!(reply.json()["resourceType"], "OperationOutcome", "{what}");
        assert!(!reply.body.contains("8867-4"), "{what}: served data");
    }
    // A DPoP-bound token presented as a bearer token.
    let bound = with(
        "cnf",
        json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
    );
    assert_eq!(smart.call(&bound, "GET", "/Observation", None).status, 401);

    // What anyone may read: the CapabilityStatement and the SMART configuration.
    let metadata = send(
        "GET",
        &format!("{}/metadata", smart.server.base("t1")),
        &[],
        None,
    );
    assert_eq!(metadata.status, 200);
    assert_eq!(
        metadata.json()["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "SMART-on-FHIR"
    );
    let configuration = send(
        "GET",
        &format!(
            "{}/.well-known/smart-configuration",
            smart.server.base("t1")
        ),
        &[("Accept", "application/fhir+xml")],
        None,
    );
    assert_eq!(configuration.status, 200);
    assert_eq!(
        configuration.header("access-control-allow-origin"),
        Some("*")
    );
    assert!(configuration.json()["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("permission-v2")));

    // The administration API needs the admin scope.
    let reader = smart.token("t1", "system/*.cruds", None);
    let reply = send(
        "GET",
        &format!("{}/admin/tenants", smart.server.origin),
        &[("Authorization", &format!("Bearer {reader}"))],
        None,
    );
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[test]
fn scopes_decide_each_interaction() {
    let smart = Smart::start("smart-scopes", &[]);
    load(&smart);
    let reader = smart.token("t1", "user/Observation.rs", None);
    assert_eq!(
        smart
            .call(&reader, "GET", "/Observation/a-vital", None)
            .status,
        200
    );
    assert_eq!(
        resources(&smart.call(&reader, "GET", "/Observation", None)).len(),
        3
    );
    let denied = smart.call(&reader, "GET", "/Patient/a", None);
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(challenge(&denied).contains("error=\"insufficient_scope\""));
    assert_eq!(denied.json()["issue"][0]["code"], "forbidden");
    let create = smart.call(
        &reader,
        "POST",
        "/Observation",
        Some(&observation("x", "a", VITAL, "1")),
    );
    assert_eq!(create.status, 403, "{}", create.body);
    assert_eq!(
        smart
            .call(&reader, "DELETE", "/Observation/a-vital", None)
            .status,
        403
    );

    // v1: read is read and search; write is create, update, delete.
    let v1 = smart.token("t1", "user/*.read", None);
    assert_eq!(smart.call(&v1, "GET", "/Patient/a", None).status, 200);
    assert_eq!(
        smart
            .call(&v1, "GET", "/Observation/a-vital/_history", None)
            .status,
        200
    );
    let writer = smart.token("t1", "user/*.write", None);
    assert_eq!(smart.call(&writer, "GET", "/Patient/a", None).status, 403);
    let mut changed = observation("a-vital", "a", VITAL, "8867-4");
    changed["status"] = json!("amended");
    assert_eq!(
        smart
            .call(&writer, "PUT", "/Observation/a-vital", Some(&changed))
            .status,
        200
    );

    // v2 letters: read without search.
    let read_only = smart.token("t1", "user/Observation.r", None);
    assert_eq!(
        smart
            .call(&read_only, "GET", "/Observation/a-vital", None)
            .status,
        200
    );
    assert_eq!(
        smart.call(&read_only, "GET", "/Observation", None).status,
        403
    );

    // Each entry of a batch is authorised by itself.
    let batch = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/a-vital"}},
            {"request": {"method": "GET", "url": "Patient/a"}},
            {"resource": observation("y", "a", VITAL, "1"), "request": {"method": "POST", "url": "Observation"}},
        ],
    });
    let reply = smart.call(&reader, "POST", "", Some(&batch));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let statuses: Vec<String> = reply.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert!(statuses[0].starts_with("200"), "{statuses:?}");
    assert!(statuses[1].starts_with("403"), "{statuses:?}");
    assert!(statuses[2].starts_with("403"), "{statuses:?}");

    // A transaction with one forbidden entry writes nothing.
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"}}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    });
    let both = smart.token("t1", "user/Observation.cruds", None);
    let reply = smart.call(&both, "POST", "", Some(&transaction));
    assert_eq!(reply.status, 403, "{}", reply.body);
    let total = smart.call(&both, "GET", "/Observation?_summary=count", None);
    assert_eq!(total.json()["total"], 3);

    // Maintenance needs an unconditional wildcard.
    assert_eq!(smart.call(&both, "POST", "/$reindex", None).status, 403);
    let system = smart.token("t1", "system/*.cruds", None);
    assert_eq!(smart.call(&system, "POST", "/$reindex", None).status, 202);
}

#[test]
fn a_patient_token_sees_nothing_of_another_patient_or_tenant() {
    let smart = Smart::start("smart-leaks", &[]);
    load(&smart);
    let a = smart.token("t1", "patient/*.rs", Some("a"));
    let get = |path: &str| smart.call(&a, "GET", path, None);
    let found = |path: &str| {
        let mut found = resources(&get(path));
        found.sort();
        found
    };
    let none_of_b = |path: &str| {
        let reply = get(path);
        // b's content: the code of b's observation, b's family name.
        assert!(
            !reply.body.contains("only-b") && !reply.body.contains("Berg"),
            "{path}: {}",
            reply.body
        );
        reply
    };

    // Searches: only a's, with totals of a's.
    assert_eq!(
        found("/Observation"),
        ["Observation/a-lab", "Observation/a-vital"]
    );
    assert_eq!(found("/Patient"), ["Patient/a"]);
    assert_eq!(
        found("/Observation?subject=Patient/b"),
        Vec::<String>::new()
    );
    assert_eq!(get("/Observation?_summary=count").json()["total"], 2);
    assert_eq!(
        get("/Observation?_total=accurate&_count=1").json()["total"],
        2
    );
    assert_eq!(found("/?_type=Patient,Observation,Practitioner").len(), 3);
    // Chains and _has look only into what the token may see.
    assert_eq!(
        found("/Observation?subject:Patient.family=Berg"),
        Vec::<String>::new()
    );
    assert_eq!(
        found("/Patient?_has:Observation:subject:code=only-b"),
        Vec::<String>::new()
    );
    assert_eq!(
        found("/Observation?performer:Practitioner._id=pr"),
        Vec::<String>::new()
    );
    // Compartment searches of another patient.
    assert_eq!(found("/Patient/b/Observation"), Vec::<String>::new());
    assert_eq!(found("/Patient/b/*"), Vec::<String>::new());
    // Includes: each included resource by its own type; a Practitioner is in no patient's
    // compartment, b's observations not in a's.
    assert_eq!(
        found(
            "/Observation?_id=a-vital&_include=Observation:subject&_include=Observation:performer"
        ),
        ["Observation/a-vital", "Patient/a"]
    );
    assert_eq!(
        found("/Patient?_revinclude=Observation:subject"),
        ["Observation/a-lab", "Observation/a-vital", "Patient/a"]
    );
    none_of_b("/Patient?_revinclude=Observation:subject&_include:iterate=Observation:subject");
    // Reads of b's resources: as if they did not exist.
    for path in [
        "/Patient/b",
        "/Observation/b-vital",
        "/Observation/b-vital/_history/1",
        "/Observation/b-vital/_history",
        "/Practitioner/pr",
        "/Patient/b/$everything",
    ] {
        let reply = none_of_b(path);
        assert!(
            matches!(reply.status, 403 | 404),
            "{path}: {}",
            reply.status
        );
    }
    // $everything of a: a's and what they refer to that the token may read.
    assert_eq!(
        found("/Patient/a/$everything"),
        ["Observation/a-lab", "Observation/a-vital", "Patient/a"]
    );
    // History of a type or the system: the versions of a's resources only.
    assert_eq!(
        found("/Observation/_history"),
        ["Observation/a-lab", "Observation/a-vital"]
    );
    assert_eq!(
        found("/_history"),
        ["Observation/a-lab", "Observation/a-vital", "Patient/a"]
    );
    none_of_b("/_history");
    // Paging links of an unrestricted search replayed with a's token: still a's only.
    let system = smart.token("t1", "system/*.cruds", None);
    let page = smart.call(&system, "GET", "/Observation?_count=1", None);
    let next = page.json()["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_owned())
        .expect("a next page");
    let tampered = send(
        "GET",
        &next,
        &[("Authorization", &format!("Bearer {a}"))],
        None,
    );
    assert!(
        matches!(tampered.status, 200 | 400 | 410),
        "{}",
        tampered.body
    );
    assert!(!tampered.body.contains("only-b"), "{}", tampered.body);
    // Another tenant: a token for t1 is nothing there, and t2's patient is nowhere here.
    assert_eq!(smart.call_in("t2", &a, "GET", "/Patient", None).status, 401);
    none_of_b("/Patient?_id=c");
    assert_eq!(found("/Patient?_id=c"), Vec::<String>::new());

    // Writes: a's compartment only, before and after.
    let writer = smart.token("t1", "patient/*.cruds", Some("a"));
    let write =
        |method: &str, path: &str, body: Option<&Value>| smart.call(&writer, method, path, body);
    let reply = write(
        "POST",
        "/Observation",
        Some(&observation("n", "b", VITAL, "1")),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    let moved = observation("a-vital", "b", VITAL, "8867-4");
    assert_eq!(
        write("PUT", "/Observation/a-vital", Some(&moved)).status,
        403
    );
    let mut b_changed = observation("b-vital", "a", VITAL, "only-b");
    assert_eq!(
        write("PUT", "/Observation/b-vital", Some(&b_changed)).status,
        403
    );
    b_changed["subject"] = json!({"reference": "Patient/b"});
    assert_eq!(
        write("PUT", "/Observation/b-vital", Some(&b_changed)).status,
        403
    );
    assert!(matches!(
        write("DELETE", "/Observation/b-vital", None).status,
        403 | 404
    ));
    // A conditional create whose condition matches b's observation creates a's own.
    let reply = send(
        "POST",
        &format!("{}/Observation", smart.server.base("t1")),
        &[
            ("Authorization", &format!("Bearer {writer}")),
            ("Content-Type", "application/fhir+json"),
            ("If-None-Exist", "identifier=urn:test|b-vital"),
        ],
        Some(&observation("ignored", "a", VITAL, "9279-1").to_string()),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(!reply.body.contains("only-b"));
    // A transaction entry reading b's observation finds nothing.
    let transaction = json!({
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Observation?identifier=urn:test|b-vital"}}],
    });
    let reply = write("POST", "", Some(&transaction));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.contains("only-b"), "{}", reply.body);
    // b's data is untouched.
    let b = smart.call(&system, "GET", "/Observation/b-vital", None);
    assert_eq!(b.json()["subject"]["reference"], "Patient/b");
    assert_eq!(b.json()["meta"]["versionId"], "1");
}

#[test]
fn granular_scopes_narrow_the_query_and_its_totals() {
    let smart = Smart::start("smart-granular", &[]);
    load(&smart);
    let vital_signs = smart.token(
        "t1",
        &format!("patient/Observation.rs?category={VITAL}"),
        Some("a"),
    );
    let reply = smart.call(&vital_signs, "GET", "/Observation?_total=accurate", None);
    assert_eq!(resources(&reply), ["Observation/a-vital"]);
    // The unrestricted query with the scope's filter applied has the same total.
    let system = smart.token("t1", "system/*.cruds", None);
    let unrestricted = smart.call(
        &system,
        "GET",
        &format!("/Observation?subject=Patient/a&category={VITAL}&_total=accurate"),
        None,
    );
    assert_eq!(reply.json()["total"], unrestricted.json()["total"]);
    assert_eq!(
        smart
            .call(&vital_signs, "GET", "/Observation/a-lab", None)
            .status,
        404
    );
    // Two scopes: a union.
    let both = smart.token(
        "t1",
        &format!(
            "patient/Observation.rs?category={VITAL} patient/Observation.rs?code=http://loinc.org|2339-0"
        ),
        Some("a"),
    );
    let mut found = resources(&smart.call(&both, "GET", "/Observation", None));
    found.sort();
    assert_eq!(found, ["Observation/a-lab", "Observation/a-vital"]);
}

#[test]
fn keys_come_from_the_issuers_jwks_url_and_rotate() {
    use std::sync::{Arc, Mutex};
    // The "IdP": a JWKS URL served by the test, with the key it publishes changeable.
    let first = DevIssuer::generate().unwrap();
    let second = DevIssuer::generate().unwrap();
    let published = Arc::new(Mutex::new(serde_json::to_string(&first.jwks()).unwrap()));
    let (jwks_uri, fetches) = {
        let published = published.clone();
        answering(move |_| published.lock().unwrap().clone())
    };
    let jwks_uri = format!("{jwks_uri}/jwks");
    let config = std::env::temp_dir().join(format!("fjord-smart-{}.toml", std::process::id()));
    std::fs::write(&config, "jwks_refetch_seconds = 0\n").unwrap();
    let smart = Smart::start("smart-jwks", &["--config", config.to_str().unwrap()]);
    let settings = json!({"trustedIssuers": [{
        "issuer": "https://idp.test",
        "jwksUri": jwks_uri,
        "audiences": ["fjord-t1"],
    }]});
    smart.set_t1_settings(&settings);
    let token_of = |issuer: &DevIssuer| {
        let mut request = TokenRequest {
            audience: "fjord-t1".into(),
            scope: "system/*.rs".into(),
            ..Default::default()
        };
        request
            .extra
            .insert("iss".into(), json!("https://idp.test"));
        issuer.mint(&request)
    };
    assert_eq!(
        smart
            .call(&token_of(&first), "GET", "/Patient", None)
            .status,
        200
    );
    assert_eq!(
        smart
            .call(&token_of(&first), "GET", "/Patient", None)
            .status,
        200
    );
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keys cached"
    );
    // The IdP rotates its key: a token under the new key id makes Fjord fetch again.
    *published.lock().unwrap() = serde_json::to_string(&second.jwks()).unwrap();
    assert_eq!(
        smart
            .call(&token_of(&second), "GET", "/Patient", None)
            .status,
        200
    );
    // A key the IdP never published: one more fetch, and no.
    let stranger = DevIssuer::generate().unwrap();
    assert_eq!(
        smart
            .call(&token_of(&stranger), "GET", "/Patient", None)
            .status,
        401
    );
    let _ = std::fs::remove_file(&config);
}

#[test]
fn a_dpop_bound_token_needs_a_fresh_proof_of_each_request() {
    use fjord_smart::ProofKey;
    let smart = Smart::start("smart-dpop", &[]);
    load(&smart);
    let key = ProofKey::generate();
    let mut request = TokenRequest {
        audience: smart.server.base("t1"),
        scope: "system/Observation.rs".into(),
        ..Default::default()
    };
    request
        .extra
        .insert("cnf".into(), json!({ "jkt": key.thumbprint() }));
    let token = smart.issuer.mint(&request);
    let url = format!("{}/Observation/a-vital", smart.server.base("t1"));
    let with_proof = |proof: &str| {
        send(
            "GET",
            &url,
            &[("Authorization", &format!("DPoP {token}")), ("DPoP", proof)],
            None,
        )
    };
    let proof = key.proof("GET", &url, &token);
    assert_eq!(with_proof(&proof).status, 200);
    // Replayed, for another URL or method, by another key, or missing: 401 with a DPoP challenge.
    let other = ProofKey::generate();
    for (what, proof) in [
        ("replayed", proof.clone()),
        ("another URL", key.proof("GET", &format!("{url}x"), &token)),
        ("another method", key.proof("DELETE", &url, &token)),
        ("another key", other.proof("GET", &url, &token)),
        ("another token", key.proof("GET", &url, "a-different-token")),
    ] {
        let reply = with_proof(&proof);
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert!(
            challenge(&reply).starts_with("DPoP ")
                && challenge(&reply).contains("invalid_dpop_proof"),
            "{what}: {}",
            challenge(&reply)
        );
        assert!(!reply.body.contains("8867-4"), "{what}");
    }
    let no_proof = send(
        "GET",
        &url,
        &[("Authorization", &format!("DPoP {token}"))],
        None,
    );
    assert_eq!(no_proof.status, 401);
    // As a bearer token it is refused: it is only good with its key.
    let bearer = send(
        "GET",
        &url,
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(bearer.status, 401);
    assert!(challenge(&bearer).contains("invalid_token"));
}

/// A one-route HTTP server of the test (an IdP's endpoint): each request's text to `respond`,
/// its answer sent as JSON. Its origin, and how many requests it has had.
fn answering(
    respond: impl Fn(&str) -> String + Send + 'static,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((head, body)) = crate::receiver::read_request(&mut stream) else {
                continue;
            };
            let request = format!("{head}\r\n\r\n{body}");
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = respond(&request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (origin, count)
}

#[test]
fn opaque_tokens_are_introspected_and_the_answer_cached_briefly() {
    let (endpoint, asked) = answering(|request| {
        // Basic fjord:s3cret
        let active = request.contains("token=opaque-good")
            && request.contains("Authorization: Basic ZmpvcmQ6czNjcmV0");
        if active {
            json!({"active": true, "scope": "user/Observation.rs", "sub": "pega", "client_id": "pega", "iss": "https://idp.test"}).to_string()
        } else if request.contains("token=opaque-elsewhere") {
            json!({"active": true, "scope": "user/*.rs", "aud": "http://elsewhere.test"})
                .to_string()
        } else {
            json!({"active": false}).to_string()
        }
    });
    let smart = Smart::start("smart-introspection", &[]);
    load(&smart);
    let settings = json!({"trustedIssuers": [{
        "issuer": "https://idp.test",
        "introspection": {"endpoint": format!("{endpoint}/introspect"), "clientId": "fjord", "clientSecret": "s3cret"},
    }]});
    smart.set_t1_settings(&settings);
    assert_eq!(
        smart
            .call("opaque-good", "GET", "/Observation/a-vital", None)
            .status,
        200
    );
    assert_eq!(
        smart.call("opaque-good", "GET", "/Patient/a", None).status,
        403
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "cached");
    let inactive = smart.call("opaque-revoked", "GET", "/Observation/a-vital", None);
    assert_eq!(inactive.status, 401);
    assert!(challenge(&inactive).contains("invalid_token"));
    assert_eq!(
        smart
            .call("opaque-elsewhere", "GET", "/Observation", None)
            .status,
        401
    );
    // The secret is never shown again; the settings as shown, put back, keep it.
    let settings_url = format!("{}/admin/tenants/t1/settings", smart.server.origin);
    let admin = [("Authorization", format!("Bearer {}", smart.admin_token()))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let shown = send("GET", &settings_url, &admin, None);
    assert!(!shown.body.contains("s3cret"), "{}", shown.body);
    assert_eq!(
        shown.json()["trustedIssuers"][0]["introspection"]["clientSecret"],
        "********"
    );
    smart.set_t1_settings(&shown.json());
    assert_eq!(
        smart
            .call("opaque-good-again", "GET", "/Observation/a-vital", None)
            .status,
        200,
        "the stored secret still authenticates Fjord"
    );
    let mut elsewhere = shown.json();
    elsewhere["trustedIssuers"][0]["introspection"]["endpoint"] =
        json!("http://other.test/introspect");
    let refused = send("PUT", &settings_url, &admin, Some(&elsewhere.to_string()));
    assert_eq!(refused.status, 400, "{}", refused.body);
}
