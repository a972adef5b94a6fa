//! Type-level search by `GET /{type}?…` and `POST /{type}/_search` (form body), answered with a
//! `searchset` Bundle whose links page by cursor token.

use actix_web::http::header;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{SearchPage, SearchQuery, SearchRequest};
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
    resource_type: &str,
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
    let cursor = params
        .iter()
        .find(|(name, _)| name == "_cursor")
        .map(|(_, value)| value.clone());
    let request = SearchRequest {
        params,
        strict: prefers_strict(req),
        cursor,
    };
    let (query, page) = state
        .engine
        .search(&ctx.tenant, resource_type, &request)
        .await
        .map_err(|e| ctx.err(e))?;
    let bundle = searchset(&ctx.base(req), &query, &page);
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &bundle,
        ctx.negotiated,
    ))
}

/// `Prefer: handling=strict` (lenient is the default).
fn prefers_strict(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::HeaderName::from_static("prefer"))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|part| part.trim().eq_ignore_ascii_case("handling=strict"))
}

fn searchset(base: &str, query: &SearchQuery, page: &SearchPage) -> Value {
    let entries: Vec<Value> = page
        .resources
        .iter()
        .map(|version| {
            let resource: Value = version
                .body
                .as_deref()
                .and_then(|body| serde_json::from_str(body).ok())
                .unwrap_or(Value::Null);
            json!({
                "fullUrl": format!("{base}/{}/{}", version.resource_type, version.id),
                "resource": resource,
                "search": { "mode": "match" },
            })
        })
        .collect();
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
        let mut url = format!("{base}/{}", query.resource_type);
        if !pairs.is_empty() {
            url = format!("{url}?{}", pairs.join("&"));
        }
        url
    };
    let mut links = vec![json!({ "relation": "self", "url": link(None) })];
    if let Some(next) = &page.next {
        links.push(json!({ "relation": "next", "url": link(Some(next)) }));
    }
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset" });
    if let Some(total) = page.total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = json!(links);
    bundle["entry"] = json!(entries);
    bundle
}
