//! The terminology operations over HTTP: `ValueSet/$expand` (type level with `url`, or instance
//! level), `CodeSystem/$lookup` (`system`, `code`), and `$validate-code` on ValueSet and
//! CodeSystem (`url` or instance, `system`, `code`, `display`, or a `coding`). Parameters come
//! from the query, or from a `Parameters` body on POST.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{CodeQuestion, Format, ParseLimits, Resource};

use crate::negotiate::{self, body_format, query_pairs};
use crate::resources::{read_body, Ctx};
use crate::{ApiError, AppState};

/// Which operation a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Expand,
    Lookup,
    ValidateCode,
}

pub(crate) async fn operation(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: Option<&str>,
    operation: Operation,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let params = operation_parameters(req, state, &ctx, payload).await?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let engine = &state.engine;
    let answer = match operation {
        Operation::Expand => engine.expand_value_set(&ctx.caller, get("url"), id).await,
        Operation::Lookup => {
            let (Some(system), Some(code)) = (get("system"), get("code")) else {
                return Err(ctx.err(ApiError::bad_request("$lookup needs system and code")));
            };
            engine.lookup_code(&ctx.caller, system, code).await
        }
        Operation::ValidateCode => {
            let Some(code) = get("code") else {
                return Err(ctx.err(ApiError::bad_request("$validate-code needs a code")));
            };
            let question = CodeQuestion {
                url: get("url"),
                id,
                system: get("system"),
                code,
                display: get("display"),
            };
            engine
                .validate_code(&ctx.caller, resource_type == "ValueSet", question)
                .await
        }
    }
    .map_err(|e| ctx.err(e))?;
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &answer,
        ctx.negotiated,
    ))
}

/// An operation's parameters: the query's, and those of a `Parameters` body (POST).
pub(crate) async fn operation_parameters(
    req: &HttpRequest,
    state: &AppState,
    ctx: &Ctx,
    payload: web::Payload,
) -> Result<Vec<(String, String)>, ApiError> {
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let mut params: Vec<(String, String)> = query_pairs(req);
    if !body.iter().all(u8::is_ascii_whitespace) {
        let format = body_format(req, &body).map_err(|e| ctx.err(e))?;
        params.extend(parameters_of(&body, format).map_err(|e| ctx.err(e))?);
    }
    Ok(params)
}

/// The simple parameters of a `Parameters` body as (name, text); a `coding` (or the first coding
/// of a `codeableConcept`) gives `system`, `code` and `display`.
pub(crate) fn parameters_of(
    body: &[u8],
    format: Format,
) -> Result<Vec<(String, String)>, ApiError> {
    let resource = Resource::parse(body, format, &ParseLimits::default())
        .map_err(|e| ApiError::bad_request(format!("invalid Parameters: {}", e.message)))?;
    let value = resource.to_value();
    if value["resourceType"] != "Parameters" {
        return Err(ApiError::bad_request(
            "the body of an operation is Parameters",
        ));
    }
    let mut out = Vec::new();
    for parameter in value["parameter"].as_array().into_iter().flatten() {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        let coding = match name {
            "coding" => Some(&parameter["valueCoding"]),
            "codeableConcept" => Some(&parameter["valueCodeableConcept"]["coding"][0]),
            _ => None,
        };
        if let Some(coding) = coding {
            for part in ["system", "code", "display"] {
                if let Some(text) = coding[part].as_str() {
                    out.push((part.to_owned(), text.to_owned()));
                }
            }
            continue;
        }
        let text = parameter
            .as_object()
            .into_iter()
            .flatten()
            .find(|(k, _)| k.starts_with("value"))
            .and_then(|(_, v)| v.as_str());
        if let Some(text) = text {
            out.push((name.to_owned(), text.to_owned()));
        }
    }
    Ok(out)
}
