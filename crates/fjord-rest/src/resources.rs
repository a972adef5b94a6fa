//! The resource interactions: create, read, vread, update, delete, history (search: `search`).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use fjord_engine::{
    etag_of, version_of_etag, Audited, Caller, EngineError, HistoryQuery, PatchBody, StoredVersion,
    Written,
};
use futures_util::StreamExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{information, stored_with_issues};
use crate::negotiate::{self, body_format, negotiate, Negotiated};
use crate::{bundle, ApiError, AppState};

/// What every FHIR handler needs: the caller (tenant and access) and the response format.
pub(crate) struct Ctx {
    pub caller: Caller,
    pub negotiated: Negotiated,
}

impl Ctx {
    pub async fn new(req: &HttpRequest, state: &AppState, tenant: &str) -> Result<Ctx, ApiError> {
        // When negotiation fails, its own error is written in the default format (JSON).
        let negotiated = negotiate(req)?;
        Ctx::negotiated(req, state, tenant, negotiated).await
    }

    /// A request whose answer is not a FHIR resource (bulk export's files): errors in the
    /// negotiated format, or JSON when `Accept` names none.
    pub async fn lenient(
        req: &HttpRequest,
        state: &AppState,
        tenant: &str,
    ) -> Result<Ctx, ApiError> {
        Ctx::negotiated(req, state, tenant, crate::negotiate::lenient(req)).await
    }

    async fn negotiated(
        req: &HttpRequest,
        state: &AppState,
        tenant: &str,
        negotiated: Negotiated,
    ) -> Result<Ctx, ApiError> {
        let in_format = |e: ApiError| e.in_format(negotiated);
        let tenant = state
            .engine
            .serving_tenant(tenant)
            .await
            .map_err(|e| in_format(e.into()))?;
        req.extensions_mut()
            .insert(crate::metrics::ResolvedTenant(tenant.id.clone()));
        let address = crate::public::client_address(req).map(|a| a.to_string());
        match state
            .config
            .auth
            .authenticate(req, &tenant, &state.engine)
            .await
        {
            Ok(access) => Ok(Ctx {
                caller: Caller::new(tenant, access).with_address(address),
                negotiated,
            }),
            Err(error) => {
                let anonymous = Caller::trusted(tenant).with_address(address);
                let audited = Audited::new("login").refused(error.message.clone());
                state.engine.audit(&anonymous, audited).await;
                Err(in_format(error))
            }
        }
    }

    /// The result of an interaction, its outcome recorded in the audit trail: failures always,
    /// successes as `on_success` describes them (successful writes record theirs in their own
    /// transaction, so theirs say `None`).
    pub async fn audited<T>(
        &self,
        state: &AppState,
        interaction: &'static str,
        result: Result<T, EngineError>,
        on_success: impl FnOnce(&T) -> Option<Audited>,
    ) -> Result<T, ApiError> {
        state
            .engine
            .audit_outcome(&self.caller, interaction, &result, on_success)
            .await;
        result.map_err(|e| self.err(e))
    }

    /// The tenant and format of a request anyone may make (the CapabilityStatement).
    pub async fn public(
        req: &HttpRequest,
        state: &AppState,
        tenant: &str,
    ) -> Result<Ctx, ApiError> {
        let negotiated = negotiate(req)?;
        let tenant = state
            .engine
            .serving_tenant(tenant)
            .await
            .map_err(|e| ApiError::from(e).in_format(negotiated))?;
        Ok(Ctx {
            caller: Caller::trusted(tenant),
            negotiated,
        })
    }

    /// The tenant's base URL as the client reached it (only the writes and Bundles need it).
    pub fn base(&self, req: &HttpRequest) -> String {
        crate::public::tenant_base(req, &self.caller.tenant)
    }

