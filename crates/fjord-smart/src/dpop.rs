//! DPoP (RFC 9449): a token bound to a key (`cnf.jkt`) is good only with a proof, signed by that
//! key, of this very request: `htm` and `htu` name its method and URL, `ath` hashes the token,
//! `iat` is recent, and `jti` has not been seen before within the window (HelseID issues such
//! tokens).

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use sha2::Digest;

use crate::token::{now, signed_claims, ALGORITHMS};
use crate::AuthError;

/// How far a proof's `iat` may be from the server's clock, either way, in seconds; proofs are
/// remembered (for replay) this long after their `iat`.
pub const PROOF_WINDOW: u64 = 60;

/// The request a proof must be of.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    pub method: &'a str,
    /// The request's URL without query and fragment.
    pub url: &'a str,
    /// The access token presented with the proof.
    pub access_token: &'a str,
    /// The thumbprint the token is bound to (`cnf.jkt`).
    pub bound_to: &'a str,
}

/// Checks proofs and remembers their ids.
#[derive(Debug, Default)]
pub struct ProofChecker {
    seen: Mutex<HashMap<String, u64>>,
}

impl ProofChecker {
    /// Whether `proof` is a valid, fresh DPoP proof of `request`.
    pub fn check(&self, proof: &str, request: ProofRequest<'_>) -> Result<(), AuthError> {
        self.check_at(proof, request, now())
    }

    fn check_at(&self, proof: &str, request: ProofRequest<'_>, now: u64) -> Result<(), AuthError> {
        let bad = |why: &str| AuthError::InvalidDpopProof(why.to_owned());
        let header = jsonwebtoken::decode_header(proof).map_err(|_| bad("not a signed JWT"))?;
        if header.typ.as_deref() != Some("dpop+jwt") {
            return Err(bad("typ is not dpop+jwt"));
        }
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad("the signature algorithm is not accepted"));
        }
        let jwk: Jwk = header.jwk.ok_or_else(|| bad("no jwk in the header"))?;
        if has_private_parts(proof) {
            return Err(bad("the jwk holds a private key"));
        }
        if jwk.thumbprint(ThumbprintHash::SHA256) != request.bound_to {
            return Err(bad("signed by a key the token is not bound to"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad("the jwk is not a usable key"))?;
        let claims = signed_claims(proof, &key, header.alg)
            .ok_or_else(|| bad("the signature does not verify"))?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
        if !text("htm").eq_ignore_ascii_case(request.method) {
            return Err(bad("htm is not the request's method"));
        }
        if !same_url(text("htu"), request.url) {
            return Err(bad("htu is not the request's URL"));
        }
        if text("ath") != token_hash(request.access_token) {
            return Err(bad("ath is not the hash of the access token"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no iat"))?;
        if iat + PROOF_WINDOW < now || iat > now + PROOF_WINDOW {
            return Err(bad("iat is outside the accepted window"));
        }
        let jti = text("jti");
        if jti.is_empty() {
            return Err(bad("no jti"));
        }
        let mut seen = self.seen.lock().expect("proof ids");
        seen.retain(|_, expires| *expires >= now);
        if seen
            .insert(jti.to_owned(), iat + 2 * PROOF_WINDOW)
            .is_some()
        {
            return Err(bad("the proof was used before (jti)"));
        }
        Ok(())
    }
}

/// A client's DPoP key, for tests and tools that act as a client: it signs proofs.
pub struct ProofKey {
    signing: jsonwebtoken::EncodingKey,
    public: Jwk,
}

impl ProofKey {
    /// A fresh ES256 key.
    pub fn generate() -> ProofKey {
        let pem = crate::dev::new_key_pem().expect("a new key encodes");
        let signing = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).expect("its own PEM");
        let public = Jwk::from_encoding_key(&signing, jsonwebtoken::Algorithm::ES256)
            .expect("a P-256 key has a JWK");
        ProofKey { signing, public }
    }

    /// `cnf.jkt` of a token bound to this key.
    pub fn thumbprint(&self) -> String {
        self.public.thumbprint(ThumbprintHash::SHA256)
    }

    /// A proof with these claims (`jti`, `htm`, `htu`, `iat`, `ath`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.public.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).expect("ES256 signing works")
    }

    /// A fresh proof of `method url` with `access_token`.
    pub fn proof(&self, method: &str, url: &str, access_token: &str) -> String {
        self.sign(&serde_json::json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "htm": method,
            "htu": url,
            "iat": now(),
            "ath": token_hash(access_token),
        }))
    }
}

