//! Bearer tokens: JWTs signed by an issuer the tenant trusts, checked against that issuer's
//! published keys, and their claims mapped to an [`Access`].
//!
//! Keys come only from the configuration (inline, a JWKS URL, or the issuer's OpenID discovery
//! document), never from the token (`jku`, `x5u`, `jwk` are ignored). They are cached; a token
//! signed with a key id the cache does not know makes one refetch, at most once per
//! [`Verifier::with_refetch_interval`], so rotation works and a flood of made-up ids costs
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::{Access, Principal};
use crate::scope::parse_scopes;
use crate::AuthError;

/// The signature algorithms accepted: asymmetric only, so `none` and HMAC (a public key used as
/// a shared secret) never verify.
pub const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How long fetched keys are used before they are fetched again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(3600);

/// How long an introspection answer is used: a revoked token is refused within this time.
const INTROSPECTION_FRESH_FOR: Duration = Duration::from_secs(30);

/// An issuer a tenant trusts, from its settings (`trustedIssuers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedIssuer {
    /// `iss`, compared exactly.
    pub issuer: String,
    /// Accepted `aud` values; empty: the tenant's FHIR base URL as the request names it.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where the keys are; without it and without `jwks`, the issuer's OpenID discovery
    /// document says.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The keys themselves.
    #[serde(default)]
    pub jwks: Option<JwkSet>,
    #[serde(default)]
    pub claims: ClaimNames,
    /// A claim the token must carry with one of these values for this tenant (an HF's
    /// organisation number, say), when one issuer serves several tenants.
    #[serde(default)]
    pub tenant_claim: Option<RequiredClaim>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Where opaque (not JWT) tokens of this issuer are looked up (RFC 7662).
    #[serde(default)]
    pub introspection: Option<Introspection>,
}

/// An issuer's introspection endpoint and Fjord's credentials there.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn default_leeway() -> u64 {
    30
}

/// Where an issuer puts what Fjord reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClaimNames {
    /// The granted scopes: a space-separated string, or an array (`scp`, tried too).
    pub scope: String,
    pub patient: String,
    pub fhir_user: String,
    /// Claims recorded as roles; a trailing `*` takes every claim with that prefix.
    pub roles: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> ClaimNames {
        ClaimNames {
            scope: "scope".into(),
            patient: "patient".into(),
            fhir_user: "fhirUser".into(),
            roles: Vec::new(),
        }
    }
}

/// A claim a token must carry with one of `values` (a string, or an array holding one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredClaim {
    /// A claim's name, or a JSON Pointer into the claims (`/authorization_details/0/
    /// purpose_of_use/code`) for a value nested in a structured claim.
    pub claim: String,
    pub values: Vec<String>,
}