    /// The largest body the tenant takes: the server's limit, or the tenant's where tighter.
    pub fn max_body_bytes(&self, state: &AppState) -> usize {
        let tenant = self.caller.tenant.settings.limits.max_body_bytes;
        fjord_engine::TenantLimits::tighter(state.config.max_body_bytes, tenant)
    }

    pub fn err(&self, error: impl Into<ApiError>) -> ApiError {
        error.into().in_format(self.negotiated)
    }
}

pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("request body exceeds {limit} bytes"),
        )
        .in_format(negotiate::lenient(req))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&etag_of(version)).expect("digits are a valid header")
}

const HTTP_DATE: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

fn http_date(at: OffsetDateTime) -> HeaderValue {
    let text = at
        .to_offset(time::UtcOffset::UTC)
        .format(HTTP_DATE)
        .expect("HTTP dates format");
    HeaderValue::from_str(&text).expect("HTTP dates are valid headers")
}

/// The version named by `If-Match` (`W/"3"`, `"3"` or `3`); 400 when it is not a version.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    version_of_etag(text).map(Some).ok_or_else(|| {
        ApiError::bad_request(format!(
            "If-Match '{text}' does not name a version; use W/\"n\""
        ))
    })
}

/// Whether `If-None-Match` or `If-Modified-Since` make a read answer 304.
fn not_modified(req: &HttpRequest, version: &StoredVersion) -> bool {
    if let Some(value) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let current = version.version.to_string();
        return value
            .split(',')
            .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|tag| tag == "*" || tag == current);
    }
    let since = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok());
    let since = since
        .and_then(|s| time::PrimitiveDateTime::parse(s, HTTP_DATE).ok())
        .map(|t| t.assume_utc());
    since.is_some_and(|since| version.last_updated.unix_timestamp() <= since.unix_timestamp())
}

/// What `Prefer: return=` asks for.
#[derive(PartialEq)]
enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// Whether `Prefer: return=representation` is asked for explicitly (bundles answer minimally
/// unless it is).
pub(crate) fn prefers_representation(req: &HttpRequest) -> bool {
    prefer_return(req) == Some(Return::Representation)
}

/// What `Prefer: return=` asks for, if it is there.
fn prefer_return(req: &HttpRequest) -> Option<Return> {
    let prefer = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok());
    prefer
        .flat_map(|v| v.split(','))
        .find_map(|directive| match directive.trim() {
            "return=minimal" => Some(Return::Minimal),
            "return=OperationOutcome" => Some(Return::OperationOutcome),
            "return=representation" => Some(Return::Representation),
            _ => None,
        })
}

fn written_response(req: &HttpRequest, ctx: &Ctx, written: &Written) -> HttpResponse {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::ETAG, etag(written.version)))
        .insert_header((header::LAST_MODIFIED, http_date(written.last_updated)));
    if written.created {
        let location = format!(
            "{}/{}/{}/_history/{}",
            ctx.base(req),
            written.resource_type,
            written.id,
            written.version
        );
        builder.insert_header((header::LOCATION, location));
    }
    match (
        prefer_return(req).unwrap_or(Return::Representation),
        &written.body,
    ) {
        (Return::Minimal, _) | (_, None) => builder.finish(),
        (Return::OperationOutcome, _) => {
            let what = if written.created {
                "created"
            } else {
                "updated"
            };
            let message = format!(
                "{}/{} {what} as version {}",
                written.resource_type, written.id, written.version
            );
            let outcome = stored_with_issues(&message, &written.issues);
            negotiate::respond_value(builder, &outcome, ctx.negotiated)
        }
        (Return::Representation, Some(body)) => {
            negotiate::respond_json_text(builder, body, ctx.negotiated)
        }
    }
}

fn version_response(ctx: &Ctx, version: &StoredVersion) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((header::ETAG, etag(version.version)))
        .insert_header((header::LAST_MODIFIED, http_date(version.last_updated)));
    negotiate::respond_json_text(
        builder,
        version.body.as_deref().unwrap_or("{}"),
        ctx.negotiated,
    )
}

