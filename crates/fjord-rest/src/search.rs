//! Search by `GET` and `POST …/_search` (form body) at type (`/{type}`), system (`/`) and
//! compartment (`/Patient/{id}/{type}`, `/Patient/{id}/*`) level, answered with a `searchset`
//! Bundle whose links page by cursor token.

use actix_web::http::header;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{
    Audited, PreviousPage, Scope, SearchRequest, SearchResult, StoredVersion, Summary,
};
use serde_json::{json, Value};

use crate::bundle::encode;
use crate::negotiate::{self, query_pairs};
use crate::resources::{read_body, Ctx};
use crate::{ApiError, AppState};

/// The largest form body of `POST _search`.
const FORM_LIMIT: usize = 64 * 1024;

pub(crate) async fn search(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    scope: Scope<'_>,
    form: Option<web::Payload>,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let mut params = query_pairs(req);
    if let Some(payload) = form {
        let body = read_body(req, payload, FORM_LIMIT).await?;
        let form = web::Query::<Vec<(String, String)>>::from_query(
            std::str::from_utf8(&body).unwrap_or(""),
        )
        .map_err(|e| ctx.err(ApiError::bad_request(format!("the form body: {e}"))))?;
        params.extend(form.into_inner());
    }
    let request = search_request(req, params);
    let result = state.engine.search(&ctx.caller, scope, &request).await;
    let interaction = match scope {
        Scope::Type(_) => "search-type",
        Scope::System => "search-system",
        Scope::Compartment { .. } => "search-compartment",
    };
    let result = ctx
        .audited(state, interaction, result, |found| {
            Some(searched(interaction, req, found))
        })
        .await?;
    let path = match scope {
        Scope::Type(t) => t.to_owned(),
        Scope::System => String::new(),
        Scope::Compartment {
            owner_type,
            owner_id,
            resource_type,
        } => format!("{owner_type}/{owner_id}/{}", resource_type.unwrap_or("*")),
    };
    Ok(respond(req, &ctx, &path, &result, &request))
}

/// `GET /Patient/{id}/$everything`.
pub(crate) async fn everything(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    patient_id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let request = search_request(req, query_pairs(req));
    let result = state
        .engine
        .everything(&ctx.caller, patient_id, &request)
        .await;
    let result = ctx
        .audited(state, "everything", result, |found| {
            Some(searched("everything", req, found))
        })
        .await?;
    let path = format!("Patient/{patient_id}/$everything");
    Ok(respond(req, &ctx, &path, &result, &request))
}

/// A search's AuditEvent: its query and the patients of what it found.
fn searched(interaction: &'static str, req: &HttpRequest, found: &SearchResult) -> Audited {
    let query = format!("{}?{}", req.path(), req.query_string());
    Audited::new(interaction).searched(query, found.page.resources.iter().chain(&found.included))
}

/// The searchset of `result`, whose links name `path` below the tenant's base.
fn respond(
    req: &HttpRequest,
    ctx: &Ctx,
    path: &str,
    result: &SearchResult,
    request: &SearchRequest,
) -> HttpResponse {
    let base = ctx.base(req);
    let url = if path.is_empty() {
        base.clone()
    } else {
        format!("{base}/{path}")
    };
    let bundle = searchset(&base, &url, result, request.cursor.as_deref());
    negotiate::respond_json_string(HttpResponse::Ok(), bundle, ctx.negotiated)
}

fn search_request(req: &HttpRequest, params: Vec<(String, String)>) -> SearchRequest {
    let cursor = params
        .iter()
        .find(|(name, _)| name == "_cursor")
        .map(|(_, value)| value.clone());
    SearchRequest {
        params,
        strict: prefers_strict(req),
        cursor,
    }
}

/// `Prefer: handling=strict` (lenient is the default).
fn prefers_strict(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::HeaderName::from_static("prefer"))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|part| part.trim().eq_ignore_ascii_case("handling=strict"))
}

/// The `searchset` Bundle as JSON text, with `self` (this page), `next`, `previous` and `first`
/// links.
/// Stored bodies are canonical JSON and go in as they are, unparsed, unless `_summary` or
/// `_elements` cut them.
fn searchset(base: &str, path: &str, result: &SearchResult, cursor: Option<&str>) -> String {
    let query = &result.query;
    let whole = query.summary == Summary::False && query.elements.is_empty();
    let entry = |version: &StoredVersion, mode: &str| {
        let full_url = json!(format!("{base}/{}/{}", version.resource_type, version.id));
        let body = version.body.as_deref().unwrap_or("null");
        let resource = if whole {
            body.to_owned()
        } else {
            let mut resource: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            fjord_engine::subset(&mut resource, query.summary, &query.elements);
            resource.to_string()
        };
        format!(r#"{{"fullUrl":{full_url},"resource":{resource},"search":{{"mode":"{mode}"}}}}"#)
    };
    let mut entries: Vec<String> = result
        .page
        .resources
        .iter()
        .map(|version| entry(version, "match"))
        .chain(
            result
                .included
                .iter()
                .map(|version| entry(version, "include")),
        )
        .collect();
    if result.included_truncated {
        entries.push(
            json!({
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{
                        "severity": "warning",
                        "code": "too-costly",
                        "diagnostics": format!(
                            "_include and _revinclude found more than {} resources for this \
                             page; the rest are left out (ask for smaller pages)",
                            fjord_engine::MAX_INCLUDED
                        ),
                    }],
                },
                "search": { "mode": "outcome" },
            })
            .to_string(),
        );
    }
    let link = |cursor: Option<&str>| {
        let mut pairs: Vec<String> = query
            .applied
            .iter()
            .filter(|(name, _)| name != "_cursor")
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect();
        if let Some(cursor) = cursor {
            pairs.push(format!("_cursor={cursor}"));
        }
        if pairs.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", pairs.join("&"))
        }
    };
    let mut links = vec![json!({ "relation": "self", "url": link(cursor) })];
    if let Some(next) = &result.page.next {
        links.push(json!({ "relation": "next", "url": link(Some(next)) }));
    }
    if let Some(previous) = &result.page.previous {
        let token = match previous {
            PreviousPage::First => None,
            PreviousPage::Token(token) => Some(token.as_str()),
        };
        links.push(json!({ "relation": "previous", "url": link(token) }));
    }
    links.push(json!({ "relation": "first", "url": link(None) }));
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset" });
    if let Some(total) = result.page.total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = json!(links);
    let mut text = bundle.to_string();
    if query.summary != Summary::Count {
        text.reserve(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 12);
        text.pop(); // the closing brace
        text += r#","entry":["#;
        for (index, entry) in entries.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text += entry;
        }
        text += "]}";
    }
    text
}
