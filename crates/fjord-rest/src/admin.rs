//! Health probes and tenant administration (`/health/*`, `/admin/tenants`): list, create,
//! show, and a tenant's settings (`/admin/tenants/{id}/settings`, replaced by `PUT`; absent
//! keys take their defaults, unknown keys are refused).

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{Tenant, TenantSettings};
use serde::Deserialize;
use serde_json::json;

use crate::negotiate::{lenient, Negotiated};
use crate::{ApiError, AppState};
use fjord_engine::format_instant;

pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// 200 only when the database answers and every migration is applied.
pub(crate) async fn ready(state: Data<AppState>) -> HttpResponse {
    if state.engine.store().is_ready().await {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not ready" }))
    }
}

/// Refuses a request without administration rights; the format its errors are written in.
async fn admin_only(req: &HttpRequest, state: &AppState) -> Result<Negotiated, ApiError> {
    let format = lenient(req);
    state
        .config
        .auth
        .require_admin(req)
        .await
        .map_err(|e| e.in_format(format))?;
    Ok(format)
}

/// A JSON body of the administration API, or a 400 saying what was `expected`.
fn admin_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
    format: Negotiated,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("expected {expected}: {e}"),
        )
        .in_format(format)
    })
}

fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    json!({
        "id": tenant.id,
        "name": tenant.name,
        "createdAt": format_instant(tenant.created_at),
        "status": if tenant.suspended_at.is_some() { "suspended" } else { "active" },
        "suspendedAt": tenant.suspended_at.map(format_instant),
        "settings": tenant.settings,
    })
}

pub(crate) async fn list_tenants(
    req: HttpRequest,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &state).await?;
    let tenants = state
        .engine
        .list_tenants()
        .await
        .map_err(|e| ApiError::from(e).in_format(lenient(&req)))?;
    Ok(HttpResponse::Ok().json(tenants.iter().map(tenant_json).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    id: String,
    name: String,
}

pub(crate) async fn create_tenant(
    req: HttpRequest,
    state: Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let format = admin_only(&req, &state).await?;
    let new: NewTenant = admin_body(&body, r#"{"id": …, "name": …}"#, format)?;
    let tenant = state
        .engine
        .create_tenant(&new.id, &new.name)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    Ok(HttpResponse::Created().json(tenant_json(&tenant)))
}

/// `PATCH /admin/tenants/{id}`: what changes of a tenant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantChange {
    /// The display name; the id in its URLs stays.
    name: Option<String>,
    status: Option<TenantStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum TenantStatus {
    Active,
    /// Requests answered 503; data, settings and subscriptions kept.
    Suspended,
}

pub(crate) async fn change_tenant(
    req: HttpRequest,
    state: Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let format = admin_only(&req, &state).await?;
    let change: TenantChange = admin_body(
        &body,
        r#"{"name": …, "status": "active" | "suspended"}"#,
        format,
    )?;
    let suspended = change.status.map(|s| matches!(s, TenantStatus::Suspended));
    let tenant = state
        .engine
        .change_tenant(&id, change.name.as_deref(), suspended)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    tracing::info!(tenant = %tenant.id, suspended = tenant.suspended_at.is_some(), "tenant changed");
    Ok(HttpResponse::Ok().json(tenant_json(&tenant)))
}

pub(crate) async fn show_tenant(
    req: HttpRequest,
    state: Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = known_tenant(&req, &state, &id).await?;
    Ok(HttpResponse::Ok().json(tenant_json(&tenant)))
}

pub(crate) async fn show_settings(
    req: HttpRequest,
    state: Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = known_tenant(&req, &state, &id).await?;
    Ok(HttpResponse::Ok().json(shown(&tenant.settings)))
}

/// What a settings document shows of a secret: it is kept, never shown again.
const KEPT_SECRET: &str = "********";

/// The settings as the API shows them: introspection secrets masked.
pub fn shown(settings: &TenantSettings) -> TenantSettings {
    let mut shown = settings.clone();
    for issuer in &mut shown.trusted_issuers {
        if let Some(introspection) = &mut issuer.introspection {
            introspection.client_secret = KEPT_SECRET.into();
        }
    }
    shown
}

/// New settings whose masked secrets keep the ones stored for the same issuer and endpoint.
fn keep_secrets(mut new: TenantSettings, old: &TenantSettings) -> Result<TenantSettings, ApiError> {
    for issuer in &mut new.trusted_issuers {
        let Some(introspection) = &mut issuer.introspection else {
            continue;
        };
        if introspection.client_secret != KEPT_SECRET {
            continue;
        }
        let stored = old
            .trusted_issuers
            .iter()
            .filter(|o| o.issuer == issuer.issuer)
            .filter_map(|o| o.introspection.as_ref())
            .find(|o| {
                o.endpoint == introspection.endpoint && o.client_id == introspection.client_id
            });
        match stored {
            Some(stored) => introspection.client_secret = stored.client_secret.clone(),
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "value",
                    format!(
                        "the introspection clientSecret of {} is '{KEPT_SECRET}' (keep the \
                         stored one), and none is stored for that issuer, endpoint and client",
                        issuer.issuer
                    ),
                ))
            }
        }
    }
    Ok(new)
}

