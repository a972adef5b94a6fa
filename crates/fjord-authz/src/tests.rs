use std::sync::Arc;

use fjord_smart::DevIssuer;
use serde_json::{json, Value};

use crate::token::{Endpoint, Form};
use crate::*;

const BASE: &str = "http://fjord.test/fhir/hf1";
const TOKEN_URL: &str = "http://fjord.test/auth/hf1/token";
const REDIRECT: &str = "http://app.test/callback";
/// The PKCE verifier of every test, and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn public_client(id: &str, auto_login: Option<Login>) -> Client {
    Client {
        client_id: id.into(),
        name: None,
        redirect_uris: vec![REDIRECT.into()],
        secret_sha256: None,
        jwks: None,
        scope: None,
        auto_login,
    }
}

fn server(clients: Vec<Client>) -> DevAuthServer {
    DevAuthServer::new(
        Arc::new(DevIssuer::generate().unwrap()),
        Clients::new(clients, None),
    )
}

fn request(client_id: &str, scope: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        response_type: Some("code".into()),
        client_id: Some(client_id.into()),
        redirect_uri: Some(REDIRECT.into()),
        scope: Some(scope.into()),
        state: Some("xyz".into()),
        aud: Some(BASE.into()),
        code_challenge: Some(CHALLENGE.into()),
        code_challenge_method: Some("S256".into()),
        launch: None,
    }
}

fn at() -> Endpoint<'static> {
    Endpoint {
        tenant: "hf1",
        base_url: BASE,
        url: TOKEN_URL,
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The query parameter `name` of a redirect.
fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn code_of(answer: Authorization) -> String {
    match answer {
        Authorization::Redirect(url) => {
            assert_eq!(param(&url, "state").as_deref(), Some("xyz"), "{url}");
            param(&url, "code").unwrap_or_else(|| panic!("no code in {url}"))
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
}

fn exchange(server: &DevAuthServer, client_id: &str, code: &str) -> Result<Value, OAuthError> {
    server.token(
        at(),
        &Form::new(&form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
        ])),
        None,
    )
}

#[test]
fn a_code_with_its_pkce_verifier_gives_a_token_once() {
    let login = Login {
        patient: Some("p1".into()),
        fhir_user: Some("Practitioner/d1".into()),
    };
    let server = server(vec![public_client("app", Some(login))]);
    let scope = "launch/patient openid fhirUser patient/*.rs offline_access system/*.rs";
    let code = code_of(server.authorize("hf1", BASE, &request("app", scope), None));
    let response = exchange(&server, "app", &code).unwrap();
    assert_eq!(response["patient"], "p1");
    assert_eq!(response["token_type"], "Bearer");
    // A system scope is not for a user's flow: left out, never widened.
    assert_eq!(
        response["scope"],
        "launch/patient openid fhirUser patient/*.rs offline_access"
    );
    let claims = server
        .issuer()
        .open(response["access_token"].as_str().unwrap(), "at+jwt")
        .unwrap();
    assert_eq!(claims["aud"], BASE);
    assert_eq!(claims["patient"], "p1");
    assert_eq!(claims["fhirUser"], "Practitioner/d1");
    assert_eq!(claims["client_id"], "app");
    let id_token = server
        .issuer()
        .open(response["id_token"].as_str().unwrap(), "JWT")
        .unwrap();
    assert_eq!(id_token["fhirUser"], "Practitioner/d1");
    assert_eq!(id_token["aud"], "app");
    assert!(response["refresh_token"].is_string());
    let again = exchange(&server, "app", &code).unwrap_err();
    assert_eq!(again.code, "invalid_grant");
}

#[test]
fn a_wrong_verifier_another_client_or_redirect_gets_no_token() {
    let login = Login {
        patient: Some("p1".into()),
        fhir_user: None,
    };
    let server = server(vec![
        public_client("app", Some(login)),
        public_client("other", None),
    ]);
    let scope = "patient/Observation.rs";
    let code = code_of(server.authorize("hf1", BASE, &request("app", scope), None));
    let wrong_verifier = server
        .token(
            at(),
            &Form::new(&form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &VERIFIER.replace('d', "e")),
                ("client_id", "app"),
            ])),
            None,
        )
        .unwrap_err();
    assert_eq!(wrong_verifier.code, "invalid_grant");
    // The code was spent by the failed try.
    assert!(exchange(&server, "app", &code).is_err());
    let code = code_of(server.authorize("hf1", BASE, &request("app", scope), None));
    assert_eq!(
        exchange(&server, "other", &code).unwrap_err().code,
        "invalid_grant"
    );
    let code = code_of(server.authorize("hf1", BASE, &request("app", scope), None));
    let elsewhere = Endpoint {
        tenant: "hf2",
        base_url: "http://fjord.test/fhir/hf2",
        url: "http://fjord.test/auth/hf2/token",
    };
    let other_tenant = server
        .token(
            elsewhere,
            &Form::new(&form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", "app"),
            ])),
            None,
        )
        .unwrap_err();
    assert_eq!(other_tenant.code, "invalid_grant");
}

