//! The rest-hook client: HTTP/1.1 on the runtime the delivery workers run on (hyper), TLS by
//! rustls with the machine's trust store. An endpoint's connections are kept and reused, and
//! every answer is read to its end (up to [`ANSWER_KEPT`]) so that its connection can be.
//!
//! Error messages name no URL: an endpoint may carry a secret in its path or query, and the
//! messages go to the subscription's status and the audit trail.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The most of an answer read to keep its connection; past it the connection is dropped.
const ANSWER_KEPT: usize = 64 * 1024;
/// Idle connections kept per endpoint host: about as many as notifications to one host are
/// sent at once under load, so that few connections are opened and closed again.
const IDLE_PER_HOST: usize = 64;
/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// One client for every rest-hook.
pub(crate) struct RestHookClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// One request to a subscriber.
pub(crate) struct HookRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    /// The body and its media type.
    pub body: Option<(Vec<u8>, &'a str)>,
    pub timeout: Duration,
}

impl RestHookClient {
    pub fn new() -> RestHookClient {
        let mut roots = rustls::RootCertStore::empty();
        match rustls_native_certs::load_native_certs() {
            Ok(certificates) => {
                let (_, unusable) = roots.add_parsable_certificates(certificates);
                if unusable > 0 {
                    tracing::debug!(unusable, "trust store certificates not usable");
                }
            }
            // HTTPS endpoints then fail their handshake, with that reason in their status.
            Err(error) => tracing::warn!(%error, "the machine's trust store could not be read"),
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_FOR)
            .build(connector);
        RestHookClient { client }
    }

    /// Sends the request; `Err` with the reason unless the endpoint answered 2xx within the
    /// timeout.
    pub async fn send(&self, request: HookRequest<'_>) -> Result<(), String> {
        let timeout = request.timeout;
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the endpoint did not answer within {} s",
                timeout.as_secs()
            )),
        }
    }

    async fn exchange(&self, hook: HookRequest<'_>) -> Result<(), String> {
        let uri: Uri = hook
            .url
            .parse()
            .map_err(|_| "the endpoint is not a valid URL".to_owned())?;
        let method = Method::from_bytes(hook.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in hook.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("the channel header '{name}' is not a valid name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the channel header '{name}' has no valid value"))?;
            request = request.header(name, value);
        }
        let body = match hook.body {
            Some((body, media_type)) => {
                request = request.header(CONTENT_TYPE, media_type);
                Full::new(Bytes::from(body))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| e.to_string())?;
        let response =
            self.client.request(request).await.map_err(|error| {
                format!("the endpoint could not be reached: {}", innermost(&error))
            })?;
        let status = response.status();
        // Read to the end, whatever the status, so the connection serves the next request; an
        // answer past the limit is not worth keeping it for.
        let _ = Limited::new(response.into_body(), ANSWER_KEPT)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered {}", status.as_u16()))
        }
    }
}

/// The innermost cause of an error: "connection refused", "invalid peer certificate", not
/// "client error (Connect)".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An endpoint that answers each request on a connection in turn with `answers`, each
    /// answer's body a moment after its head; the number of connections it accepted.
    async fn endpoint(
        answers: Vec<(&'static str, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let mut connections = 0;
            let mut answers = answers.into_iter();
            while let Some(answer) = answers.next() {
                let (mut stream, _) = listener.accept().await.unwrap();
                connections += 1;
                let mut next = Some(answer);
                while let Some(answer) = next {
                    let mut request = vec![0u8; 4096];
                    if stream.read(&mut request).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let (head, body) = answer;
                    stream.write_all(head.as_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    stream.write_all(body.as_bytes()).await.unwrap();
                    next = answers.next();
                }
            }
            connections
        });
        (url, served)
    }

    fn post(url: &str) -> HookRequest<'_> {
        HookRequest {
            method: "POST",
            url,
            headers: &[],
            body: Some((b"{}".to_vec(), "application/fhir+json")),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn an_error_answer_is_read_to_its_end_and_its_connection_serves_the_next() {
        let refused = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\n",
            "busy.",
        );
        let fine = ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "");
        let (url, served) = endpoint(vec![refused, fine]).await;
        let client = RestHookClient::new();
        assert_eq!(
            client.send(post(&url)).await,
            Err("the endpoint answered 503".to_owned())
        );
        assert_eq!(client.send(post(&url)).await, Ok(()));
        assert_eq!(served.await.unwrap(), 1, "one connection for both");
    }

    #[tokio::test]
    async fn an_endpoint_that_cannot_be_reached_is_named_by_its_cause_not_its_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook?secret=s3cr3t",
            listener.local_addr().unwrap()
        );
        drop(listener);
        let error = RestHookClient::new().send(post(&url)).await.unwrap_err();
        assert!(
            error.starts_with("the endpoint could not be reached: "),
            "{error}"
        );
        assert!(
            !error.contains("s3cr3t") && !error.contains("127.0.0.1"),
            "{error}"
        );
        assert!(
            !error.contains("client error"),
            "the cause, not the wrapper: {error}"
        );
    }
}
