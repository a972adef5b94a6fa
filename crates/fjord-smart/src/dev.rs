//! The development issuer: an ES256 key Fjord keeps in its data directory and signs tokens with
//! (`fjord token`, the development authorization server). Every tenant trusts it while it is on;
//! it is off unless the embedded default or the configuration turns it on.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Map, Value};

use crate::token::{now, signed_claims, ClaimNames, TrustedIssuer};

/// The development issuer's `iss`: not a URL anyone could own.
pub const DEV_ISSUER: &str = "urn:fjord:dev-issuer";

/// What a token the development issuer signs says.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `aud`: the tenant's FHIR base URL.
    pub audience: String,
    pub scope: String,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// How long the token is good for; an hour when zero.
    pub lifetime: Duration,
    /// Extra claims (tests use them for forged and odd tokens).
    pub extra: Map<String, Value>,
}

/// The development issuer's key.
pub struct DevIssuer {
    signing: EncodingKey,
    public: Jwk,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.public.common.key_id)
            .finish()
    }
}

impl DevIssuer {
    /// The key in `path` (PKCS #8 PEM), made and written (mode 600) when there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<DevIssuer> {
        match std::fs::read(path) {
            Ok(pem) => DevIssuer::from_pem(&pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = new_key_pem()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                match write_private(path, pem.as_bytes()) {
                    Ok(()) => DevIssuer::from_pem(pem.as_bytes()),
                    // Another process made it first: use that one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        DevIssuer::from_pem(&std::fs::read(path)?)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh key held in memory only.
    pub fn generate() -> std::io::Result<DevIssuer> {
        DevIssuer::from_pem(new_key_pem()?.as_bytes())
    }

    fn from_pem(pem: &[u8]) -> std::io::Result<DevIssuer> {
        let invalid = |e: jsonwebtoken::errors::Error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
        };
        let signing = EncodingKey::from_ec_pem(pem).map_err(invalid)?;
        let mut public = Jwk::from_encoding_key(&signing, Algorithm::ES256).map_err(invalid)?;
        public.common.key_id = Some(public.thumbprint(ThumbprintHash::SHA256));
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(KeyAlgorithm::ES256);
        Ok(DevIssuer { signing, public })
    }

    /// The public key set (`/auth/jwks`).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.public.clone()],
        }
    }

    /// The issuer as a tenant trusts it: the request's base URL as the audience.
    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer {
            issuer: DEV_ISSUER.into(),
            audiences: Vec::new(),
            jwks_uri: None,
            jwks: Some(self.jwks()),
            claims: ClaimNames::default(),
            tenant_claim: None,
            leeway_seconds: 30,
            introspection: None,
        }
    }

    /// A signed access token (`typ: at+jwt`).
    pub fn mint(&self, request: &TokenRequest) -> String {
        let issued = now();
        let lifetime = match request.lifetime.as_secs() {
            0 => 3600,
            seconds => seconds,
        };
        let mut claims = json!({
            "iss": DEV_ISSUER,
            "aud": request.audience,
            "iat": issued,
            "exp": issued + lifetime,
            "scope": request.scope,
            "sub": request.subject.as_deref().unwrap_or("fjord-dev-user"),
            "client_id": request.client_id.as_deref().unwrap_or("fjord-cli"),
            "jti": uuid::Uuid::new_v4().simple().to_string(),
        });
        let object = claims.as_object_mut().expect("an object");
        if let Some(patient) = &request.patient {
            object.insert("patient".into(), json!(patient));
        }
        if let Some(user) = &request.fhir_user {
            object.insert("fhirUser".into(), json!(user));
        }
        for (name, value) in &request.extra {
            object.insert(name.clone(), value.clone());
        }
        self.sign("at+jwt", &claims)
    }

    /// `claims` signed with the issuer's key, with `typ` in the header.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.into());
        header.kid = self.public.common.key_id.clone();
        jsonwebtoken::encode(&header, claims, &self.signing).expect("ES256 signing works")
    }

    /// The claims of a JWS this issuer signed with header `typ`, while `exp` has not passed.
    pub fn open(&self, token: &str, typ: &str) -> Option<Map<String, Value>> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(typ) {
            return None;
        }
        let key = DecodingKey::from_jwk(&self.public).ok()?;
        let claims = signed_claims(token, &key, Algorithm::ES256)?;
        let exp = claims.get("exp").and_then(Value::as_u64)?;
        (exp > now()).then_some(claims)
    }
}

/// A new P-256 key, PKCS #8 PEM.
pub(crate) fn new_key_pem() -> std::io::Result<String> {
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_takes_back_only_what_this_key_signed_with_that_typ() {
        let issuer = DevIssuer::generate().unwrap();
        let other = DevIssuer::generate().unwrap();
        let claims = json!({ "patient": "a", "exp": now() + 60 });
        let signed = issuer.sign("launch+jwt", &claims);
        assert_eq!(issuer.open(&signed, "launch+jwt").unwrap()["patient"], "a");
        assert!(issuer.open(&signed, "at+jwt").is_none());
        assert!(other.open(&signed, "launch+jwt").is_none());
        let expired = issuer.sign("launch+jwt", &json!({ "exp": now() - 1 }));
        assert!(issuer.open(&expired, "launch+jwt").is_none());
    }
}
