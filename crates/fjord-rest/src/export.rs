//! Bulk Data `$export` over HTTP, in the asynchronous request pattern: a kick-off
//! (`[base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`, GET or POST with
//! `Parameters`) answers 202 with a `Content-Location`; that URL answers 202 with `X-Progress`
//! while the job runs and 200 with the manifest once it is done; `DELETE` cancels or forgets
//! the job. Each output file is served at `[status URL]/[Type].ndjson` to the client that
//! started the job only.

use std::io::Read;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use fjord_engine::{format_instant, Audited, EngineError, ExportJob, ExportLevel, ExportRequest};
use serde_json::json;

use crate::resources::Ctx;
use crate::terminology::operation_parameters;
use crate::{jobs, ApiError, AppState};

/// The `_outputFormat` values that mean NDJSON (the only one served).
const NDJSON: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Bytes read from an output file per chunk sent.
const CHUNK: usize = 256 << 10;

pub(crate) async fn kick_off(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    level: ExportLevel,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let params = operation_parameters(req, state, &ctx, payload).await?;
    let request = export_request(req, &ctx, level, &params).map_err(|e| ctx.err(e))?;
    let job = state.engine.start_export(&ctx.caller, request).await;
    let job = ctx.audited(state, "operation", job, |_| None).await?;
    let location = format!("{}/$export/{}", ctx.base(req), job.id);
    Ok(jobs::accepted(
        &ctx,
        location,
        format!("exporting {} types", job.progress.types),
    ))
}

/// The kick-off's parameters; unknown ones are refused rather than ignored, as an export
/// without a filter the client asked for would disclose more than it meant.
fn export_request(
    req: &HttpRequest,
    ctx: &Ctx,
    level: ExportLevel,
    params: &[(String, String)],
) -> Result<ExportRequest, ApiError> {
    let mut request = ExportRequest {
        level,
        types: Vec::new(),
        since: None,
        type_filters: Vec::new(),
        request: crate::public::request_url_with_query(req, Some(&ctx.caller.tenant)),
    };
    for (name, value) in params {
        match name.as_str() {
            "_outputFormat" if NDJSON.contains(&value.as_str()) => {}
            "_outputFormat" => {
                return Err(ApiError::bad_request(format!(
                    "_outputFormat '{value}' is not supported; use application/fhir+ndjson"
                )))
            }
            "_type" => request.types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "_since" if request.since.is_none() => request.since = Some(value.clone()),
            "_since" => return Err(ApiError::bad_request("_since given twice")),
            "_typeFilter" => request.type_filters.extend(split_type_filters(value)),
            // Negotiation's own parameters.
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "$export does not support the parameter {other}"
                )))
            }
        }
    }
    Ok(request)
}

/// `_typeFilter` values: one query per value, or several separated by commas (Bulk Data 1.0),
/// a comma starting a new query only where `Type?` follows it (a query's own comma-separated
/// values stay whole).
fn split_type_filters(value: &str) -> Vec<String> {
    let mut queries: Vec<String> = Vec::new();
    for part in value.split(',') {
        let starts_query = part.split_once('?').is_some_and(|(t, _)| {
            t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric())
        });
        match queries.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(part);
            }
            _ => queries.push(part.to_owned()),
        }
    }
    queries
}

pub(crate) async fn status(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::lenient(req, state, tenant).await?;
    let job = state.engine.export_job(&ctx.caller, id);
    jobs::status(
        &ctx,
        "export",
        id,
        job,
        |p| {
            format!(
                "{} of {} types, {} resources",
                p.types_done, p.types, p.resources
            )
        },
        |job| {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(manifest(job, &format!("{}/$export/{id}", ctx.base(req))).to_string())
        },
    )
}

/// The completion manifest of the Bulk Data specification.
fn manifest(job: &ExportJob, files_at: &str) -> serde_json::Value {
    let job = &job.progress;
    let output: Vec<serde_json::Value> = job
        .outputs
        .iter()
        .map(|o| {
            json!({ "type": o.resource_type, "url": format!("{files_at}/{}", o.file), "count": o.count })
        })
        .collect();
    json!({
        "transactionTime": job.transaction_time.map(format_instant),
        "request": job.request,
        "requiresAccessToken": job.requires_access_token,
        "output": output,
        "error": [],
    })
}

pub(crate) async fn cancel(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::lenient(req, state, tenant).await?;
    let found = state.engine.cancel_export(&ctx.caller, id);
    jobs::cancelled(&ctx, "export", id, found)
}

/// An output file, streamed from disk.
pub(crate) async fn file(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
    name: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::lenient(req, state, tenant).await?;
    let path = state
        .engine
        .export_file(&ctx.caller, id, name)
        .ok_or_else(|| {
            EngineError::NotFound(format!("the file {name} of an export job {id} of yours"))
        });
    let path = ctx
        .audited(state, "operation", path, |_| {
            let mut audited = Audited::new("operation");
            audited.query = Some(req.uri().to_string());
            Some(audited)
        })
        .await?;
    let file = std::fs::File::open(&path).map_err(|e| {
        ctx.err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("export file {name}: {e}"),
        ))
    })?;
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = web::block(move || {
            let mut buffer = vec![0; CHUNK];
            let n = file.read(&mut buffer)?;
            buffer.truncate(n);
            Ok::<_, std::io::Error>((buffer, file))
        })
        .await;
        match read {
            Ok(Ok((buffer, _))) if buffer.is_empty() => None,
            Ok(Ok((buffer, file))) => Some((Ok(web::Bytes::from(buffer)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+ndjson"))
        .streaming(chunks))
}

#[cfg(test)]
mod tests {
    use super::split_type_filters;

    #[test]
    fn type_filters_split_where_a_query_starts() {
        assert_eq!(
            split_type_filters("Observation?code=a,b&status=final,Patient?gender=female"),
            vec![
                "Observation?code=a,b&status=final".to_owned(),
                "Patient?gender=female".to_owned()
            ]
        );
        assert_eq!(
            split_type_filters("Condition?code=http://x|1,http://y?z"),
            vec!["Condition?code=http://x|1,http://y?z".to_owned()]
        );
    }
}
