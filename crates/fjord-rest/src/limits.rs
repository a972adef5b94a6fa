//! Per-client rate limits: each client (its network address, behind trusted proxies the one
//! they forwarded) may make so many requests a second to a tenant, with a burst; past it, 429
//! with `Retry-After`. The limit is the tenant's `rateLimit` setting, else the server's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::ResponseError;
use fjord_engine::RateLimit;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::{ApiError, AppState};

/// Checks between sweeps of clients not seen for a while (their state is then full again).
const SWEEP_EVERY: u64 = 10_000;

/// One tenant's counts, by client address.
type ClientLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// The limiters of every tenant that has a limit, shared by the server's workers.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// The server's limit, for tenants without their own.
    default: Option<RateLimit>,
    by_tenant: Mutex<HashMap<String, (RateLimit, Arc<ClientLimiter>)>>,
    checks: AtomicU64,
}

impl RateLimits {
    pub fn new(default: Option<RateLimit>) -> RateLimits {
        RateLimits {
            default,
            ..Default::default()
        }
    }

    /// Counts a request of `client` to `tenant` under `limit`: how long it must wait when it
    /// is over.
    fn check(&self, tenant: &str, limit: RateLimit, client: IpAddr) -> Option<std::time::Duration> {
        let limiter = {
            let mut by_tenant = self.by_tenant.lock().expect("rate limiters");
            match by_tenant.get(tenant) {
                // A changed setting starts afresh.
                Some((kept, limiter)) if *kept == limit => limiter.clone(),
                _ => {
                    let limiter = Arc::new(governor::RateLimiter::keyed(quota(limit)));
                    by_tenant.insert(tenant.to_owned(), (limit, limiter.clone()));
                    limiter
                }
            }
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&client)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn quota(limit: RateLimit) -> Quota {
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// A middleware: requests under `/fhir/{tenant}/` over their client's limit are answered 429.
pub(crate) async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(wait) = over_limit(&req).await {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("too many requests from this client: try again in {seconds} s"),
        )
        .in_format(crate::negotiate::lenient(req.request()));
        let mut response = error.error_response();
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(seconds),
        );
        return Ok(req.into_response(response));
    }
    next.call(req).await.map(|r| r.map_into_boxed_body())
}

/// How long the request's client must wait, if it is over its tenant's limit.
async fn over_limit(req: &ServiceRequest) -> Option<std::time::Duration> {
    let tenant = crate::router::tenant_of(req.path())?;
    let state = req.app_data::<Data<AppState>>()?;
    let limits = &state.config.rate_limits;
    // Unknown tenants are the handler's 404; no setting to read.
    let own = crate::router::tenant_settings(req)
        .await
        .and_then(|s| s.rate_limit);
    let limit = own.or(limits.default)?;
    let client = crate::public::client_address(req.request())?;
    limits.check(tenant, limit, client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let limits = RateLimits::default();
        let limit = RateLimit {
            per_second: 1,
            burst: 3,
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(limits.check("t1", limit, a), None);
        }
        let wait = limits.check("t1", limit, a).expect("over the burst");
        assert!(wait.as_millis() > 0 && wait.as_secs() <= 1, "{wait:?}");
        assert_eq!(limits.check("t1", limit, b), None);
        assert_eq!(limits.check("t2", limit, a), None);
        // A changed limit starts afresh.
        let wider = RateLimit {
            per_second: 1,
            burst: 5,
        };
        assert_eq!(limits.check("t1", wider, a), None);
    }
}
