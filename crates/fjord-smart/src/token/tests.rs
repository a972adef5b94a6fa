use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use serde_json::json;

use super::*;
use crate::dev::{DevIssuer, TokenRequest, DEV_ISSUER};
use crate::scope::Permission;
use crate::Grant;

const BASE: &str = "http://fjord.test/fhir/hf1";

fn request(scope: &str) -> TokenRequest {
    TokenRequest {
        audience: BASE.into(),
        scope: scope.into(),
        patient: Some("p1".into()),
        ..Default::default()
    }
}

fn verify(token: &str, issuers: &[TrustedIssuer]) -> Result<Verified, AuthError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuers: Vec<&TrustedIssuer> = issuers.iter().collect();
    runtime.block_on(Verifier::default().verify(token, &issuers, BASE))
}

fn rejected(token: &str, issuers: &[TrustedIssuer]) -> String {
    match verify(token, issuers) {
        Err(AuthError::InvalidToken(why)) => why,
        other => panic!("accepted or wrong error: {other:?}"),
    }
}

#[test]
fn a_good_token_grants_its_scopes_with_its_patient() {
    let dev = DevIssuer::generate().unwrap();
    let token = dev.mint(&request("openid patient/Observation.rs launch"));
    let verified = verify(&token, &[dev.trusted()]).unwrap();
    let access = verified.access;
    assert_eq!(access.patient(), Some("p1"));
    assert!(matches!(
        access.grant(Permission::Read, "Observation"),
        Grant::Limited(_)
    ));
    assert_eq!(access.grant(Permission::Read, "Patient"), Grant::Denied);
    assert_eq!(access.principal().unwrap().issuer, DEV_ISSUER);
}

#[test]
fn expired_early_wrong_audience_or_issuer_are_refused() {
    let dev = DevIssuer::generate().unwrap();
    let trusted = [dev.trusted()];
    let mut expired = request("user/*.rs");
    expired.extra.insert("exp".into(), json!(now() - 120));
    assert!(rejected(&dev.mint(&expired), &trusted).contains("expired"));
    let mut early = request("user/*.rs");
    early.extra.insert("nbf".into(), json!(now() + 600));
    assert!(rejected(&dev.mint(&early), &trusted).contains("nbf"));
    let mut future = request("user/*.rs");
    future.extra.insert("iat".into(), json!(now() + 600));
    assert!(rejected(&dev.mint(&future), &trusted).contains("iat"));
    let mut no_expiry = request("user/*.rs");
    no_expiry.extra.insert("exp".into(), Value::Null);
    assert!(rejected(&dev.mint(&no_expiry), &trusted).contains("exp"));
    let elsewhere = TokenRequest {
        audience: "http://other.test/fhir/hf1".into(),
        ..request("user/*.rs")
    };
    assert!(rejected(&dev.mint(&elsewhere), &trusted).contains("aud"));
    let mut foreign = request("user/*.rs");
    foreign
        .extra
        .insert("iss".into(), json!("https://idp.example"));
    assert!(rejected(&dev.mint(&foreign), &trusted).contains("issuer"));
    // Within the leeway an expired token still passes.
    let mut just = request("user/*.rs");
    just.extra.insert("exp".into(), json!(now() - 5));
    assert!(verify(&dev.mint(&just), &trusted).is_ok());
}

#[test]
fn a_token_signed_by_another_key_or_by_no_key_is_refused() {
    let dev = DevIssuer::generate().unwrap();
    let forger = DevIssuer::generate().unwrap();
    let trusted = [dev.trusted()];
    // Another key: its kid is unknown, and under the trusted kid its signature fails.
    let forged = forger.mint(&request("user/*.*"));
    assert!(verify(&forged, &trusted).is_err());
    let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
    let mut header: Value = decode_part(&parts[0]);
    header["kid"] = json!(dev.jwks().keys[0].common.key_id.clone().unwrap());
    parts[0] = encode_part(&header);
    assert!(rejected(&parts.join("."), &trusted).contains("signature"));
    // alg=none, with no signature.
    let none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    assert!(verify(&none, &trusted).is_err());
    // The token names its own key (`jwk`, `jku`): ignored, so the forger's key is not used.
    let mut header = Header::new(Algorithm::ES256);
    header.jku = Some("http://attacker.test/jwks".into());
    header.jwk = Some(forger.jwks().keys[0].clone());
    let claims = decode_part::<Value>(&parts[1]);
    let pem = crate::dev::new_key_pem().unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(verify(&token, &trusted).is_err());
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let (private, public_pem, jwks) = rsa_key("k1", "RS256");
    let issuer = TrustedIssuer {
        jwks: Some(jwks),
        ..DevIssuer::generate().unwrap().trusted()
    };
    let claims = good_claims("user/*.rs");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    assert!(rejected(&hs, std::slice::from_ref(&issuer)).contains("algorithm"));
    // The same claims signed with the RSA key pass, under RS256 and PS256.
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let mut header = Header::new(alg);
        header.kid = Some("k1".into());
        let rsa_issuer = TrustedIssuer {
            jwks: Some(rsa_key_set(&private, "k1", None)),
            ..issuer.clone()
        };
        let token = jsonwebtoken::encode(&header, &claims, &rsa_encoding(&private)).unwrap();
        assert!(verify(&token, &[rsa_issuer]).is_ok(), "{alg:?}");
    }
    // A key published for RS256 does not verify a PS256 token.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims, &rsa_encoding(&private)).unwrap();
    assert!(verify(&token, &[issuer]).is_err());
}