impl RequiredClaim {
    /// The first of the claim's values that is one of `values`.
    pub fn held_by<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c str> {
        let accepted = |v: &'c Value| v.as_str().filter(|s| self.values.iter().any(|t| t == s));
        let value = match self.claim.strip_prefix('/') {
            Some(pointer) => {
                let (name, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
                let name = name.replace("~1", "/").replace("~0", "~");
                match rest {
                    "" => claims.get(&name)?,
                    rest => claims.get(&name)?.pointer(&format!("/{rest}"))?,
                }
            }
            None => claims.get(&self.claim)?,
        };
        match value {
            Value::Array(values) => values.iter().find_map(accepted),
            value => accepted(value),
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub access: Access,
    /// `cnf.jkt`: the thumbprint of the key a DPoP proof must be signed with.
    pub bound_to: Option<String>,
    /// `jti`, by which an issuer may have revoked the token.
    pub token_id: Option<String>,
    /// Every claim, checked: what a sharing policy asks of the token (its purpose).
    pub claims: Map<String, Value>,
}

impl Verified {
    /// What checked claims of `issuer` grant, and the key they bind the token to.
    fn of(claims: Map<String, Value>, issuer: &TrustedIssuer) -> Verified {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        Verified {
            access: access_of(&claims, issuer),
            bound_to: claims
                .get("cnf")
                .and_then(|c| c.get("jkt"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            token_id: text("jti"),
            claims,
        }
    }
}

/// The claims of a JWS whose signature `key` verifies under `alg`; nothing else checked.
pub(crate) fn signed_claims(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Option<Map<String, Value>> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode(token, key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// Introspection answers by issuer and token hash: an active token's claims, or `None`; with
/// when they were had.
type IntrospectionCache = HashMap<String, (Option<Map<String, Value>>, Instant)>;

/// Checks tokens; holds the keys of the issuers it has met.
#[derive(Debug)]
pub struct Verifier {
    keys: Mutex<HashMap<String, CachedKeys>>,
    refetch_interval: Duration,
    /// Introspection answers by the token's hash: the active token's claims, or `None`.
    introspected: Mutex<IntrospectionCache>,
}

#[derive(Debug, Clone)]
struct CachedKeys {
    set: Arc<JwkSet>,
    fetched_at: Instant,
}

impl Default for Verifier {
    fn default() -> Verifier {
        Verifier::with_refetch_interval(Duration::from_secs(10))
    }
}

impl Verifier {
    /// A verifier that refetches an issuer's keys for an unknown key id at most this often.
    pub fn with_refetch_interval(refetch_interval: Duration) -> Verifier {
        Verifier {
            keys: Mutex::new(HashMap::new()),
            refetch_interval,
            introspected: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `token` against the issuers a tenant trusts; `base_url` is the tenant's FHIR base
    /// URL as the request names it (the audience when an issuer configures none).
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        token: &str,
        issuers: &[&TrustedIssuer],
        base_url: &str,
    ) -> Result<Verified, AuthError> {
        let invalid = |m: &str| AuthError::InvalidToken(m.to_owned());
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return self.introspect(token, issuers, base_url).await;
        };
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("the token's signature algorithm is not accepted"));
        }
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "at+jwt" | "application/at+jwt" | "jwt") {
                return Err(invalid("the token is not an access token (typ)"));
            }
        }
        let claims = unverified_claims(token).ok_or_else(|| invalid("malformed claims"))?;
        let issuer_name = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = issuers
            .iter()
            .find(|i| i.issuer == issuer_name)
            .ok_or_else(|| invalid("the token's issuer is not trusted by this tenant"))?;
        let key = self.key(issuer, header.kid.as_deref(), header.alg).await?;
        let verified = signed_claims(token, &key, header.alg)
            .ok_or_else(|| invalid("the token's signature does not verify"))?;
        check_claims(&verified, issuer, base_url, now(), Source::SignedToken)?;
        Ok(Verified::of(verified, issuer))
    }

    /// An opaque token, asked of the issuers that introspect (RFC 7662); their answers are
    /// used for [`INTROSPECTION_FRESH_FOR`].
    async fn introspect(
        &self,
        token: &str,
        issuers: &[&TrustedIssuer],
        base_url: &str,
    ) -> Result<Verified, AuthError> {
        let introspecting = issuers.iter().filter(|i| i.introspection.is_some());
        let hash = crate::dpop::token_hash(token);
        for issuer in introspecting {
            let cache_key = format!("{}\n{hash}", issuer.issuer);
            let cached = self
                .introspected
                .lock()
                .expect("introspection cache")
                .get(&cache_key)
                .filter(|(_, at)| at.elapsed() < INTROSPECTION_FRESH_FOR)
                .map(|(claims, _)| claims.clone());
            let claims = match cached {
                Some(claims) => claims,
                None => {
                    let claims = ask_introspection(issuer, token).await?;
                    let mut cache = self.introspected.lock().expect("introspection cache");
                    cache.retain(|_, (_, at)| at.elapsed() < INTROSPECTION_FRESH_FOR);
                    cache.insert(cache_key, (claims.clone(), Instant::now()));
                    claims
                }
            };
            let Some(claims) = claims else { continue };
            check_introspected(&claims, issuer, base_url, now())?;
            return Ok(Verified::of(claims, issuer));
        }
        Err(AuthError::InvalidToken(
            "the token is not a JWT, and no issuer of this tenant knows it as active".into(),
        ))
    }

    /// The issuer's key for `kid` (or its only key), fetching the issuer's keys when they are
    /// not known or the id is new.
    async fn key(
        &self,
        issuer: &TrustedIssuer,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        let no_key = || AuthError::InvalidToken("no key of the issuer verifies the token".into());
        if let Some(set) = &issuer.jwks {
            return find_key(set, kid, alg).ok_or_else(no_key);
        }
        let cached = self.cached(&issuer.issuer);
        if let Some(cached) = &cached {
            if let Some(key) = find_key(&cached.set, kid, alg) {
                if cached.fetched_at.elapsed() < KEYS_FRESH_FOR {
                    return Ok(key);
                }
            } else if cached.fetched_at.elapsed() < self.refetch_interval {
                return Err(no_key());
            }
        }
        let set = Arc::new(fetch_keys(issuer).await?);
        self.keys.lock().expect("key cache").insert(
            issuer.issuer.clone(),
            CachedKeys {
                set: set.clone(),
                fetched_at: Instant::now(),
            },
        );
        find_key(&set, kid, alg).ok_or_else(no_key)
    }

    fn cached(&self, issuer: &str) -> Option<CachedKeys> {
        self.keys.lock().expect("key cache").get(issuer).cloned()
    }
}

/// The key of `set` a token signed with `alg` under `kid` names, if it is one for `alg`.
fn find_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let jwk: &Jwk = match kid {
        Some(kid) => set.find(kid)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return None,
    };
    if let Some(key_alg) = jwk.common.key_algorithm {
        if key_alg.to_string() != format!("{alg:?}") {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (key.family() == alg.family()).then_some(key)
}

/// The issuer's keys from its JWKS URL or discovery document, fetched off the async threads.
async fn fetch_keys(issuer: &TrustedIssuer) -> Result<JwkSet, AuthError> {
    let issuer = issuer.clone();
    tokio::task::spawn_blocking(move || {
        let jwks_uri = match &issuer.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.issuer.trim_end_matches('/')
                );
                let document: Value = get_json(&discovery)?;
                document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unavailable(&discovery, "no jwks_uri"))?
                    .to_owned()
            }
        };
        let keys: Value = get_json(&jwks_uri)?;
        serde_json::from_value(keys).map_err(|e| unavailable(&jwks_uri, &e.to_string()))
    })
    .await
    .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?
}