/// `ath`: base64url of the SHA-256 of the token.
pub fn token_hash(access_token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(access_token))
}

/// Whether the proof's header `jwk` has a private member (`d`, or RSA's primes).
fn has_private_parts(proof: &str) -> bool {
    use base64::Engine;
    let header = proof.split('.').next().unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return true;
    };
    let Ok(header) = serde_json::from_slice::<Value>(&bytes) else {
        return true;
    };
    ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|name| header["jwk"].get(name).is_some())
}

/// URLs equal but for the case of scheme and host, a query and a fragment.
fn same_url(proof: &str, request: &str) -> bool {
    let strip = |url: &str| {
        let url = url.split(['?', '#']).next().unwrap_or_default();
        match url.split_once("://") {
            Some((scheme, rest)) => {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                format!(
                    "{}://{}{path}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase()
                )
            }
            None => url.to_owned(),
        }
    };
    !proof.is_empty() && strip(proof) == strip(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevIssuer;
    use serde_json::json;

    fn proof(key: &ProofKey, claims: Value) -> String {
        key.sign(&claims)
    }

    const URL: &str = "https://fjord.test/fhir/t1/Observation";

    #[test]
    fn a_proof_of_this_request_by_the_bound_key_passes_once() {
        let client = ProofKey::generate();
        let jkt = client.thumbprint();
        let token = DevIssuer::generate().unwrap().mint(&Default::default());
        let request = ProofRequest {
            method: "GET",
            url: URL,
            access_token: &token,
            bound_to: &jkt,
        };
        let now = now();
        let good =
            json!({"jti": "1", "htm": "GET", "htu": URL, "iat": now, "ath": token_hash(&token)});
        let checker = ProofChecker::default();
        assert_eq!(
            checker.check_at(&proof(&client, good.clone()), request, now),
            Ok(())
        );
        // Replayed.
        let again = checker.check_at(&proof(&client, good.clone()), request, now);
        assert!(matches!(again, Err(AuthError::InvalidDpopProof(why)) if why.contains("jti")));
        let wrong = |change: Value| {
            let mut claims = good.clone();
            claims["jti"] = json!(change.to_string());
            for (name, value) in change.as_object().unwrap() {
                claims[name] = value.clone();
            }
            checker.check_at(&proof(&client, claims), request, now)
        };
        for change in [
            json!({"htm": "POST"}),
            json!({"htu": "https://fjord.test/fhir/t2/Observation"}),
            json!({"ath": token_hash("another token")}),
            json!({"iat": now - 3600}),
            json!({"iat": now + 3600}),
            json!({"jti": ""}),
        ] {
            assert!(
                matches!(wrong(change.clone()), Err(AuthError::InvalidDpopProof(_))),
                "{change}"
            );
        }
        // A query does not matter; the case of the host does not either.
        let query = json!({"jti": "q", "htm": "GET", "htu": "https://FJORD.test/fhir/t1/Observation?code=x", "iat": now, "ath": token_hash(&token)});
        assert_eq!(
            checker.check_at(&proof(&client, query), request, now),
            Ok(())
        );
        // Another key than the one the token is bound to.
        let other = ProofKey::generate();
        let stolen = checker.check_at(
            &proof(&other, json!({"jti": "o", "htm": "GET", "htu": URL, "iat": now, "ath": token_hash(&token)})),
            request,
            now,
        );
        assert!(matches!(stolen, Err(AuthError::InvalidDpopProof(why)) if why.contains("bound")));
    }
}
