//! `GET /metadata`: the CapabilityStatement, listing exactly what this build serves.

use actix_web::{HttpRequest, HttpResponse};
use fjord_model::RESOURCE_TYPES;
use serde_json::{json, Value};

use crate::negotiate;
use crate::resources::Ctx;
use crate::{ApiError, AppState};
use fjord_engine::format_instant;

pub(crate) async fn metadata(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let statement = capability_statement(&ctx.base(req), state);
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &statement,
        ctx.negotiated,
    ))
}

fn capability_statement(base: &str, state: &AppState) -> Value {
    let interactions: Vec<Value> = [
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ]
    .iter()
    .map(|code| json!({ "code": code }))
    .collect();
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            let parameters = state.engine.search_parameters(t);
            let search_params: Vec<Value> = parameters
                .iter()
                .map(|(name, definition, kind)| {
                    json!({ "name": name, "definition": definition, "type": kind })
                })
                .collect();
            let mut includes = vec!["*".to_owned()];
            includes.extend(
                parameters
                    .iter()
                    .filter(|(_, _, kind)| kind == "reference")
                    .map(|(name, ..)| format!("{t}:{name}")),
            );
            let operations = if *t == "Patient" {
                json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }])
            } else {
                json!([])
            };
            json!({
                "type": t,
                "operation": operations,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalRead": "full-support",
                "searchInclude": includes,
                "searchRevInclude": state.engine.revinclude_sources(t),
                "searchParam": search_params,
            })
        })
        .collect();
    let compartments = [
        "patient",
        "encounter",
        "relatedPerson",
        "practitioner",
        "device",
    ]
    .map(|c| format!("http://hl7.org/fhir/CompartmentDefinition/{c}"));
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(time::OffsetDateTime::now_utc()),
        "kind": "instance",
        "software": { "name": "Fjord", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Fjord FHIR R4 server", "url": base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{ "code": "history-system" }, { "code": "search-system" }],
            "searchParam": system_parameters(state),
            "compartment": compartments,
        }],
    })
}

/// The parameters every resource type has: what a system search without `_type` takes.
fn system_parameters(state: &AppState) -> Vec<Value> {
    let mut common = state.engine.search_parameters("Binary");
    common.retain(|(name, ..)| {
        RESOURCE_TYPES.iter().all(|t| {
            state
                .engine
                .search_parameters(t)
                .iter()
                .any(|(other, ..)| other == name)
        })
    });
    common
        .into_iter()
        .map(|(name, definition, kind)| json!({ "name": name, "definition": definition, "type": kind }))
        .collect()
}
