//! Content negotiation: which format a response is written in and which a request body is read in.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use fjord_model::{Format, ParseLimits, Resource};
use serde_json::Value;

use crate::ApiError;

/// The response format and whether to indent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub format: Format,
    pub pretty: bool,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            format: Format::Json,
            pretty: false,
        }
    }
}

/// The query string as ordered pairs (repeated names kept).
pub fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

/// The response format from `_format` (which wins) or `Accept`; 406 when neither names FHIR JSON
/// or XML nor accepts anything.
pub fn negotiate(req: &HttpRequest) -> Result<Negotiated, ApiError> {
    let (mut pretty, mut format_param) = (false, None);
    // Most requests have no query at all; parse it only when there is one, and once.
    if !req.query_string().is_empty() {
        for (name, value) in query_pairs(req) {
            match name.as_str() {
                "_pretty" => pretty = value == "true",
                "_format" if format_param.is_none() => format_param = Some(value),
                _ => {}
            }
        }
    }
    if let Some(value) = format_param {
        return match Format::from_mime(&value) {
            Some(format) => Ok(Negotiated { format, pretty }),
            None => Err(ApiError::new(
                actix_web::http::StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                format!("_format '{value}' is not supported; use json or xml"),
            )),
        };
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Negotiated {
            format: Format::Json,
            pretty,
        });
    };
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let mime = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse().ok())
                .unwrap_or(1.0);
            (q, mime)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, mime) in ranges {
        if let Some(format) = Format::from_mime(mime) {
            return Ok(Negotiated { format, pretty });
        }
        if matches!(mime, "*/*" | "application/*" | "") {
            return Ok(Negotiated {
                format: Format::Json,
                pretty,
            });
        }
    }
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_ACCEPTABLE,
        "not-supported",
        format!(
            "cannot answer in any of '{accept}'; use application/fhir+json or application/fhir+xml"
        ),
    ))
}

/// The negotiated format, or JSON when negotiation fails (errors must be written somehow).
pub fn lenient(req: &HttpRequest) -> Negotiated {
    negotiate(req).unwrap_or_default()
}

/// The format of a request body, from `Content-Type`; a missing one is sniffed. 415 otherwise.
pub fn body_format(req: &HttpRequest, body: &[u8]) -> Result<Format, ApiError> {
    match req.headers().get(header::CONTENT_TYPE) {
        None => Ok(match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Format::Xml,
            _ => Format::Json,
        }),
        Some(value) => {
            let value = value.to_str().unwrap_or("");
            Format::from_mime(value).ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "not-supported",
                    format!("Content-Type '{value}' is not supported; use application/fhir+json or application/fhir+xml"),
                )
            })
        }
    }
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Json => "application/fhir+json; charset=utf-8",
        Format::Xml => "application/fhir+xml; charset=utf-8",
    })
}

/// Writes a resource held as canonical JSON text. Compact JSON is sent as stored.
pub fn respond_json_text(
    builder: HttpResponseBuilder,
    json: &str,
    negotiated: Negotiated,
) -> HttpResponse {
    respond_json_string(builder, json.to_owned(), negotiated)
}

/// [`respond_json_text`] for text the response may keep: compact JSON goes out uncopied.
pub fn respond_json_string(
    mut builder: HttpResponseBuilder,
    json: String,
    negotiated: Negotiated,
) -> HttpResponse {
    builder.insert_header((header::CONTENT_TYPE, content_type(negotiated.format)));
    match negotiated {
        Negotiated {
            format: Format::Json,
            pretty: false,
        } => builder.body(json),
        Negotiated {
            format: Format::Json,
            pretty: true,
        } => match serde_json::from_str::<Value>(&json) {
            Ok(value) => builder.body(serde_json::to_string_pretty(&value).unwrap_or(json)),
            Err(_) => builder.body(json),
        },
        Negotiated {
            format: Format::Xml,
            ..
        } => match Resource::from_json(json.as_bytes(), &unlimited()) {
            Ok(resource) => builder.body(resource.to_xml()),
            Err(error) => {
                tracing::error!(%error, "stored resource does not convert to XML");
                HttpResponse::InternalServerError().finish()
            }
        },
    }
}

/// Writes a resource built as a JSON value (OperationOutcome, Bundle).
pub fn respond_value(
    builder: HttpResponseBuilder,
    value: &Value,
    negotiated: Negotiated,
) -> HttpResponse {
    let json = serde_json::to_string(value).expect("values serialize");
    respond_json_string(builder, json, negotiated)
}

/// What Fjord wrote itself was checked on the way in; reading it back needs no depth limit.
fn unlimited() -> ParseLimits {
    ParseLimits {
        max_depth: usize::MAX,
    }
}
