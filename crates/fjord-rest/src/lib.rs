//! The FHIR REST API over HTTP (actix-web).
//!
//! The only crate that knows HTTP: routes under `/fhir/{tenant}`, content negotiation (JSON and XML,
//! `_format`, `_pretty`), conditional headers, `Prefer`, paging links, and the mapping of engine
//! errors to OperationOutcomes with their status codes. The interactions themselves live in
//! `fjord-engine`.

mod admin;
mod auth;
mod authz;
mod batch;
mod bundle;
mod capability;
mod cors;
mod deadline;
mod error;
mod export;
mod import;
mod jobs;
mod limits;
mod metrics;
mod negotiate;
mod panics;
mod public;
mod reindex;
mod resources;
mod router;
mod search;
mod subscriptions;
mod terminology;
mod validate;

use std::sync::Arc;

use actix_web::web;
use fjord_engine::Engine;

pub use admin::{checked_settings, shown as shown_settings};
pub use auth::{AuthConfig, AuthMode, ADMIN_SCOPE};
pub use error::ApiError;
pub use limits::RateLimits;
pub use public::{checked_base_url, Gateway};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How requests are authenticated.
    pub auth: AuthConfig,
    /// How clients reach the server (public URL, trusted proxies).
    pub gateway: Gateway,
    /// Requests per client and tenant.
    pub rate_limits: Arc<RateLimits>,
    /// How long a FHIR request may take before it is answered 503 `timeout`; `None`: no limit.
    pub request_timeout: Option<std::time::Duration>,
}

/// Shared state of all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: RestConfig,
    /// Subscription delivery, when the server runs it.
    pub subscriptions: Option<Arc<fjord_subscriptions::Subscriptions>>,
    /// The process's metrics, served at `/metrics`.
    pub metrics: Arc<fjord_metrics::Metrics>,
}

/// Binds the API to `listen`; returns the server to run and the addresses it is bound to.
pub fn bind(
    state: AppState,
    listen: &str,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let server = actix_web::HttpServer::new(move || {
        // The factory runs on each worker's thread: each gets connections of its own.
        let state = AppState {
            engine: Arc::new(state.engine.for_runtime()),
            config: state.config.clone(),
            subscriptions: state.subscriptions.clone(),
            metrics: state.metrics.clone(),
        };
        let mode = state.config.auth.mode;
        let metrics = state.metrics.clone();
        actix_web::App::new()
            // Innermost first: throttled answers and caught panics are counted and carry CORS
            // headers.
            .wrap(actix_web::middleware::from_fn(panics::contain))
            .wrap(actix_web::middleware::from_fn(deadline::deadline))
            .wrap(actix_web::middleware::from_fn(limits::rate_limit))
            .wrap_fn(move |req, service| metrics::measure(metrics.clone(), req, service))
            .wrap_fn(request_span)
            .wrap(cors::server_policy(mode))
            .wrap(actix_web::middleware::from_fn(cors::tenant_layer))
            .configure(move |cfg| configure(cfg, state))
    })
    .shutdown_timeout(30)
    .bind(listen)?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// The header that carries a request's id, both ways.
const REQUEST_ID: &str = "x-request-id";

/// The root span of a request: an id and the method. Paths are left out on purpose: a client may
/// choose a national identity number as a resource id. The id is the one a gateway sent in
/// `X-Request-Id` when it is a plain token, else a new one; the answer carries it back, so a
/// client's or gateway's logs and Fjord's can be matched.
fn request_span<S>(
    req: actix_web::dev::ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    use tracing::Instrument;
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_plain_request_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!("request", id = %id, method = %req.method());
    let answer = service.call(req).instrument(span);
    async move {
        let mut response = answer.await?;
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
            (response.headers_mut()).insert(
                actix_web::http::header::HeaderName::from_static(REQUEST_ID),
                value,
            );
        }
        Ok(response)
    }
}

/// Whether a client's request id may be logged as it is: short, and nothing a log line could
/// be forged with.
fn is_plain_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Runs a future on the runtime the HTTP server needs (actix's system on a tokio runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    actix_web::rt::System::new().block_on(future)
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    let fallback = || web::route().to(error::method_not_allowed);
    // Everything under /fhir/ is routed by `router::dispatch` from path segments: actix's
    // pattern routes are regular expressions, tried one after another, and cost more than a
    // primary-key read in Postgres.
    let dev_authorization = state.config.auth.dev_server().is_some();
    cfg.app_data(web::Data::new(state));
    if dev_authorization {
        authz::configure(cfg);
    }
    cfg.service(web::resource("/health/live").route(web::get().to(admin::live)))
        .service(web::resource("/health/ready").route(web::get().to(admin::ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics::render)))
        .service(
            web::resource("/admin/tenants")
                .route(web::get().to(admin::list_tenants))
                .route(web::post().to(admin::create_tenant))
                .default_service(fallback()),
        )
        .service(
            web::resource("/admin/tenants/{id}")
                .route(web::get().to(admin::show_tenant))
                .route(web::patch().to(admin::change_tenant))
                .default_service(fallback()),
        )
        .service(
            web::resource("/admin/tenants/{id}/settings")
                .route(web::get().to(admin::show_settings))
                .route(web::put().to(admin::set_settings))
                .default_service(fallback()),
        )
        .default_service(web::to(router::dispatch));
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_request_ids_are_taken() {
        assert!(super::is_plain_request_id("3f2a-77_b.c:9"));
        assert!(!super::is_plain_request_id(""));
        assert!(!super::is_plain_request_id("a b"));
        assert!(!super::is_plain_request_id("x\ny=forged"));
        assert!(!super::is_plain_request_id(&"a".repeat(129)));
    }
}