fn get_json(url: &str) -> Result<Value, AuthError> {
    let response = ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| unavailable(url, &e.to_string()))?;
    response
        .into_json()
        .map_err(|e| unavailable(url, &e.to_string()))
}

fn unavailable(url: &str, why: &str) -> AuthError {
    tracing::warn!(url, why, "an issuer's keys could not be fetched");
    AuthError::KeysUnavailable(format!("the issuer's keys could not be fetched from {url}"))
}

/// The claims of an active token by the issuer's introspection endpoint; `None` when inactive.
async fn ask_introspection(
    issuer: &TrustedIssuer,
    token: &str,
) -> Result<Option<Map<String, Value>>, AuthError> {
    use base64::Engine;
    let introspection = issuer
        .introspection
        .clone()
        .expect("an introspecting issuer");
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || {
        let endpoint = &introspection.endpoint;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            introspection.client_id, introspection.client_secret
        ));
        let response = ureq::post(endpoint)
            .timeout(Duration::from_secs(5))
            .set("Authorization", &format!("Basic {credentials}"))
            .set("Accept", "application/json")
            .send_form(&[("token", &token), ("token_type_hint", "access_token")])
            .map_err(|e| unavailable(endpoint, &e.to_string()))?;
        let answer: Map<String, Value> = response
            .into_json()
            .map_err(|e| unavailable(endpoint, &e.to_string()))?;
        let active = answer.get("active").and_then(Value::as_bool) == Some(true);
        Ok(active.then_some(answer))
    })
    .await
    .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?
}

