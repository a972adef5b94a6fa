//! The development authorization server over HTTP: standalone launch through the login page's
//! patient picker, EHR launch, refresh, revocation, introspection, backend services with a
//! signed assertion, clients registered with `fjord client add` while the server runs, and CORS
//! for browser apps (open with authentication, this machine's pages only without). `e2e.rs` drives the same flows with real SMART clients.

use fjord_smart::DevIssuer;
use fjord_tests::{reply_of, send, Reply, Server};
use serde_json::{json, Value};

use crate::smart::{load, Smart};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// RFC 7636's example verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A GET or form POST that does not follow redirects.
fn raw(method: &str, url: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = if method == "POST" {
        request.send_form(form)
    } else {
        request.call()
    };
    reply_of(result, method, url)
}

/// The query parameter `name` of a redirect's `Location`.
fn location_param(reply: &Reply, name: &str) -> Option<String> {
    let location = reply.header("location")?;
    let query = location.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| {
            v.replace("%2F", "/")
                .replace("%3A", ":")
                .replace("%20", " ")
        })
    })
}

fn authorize_query(
    client: &str,
    scope: &str,
    aud: &str,
    launch: Option<&str>,
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "s-1"),
        ("aud", aud),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend(launch.map(|l| ("launch", l)));
    pairs
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn url_with(url: &str, pairs: &[(String, String)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(n, v)| format!("{n}={}", encode(v)))
        .collect();
    format!("{url}?{}", query.join("&"))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Flows<'a> {
    smart: &'a Smart,
    auth: String,
}

impl Flows<'_> {
    fn cli(&self, args: &[&str]) -> String {
        self.smart.cli(args)
    }

    /// The code of an authorization that needs no login page.
    fn code(&self, client: &str, scope: &str, launch: Option<&str>) -> String {
        let query = authorize_query(client, scope, &self.smart.server.base("t1"), launch);
        let reply = raw(
            "GET",
            &url_with(&format!("{}/authorize", self.auth), &query),
            &[],
            &[],
        );
        assert_eq!(reply.status, 302, "{}", reply.body);
        assert_eq!(location_param(&reply, "state").as_deref(), Some("s-1"));
        location_param(&reply, "code").expect("a code")
    }

    fn exchange(&self, client: &str, code: &str) -> Reply {
        raw(
            "POST",
            &format!("{}/token", self.auth),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", client),
            ],
            &[],
        )
    }
}

