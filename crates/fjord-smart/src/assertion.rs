//! JWTs that clients sign to prove who they are (RFC 7523 client assertions, SMART Backend
//! Services), checked against the keys the client registered.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::token::{unverified_claims, ALGORITHMS};

/// The `iss` an assertion claims, before anything is checked: which client's keys to try.
pub fn claimed_issuer(assertion: &str) -> Option<String> {
    unverified_claims(assertion)?
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The claims of `assertion` when one of `keys` signed it (by `kid`, or the only key), with
/// `iss` and `sub` both `client_id`, `audience` among its `aud`, and `exp` not passed
/// (`leeway_seconds` allowed); why not otherwise.
pub fn verify_assertion(
    assertion: &str,
    keys: &JwkSet,
    client_id: &str,
    audience: &str,
    leeway_seconds: u64,
) -> Result<Map<String, Value>, String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| "not a JWT".to_owned())?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err("the signature algorithm is not accepted".into());
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or("no registered key has the assertion's kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "the registered key is not usable")?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = leeway_seconds;
    jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}