/// What an introspection answer must say besides `active`: this issuer (when it names one),
/// not expired, and this server as an audience when it names audiences.
fn check_introspected(
    claims: &Map<String, Value>,
    issuer: &TrustedIssuer,
    base_url: &str,
    now: u64,
) -> Result<(), AuthError> {
    if claims
        .get("iss")
        .and_then(Value::as_str)
        .is_some_and(|iss| iss != issuer.issuer)
    {
        return Err(AuthError::InvalidToken(
            "the introspected token is another issuer's".into(),
        ));
    }
    check_claims(claims, issuer, base_url, now, Source::Introspection)
}

/// The claims of a token before its signature is checked: only to find its issuer.
pub(crate) fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `exp` (required), `nbf`, `iat`, `aud`, ID-token markers and the tenant claim.
/// Where checked claims come from: a signed token must state its expiry and audience; an
/// introspection answer need not, the issuer's word that the token is active stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    SignedToken,
    Introspection,
}

fn check_claims(
    claims: &Map<String, Value>,
    issuer: &TrustedIssuer,
    base_url: &str,
    now: u64,
    source: Source,
) -> Result<(), AuthError> {
    let invalid = |m: &str| Err(AuthError::InvalidToken(m.to_owned()));
    let leeway = issuer.leeway_seconds;
    let time = |name: &str| claims.get(name).and_then(Value::as_u64);
    match time("exp") {
        None if source == Source::Introspection => {}
        None => return invalid("the token has no expiry (exp)"),
        Some(exp) if exp + leeway <= now => return invalid("the token has expired"),
        Some(_) => {}
    }
    if time("nbf").is_some_and(|nbf| nbf > now + leeway) {
        return invalid("the token is not valid yet (nbf)");
    }
    if time("iat").is_some_and(|iat| iat > now + leeway) {
        return invalid("the token was issued in the future (iat)");
    }
    // OpenID Connect ID tokens: `nonce`, `at_hash`, or Keycloak's `typ: ID`.
    if claims.contains_key("nonce")
        || claims.contains_key("at_hash")
        || claims.get("typ").and_then(Value::as_str) == Some("ID")
    {
        return invalid("an ID token is not an access token");
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let accepted = |aud: &&str| {
        if issuer.audiences.is_empty() {
            aud.trim_end_matches('/') == base_url
        } else {
            issuer.audiences.iter().any(|a| a == aud)
        }
    };
    let unstated = audiences.is_empty() && source == Source::Introspection;
    if !unstated && !audiences.iter().any(accepted) {
        return invalid("the token is not meant for this server (aud)");
    }
    if let Some(tenant) = &issuer.tenant_claim {
        if tenant.held_by(claims).is_none() {
            return invalid("the token is not meant for this tenant");
        }
    }
    Ok(())
}

/// The access a verified token's claims grant.
fn access_of(claims: &Map<String, Value>, issuer: &TrustedIssuer) -> Access {
    let names = &issuer.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let scope_claim = [names.scope.as_str(), "scp"]
        .into_iter()
        .find_map(|name| claims.get(name).filter(|v| v.is_string() || v.is_array()));
    let scope = match scope_claim {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let mut roles = Vec::new();
    for pattern in &names.roles {
        let prefix = pattern.strip_suffix('*');
        for (name, value) in claims {
            let wanted = match prefix {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            };
            if wanted {
                roles.push(format!("{name}={}", plain(value)));
            }
        }
    }
    let principal = Principal {
        issuer: issuer.issuer.clone(),
        subject: text("sub"),
        client_id: text("client_id")
            .or_else(|| text("azp"))
            .or_else(|| text("cid")),
        fhir_user: text(&names.fhir_user),
        roles,
        scope: scope.clone(),
        token_id: text("jti"),
    };
    Access::granted(
        parse_scopes(scope.split_whitespace()),
        text(&names.patient),
        principal,
    )
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