/// The tenant `id`, for a caller allowed to administer it.
async fn known_tenant(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
) -> Result<fjord_engine::Tenant, ApiError> {
    let format = admin_only(req, state).await?;
    state
        .engine
        .tenant(id)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))
}

pub(crate) async fn set_settings(
    req: HttpRequest,
    state: Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let format = admin_only(&req, &state).await?;
    let old = state
        .engine
        .tenant(&id)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    let settings = checked_settings(&body, &id, &old.settings).map_err(|e| e.in_format(format))?;
    let tenant = state
        .engine
        .set_tenant_settings(&id, &settings)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    Ok(HttpResponse::Ok().json(shown(&tenant.settings)))
}

/// New settings for tenant `id` from a JSON body, checked as the API and `fjord tenant settings`
/// check them, with masked secrets kept from the `stored` ones.
pub fn checked_settings(
    body: &[u8],
    id: &str,
    stored: &TenantSettings,
) -> Result<TenantSettings, ApiError> {
    parse_settings(body, id).and_then(|new| keep_secrets(new, stored))
}

/// A settings object: only known keys, each of the right type.
fn parse_settings(body: &[u8], owner: &str) -> Result<TenantSettings, ApiError> {
    let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "structure", message);
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the settings are not JSON: {e}")))?;
    let known = TenantSettings::keys();
    let Some(given) = value.as_object() else {
        return Err(invalid("the settings are a JSON object".into()));
    };
    if let Some(unknown) = given.keys().find(|key| !known.contains(key)) {
        return Err(invalid(format!(
            "unknown setting '{unknown}'; the settings are {known:?}"
        )));
    }
    let mut settings: TenantSettings =
        serde_json::from_value(value).map_err(|e| invalid(format!("invalid settings: {e}")))?;
    if let Some(base) = &settings.public_base_url {
        let checked = crate::checked_base_url(base).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                format!("publicBaseUrl: {e}"),
            )
        })?;
        settings.public_base_url = Some(checked);
    }
    if settings
        .rate_limit
        .is_some_and(|l| l.per_second == 0 || l.burst == 0)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "value",
            "rateLimit: perSecond and burst are at least 1 (leave rateLimit out for the server's)",
        ));
    }
    let limits = &settings.limits;
    let given = [
        limits.max_body_bytes,
        limits.max_bundle_entries,
        limits.max_json_depth,
        limits.request_timeout_seconds.map(|s| s as usize),
    ];
    if given.contains(&Some(0)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "value",
            "limits: each limit is at least 1 (leave one out for the server's)",
        ));
    }
    for grant in &settings.sharing {
        let problem = grant.problem(owner, |t| fjord_model::resource_type(t).is_some());
        if let Some(problem) = problem {
            let message = format!("sharing: {problem}");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "value", message));
        }
    }
    if let Some(policy) = settings.cors.take() {
        let checked = crate::cors::checked_policy(policy)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "value", format!("cors: {e}")))?;
        settings.cors = Some(checked);
    }
    Ok(settings)
}
