//! What a SMART client reads before it asks for a token: the tenant's
//! `.well-known/smart-configuration` and the `oauth-uris` extension of its CapabilityStatement,
//! both pointing at the authorization server the tenant configured.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The scopes a resource server of SMART v1 and v2 understands, patient, user and system.
const SCOPES: [&str; 12] = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
];

/// What this resource server does whatever the authorization server: both scope grammars,
/// patient and user scopes.
const SERVER_CAPABILITIES: [&str; 4] = [
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// A tenant's authorization server (its settings, `authorizationServer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationServer {
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub management_endpoint: Option<String>,
    pub registration_endpoint: Option<String>,
    /// SMART capabilities of the server (`launch-ehr`, `client-confidential-asymmetric`, …),
    /// added to the resource server's own.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl AuthorizationServer {
    /// `.well-known/smart-configuration`.
    pub fn smart_configuration(&self) -> Value {
        let mut document = Map::new();
        let mut put = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                document.insert(name.into(), json!(value));
            }
        };
        put("issuer", &self.issuer);
        put("jwks_uri", &self.jwks_uri);
        put("authorization_endpoint", &self.authorization_endpoint);
        put("token_endpoint", &self.token_endpoint);
        put("revocation_endpoint", &self.revocation_endpoint);
        put("introspection_endpoint", &self.introspection_endpoint);
        put("management_endpoint", &self.management_endpoint);
        put("registration_endpoint", &self.registration_endpoint);
        let mut grants = Vec::new();
        if self.authorization_endpoint.is_some() {
            grants.push("authorization_code");
        }
        if self.token_endpoint.is_some() {
            grants.push("client_credentials");
        }
        document.insert("grant_types_supported".into(), json!(grants));
        document.insert(
            "token_endpoint_auth_methods_supported".into(),
            json!(["private_key_jwt", "client_secret_basic"]),
        );
        document.insert(
            "token_endpoint_auth_signing_alg_values_supported".into(),
            json!(["RS384", "ES384"]),
        );
        document.insert("scopes_supported".into(), json!(SCOPES));
        document.insert("response_types_supported".into(), json!(["code"]));
        document.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        let mut capabilities: Vec<&str> = SERVER_CAPABILITIES.to_vec();
        capabilities.extend(self.capabilities.iter().map(String::as_str));
        capabilities.dedup();
        document.insert("capabilities".into(), json!(capabilities));
        Value::Object(document)
    }

    /// `rest.security` of the CapabilityStatement: the SMART service and the `oauth-uris`
    /// extension with the endpoints known.
    pub fn capability_security(&self) -> Value {
        let mut uris = Vec::new();
        for (name, value) in [
            ("authorize", &self.authorization_endpoint),
            ("token", &self.token_endpoint),
            ("revoke", &self.revocation_endpoint),
            ("introspect", &self.introspection_endpoint),
            ("manage", &self.management_endpoint),
            ("register", &self.registration_endpoint),
        ] {
            if let Some(value) = value {
                uris.push(json!({ "url": name, "valueUri": value }));
            }
        }
        let mut security = json!({
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }],
            "description": "Bearer tokens (SMART App Launch v1 and v2 scopes) from the issuers this tenant trusts",
        });
        if !uris.is_empty() {
            security["extension"] = json!([{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": uris,
            }]);
        }
        security
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_what_is_configured() {
        let server = AuthorizationServer {
            issuer: Some("https://idp.example".into()),
            authorization_endpoint: Some("https://idp.example/authorize".into()),
            token_endpoint: Some("https://idp.example/token".into()),
            capabilities: vec!["launch-ehr".into()],
            ..Default::default()
        };
        let document = server.smart_configuration();
        assert_eq!(document["token_endpoint"], "https://idp.example/token");
        assert_eq!(
            document["code_challenge_methods_supported"],
            json!(["S256"])
        );
        assert!(document.get("revocation_endpoint").is_none());
        let capabilities = document["capabilities"].as_array().unwrap();
        assert!(capabilities.contains(&json!("launch-ehr")));
        assert!(capabilities.contains(&json!("permission-v2")));
        let security = server.capability_security();
        let uris = &security["extension"][0]["extension"];
        assert_eq!(uris[0]["url"], "authorize");
        assert_eq!(uris[1]["valueUri"], "https://idp.example/token");
    }
}
