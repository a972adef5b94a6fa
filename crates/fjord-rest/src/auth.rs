//! Who is calling: the bearer token of a request checked against the issuers the tenant trusts
//! (`fjord-smart`), and RFC 6750's answers when it is missing (401), bad (401
//! `invalid_token`) or not enough (403 `insufficient_scope`), each with an OperationOutcome.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;
use fjord_authz::DevAuthServer;
use fjord_engine::{Access, AuthError, Engine, Tenant};
use fjord_smart::{ProofChecker, ProofRequest, TrustedIssuer, Verified, Verifier, DEV_ISSUER};

use crate::ApiError;

/// The realm of every challenge.
const REALM: &str = "fjord";

/// The scope that opens the administration API (`/admin`).
pub const ADMIN_SCOPE: &str = "fjord:admin";

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every FHIR and administration request needs a valid token.
    Required,
    /// No token is asked for and every request may do everything (development only).
    Off,
}

/// Authentication of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The development authorization server, whose issuer every tenant trusts while it is on.
    dev: Option<Arc<DevAuthServer>>,
    dev_issuer: Option<TrustedIssuer>,
    verifier: Arc<Verifier>,
    /// DPoP proofs seen, shared by every worker (replay).
    proofs: Arc<ProofChecker>,
}

impl AuthConfig {
    /// Authentication in `mode`, with the development authorization server when given (every
    /// tenant then trusts its issuer); an issuer's keys are fetched again for an unknown key id
    /// at most every `refetch_interval`.
    pub fn new(
        mode: AuthMode,
        dev: Option<Arc<DevAuthServer>>,
        refetch_interval: Duration,
    ) -> AuthConfig {
        AuthConfig {
            mode,
            dev_issuer: dev.as_ref().map(|d| d.issuer().trusted()),
            dev,
            verifier: Arc::new(Verifier::with_refetch_interval(refetch_interval)),
            proofs: Arc::default(),
        }
    }

    /// The development authorization server, when it is on, to share (its revocations).
    pub fn dev_authorization_server(&self) -> Option<Arc<DevAuthServer>> {
        self.dev.clone()
    }

    /// The development authorization server, when it is on.
    pub(crate) fn dev_server(&self) -> Option<&DevAuthServer> {
        self.dev.as_deref()
    }

