//! Health probes and tenant administration (`/health/*`, `/admin/tenants`).

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::Tenant;
use serde::Deserialize;
use serde_json::json;

use crate::negotiate::lenient;
use crate::resources::require_access;
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

fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    json!({ "id": tenant.id, "name": tenant.name, "createdAt": format_instant(tenant.created_at) })
}

pub(crate) async fn list_tenants(
    req: HttpRequest,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_access(&state).map_err(|e| e.in_format(lenient(&req)))?;
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
    let format = lenient(&req);
    require_access(&state).map_err(|e| e.in_format(format))?;
    let new: NewTenant = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("expected {{\"id\": …, \"name\": …}}: {e}"),
        )
        .in_format(format)
    })?;
    let tenant = state
        .engine
        .create_tenant(&new.id, &new.name)
        .await
        .map_err(|e| ApiError::from(e).in_format(format))?;
    Ok(HttpResponse::Created().json(tenant_json(&tenant)))
}
