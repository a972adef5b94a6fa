//! The development authorization server: enough OAuth 2.0 and SMART App Launch for real SMART
//! clients to run against Fjord on a developer's machine or in CI, signed by the development
//! issuer that every tenant trusts while it is on.
//!
//! - [`authorize`]: the authorization endpoint: authorization code with PKCE (S256 only),
//!   EHR launch (a signed `launch` context), standalone launch with a login page where the user
//!   picks a patient, or a test client's configured login.
//! - [`token`]: the token endpoint (authorization code, refresh token, client credentials with
//!   `private_key_jwt` as in SMART Backend Services), revocation (RFC 7009) and introspection
//!   (RFC 7662).
//! - [`client`]: registered clients, from the configuration and from `fjord client add`.
//! - [`page`]: the login page.
//!
//! No HTTP here: the REST layer hands over parameters and answers with what comes back.
//! Codes, refresh tokens and revocations live in memory: a restart signs everyone out.

pub mod authorize;
pub mod client;
pub mod page;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use fjord_smart::{DevIssuer, Scope};
use rand_core::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use authorize::{Authorization, AuthorizeRequest, LoginPrompt};
pub use client::{Client, Clients, Login};

/// How long an authorization code may wait to be exchanged.
const CODE_LIFETIME: u64 = 60;
/// How long an access token is good for.
const ACCESS_TOKEN_LIFETIME: u64 = 3600;
/// How long a refresh token is good for.
const REFRESH_TOKEN_LIFETIME: u64 = 30 * 24 * 3600;
/// How long an EHR launch context may wait for the app.
pub const LAUNCH_LIFETIME: u64 = 900;
/// The header `typ` of a signed launch context.
const LAUNCH_TYP: &str = "launch+jwt";

/// An OAuth error (RFC 6749 §5.2), answered as `{"error": …, "error_description": …}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", description)
    }

    pub(crate) fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", description)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", description)
    }

    pub(crate) fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_scope", description)
    }

    /// 401 for a client that failed to authenticate, 400 for everything else.
    pub fn status(&self) -> u16 {
        if self.code == "invalid_client" {
            401
        } else {
            400
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.code, "error_description": self.description })
    }
}

/// What a grant gives: the scopes and the launch context, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    client_id: String,
    tenant: String,
    scope: String,
    patient: Option<String>,
    encounter: Option<String>,
    fhir_user: Option<String>,
    /// Whether the launch came from the EHR (which shows the patient) or stood alone.
    ehr_launch: bool,
}

/// A code waiting to be exchanged.
#[derive(Debug)]
struct PendingCode {
    grant: Grant,
    redirect_uri: String,
    code_challenge: String,
    expires_at: u64,
}

/// A refresh token's grant.
#[derive(Debug)]
struct RefreshGrant {
    grant: Grant,
    expires_at: u64,
}

/// What the server remembers between requests, by the SHA-256 of the secret value.
#[derive(Debug, Default)]
struct Memory {
    codes: HashMap<String, PendingCode>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// Revoked access tokens' `jti`, until they would have expired.
    revoked: HashMap<String, u64>,
    /// Client assertions' `jti`, until they expire (no assertion is good twice).
    assertions: HashMap<String, u64>,
}

impl Memory {
    fn forget_expired(&mut self, now: u64) {
        self.codes.retain(|_, c| c.expires_at > now);
        self.refresh_tokens.retain(|_, r| r.expires_at > now);
        self.revoked.retain(|_, exp| *exp > now);
        self.assertions.retain(|_, exp| *exp > now);
    }
}

/// The development authorization server, shared by every worker.
#[derive(Debug)]
pub struct DevAuthServer {
    issuer: Arc<DevIssuer>,
    clients: Clients,
    memory: Mutex<Memory>,
}

impl DevAuthServer {
    pub fn new(issuer: Arc<DevIssuer>, clients: Clients) -> DevAuthServer {
        DevAuthServer {
            issuer,
            clients,
            memory: Mutex::default(),
        }
    }

    /// The key every token here is signed with.
    pub fn issuer(&self) -> &DevIssuer {
        &self.issuer
    }

    /// Whether the access token with this `jti` was revoked.
    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.memory
            .lock()
            .expect("authorization memory")
            .revoked
            .contains_key(token_id)
    }

    fn remember<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut memory = self.memory.lock().expect("authorization memory");
        memory.forget_expired(now());
        f(&mut memory)
    }
}

/// An EHR's launch context, signed so that `fjord launch` and the server need share nothing
/// but the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchContext {
    pub tenant: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fhir_user: Option<String>,
}

impl LaunchContext {
    /// The `launch` parameter an EHR hands the app.
    pub fn sign(&self, issuer: &DevIssuer) -> String {
        issuer.sign(
            LAUNCH_TYP,
            &json!({
                "tenant": self.tenant,
                "patient": self.patient,
                "encounter": self.encounter,
                "fhirUser": self.fhir_user,
                "exp": now() + LAUNCH_LIFETIME,
            }),
        )
    }

    /// The context of a `launch` parameter this issuer signed, while it is fresh.
    pub fn open(launch: &str, issuer: &DevIssuer) -> Option<LaunchContext> {
        let claims = issuer.open(launch, LAUNCH_TYP)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        Some(LaunchContext {
            tenant: text("tenant")?,
            patient: text("patient"),
            encounter: text("encounter"),
            fhir_user: text("fhirUser"),
        })
    }
}

/// A secret value: 32 random bytes, base64url.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a secret value is remembered by.
fn digest(secret: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `verifier` is the PKCE verifier (RFC 7636) of the S256 `challenge`.
fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && digest(verifier) == challenge
}

/// Who a flow is for: a user at a browser, or a backend system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    User,
    Backend,
}

/// Scopes that are not resource scopes but that a user's flow understands.
const LAUNCH_SCOPES: [&str; 8] = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
];

/// The part of the `requested` scopes the client may have in this flow: resource scopes of
/// the flow's contexts within the client's limit, and, for a user, the launch scopes. What is
/// not granted is left out (RFC 6749 §3.3), never widened.
fn grantable(requested: &str, client: &Client, flow: Flow) -> String {
    let limit: Option<Vec<&str>> = client
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().collect());
    let limit_scopes: Vec<Scope> = limit
        .iter()
        .flatten()
        .filter_map(|s| Scope::parse(s))
        .collect();
    let mut granted: Vec<&str> = Vec::new();
    for wanted in requested.split_whitespace() {
        let allowed = match Scope::parse(wanted) {
            Some(scope) => {
                let system = scope.context == fjord_smart::scope::Context::System;
                let in_flow = system == (flow == Flow::Backend);
                in_flow && (limit.is_none() || limit_scopes.iter().any(|l| l.includes(&scope)))
            }
            None => {
                flow == Flow::User
                    && LAUNCH_SCOPES.contains(&wanted)
                    && limit.as_ref().is_none_or(|l| l.contains(&wanted))
            }
        };
        if allowed && !granted.contains(&wanted) {
            granted.push(wanted);
        }
    }
    granted.join(" ")
}

fn has_scope(scope: &str, name: &str) -> bool {
    scope.split_whitespace().any(|s| s == name)
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
