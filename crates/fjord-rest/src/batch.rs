//! `POST /` with a `batch` or `transaction` Bundle, answered with a `batch-response` or
//! `transaction-response` Bundle: per entry its status, `location`, `etag` and `lastModified`,
//! the resource when `Prefer: return=representation` asks for it (reads always carry theirs),
//! and for a failed batch entry an OperationOutcome.

use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{format_instant, Audited, BundleKind, EntryOutcome, StoredVersion, Written};
use serde_json::json;

use crate::error::stored_with_issues;
use crate::negotiate::{self, body_format};
use crate::resources::{prefers_representation, read_body, Ctx};
use crate::{ApiError, AppState};

pub(crate) async fn bundle(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let format = body_format(req, &body).map_err(|e| ctx.err(e))?;
    // Parsing and checking a bundle of thousands of entries is long work for one thread: off
    // the worker, whose other connections would otherwise wait (and time out) behind it.
    let engine = state.engine.clone();
    let limits = engine.parse_limits(&ctx.caller);
    let bundle = web::block(move || engine.parse_bundle(&body, format, &limits))
        .await
        .map_err(|e| ctx.err(fjord_engine::EngineError::Internal(e.to_string())))?
        .map_err(|e| ctx.err(e))?;
    let result = state.engine.bundle(&ctx.caller, bundle).await;
    let (kind, outcomes) = ctx.audited(state, "transaction", result, |_| None).await?;
    // Reads and failed entries of a batch: their own events (writes recorded theirs).
    for outcome in &outcomes {
        let audited = match outcome {
            EntryOutcome::Read(version) => Audited::new("read").version(version),
            EntryOutcome::Searched(found) => {
                Audited::new("search-type").searched("bundle entry".into(), found)
            }
            EntryOutcome::Failed(error) => Audited::new("batch").failed(error),
            EntryOutcome::Written(_) | EntryOutcome::Deleted(_) => continue,
        };
        state.engine.audit(&ctx.caller, audited).await;
    }
    let with_resources = prefers_representation(req);
    let entries: Vec<String> = outcomes
        .into_iter()
        .map(|outcome| entry(outcome, with_resources))
        .collect();
    let kind = match kind {
        BundleKind::Batch => "batch-response",
        BundleKind::Transaction => "transaction-response",
    };
    let text = format!(
        r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{}]}}"#,
        entries.join(",")
    );
    Ok(negotiate::respond_json_string(
        HttpResponse::Ok(),
        text,
        ctx.negotiated,
    ))
}

/// One response entry as JSON text.
fn entry(outcome: EntryOutcome, with_resource: bool) -> String {
    match outcome {
        EntryOutcome::Written(written) => {
            let status = if written.created {
                "201 Created"
            } else {
                "200 OK"
            };
            let resource = with_resource.then_some(written.body.as_deref()).flatten();
            written_entry(&written, status, resource)
        }
        EntryOutcome::Deleted(Some(written)) => written_entry(&written, "204 No Content", None),
        EntryOutcome::Deleted(None) => r#"{"response":{"status":"204 No Content"}}"#.to_owned(),
        EntryOutcome::Read(version) => read_entry(&version),
        EntryOutcome::Searched(found) => {
            let entries: Vec<String> = found
                .iter()
                .map(|v| {
                    format!(
                        r#"{{"fullUrl":{},"resource":{},"search":{{"mode":"match"}}}}"#,
                        json!(format!("{}/{}", v.resource_type, v.id)),
                        v.body.as_deref().unwrap_or("null")
                    )
                })
                .collect();
            format!(
                r#"{{"resource":{{"resourceType":"Bundle","type":"searchset","total":{},"entry":[{}]}},"response":{{"status":"200 OK"}}}}"#,
                found.len(),
                entries.join(",")
            )
        }
        EntryOutcome::Failed(error) => {
            let api = ApiError::from(error);
            format!(
                r#"{{"response":{{"status":{},"outcome":{}}}}}"#,
                json!(status_line(api.status)),
                api.outcome()
            )
        }
    }
}

fn written_entry(written: &Written, status: &str, resource: Option<&str>) -> String {
    let mut response = json!({
        "status": status,
        "location": format!(
            "{}/{}/_history/{}",
            written.resource_type, written.id, written.version
        ),
        "etag": fjord_engine::etag_of(written.version),
        "lastModified": format_instant(written.last_updated),
    });
    // Stored despite them (lenient validation): the entry tells its issues.
    if !written.issues.is_empty() {
        response["outcome"] = stored_with_issues("stored with validation issues", &written.issues);
    }
    match resource {
        Some(body) => format!(
            r#"{{"fullUrl":{},"resource":{body},"response":{response}}}"#,
            json!(format!("{}/{}", written.resource_type, written.id))
        ),
        None => format!(r#"{{"response":{response}}}"#),
    }
}

fn read_entry(version: &StoredVersion) -> String {
    let response = json!({
        "status": "200 OK",
        "etag": fjord_engine::etag_of(version.version),
        "lastModified": format_instant(version.last_updated),
    });
    format!(
        r#"{{"fullUrl":{},"resource":{},"response":{response}}}"#,
        json!(format!("{}/{}", version.resource_type, version.id)),
        version.body.as_deref().unwrap_or("null")
    )
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}