#[test]
fn bad_requests_are_refused_or_sent_back_with_an_error() {
    let server = server(vec![public_client("app", None)]);
    let scope = "user/*.rs";
    let unknown = server.authorize("hf1", BASE, &request("nobody", scope), None);
    assert!(matches!(unknown, Authorization::Refused(_)));
    let mut foreign_redirect = request("app", scope);
    foreign_redirect.redirect_uri = Some("http://evil.test/".into());
    assert!(matches!(
        server.authorize("hf1", BASE, &foreign_redirect, None),
        Authorization::Refused(_)
    ));
    let error_of = |request: AuthorizeRequest| match server.authorize("hf1", BASE, &request, None) {
        Authorization::Redirect(url) => param(&url, "error").unwrap(),
        other => panic!("{other:?}"),
    };
    let mut plain = request("app", scope);
    plain.code_challenge_method = Some("plain".into());
    assert_eq!(error_of(plain), "invalid_request");
    let mut no_pkce = request("app", scope);
    no_pkce.code_challenge = None;
    no_pkce.code_challenge_method = None;
    assert_eq!(error_of(no_pkce), "invalid_request");
    let mut other_audience = request("app", scope);
    other_audience.aud = Some("http://fjord.test/fhir/hf2".into());
    assert_eq!(error_of(other_audience), "invalid_request");
    let mut token_flow = request("app", scope);
    token_flow.response_type = Some("token".into());
    assert_eq!(error_of(token_flow), "unsupported_response_type");
    assert_eq!(
        error_of(request("app", "openid system/*.rs")),
        "invalid_scope"
    );
    let mut forged_launch = request("app", "launch patient/*.rs");
    forged_launch.launch = Some("made-up".into());
    assert_eq!(error_of(forged_launch), "invalid_request");
}