#[test]
fn id_tokens_are_not_access_tokens() {
    let dev = DevIssuer::generate().unwrap();
    let trusted = [dev.trusted()];
    let mut id = request("openid");
    id.extra.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
    assert!(rejected(&dev.mint(&id), &trusted).contains("ID token"));
    let mut keycloak = request("openid");
    keycloak.extra.insert("typ".into(), json!("ID"));
    assert!(rejected(&dev.mint(&keycloak), &trusted).contains("ID token"));
}

#[test]
fn claims_are_mapped_as_the_issuer_says() {
    let dev = DevIssuer::generate().unwrap();
    let issuer = TrustedIssuer {
        claims: ClaimNames {
            roles: vec!["hso:subject:application-role:*".into()],
            ..ClaimNames::default()
        },
        tenant_claim: Some(RequiredClaim {
            claim: "helseid://claims/client/claims/orgnr_parent".into(),
            values: vec!["983974899".into()],
        }),
        ..dev.trusted()
    };
    let mut good = request("");
    good.extra
        .insert("scp".into(), json!(["system/Observation.cr"]));
    good.extra.insert(
        "helseid://claims/client/claims/orgnr_parent".into(),
        json!("983974899"),
    );
    good.extra
        .insert("hso:subject:application-role:dho".into(), json!("reader"));
    good.extra.insert("scope".into(), Value::Null);
    let verified = verify(&dev.mint(&good), std::slice::from_ref(&issuer)).unwrap();
    assert_eq!(
        verified.access.grant(Permission::Create, "Observation"),
        Grant::Full
    );
    assert_eq!(
        verified.access.principal().unwrap().roles,
        vec!["hso:subject:application-role:dho=reader".to_owned()]
    );
    let mut other_hf = good.clone();
    other_hf.extra.insert(
        "helseid://claims/client/claims/orgnr_parent".into(),
        json!("974749025"),
    );
    assert!(rejected(&dev.mint(&other_hf), &[issuer]).contains("tenant"));
}

#[test]
fn an_unknown_key_id_refetches_the_keys_at_most_once_per_interval() {
    // No JWKS URL answers here: the refetch fails, and within the interval it is not tried.
    let dev = DevIssuer::generate().unwrap();
    let issuer = TrustedIssuer {
        jwks: None,
        jwks_uri: Some("http://127.0.0.1:9/jwks".into()),
        ..dev.trusted()
    };
    let token = dev.mint(&request("user/*.rs"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let verifier = Verifier::with_refetch_interval(Duration::from_secs(3600));
    let first = runtime.block_on(verifier.verify(&token, &[&issuer], BASE));
    assert!(
        matches!(first, Err(AuthError::KeysUnavailable(_))),
        "{first:?}"
    );
}

fn good_claims(scope: &str) -> Value {
    json!({"iss": DEV_ISSUER, "aud": BASE, "exp": now() + 600, "scope": scope})
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> T {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn encode_part(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn rsa_key(kid: &str, alg: &str) -> (rsa::RsaPrivateKey, String, JwkSet) {
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let set = rsa_key_set(&private, kid, Some(alg));
    (private, public_pem, set)
}

fn rsa_key_set(private: &rsa::RsaPrivateKey, kid: &str, alg: Option<&str>) -> JwkSet {
    use base64::Engine;
    use rsa::traits::PublicKeyParts;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut key = json!({
        "kty": "RSA",
        "kid": kid,
        "n": b64(private.n().to_bytes_be()),
        "e": b64(private.e().to_bytes_be()),
    });
    if let Some(alg) = alg {
        key["alg"] = json!(alg);
    }
    serde_json::from_value(json!({ "keys": [key] })).unwrap()
}

fn rsa_encoding(private: &rsa::RsaPrivateKey) -> EncodingKey {
    let pem = private.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

#[test]
fn a_required_claim_may_be_nested_in_a_structured_claim() {
    let claims: Map<String, Value> = serde_json::from_value(json!({
        "purpose": ["TREAT", "ETREAT"],
        "helseid://claims/client/claims/orgnr_parent": "983974899",
        "authorization_details": [{
            "type": "nhn:tillitsrammeverk:parameters",
            "purpose_of_use": {"system": "urn:oid:2.16.840.1.113883.1.11.20448", "code": "TREAT"}
        }]
    }))
    .unwrap();
    let required = |claim: &str, value: &str| RequiredClaim {
        claim: claim.into(),
        values: vec![value.into()],
    };
    assert_eq!(
        required("purpose", "ETREAT").held_by(&claims),
        Some("ETREAT")
    );
    assert_eq!(required("purpose", "COVERAGE").held_by(&claims), None);
    let nested = "/authorization_details/0/purpose_of_use/code";
    assert_eq!(required(nested, "TREAT").held_by(&claims), Some("TREAT"));
    assert_eq!(required(nested, "HRESCH").held_by(&claims), None);
    assert_eq!(
        required("/authorization_details/1/purpose_of_use/code", "TREAT").held_by(&claims),
        None
    );
    // A name with slashes, escaped as JSON Pointer escapes them.
    let org = "/helseid:~1~1claims~1client~1claims~1orgnr_parent";
    assert_eq!(
        required(org, "983974899").held_by(&claims),
        Some("983974899")
    );
}
