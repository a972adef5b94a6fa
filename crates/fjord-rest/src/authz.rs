//! The development authorization server's endpoints (`/auth/…`), when it is on: the HTTP side
//! of `fjord-authz`, which holds the protocol.

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use fjord_authz::page::{self, Choice};
use fjord_authz::token::{Endpoint, Form};
use fjord_authz::{Authorization, AuthorizeRequest, DevAuthServer, Login, OAuthError};
use fjord_engine::{Caller, Scope, SearchRequest, Tenant};
use fjord_smart::AuthorizationServer;
use serde_json::Value;

use crate::AppState;

/// How many patients and practitioners the login page offers.
const PICKER_SIZE: &str = "200";

/// The routes, under `/auth`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/jwks").route(web::get().to(jwks)))
        .service(
            web::resource("/auth/{tenant}/authorize")
                .route(web::get().to(authorize))
                .route(web::post().to(authorize_form)),
        )
        .service(
            web::resource("/auth/{tenant}/{endpoint:token|revoke|introspect}")
                .route(web::post().to(oauth_endpoint)),
        );
}

/// What a tenant's discovery documents name: its configured authorization server, or else the
/// development one when it is on.
pub(crate) fn authorization_server(
    req: &HttpRequest,
    state: &AppState,
    tenant: &Tenant,
) -> Option<AuthorizationServer> {
    if let Some(configured) = &tenant.settings.authorization_server {
        return Some(configured.clone());
    }
    state.config.auth.dev_server()?;
    let origin = crate::public::origin(req);
    let at = |endpoint: &str| Some(format!("{origin}/auth/{}/{endpoint}", tenant.id));
    Some(AuthorizationServer {
        issuer: Some(fjord_smart::DEV_ISSUER.into()),
        authorization_endpoint: at("authorize"),
        token_endpoint: at("token"),
        jwks_uri: Some(format!("{origin}/auth/jwks")),
        revocation_endpoint: at("revoke"),
        introspection_endpoint: at("introspect"),
        management_endpoint: None,
        registration_endpoint: None,
        capabilities: [
            "launch-ehr",
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-ehr-patient",
            "context-ehr-encounter",
            "context-standalone-patient",
            "sso-openid-connect",
            "authorize-post",
        ]
        .map(String::from)
        .to_vec(),
    })
}

