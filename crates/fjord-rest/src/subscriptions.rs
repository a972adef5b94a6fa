//! The Subscription operations of the R5 Backport IG over HTTP: `$status` (instance or type
//! level, GET or POST) and `$events` (`eventsSinceNumber`, `eventsUntilNumber`, `content`).

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{Audited, EngineError};
use fjord_subscriptions::{EventsQuery, SubscriptionError};

use crate::negotiate;
use crate::resources::Ctx;
use crate::terminology::operation_parameters;
use crate::{ApiError, AppState};

/// Which operation a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Status,
    Events,
}

pub(crate) async fn operation(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: Option<&str>,
    operation: Operation,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let Some(subscriptions) = &state.subscriptions else {
        return Err(ctx.err(ApiError::bad_request(
            "this server delivers no subscriptions",
        )));
    };
    let params = operation_parameters(req, state, &ctx, payload).await?;
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be a number, not '{v}'"))
                })
            })
            .transpose()
    };
    let answer = match (operation, id) {
        (Operation::Status, _) => subscriptions.status(&ctx.caller, id).await,
        (Operation::Events, Some(id)) => {
            let query = EventsQuery {
                since: number("eventsSinceNumber").map_err(|e| ctx.err(e))?,
                until: number("eventsUntilNumber").map_err(|e| ctx.err(e))?,
                content: params
                    .iter()
                    .find(|(n, _)| n == "content")
                    .map(|(_, v)| v.clone()),
            };
            subscriptions.events(&ctx.caller, id, query).await
        }
        (Operation::Events, None) => {
            return Err(ctx.err(ApiError::bad_request(
                "$events is an operation on one Subscription",
            )))
        }
    };
    let answer = answer.map_err(|error| match error {
        SubscriptionError::Engine(error) => error,
        other => EngineError::Internal(other.to_string()),
    });
    let answer = ctx
        .audited(state, "operation", answer, |_| {
            Some(Audited::new("operation"))
        })
        .await?;
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &answer,
        ctx.negotiated,
    ))
}
