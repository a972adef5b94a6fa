//! `GET /metadata`: the CapabilityStatement, listing exactly what this build serves.

use actix_web::{HttpRequest, HttpResponse};
use fjord_model::RESOURCE_TYPES;
use serde_json::{json, Value};

use crate::negotiate;
use crate::resources::Ctx;
use crate::{ApiError, AppState, AuthMode};
use fjord_engine::{format_instant, EngineError, Tenant};

/// `$reindex` has no definition in R4; this names Fjord's (asynchronous, type or system level).
const REINDEX_DEFINITION: &str = "https://fjord.example/fhir/OperationDefinition/reindex";
/// Fjord's `$import`: an NDJSON body, asynchronous (the Bulk Data import proposals fetch files
/// by URL instead).
const IMPORT_DEFINITION: &str = "https://fjord.example/fhir/OperationDefinition/import";

/// The Bulk Data Access IG, whose `$export` operations Fjord serves.
const BULK_DATA: &str = "http://hl7.org/fhir/uv/bulkdata";

/// The Subscriptions R5 Backport IG (STU 1.1).
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport";
/// Each topic a server offers, on its Subscription resource.
const TOPIC_CANONICAL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

pub(crate) async fn metadata(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::public(req, state, tenant).await?;
    let authorization_server = crate::authz::authorization_server(req, state, &ctx.caller);
    let statement = capability_statement(&ctx.base(req), state, &ctx.caller, authorization_server)
        .await
        .map_err(|e| ctx.err(e))?;
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &statement,
        ctx.negotiated,
    ))
}

/// `GET /fhir/{tenant}/.well-known/smart-configuration`: always JSON, readable from any
/// origin (a browser app reads it before it has a token).
pub(crate) async fn smart_configuration(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<HttpResponse, ApiError> {
    let tenant = state
        .engine
        .serving_tenant(tenant)
        .await
        .map_err(|e| ApiError::from(e).in_format(negotiate::lenient(req)))?;
    let document = crate::authz::authorization_server(req, state, &tenant)
        .unwrap_or_default()
        .smart_configuration();
    Ok(HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .content_type("application/json")
        .body(document.to_string()))
}

async fn capability_statement(
    base: &str,
    state: &AppState,
    tenant: &Tenant,
    authorization_server: Option<fjord_smart::AuthorizationServer>,
) -> Result<Value, EngineError> {
    let interactions: Vec<Value> = [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ]
    .iter()
    .map(|code| json!({ "code": code }))
    .collect();
    // What the tenant's settings make of conditional deletes and references.
    let settings = &tenant.settings;
    let conditional_delete = if settings.conditional_delete_multiple {
        "multiple"
    } else {
        "single"
    };
    let mut reference_policy = vec!["literal", "logical", "local"];
    if settings.referential_integrity {
        reference_policy.push("enforced");
    }
    let mut resources: Vec<Value> = Vec::new();
    let mut common: Option<Vec<(String, String, String)>> = None;
    for t in RESOURCE_TYPES {
        let parameters = state.engine.search_parameters(tenant, t).await?;
        // What every type has: the parameters of a system search without `_type`.
        match &mut common {
            None => common = Some(parameters.clone()),
            Some(common) => common.retain(|p| parameters.iter().any(|q| q.0 == p.0)),
        }
        let revincludes = state.engine.revinclude_sources(tenant, t).await?;
        resources.push({
            let search_params = parameter_list(parameters.clone());
            let mut includes = vec!["*".to_owned()];
            includes.extend(
                parameters
                    .iter()
                    .filter(|(_, _, kind)| kind == "reference")
                    .map(|(name, ..)| format!("{t}:{name}")),
            );
            let mut operations = vec![
                json!({
                    "name": "validate",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                }),
                json!({
                    "name": "reindex",
                    "definition": REINDEX_DEFINITION,
                }),
            ];
            if *t == "Patient" {
                operations.push(json!({
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }));
            }
            let terminology: &[(&str, &str)] = match *t {
                "ValueSet" => &[
                    ("expand", "ValueSet-expand"),
                    ("validate-code", "ValueSet-validate-code"),
                ],
                "CodeSystem" => &[
                    ("lookup", "CodeSystem-lookup"),
                    ("validate-code", "CodeSystem-validate-code"),
                ],
                _ => &[],
            };
            for (name, definition) in terminology {
                operations.push(json!({
                    "name": name,
                    "definition": format!("http://hl7.org/fhir/OperationDefinition/{definition}"),
                }));
            }
            let bulk_export = match *t {
                "Patient" => Some("patient-export"),
                "Group" => Some("group-export"),
                _ => None,
            };
            if let Some(definition) = bulk_export {
                operations.push(json!({
                    "name": "export",
                    "definition": format!("{BULK_DATA}/OperationDefinition/{definition}"),
                }));
            }
            let mut topics = Vec::new();
            if let (true, Some(subscriptions)) = (*t == "Subscription", &state.subscriptions) {
                for (name, definition) in [
                    ("status", "backport-subscription-status"),
                    ("events", "backport-subscription-events"),
                    (
                        "get-ws-binding-token",
                        "backport-subscription-get-ws-binding-token",
                    ),
                ] {
                    operations.push(json!({
                        "name": name,
                        "definition": format!("{BACKPORT}/OperationDefinition/{definition}"),
                    }));
                }
                topics = subscriptions
                    .topics()
                    .all()
                    .iter()
                    .map(|topic| json!({ "url": TOPIC_CANONICAL, "valueCanonical": topic.url }))
                    .collect();
            }
            let mut resource = json!({
                "type": t,
                "operation": operations,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": true,
                "conditionalDelete": conditional_delete,
                "conditionalRead": "full-support",
                "referencePolicy": reference_policy,
                "searchInclude": includes,
                "searchRevInclude": revincludes,
                "searchParam": search_params,
            });
            if !topics.is_empty() {
                resource["extension"] = Value::Array(topics);
            }
            resource
        });
    }
    let compartments = state.engine.compartment_definitions();
    let mut rest = json!({
        "mode": "server",
        "resource": resources,
        "interaction": [
            { "code": "transaction" },
            { "code": "batch" },
            { "code": "history-system" },
            { "code": "search-system" },
        ],
        "searchParam": parameter_list(common.unwrap_or_default()),
        "compartment": compartments,
        "operation": [
            { "name": "reindex", "definition": REINDEX_DEFINITION },
            { "name": "import", "definition": IMPORT_DEFINITION },
            { "name": "export", "definition": format!("{BULK_DATA}/OperationDefinition/export") },
        ],
    });
    if state.config.auth.mode == AuthMode::Required {
        rest["security"] = authorization_server
            .unwrap_or_default()
            .capability_security();
    }
    let mut statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(time::OffsetDateTime::now_utc()),
        "kind": "instance",
        "software": { "name": "Fjord", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Fjord FHIR R4 server", "url": base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [rest],
    });
    if state.subscriptions.is_some() {
        statement["instantiates"] = json!([format!(
            "{BACKPORT}/CapabilityStatement/backport-subscription-server-r4"
        )]);
    }
    let instantiates = statement["instantiates"].as_array_mut();
    let bulk = json!(format!("{BULK_DATA}/CapabilityStatement/bulk-data"));
    match instantiates {
        Some(list) => list.push(bulk),
        None => statement["instantiates"] = json!([bulk]),
    }
    Ok(statement)
}

fn parameter_list(parameters: Vec<(String, String, String)>) -> Vec<Value> {
    parameters
        .into_iter()
        .map(|(name, definition, kind)| json!({ "name": name, "definition": definition, "type": kind }))
        .collect()
}