pub(crate) async fn create(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let format = body_format(req, &body).map_err(|e| ctx.err(e))?;
    let condition = req
        .headers()
        .get("if-none-exist")
        .map(|v| v.to_str().unwrap_or_default());
    let written = match condition {
        Some(condition) => {
            let condition = condition.split_once('?').map_or(condition, |(_, q)| q);
            state
                .engine
                .conditional_create(&ctx.caller, resource_type, &body, format, condition)
                .await
        }
        None => {
            state
                .engine
                .create(&ctx.caller, resource_type, &body, format)
                .await
        }
    };
    let written = ctx.audited(state, "create", written, |_| None).await?;
    Ok(written_response(req, &ctx, &written))
}

/// `PUT /{type}/{id}`, or with no id `PUT /{type}?criteria`.
pub(crate) async fn update(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: Option<&str>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let format = body_format(req, &body).map_err(|e| ctx.err(e))?;
    let expected = if_match(req).map_err(|e| ctx.err(e))?;
    let engine = &state.engine;
    let written = match id {
        Some(id) => {
            engine
                .update(&ctx.caller, resource_type, id, &body, format, expected)
                .await
        }
        None => {
            let condition = req.query_string();
            engine
                .conditional_update(
                    &ctx.caller,
                    resource_type,
                    condition,
                    &body,
                    format,
                    expected,
                )
                .await
        }
    };
    let written = ctx.audited(state, "update", written, |_| None).await?;
    Ok(written_response(req, &ctx, &written))
}

/// `PATCH /{type}/{id}`, or with no id `PATCH /{type}?criteria`: JSON Patch when the body is
/// `application/json-patch+json`, otherwise FHIRPath Patch (a `Parameters` resource).
pub(crate) async fn patch(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: Option<&str>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let is_json_patch = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json-patch+json");
    let patch_body = if is_json_patch {
        PatchBody::JsonPatch(&body)
    } else {
        PatchBody::FhirPath(&body, body_format(req, &body).map_err(|e| ctx.err(e))?)
    };
    let expected = if_match(req).map_err(|e| ctx.err(e))?;
    let engine = &state.engine;
    let limits = engine.parse_limits(&ctx.caller);
    let patch = engine
        .parse_patch(patch_body, &limits)
        .map_err(|e| ctx.err(e))?;
    let written = match id {
        Some(id) => {
            engine
                .patch(&ctx.caller, resource_type, id, &patch, expected)
                .await
        }
        None => {
            engine
                .conditional_patch(
                    &ctx.caller,
                    resource_type,
                    req.query_string(),
                    &patch,
                    expected,
                )
                .await
        }
    };
    let written = ctx.audited(state, "patch", written, |_| None).await?;
    Ok(written_response(req, &ctx, &written))
}

/// `DELETE /{type}/{id}`, or with no id `DELETE /{type}?criteria`.
pub(crate) async fn delete(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let expected = if_match(req).map_err(|e| ctx.err(e))?;
    let engine = &state.engine;
    let (deleted, message) = match id {
        Some(id) => {
            let cascade = cascade(req).map_err(|e| ctx.err(e))?;
            let deleted = engine
                .delete(&ctx.caller, resource_type, id, expected, cascade)
                .await;
            let deleted = ctx.audited(state, "delete", deleted, |_| None).await?;
            let message = match &deleted {
                Some(_) => format!("{resource_type}/{id} deleted"),
                None => format!("{resource_type}/{id} does not exist; nothing to delete"),
            };
            (deleted, message)
        }
        None => {
            let condition = req.query_string();
            let deleted = engine
                .conditional_delete(&ctx.caller, resource_type, condition, expected)
                .await;
            let deleted = ctx.audited(state, "delete", deleted, |_| None).await?;
            let message = match deleted.as_slice() {
                [] => format!("no {resource_type} matched; nothing to delete"),
                [written] => format!("{resource_type}/{} deleted", written.id),
                several => format!("{} {resource_type} resources deleted", several.len()),
            };
            // Several deleted: no one version to name.
            let one = if deleted.len() == 1 {
                deleted.into_iter().next()
            } else {
                None
            };
            (one, message)
        }
    };
    Ok(deleted_response(req, &ctx, deleted.as_ref(), &message))
}

