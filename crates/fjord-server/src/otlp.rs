//! Traces over OpenTelemetry (OTLP/HTTP, protobuf) when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables:
//! headers, timeout, service name). The spans are those of the logs: a request's id and method,
//! the engine's interactions by tenant and resource type, the store's statements; none records
//! a body, a token, a resource id or a search's values. They are batched on a thread of their
//! own and sent with ureq, so a slow collector never holds up a request.

use std::io::Read;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;

/// The largest answer of a collector read.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// Whether traces are to be exported.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The exporting pipeline: a layer for the subscriber, and the provider to shut down (flushing
/// what is batched) when the process ends.
pub fn layer<S>() -> anyhow::Result<(impl tracing_subscriber::Layer<S>, SdkTracerProvider)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient(ureq::AgentBuilder::new().build()))
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("fjord");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("fjord");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// opentelemetry-http's client over ureq. The batch processor calls it from its own thread,
/// where blocking is what it expects; the exporter's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`)
/// bounds the call.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut call = self
            .0
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                call = call.set(name.as_str(), value);
            }
        }
        let answer = match call.send_bytes(&body) {
            Ok(answer) | Err(ureq::Error::Status(_, answer)) => answer,
            Err(error) => return Err(Box::new(error)),
        };
        let status = answer.status();
        let mut read = Vec::new();
        answer
            .into_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut read)?;
        Ok(Response::builder().status(status).body(Bytes::from(read))?)
    }
}
