//! Which browser pages may call the API (CORS): the server's policy (`actix-cors`), or a
//! tenant's own (`cors` in its settings) for the requests under `/fhir/{tenant}/`.
//!
//! A tenant's policy is read per request from its settings, which `actix-cors`'s fixed
//! configuration cannot do; so the tenant layer sits outside it, answers preflights itself, and
//! hides the `Origin` of the requests it handles from the server's policy.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use fjord_engine::CorsPolicy;

use crate::AuthMode;

/// Headers a page may read from answers.
const EXPOSED: &str = "Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, X-Request-Id, X-Progress, Retry-After";

/// The server's policy. Browser apps read from any origin while every request needs a token:
/// tokens travel in the `Authorization` header, never in cookies, so an open policy hands a
/// foreign page nothing it did not already hold. Without authentication any page the
/// developer visits could read the server, so only pages served from this machine
/// (`localhost`, loopback addresses) may.
pub(crate) fn server_policy(mode: AuthMode) -> actix_cors::Cors {
    let cors = match mode {
        AuthMode::Required => actix_cors::Cors::default()
            .allow_any_origin()
            .send_wildcard(),
        AuthMode::Off => actix_cors::Cors::default()
            .allowed_origin_fn(|origin, _| origin.to_str().is_ok_and(is_local_origin)),
    };
    cors.allow_any_method()
        .allow_any_header()
        .expose_headers([
            "Location",
            "Content-Location",
            "ETag",
            "Last-Modified",
            "WWW-Authenticate",
            "X-Request-Id",
        ])
        .max_age(3600)
}

/// `http(s)://localhost[:port]` or a loopback address.
fn is_local_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        // [::1]:port
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => rest.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A tenant's policy as stored: origins as browsers send them (`scheme://host[:port]`, no
/// path) or `*`, methods upper-cased.
pub(crate) fn checked_policy(mut policy: CorsPolicy) -> Result<CorsPolicy, String> {
    for origin in &mut policy.allowed_origins {
        if origin == "*" {
            continue;
        }
        let parsed = url::Url::parse(origin)
            .map_err(|e| format!("allowedOrigins: '{origin}' is not an origin: {e}"))?;
        let serialized = parsed.origin().ascii_serialization();
        if serialized != origin.trim_end_matches('/') || parsed.path() != "/" {
            return Err(format!(
                "allowedOrigins: '{origin}' is not an origin (scheme://host[:port], as a browser \
                 sends it: '{serialized}')"
            ));
        }
        *origin = serialized;
    }
    for method in &mut policy.allowed_methods {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("allowedMethods: '{method}' is not a method"));
        }
        method.make_ascii_uppercase();
    }
    if let Some(bad) = policy.allowed_headers.iter().find(|h| {
        h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
    }) {
        return Err(format!("allowedHeaders: '{bad}' is not a header name"));
    }
    Ok(policy)
}

/// The tenant's policy for a request with an `Origin`, if its tenant has one.
async fn tenant_policy(req: &ServiceRequest) -> Option<CorsPolicy> {
    req.headers().get(header::ORIGIN)?;
    // An unknown tenant is the handler's 404, under the server's policy.
    crate::router::tenant_settings(req).await?.cors
}

fn allows_origin(policy: &CorsPolicy, origin: &str) -> bool {
    policy
        .allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.trim_end_matches('/') == origin)
}

fn allows_method(policy: &CorsPolicy, method: &str) -> bool {
    policy
        .allowed_methods
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(method))
}

/// Whether every header of `Access-Control-Request-Headers` is allowed.
fn allows_headers(policy: &CorsPolicy, requested: &str) -> bool {
    requested
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .all(|name| {
            policy
                .allowed_headers
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(name))
        })
}

/// The outermost layer: requests to a tenant with a CORS policy are answered by it.
pub(crate) async fn tenant_layer(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(policy) = tenant_policy(&req).await else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let allowed = allows_origin(&policy, &origin);
    let requested_method = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let (&Method::OPTIONS, Some(method)) = (req.method(), requested_method) {
        let requested_headers = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut answer = HttpResponse::build(StatusCode::NO_CONTENT);
        answer.insert_header((
            header::VARY,
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ));
        // A refused preflight is an answer without the allowing headers: the browser stops.
        if allowed && allows_method(&policy, &method) && allows_headers(&policy, &requested_headers)
        {
            answer
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    policy.allowed_methods.join(", "),
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, policy.max_age_seconds));
            if !requested_headers.is_empty() {
                answer.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested_headers));
            }
        }
        return Ok(req.into_response(answer.finish()));
    }
    // The server's policy must not judge (or refuse) an origin the tenant's decides.
    req.headers_mut().remove(header::ORIGIN);
    let mut response = next.call(req).await?.map_into_boxed_body();
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if allowed {
        if let Ok(origin) = HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_a_local_origin() {
        for local in [
            "http://localhost:3000",
            "http://localhost",
            "http://127.0.0.1:8080",
            "https://127.0.0.2",
            "http://[::1]:5173",
        ] {
            assert!(is_local_origin(local), "{local}");
        }
        for foreign in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://10.0.0.1:3000",
            "null",
            "file://",
        ] {
            assert!(!is_local_origin(foreign), "{foreign}");
        }
    }

    #[test]
    fn a_policy_allows_what_it_lists() {
        let policy = CorsPolicy {
            allowed_origins: vec!["https://app.hf.no/".into()],
            allowed_methods: vec!["GET".into()],
            allowed_headers: vec!["Authorization".into()],
            max_age_seconds: 60,
        };
        assert!(allows_origin(&policy, "https://app.hf.no"));
        assert!(!allows_origin(&policy, "https://app.hf.no:8443"));
        assert!(allows_method(&policy, "get"));
        assert!(!allows_method(&policy, "DELETE"));
        assert!(allows_headers(&policy, "authorization"));
        assert!(allows_headers(&policy, ""));
        assert!(!allows_headers(&policy, "Authorization, X-Secret"));
        use crate::router::tenant_of;
        assert_eq!(tenant_of("/fhir/hf1/Patient"), Some("hf1"));
        assert_eq!(tenant_of("/fhir/"), None);
        assert_eq!(tenant_of("/admin/tenants"), None);
    }
}
