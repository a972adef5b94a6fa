//! The Subscription operations of the R5 Backport IG over HTTP: `$status` (instance or type
//! level, GET or POST), `$events` (`eventsSinceNumber`, `eventsUntilNumber`, `content`) and
//! `$get-ws-binding-token`; and the websocket that subscriptions with a websocket channel are
//! delivered over (`/fhir/{tenant}/$subscription-websocket`: `bind-with-token TOKEN`, or classic
//! R4's `bind ID`; notifications as text, protocol pings answered).

use std::sync::Arc;

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::Message;
use fjord_engine::{Audited, EngineError, Tenant};
use fjord_subscriptions::{EventsQuery, Outgoing, SubscriptionError, Subscriptions};
use tokio::sync::mpsc;

use crate::negotiate;
use crate::resources::Ctx;
use crate::terminology::operation_parameters;
use crate::{ApiError, AppState};

/// Which operation a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Status,
    Events,
    BindingToken,
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
        (Operation::BindingToken, Some(id)) => subscriptions.binding_token(&ctx.caller, id).await,
        (Operation::Events | Operation::BindingToken, None) => {
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

/// `GET /fhir/{tenant}/$subscription-websocket`: upgrades to a websocket whose client binds
/// subscriptions with a token from `$get-ws-binding-token` (the token is the authorization:
/// browsers cannot send headers with a websocket).
pub(crate) async fn websocket(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = state.engine.serving_tenant(tenant).await?;
    let Some(subscriptions) = state.subscriptions.clone() else {
        return Err(ApiError::bad_request(
            "this server delivers no subscriptions",
        ));
    };
    let (response, session, stream) = actix_ws::handle(req, payload)
        .map_err(|e| ApiError::bad_request(format!("not a websocket upgrade: {e}")))?;
    actix_web::rt::spawn(serve_socket(subscriptions, tenant, session, stream));
    Ok(response)
}

/// A connection's life: binds as the client asks, writes what its subscriptions send.
async fn serve_socket(
    subscriptions: Arc<Subscriptions>,
    tenant: Tenant,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    let mut bound: Option<mpsc::Receiver<Outgoing>> = None;
    loop {
        tokio::select! {
            message = stream.recv() => match message {
                Some(Ok(Message::Text(text))) => match subscriptions.bind(&tenant, &text).await {
                    Ok(binding) => {
                        for first in binding.first {
                            if session.text(first).await.is_err() {
                                return;
                            }
                        }
                        bound = Some(binding.messages);
                    }
                    Err(error) => {
                        if session.text(format!("error {error}")).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            outgoing = next(&mut bound) => match outgoing {
                Some(Outgoing { text, written }) => {
                    let ok = session.text(text).await.is_ok();
                    let _ = written.send(ok);
                    if !ok {
                        return;
                    }
                }
                None => bound = None,
            },
        }
    }
    let _ = session.close(None).await;
}

/// The next message for a bound connection; never, while it is not bound.
async fn next(bound: &mut Option<mpsc::Receiver<Outgoing>>) -> Option<Outgoing> {
    match bound {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