async fn jwks(state: Data<AppState>) -> HttpResponse {
    match state.config.auth.dev_server() {
        Some(dev) => json(
            StatusCode::OK,
            &serde_json::to_value(dev.issuer().jwks()).unwrap_or_default(),
        ),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn authorize(
    req: HttpRequest,
    state: Data<AppState>,
    tenant: web::Path<String>,
) -> HttpResponse {
    let pairs: Vec<(String, String)> = form_pairs(req.query_string().as_bytes());
    answer_authorization(&req, &state, &tenant, &pairs, StatusCode::FOUND).await
}

/// The login page's answer, or an authorization request sent as a form (`authorize-post`).
async fn authorize_form(
    req: HttpRequest,
    state: Data<AppState>,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let pairs = form_pairs(&body);
    answer_authorization(&req, &state, &tenant, &pairs, StatusCode::SEE_OTHER).await
}

async fn answer_authorization(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    pairs: &[(String, String)],
    redirect_status: StatusCode,
) -> HttpResponse {
    let (Some(dev), Ok(tenant)) = (
        state.config.auth.dev_server(),
        state.engine.serving_tenant(tenant).await,
    ) else {
        return html(StatusCode::NOT_FOUND, page::refusal_page("no such tenant"));
    };
    let request = AuthorizeRequest::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let from_login_page = pairs
        .iter()
        .any(|(n, _)| n == "patient" || n == "fhir_user");
    let login = from_login_page.then(|| Login {
        patient: field("patient"),
        fhir_user: field("fhir_user"),
    });
    let base_url = crate::public::tenant_base(req, &tenant);
    match dev.authorize(&tenant.id, &base_url, &request, login.as_ref()) {
        Authorization::Redirect(location) => HttpResponse::build(redirect_status)
            .insert_header((header::LOCATION, location))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Authorization::Refused(reason) => {
            html(StatusCode::BAD_REQUEST, page::refusal_page(&reason))
        }
        Authorization::Login(prompt) => {
            let patients = if prompt.needs_patient {
                choices(state, &tenant, "Patient").await
            } else {
                Vec::new()
            };
            let practitioners = choices(state, &tenant, "Practitioner").await;
            let action = format!("/auth/{}/authorize", tenant.id);
            html(
                StatusCode::OK,
                page::login_page(&action, &prompt, &patients, &practitioners),
            )
        }
    }
}

/// The first resources of a type, with their names, for the login page.
async fn choices(state: &AppState, tenant: &Tenant, resource_type: &str) -> Vec<Choice> {
    let request = SearchRequest {
        params: vec![("_count".into(), PICKER_SIZE.into())],
        strict: false,
        cursor: None,
    };
    let caller = Caller::trusted(tenant.clone());
    let Ok(found) = state
        .engine
        .search(&caller, Scope::Type(resource_type), &request)
        .await
    else {
        return Vec::new();
    };
    found
        .page
        .resources
        .iter()
        .filter_map(|stored| {
            let body: Value = serde_json::from_str(stored.body.as_deref()?).ok()?;
            Some(Choice {
                id: stored.id.clone(),
                label: label_of(&body, &stored.id),
            })
        })
        .collect()
}

/// "Given Family (birth date)", or the id when the resource has no name.
fn label_of(resource: &Value, id: &str) -> String {
    let name = &resource["name"][0];
    let mut parts: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    parts.extend(name["family"].as_str());
    let mut label = if parts.is_empty() {
        id.to_owned()
    } else {
        parts.join(" ")
    };
    if let Some(born) = resource["birthDate"].as_str() {
        label.push_str(&format!(" ({born})"));
    }
    label
}

/// One of the form-posted endpoints: the server, where the request came, its form, and the
/// client's Basic credentials.
type OAuthHandler =
    fn(&DevAuthServer, Endpoint<'_>, &Form<'_>, Option<(&str, &str)>) -> Result<Value, OAuthError>;

/// `token`, `revoke` or `introspect`.
async fn oauth_endpoint(
    req: HttpRequest,
    state: Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (tenant, endpoint) = path.into_inner();
    let handle: OAuthHandler = match endpoint.as_str() {
        "token" => DevAuthServer::token,
        "introspect" => DevAuthServer::introspect,
        "revoke" => revoke,
        _ => return HttpResponse::NotFound().finish(),
    };
    oauth(&req, &state, &tenant, &body, handle).await
}

/// Revocation answers 200 with no body.
fn revoke(
    dev: &DevAuthServer,
    at: Endpoint<'_>,
    form: &Form<'_>,
    basic: Option<(&str, &str)>,
) -> Result<Value, OAuthError> {
    dev.revoke(at, form, basic).map(|()| Value::Null)
}

/// A form-posted OAuth request: the tenant, the client's Basic credentials, and the answer as
/// JSON that no cache keeps (RFC 6749 §5.1).
async fn oauth(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    body: &[u8],
    handle: OAuthHandler,
) -> HttpResponse {
    let (Some(dev), Ok(tenant)) = (
        state.config.auth.dev_server(),
        state.engine.serving_tenant(tenant).await,
    ) else {
        let unknown = OAuthError {
            code: "invalid_request",
            description: "no such tenant".into(),
        };
        return json(StatusCode::NOT_FOUND, &unknown.body());
    };
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        let error = OAuthError {
            code: "invalid_request",
            description: "the body must be application/x-www-form-urlencoded".into(),
        };
        return json(StatusCode::BAD_REQUEST, &error.body());
    }
    let pairs = form_pairs(body);
    let basic = basic_credentials(req);
    let base_url = crate::public::tenant_base(req, &tenant);
    let url = crate::public::request_url(req, None);
    let at = Endpoint {
        tenant: &tenant.id,
        base_url: &base_url,
        url: &url,
    };
    let basic = basic
        .as_ref()
        .map(|(id, secret)| (id.as_str(), secret.as_str()));
    match handle(dev, at, &Form::new(&pairs), basic) {
        Ok(Value::Null) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(error) => {
            tracing::info!(error = error.code, "an OAuth request was refused");
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = json(status, &error.body());
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"fjord\""),
                );
            }
            response
        }
    }
}

/// `Authorization: Basic`: the client id and secret, each form-encoded (RFC 6749 §2.3.1).
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        form_pairs(format!("x={s}").as_bytes())
            .pop()
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

fn json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .content_type("application/json")
        .body(body.to_string())
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .content_type("text/html; charset=utf-8")
        .body(body)
}