#[test]
fn a_standalone_launch_asks_for_a_patient_then_grants_the_one_picked() {
    let server = server(vec![public_client("app", None)]);
    let request = request("app", "launch/patient patient/*.rs");
    let prompt = match server.authorize("hf1", BASE, &request, None) {
        Authorization::Login(prompt) => prompt,
        other => panic!("{other:?}"),
    };
    assert!(prompt.needs_patient);
    assert_eq!(prompt.request, request);
    let page = page::login_page(
        "/auth/hf1/authorize",
        &prompt,
        &[page::Choice {
            id: "p1".into(),
            label: "Kari <Nordmann>".into(),
        }],
        &[],
    );
    assert!(page.contains("<option value=\"p1\">Kari &lt;Nordmann&gt;</option>"));
    assert!(page.contains(&format!("value=\"{CHALLENGE}\"")));
    let picked = Login {
        patient: Some("p1".into()),
        fhir_user: None,
    };
    let code = code_of(server.authorize("hf1", BASE, &request, Some(&picked)));
    let response = exchange(&server, "app", &code).unwrap();
    assert_eq!(response["patient"], "p1");
    assert_eq!(response["need_patient_banner"], true);
    let nobody = Login::default();
    match server.authorize("hf1", BASE, &request, Some(&nobody)) {
        Authorization::Redirect(url) => assert_eq!(param(&url, "error").unwrap(), "access_denied"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_ehr_launch_brings_its_context_to_its_tenant_only() {
    let server = server(vec![public_client("app", None)]);
    let context = LaunchContext {
        tenant: "hf1".into(),
        patient: Some("p7".into()),
        encounter: Some("e1".into()),
        fhir_user: Some("Practitioner/d1".into()),
    };
    let launch = context.sign(server.issuer());
    assert_eq!(
        LaunchContext::open(&launch, server.issuer()).unwrap(),
        context
    );
    let mut ehr = request("app", "launch openid fhirUser patient/*.rs");
    ehr.launch = Some(launch.clone());
    let code = code_of(server.authorize("hf1", BASE, &ehr, None));
    let response = exchange(&server, "app", &code).unwrap();
    assert_eq!(response["patient"], "p7");
    assert_eq!(response["encounter"], "e1");
    assert_eq!(response["need_patient_banner"], false);
    let mut elsewhere = ehr.clone();
    elsewhere.aud = Some("http://fjord.test/fhir/hf2".into());
    match server.authorize("hf2", "http://fjord.test/fhir/hf2", &elsewhere, None) {
        Authorization::Redirect(url) => {
            assert_eq!(param(&url, "error").unwrap(), "invalid_request")
        }
        other => panic!("{other:?}"),
    }
}

/// A backend client whose key is another ES256 issuer's.
fn backend(key: &DevIssuer, scope: Option<&str>) -> Client {
    Client {
        client_id: "phg".into(),
        name: None,
        redirect_uris: Vec::new(),
        secret_sha256: None,
        jwks: Some(key.jwks()),
        scope: scope.map(str::to_owned),
        auto_login: None,
    }
}

fn assertion(key: &DevIssuer, audience: &str, jti: &str) -> String {
    key.sign(
        "JWT",
        &json!({
            "iss": "phg", "sub": "phg", "aud": audience, "jti": jti,
            "exp": now() + 240,
        }),
    )
}

fn client_credentials(
    server: &DevAuthServer,
    assertion: &str,
    scope: &str,
) -> Result<Value, OAuthError> {
    server.token(
        at(),
        &Form::new(&form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])),
        None,
    )
}

#[test]
fn a_backend_service_signs_in_with_its_key_once_per_assertion() {
    let key = DevIssuer::generate().unwrap();
    let server = server(vec![backend(
        &key,
        Some("system/Observation.cruds system/Patient.rs"),
    )]);
    let signed = assertion(&key, TOKEN_URL, "a1");
    let response = client_credentials(
        &server,
        &signed,
        "system/Observation.crus system/Patient.cruds system/Device.rs launch/patient",
    )
    .unwrap();
    assert_eq!(response["scope"], "system/Observation.crus");
    assert!(response.get("refresh_token").is_none());
    let claims = server
        .issuer()
        .open(response["access_token"].as_str().unwrap(), "at+jwt")
        .unwrap();
    assert_eq!(claims["sub"], "phg");
    assert_eq!(
        client_credentials(&server, &signed, "system/Observation.rs")
            .unwrap_err()
            .code,
        "invalid_client",
        "a replayed assertion"
    );
    let wrong_audience = assertion(&key, "http://fjord.test/auth/hf2/token", "a2");
    assert_eq!(
        client_credentials(&server, &wrong_audience, "system/Observation.rs")
            .unwrap_err()
            .code,
        "invalid_client"
    );
    let stranger = DevIssuer::generate().unwrap();
    let forged = assertion(&stranger, TOKEN_URL, "a3");
    assert_eq!(
        client_credentials(&server, &forged, "system/Observation.rs")
            .unwrap_err()
            .code,
        "invalid_client"
    );
    let no_scope = assertion(&key, TOKEN_URL, "a4");
    assert_eq!(
        client_credentials(&server, &no_scope, "system/Device.rs")
            .unwrap_err()
            .code,
        "invalid_scope"
    );
}

#[test]
fn public_clients_get_no_client_credentials_and_secrets_are_checked() {
    let mut confidential = public_client("pega", None);
    confidential.secret_sha256 = Some(client::secret_hash("s3cret"));
    let server = server(vec![public_client("app", None), confidential]);
    let ask = |pairs: &[(&str, &str)], basic: Option<(&str, &str)>| {
        server.token(at(), &Form::new(&form(pairs)), basic)
    };
    let public = ask(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", "system/*.rs"),
        ],
        None,
    );
    assert_eq!(public.unwrap_err().code, "unauthorized_client");
    let unauthenticated = ask(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "pega"),
            ("scope", "system/*.rs"),
        ],
        None,
    );
    assert_eq!(unauthenticated.unwrap_err().code, "invalid_client");
    let wrong = ask(
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
        ],
        Some(("pega", "guess")),
    );
    assert_eq!(wrong.unwrap_err().status(), 401);
    let right = ask(
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
        ],
        Some(("pega", "s3cret")),
    );
    assert_eq!(right.unwrap()["scope"], "system/*.rs");
    let twice = ask(
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
        ],
        None,
    );
    assert_eq!(twice.unwrap_err().code, "invalid_request");
}

#[test]
fn refresh_tokens_renew_narrow_and_are_revoked_and_introspected() {
    let login = Login {
        patient: Some("p1".into()),
        fhir_user: None,
    };
    let mut auditor = public_client("auditor", None);
    auditor.secret_sha256 = Some(client::secret_hash("audit"));
    let server = server(vec![public_client("app", Some(login)), auditor]);
    let scope = "patient/*.rs offline_access";
    let code = code_of(server.authorize("hf1", BASE, &request("app", scope), None));
    let first = exchange(&server, "app", &code).unwrap();
    let refresh_token = first["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |scope: Option<&str>| {
        let mut pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
            ("client_id", "app"),
        ];
        pairs.extend(scope.map(|s| ("scope", s)));
        server.token(at(), &Form::new(&form(&pairs)), None)
    };
    let renewed = refresh(None).unwrap();
    assert_eq!(renewed["patient"], "p1");
    assert_ne!(renewed["access_token"], first["access_token"]);
    assert_eq!(
        refresh(Some("patient/*.rs")).unwrap()["scope"],
        "patient/*.rs"
    );
    assert_eq!(
        refresh(Some("user/*.rs")).unwrap_err().code,
        "invalid_scope"
    );

    let introspect = |token: &str| {
        server
            .introspect(
                at(),
                &Form::new(&form(&[("token", token)])),
                Some(("auditor", "audit")),
            )
            .unwrap()
    };
    let access_token = renewed["access_token"].as_str().unwrap();
    let active = introspect(access_token);
    assert_eq!(active["active"], true);
    assert_eq!(active["patient"], "p1");
    assert_eq!(introspect(&refresh_token)["active"], true);
    assert_eq!(introspect("garbage")["active"], false);
    let public_asks = server.introspect(
        at(),
        &Form::new(&form(&[("token", access_token), ("client_id", "app")])),
        None,
    );
    assert_eq!(public_asks.unwrap_err().code, "invalid_client");

    let revoke = |token: &str| {
        server
            .revoke(
                at(),
                &Form::new(&form(&[("token", token), ("client_id", "app")])),
                None,
            )
            .unwrap()
    };
    revoke(access_token);
    let jti = server.issuer().open(access_token, "at+jwt").unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(server.is_revoked(&jti));
    assert_eq!(introspect(access_token)["active"], false);
    revoke(&refresh_token);
    assert_eq!(refresh(None).unwrap_err().code, "invalid_grant");
    assert_eq!(introspect(&refresh_token)["active"], false);
    revoke("never-issued");
}

#[test]
fn a_client_limit_bounds_what_a_user_flow_grants() {
    let mut limited = public_client("app", None);
    limited.scope = Some("openid patient/Observation.rs".into());
    assert_eq!(
        grantable(
            "openid fhirUser patient/Observation.r patient/Observation.cruds patient/Patient.rs",
            &limited,
            Flow::User
        ),
        "openid patient/Observation.r"
    );
    assert!(pkce_s256_matches(VERIFIER, CHALLENGE));
    assert!(!pkce_s256_matches("short", CHALLENGE));
}
