//! SMART on FHIR for a resource server: who may do what.
//!
//! - [`token`]: bearer tokens (JWTs) checked against the issuers a tenant trusts, their keys
//!   fetched and cached from configuration only; claims mapped to an [`Access`].
//! - [`dpop`]: proofs of possession for tokens bound to a key (RFC 9449).
//! - [`scope`]: the scope grammar, v1 and v2 with granular scopes.
//! - [`access`]: what the scopes grant, as filters over the search index that the engine adds to
//!   every query before it runs (the policy is a query rewrite, never a filter on results).
//! - [`assertion`]: client assertions (RFC 7523) checked against a client's registered keys.
//! - [`sharing`]: another tenant's users reading under the owner's sharing policy (§9).
//! - [`discovery`]: `.well-known/smart-configuration` and the CapabilityStatement's security.
//! - [`dev`]: the development issuer's key, with which `fjord token` and the development
//!   authorization server sign.
//!
//! No HTTP here: the REST layer takes the token from the request and answers RFC 6750 errors.

pub mod access;
pub mod assertion;
pub mod dev;
pub mod discovery;
pub mod dpop;
pub mod scope;
pub mod sharing;
pub mod token;

pub use access::{Access, Grant, Principal};
pub use dev::{DevIssuer, TokenRequest, DEV_ISSUER};
pub use discovery::AuthorizationServer;
pub use dpop::{ProofChecker, ProofKey, ProofRequest};
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use scope::{Permission, Scope};
pub use sharing::{Shared, SharingGrant};
pub use token::{RequiredClaim, TrustedIssuer, Verified, Verifier};

/// Why a request is not let through (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token: 401 with a bare `WWW-Authenticate: Bearer` challenge.
    #[error("this request needs an access token (Authorization: Bearer …)")]
    Missing,
    /// A token that does not verify, has expired, or is not for this server: 401.
    #[error("{0}")]
    InvalidToken(String),
    /// A DPoP-bound token without a good proof of this request: 401 (RFC 9449).
    #[error("DPoP proof: {0}")]
    InvalidDpopProof(String),
    /// A valid token whose scopes do not grant the request: 403.
    #[error("{0}")]
    InsufficientScope(String),
    /// The issuer's keys could not be fetched: 503, the token may well be good.
    #[error("{0}")]
    KeysUnavailable(String),
}