    /// What the caller of a FHIR request to `tenant` may do: its own token, or, where the
    /// tenant's sharing policy names the token's home tenant, what the policy opens to it.
    pub(crate) async fn authenticate(
        &self,
        req: &HttpRequest,
        tenant: &Tenant,
        engine: &Engine,
    ) -> Result<Access, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Access::unrestricted());
        }
        let own = match self.verify(req, tenant, tenant).await {
            Ok(verified) => return Ok(verified.access),
            Err(error) => error,
        };
        for grant in &tenant.settings.sharing {
            // A suspended or unknown home tenant's tokens open nothing.
            let Ok(home) = engine.serving_tenant(&grant.tenant).await else {
                continue;
            };
            let Ok(verified) = self.verify(req, &home, tenant).await else {
                continue;
            };
            return grant.admit(verified).ok_or_else(|| {
                auth_error(AuthError::InsufficientScope(format!(
                    "a token of {} reads here only for a purpose this tenant's sharing policy \
                     accepts, asserted in the claim '{}'",
                    home.id, grant.purpose.claim
                )))
            });
        }
        Err(own)
    }

    /// The request's token checked as one of `home`'s (its issuers and base URL) presented to
    /// `tenant`, with its DPoP proof when it is bound to a key.
    async fn verify(
        &self,
        req: &HttpRequest,
        home: &Tenant,
        tenant: &Tenant,
    ) -> Result<Verified, ApiError> {
        let (scheme, token) = credentials(req)?;
        let issuers: Vec<&TrustedIssuer> = home
            .settings
            .trusted_issuers
            .iter()
            .chain(&self.dev_issuer)
            .collect();
        let base_url = crate::public::tenant_base(req, home);
        let verified = self
            .verifier
            .verify(token, &issuers, &base_url)
            .await
            .map_err(auth_error)?;
        let from_dev_issuer = verified
            .access
            .principal()
            .is_some_and(|p| p.issuer == DEV_ISSUER);
        if let (true, Some(dev), Some(jti)) = (from_dev_issuer, &self.dev, &verified.token_id) {
            if dev.is_revoked(jti) {
                return Err(auth_error(AuthError::InvalidToken(
                    "the token was revoked".into(),
                )));
            }
        }
        match (scheme, verified.bound_to.as_deref()) {
            (Scheme::Bearer, None) => {}
            (Scheme::Bearer, Some(_)) => {
                return Err(auth_error(AuthError::InvalidToken(
                    "the token is bound to a key (cnf.jkt): present it with a DPoP proof".into(),
                )))
            }
            (Scheme::Dpop, None) => {
                return Err(auth_error(AuthError::InvalidToken(
                    "the token is not bound to a key: present it as a bearer token".into(),
                )))
            }
            (Scheme::Dpop, Some(bound_to)) => {
                let mut proofs = req.headers().get_all("DPoP");
                let proof = match (proofs.next(), proofs.next()) {
                    (Some(proof), None) => proof.to_str().unwrap_or_default(),
                    _ => {
                        return Err(auth_error(AuthError::InvalidDpopProof(
                            "one DPoP header is needed".into(),
                        )))
                    }
                };
                let url = crate::public::request_url(req, Some(tenant));
                let request = ProofRequest {
                    method: req.method().as_str(),
                    url: &url,
                    access_token: token,
                    bound_to,
                };
                self.proofs.check(proof, request).map_err(auth_error)?;
            }
        }
        Ok(verified)
    }

    /// Whether the request may use the administration API: a development-issuer token with
    /// the `fjord:admin` scope and the API's URL (`…/admin`) as its audience.
    pub(crate) async fn require_admin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let (_, token) = credentials(req)?;
        let Some(dev) = &self.dev_issuer else {
            return Err(auth_error(AuthError::InvalidToken(
                "no issuer of administration tokens is configured".into(),
            )));
        };
        let audience = format!("{}/admin", crate::public::origin(req));
        let verified = self
            .verifier
            .verify(token, &[dev], &audience)
            .await
            .map_err(auth_error)?;
        let admin = verified
            .access
            .principal()
            .is_some_and(|p| p.scope.split_whitespace().any(|s| s == ADMIN_SCOPE));
        if !admin {
            return Err(auth_error(AuthError::InsufficientScope(format!(
                "the administration API needs the scope {ADMIN_SCOPE}"
            ))));
        }
        Ok(())
    }
}

/// How a token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// The scheme and token of `Authorization: Bearer …` or `Authorization: DPoP …`.
fn credentials(req: &HttpRequest) -> Result<(Scheme, &str), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(auth_error(AuthError::Missing));
    };
    let value = value.to_str().unwrap_or_default();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("Bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("DPoP") {
        Scheme::Dpop
    } else {
        return Err(auth_error(AuthError::Missing));
    };
    match token.trim() {
        "" => Err(auth_error(AuthError::Missing)),
        token => Ok((scheme, token)),
    }
}

/// The answer to an authentication or authorisation failure, with its challenge.
pub(crate) fn auth_error(error: AuthError) -> ApiError {
    let (status, code, challenge) = match &error {
        AuthError::Missing => (
            StatusCode::UNAUTHORIZED,
            "login",
            format!("Bearer realm=\"{REALM}\""),
        ),
        AuthError::InvalidToken(why) => (
            StatusCode::UNAUTHORIZED,
            "login",
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                quoted(why)
            ),
        ),
        AuthError::InsufficientScope(why) => (
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\"",
                quoted(why)
            ),
        ),
        AuthError::InvalidDpopProof(why) => (
            StatusCode::UNAUTHORIZED,
            "login",
            format!(
                "DPoP realm=\"{REALM}\", error=\"invalid_dpop_proof\", error_description=\"{}\", \
                 algs=\"ES256 ES384 PS256 PS384 RS256 RS384\"",
                quoted(why)
            ),
        ),
        AuthError::KeysUnavailable(_) => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                error.to_string(),
            );
            api.challenge = None;
            return api;
        }
    };
    let mut api = ApiError::new(status, code, error.to_string());
    api.challenge = Some(challenge);
    api
}

/// Text safe inside a quoted header parameter.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect()
}
