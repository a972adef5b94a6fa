//! A panic in a handler is a bug in Fjord. It is answered 500 with an `OperationOutcome` and
//! logged, instead of unwinding the worker thread, which would drop every connection it serves.
//! Locks and transactions held by the handler are released as the panic unwinds. The request
//! went down with the panic, so the answer is an error the server's dispatcher renders (without
//! the CORS headers the outer layers would add to a response).

use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use futures_util::FutureExt;

use crate::ApiError;

/// Runs the rest of the chain, turning a panic into a 500.
pub(crate) async fn contain(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Routing happens inside `next.call`, which therefore may panic before any future exists.
    let answering = match std::panic::catch_unwind(AssertUnwindSafe(|| next.call(req))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match answering {
        Ok(answered) => answered.map(ServiceResponse::map_into_boxed_body),
        Err(_) => {
            // The panic hook has already printed the message and location.
            tracing::error!("a request handler panicked; answered 500");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "internal error: the server failed on this request; it has been logged",
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App};

    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_and_the_worker_serves_on() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(contain))
                .route("/boom", web::get().to(|| async { panic!("a bug") as &str }))
                .route("/fine", web::get().to(|| async { "fine" })),
        )
        .await;
        let boom = test::try_call_service(&app, test::TestRequest::get().uri("/boom").to_request())
            .await
            .expect_err("an error the dispatcher renders");
        let boom = boom.error_response();
        assert_eq!(boom.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(boom.into_body()).await.unwrap();
        let outcome: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "exception");
        let fine =
            test::call_service(&app, test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