/// Whether a delete asks to cascade (`_cascade=delete`).
fn cascade(req: &HttpRequest) -> Result<bool, ApiError> {
    let mut cascade = false;
    for (name, value) in negotiate::query_pairs(req) {
        match (name.as_str(), value.as_str()) {
            ("_cascade", "delete") => cascade = true,
            ("_cascade", other) => {
                return Err(ApiError::bad_request(format!(
                    "_cascade={other}: the only value is 'delete'"
                )))
            }
            _ => {}
        }
    }
    Ok(cascade)
}

fn deleted_response(
    req: &HttpRequest,
    ctx: &Ctx,
    deleted: Option<&Written>,
    message: &str,
) -> HttpResponse {
    if prefer_return(req) == Some(Return::Minimal) {
        return HttpResponse::NoContent().finish();
    }
    let mut builder = HttpResponse::Ok();
    if let Some(written) = deleted {
        builder.insert_header((header::ETAG, etag(written.version)));
    }
    negotiate::respond_value(builder, &information(message), ctx.negotiated)
}

pub(crate) async fn read(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let result = state.engine.read(&ctx.caller, resource_type, id).await;
    let version = ctx
        .audited(state, "read", result, |v| {
            Some(Audited::new("read").version(v))
        })
        .await?;
    if not_modified(req, &version) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag(version.version)))
            .finish());
    }
    Ok(version_response(&ctx, &version))
}

pub(crate) async fn vread(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: &str,
    vid: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let result = state
        .engine
        .vread(&ctx.caller, resource_type, id, vid)
        .await;
    let version = ctx
        .audited(state, "vread", result, |v| {
            Some(Audited::new("vread").version(v))
        })
        .await?;
    Ok(version_response(&ctx, &version))
}

/// History at system (`/_history`), type (`/{type}/_history`) or instance level.
pub(crate) async fn history(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: Option<&str>,
    id: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let query = history_query(req).map_err(|e| ctx.err(e))?;
    let result = state
        .engine
        .history(&ctx.caller, resource_type, id, query)
        .await;
    let interaction = match (resource_type, id) {
        (Some(_), Some(_)) => "history-instance",
        (Some(_), None) => "history-type",
        _ => "history-system",
    };
    let page = ctx
        .audited(state, interaction, result, |page| {
            let mut audited = Audited::new(interaction);
            page.versions.iter().for_each(|v| audited.add(v));
            Some(audited)
        })
        .await?;
    let bundle = bundle::history(req, &ctx.base(req), &page);
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &bundle,
        ctx.negotiated,
    ))
}

const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 1000;

fn history_query(req: &HttpRequest) -> Result<HistoryQuery, ApiError> {
    let mut query = HistoryQuery {
        count: DEFAULT_COUNT,
        ..Default::default()
    };
    for (name, value) in negotiate::query_pairs(req) {
        match name.as_str() {
            "_count" => {
                let count: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("_count '{value}' is not a number"))
                })?;
                query.count = count.clamp(1, MAX_COUNT);
            }
            "_since" => {
                let since = OffsetDateTime::parse(&value, &Rfc3339).map_err(|_| {
                    ApiError::bad_request(format!(
                        "_since '{value}' is not an instant (e.g. 2026-01-01T00:00:00Z)"
                    ))
                })?;
                query.since = Some(since);
            }
            "_cursor" => {
                query.cursor = Some(
                    value
                        .parse()
                        .map_err(|_| ApiError::bad_request("invalid _cursor"))?,
                );
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "history parameter '{other}' is not supported"
                )));
            }
        }
    }
    Ok(query)
}