fn ids(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut ids: Vec<String> = reply.json()["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_development_authorization_server_runs_the_smart_flows() {
    // A client given in the configuration file.
    let config = std::env::temp_dir().join(format!("fjord-authz-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[clients]]\nclient_id = \"configured\"\nredirect_uris = [\"{REDIRECT}\"]\n\
             auto_login = {{ patient = \"b\" }}\n"
        ),
    )
    .unwrap();
    let smart = Smart::start("authz", &["--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_file(&config);
    load(&smart);
    let origin = smart.server.origin.clone();
    let flows = Flows {
        smart: &smart,
        auth: format!("{origin}/auth/t1"),
    };

    // Discovery names the development server while the tenant configures none.
    let discovery = send(
        "GET",
        &format!(
            "{}/.well-known/smart-configuration",
            smart.server.base("t1")
        ),
        &[],
        None,
    );
    let discovery = discovery.json();
    assert_eq!(
        discovery["authorization_endpoint"],
        format!("{origin}/auth/t1/authorize")
    );
    assert_eq!(
        discovery["token_endpoint"],
        format!("{origin}/auth/t1/token")
    );
    assert_eq!(discovery["jwks_uri"], format!("{origin}/auth/jwks"));
    for capability in [
        "launch-ehr",
        "launch-standalone",
        "client-confidential-asymmetric",
    ] {
        assert!(discovery["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!(capability)));
    }
    let metadata = send(
        "GET",
        &format!("{}/metadata", smart.server.base("t1")),
        &[],
        None,
    )
    .json();
    let uris = &metadata["rest"][0]["security"]["extension"][0]["extension"];
    assert_eq!(
        uris[0],
        json!({"url": "authorize", "valueUri": format!("{origin}/auth/t1/authorize")})
    );
    let jwks = send("GET", &format!("{origin}/auth/jwks"), &[], None).json();
    assert_eq!(jwks, serde_json::to_value(smart.issuer.jwks()).unwrap());

    // Clients registered while the server runs.
    flows.cli(&[
        "client",
        "add",
        "app",
        "--redirect-uri",
        REDIRECT,
        "--name",
        "Heimeapp",
    ]);
    flows.cli(&[
        "client",
        "add",
        "headless",
        "--redirect-uri",
        REDIRECT,
        "--login-patient",
        "a",
    ]);
    let printed = flows.cli(&["client", "add", "pega", "--secret"]);
    let secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("client secret (shown once): "))
        .expect("the secret is printed")
        .to_owned();
    let phg_key = DevIssuer::generate().unwrap();
    let jwks_file = smart.dir.join("phg-jwks.json");
    std::fs::write(&jwks_file, serde_json::to_string(&phg_key.jwks()).unwrap()).unwrap();
    flows.cli(&[
        "client",
        "add",
        "phg",
        "--jwks",
        jwks_file.to_str().unwrap(),
        "--scope",
        "system/Observation.rs",
    ]);
    let listed = flows.cli(&["client", "list"]);
    assert!(
        listed.contains("phg\tprivate_key_jwt") && listed.contains("pega\tclient_secret"),
        "{listed}"
    );

    // Standalone launch: the login page lists the tenant's patients; the user picks b.
    let scope = "launch/patient openid fhirUser patient/*.rs offline_access";
    let query = authorize_query("app", scope, &smart.server.base("t1"), None);
    let page = raw(
        "GET",
        &url_with(&format!("{}/authorize", flows.auth), &query),
        &[],
        &[],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Heimeapp"));
    assert!(
        page.body.contains("<option value=\"a\">Aas</option>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<option value=\"b\">Berg</option>"));
    assert!(page.body.contains("value=\"Practitioner/pr\""));
    let mut form: Vec<(&str, &str)> = query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    form.extend([("patient", "b"), ("fhir_user", "Practitioner/pr")]);
    let approved = raw("POST", &format!("{}/authorize", flows.auth), &form, &[]);
    assert_eq!(approved.status, 303, "{}", approved.body);
    assert!(approved.header("location").unwrap().starts_with(REDIRECT));
    let code = location_param(&approved, "code").unwrap();
    let response = flows.exchange("app", &code);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let response = response.json();
    assert_eq!(response["patient"], "b");
    let token = response["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(&smart.call(&token, "GET", "/Observation", None)),
        ["b-vital"]
    );
    assert_eq!(
        smart
            .call(&token, "GET", "/Observation/a-vital", None)
            .status,
        404
    );
    assert_eq!(
        flows.exchange("app", &code).json()["error"],
        "invalid_grant",
        "a code is good once"
    );

    // Refresh without naming the client (as fhirclient does), then revoke.
    let refreshed = raw(
        "POST",
        &format!("{}/token", flows.auth),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", response["refresh_token"].as_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let renewed = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ids(&smart.call(&renewed, "GET", "/Observation", None)),
        ["b-vital"]
    );
    let revoked = raw(
        "POST",
        &format!("{}/revoke", flows.auth),
        &[("token", &renewed), ("client_id", "app")],
        &[],
    );
    assert_eq!(revoked.status, 200);
    let refused = smart.call(&renewed, "GET", "/Observation", None);
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("revoked"));
    assert_eq!(
        smart.call(&token, "GET", "/Observation", None).status,
        200,
        "only the revoked token"
    );

    // EHR launch: the context comes from `fjord launch`, no login page.
    let launch = flows.cli(&[
        "launch",
        "--tenant",
        "t1",
        "--patient",
        "a",
        "--fhir-user",
        "Practitioner/pr",
    ]);
    let code = flows.code(
        "app",
        "launch openid fhirUser patient/*.rs",
        Some(launch.trim()),
    );
    let ehr = flows.exchange("app", &code).json();
    assert_eq!(ehr["patient"], "a");
    assert_eq!(ehr["need_patient_banner"], false);
    assert!(ehr["id_token"].is_string());
    let ehr_token = ehr["access_token"].as_str().unwrap();
    assert_eq!(
        ids(&smart.call(ehr_token, "GET", "/Observation", None)),
        ["a-lab", "a-vital"]
    );

    // A test client configured to skip the login page.
    let code = flows.code("headless", "launch/patient patient/Observation.rs", None);
    assert_eq!(flows.exchange("headless", &code).json()["patient"], "a");
    let code = flows.code("configured", "launch/patient patient/Observation.rs", None);
    assert_eq!(flows.exchange("configured", &code).json()["patient"], "b");

    // Introspection, for an authenticated client only.
    let introspected = raw(
        "POST",
        &format!("{}/introspect", flows.auth),
        &[("token", ehr_token)],
        &[("Authorization", &basic("pega", &secret))],
    );
    let introspected = introspected.json();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["patient"], "a");
    let wrong = raw(
        "POST",
        &format!("{}/introspect", flows.auth),
        &[("token", ehr_token)],
        &[("Authorization", &basic("pega", "guess"))],
    );
    assert_eq!(wrong.status, 401);

    // Backend services: a signed assertion, good once, for the system scopes the client may have.
    let assertion = |jti: &str| {
        phg_key.sign("JWT", &json!({
            "iss": "phg", "sub": "phg", "jti": jti,
            "aud": format!("{origin}/auth/t1/token"),
            "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 120,
        }))
    };
    let backend = |assertion: &str| {
        raw(
            "POST",
            &format!("{}/token", flows.auth),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Observation.rs system/Patient.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
            &[],
        )
    };
    let signed = assertion("j-1");
    let system = backend(&signed).json();
    assert_eq!(system["scope"], "system/Observation.rs");
    let system_token = system["access_token"].as_str().unwrap();
    assert_eq!(
        ids(&smart.call(system_token, "GET", "/Observation", None)),
        ["a-lab", "a-vital", "b-vital"]
    );
    assert_eq!(
        smart.call(system_token, "GET", "/Patient", None).status,
        403
    );
    let replayed = backend(&signed);
    assert_eq!(replayed.status, 401);
    assert_eq!(replayed.json()["error"], "invalid_client");

    // A t1 code is no good at t2; an unknown tenant has no endpoints.
    let code = flows.code("headless", "patient/*.rs", None);
    let elsewhere = raw(
        "POST",
        &format!("{origin}/auth/t2/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", "headless"),
        ],
        &[],
    );
    assert_eq!(elsewhere.json()["error"], "invalid_grant");
    assert_eq!(
        raw(
            "POST",
            &format!("{origin}/auth/nowhere/token"),
            &[("grant_type", "x")],
            &[]
        )
        .status,
        404
    );

    // Browser apps: CORS preflight on the FHIR API and the token endpoint.
    for url in [
        format!("{}/Observation", smart.server.base("t1")),
        format!("{origin}/auth/t1/token"),
    ] {
        let preflight = raw(
            "OPTIONS",
            &url,
            &[],
            &[
                ("Origin", "http://app.example"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
        );
        assert_eq!(preflight.status, 200, "{url}: {}", preflight.body);
        assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    }
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[test]
fn without_the_development_issuer_there_is_no_authorization_server() {
    let database = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fjord_testkit::database());
    let server = Server::start(&["--database-url", &database.url]);
    assert_eq!(
        send("GET", &format!("{}/auth/jwks", server.origin), &[], None).status,
        404
    );
    let reply = send(
        "POST",
        &format!("{}/admin/tenants", server.origin),
        &[],
        Some(&json!({"id": "t1", "name": "t1"}).to_string()),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let discovery: Value = send(
        "GET",
        &format!("{}/.well-known/smart-configuration", server.base("t1")),
        &[],
        None,
    )
    .json();
    assert!(
        discovery.get("authorization_endpoint").is_none(),
        "{discovery}"
    );
    // Without authentication, only pages of this machine may read the server from a browser.
    let preflight = |origin: &str| {
        raw(
            "OPTIONS",
            &format!("{}/Patient", server.base("t1")),
            &[],
            &[("Origin", origin), ("Access-Control-Request-Method", "GET")],
        )
    };
    assert_eq!(
        preflight("http://localhost:3000").header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let foreign = preflight("http://evil.example");
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}
