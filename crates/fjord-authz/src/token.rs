//! The token endpoint (RFC 6749 §3.2): authorization codes with their PKCE verifier, refresh
//! tokens, and client credentials for backend systems that sign a client assertion
//! (RFC 7523, SMART Backend Services); revocation (RFC 7009) and introspection (RFC 7662).

use fjord_smart::{TokenRequest, DEV_ISSUER};
use serde_json::{json, Map, Value};

use crate::{
    digest, grantable, has_scope, now, pkce_s256_matches, random_secret, Client, DevAuthServer,
    Flow, Grant, OAuthError, RefreshGrant, ACCESS_TOKEN_LIFETIME, REFRESH_TOKEN_LIFETIME,
};

/// The one client assertion type there is.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead a client assertion may expire (SMART Backend Services: at most five minutes).
const ASSERTION_MAX_LIFETIME: u64 = 300;
/// Clock skew allowed a client assertion's `exp`.
const ASSERTION_LEEWAY: u64 = 30;

/// Where a request came in: the tenant, its FHIR base URL (the audience of its tokens), and
/// the URL of the endpoint called (the audience of client assertions).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub tenant: &'a str,
    pub base_url: &'a str,
    pub url: &'a str,
}

/// A form's parameters; a parameter given twice is an error (RFC 6749 §3.1).
#[derive(Debug)]
pub struct Form<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Form<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Form<'a> {
        Form { pairs }
    }

    fn get(&self, name: &str) -> Result<Option<&'a str>, OAuthError> {
        let mut values = self.pairs.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(OAuthError::invalid_request(format!(
                "{name} is given more than once"
            ))),
            (value, _) => Ok(value.map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())),
        }
    }

    fn require(&self, name: &str) -> Result<&'a str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// A public client names itself.
    None,
    /// A secret or a signed assertion.
    Authenticated,
}

impl DevAuthServer {
    /// Answers a token request with the token response, or an OAuth error.
    #[tracing::instrument(skip_all, fields(tenant = at.tenant))]
    pub fn token(
        &self,
        at: Endpoint<'_>,
        form: &Form<'_>,
        basic: Option<(&str, &str)>,
    ) -> Result<Value, OAuthError> {
        let grant_type = form.require("grant_type")?;
        let anonymous = basic.is_none()
            && form.get("client_id")?.is_none()
            && form.get("client_assertion")?.is_none();
        if grant_type == "refresh_token" && anonymous {
            // A public client need not name itself: the refresh token says whose it is
            // (RFC 6749 §6; fhirclient sends none).
            return self.refresh(at, form, None);
        }
        let (client, proof) = self.authenticate_client(at, form, basic)?;
        match grant_type {
            "authorization_code" => {
                let code = form.require("code")?;
                let pending = self
                    .remember(|m| m.codes.remove(&digest(code)))
                    .ok_or_else(|| {
                        OAuthError::invalid_grant("the code is unknown, used or expired")
                    })?;
                if pending.grant.client_id != client.client_id || pending.grant.tenant != at.tenant
                {
                    return Err(OAuthError::invalid_grant(
                        "the code was issued to another client",
                    ));
                }
                if form.get("redirect_uri")? != Some(pending.redirect_uri.as_str()) {
                    return Err(OAuthError::invalid_grant(
                        "redirect_uri differs from the authorization request's",
                    ));
                }
                let verifier = form.require("code_verifier")?;
                if !pkce_s256_matches(verifier, &pending.code_challenge) {
                    return Err(OAuthError::invalid_grant("code_verifier does not match"));
                }
                Ok(self.respond(at, &pending.grant, None))
            }
            "refresh_token" => self.refresh(at, form, Some(&client)),
            "client_credentials" => {
                if proof != Proof::Authenticated {
                    return Err(OAuthError::new(
                        "unauthorized_client",
                        "client credentials are for clients that authenticate",
                    ));
                }
                let scope = grantable(form.get("scope")?.unwrap_or(""), &client, Flow::Backend);
                if scope.is_empty() {
                    return Err(OAuthError::invalid_scope(
                        "no system scope the client may have was asked for",
                    ));
                }
                let grant = Grant {
                    client_id: client.client_id.clone(),
                    tenant: at.tenant.to_owned(),
                    scope,
                    patient: None,
                    encounter: None,
                    fhir_user: None,
                    ehr_launch: false,
                };
                Ok(self.respond(at, &grant, None))
            }
            other => Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            )),
        }
    }

    /// A new access token for a refresh token of `client`, or of a public client when the
    /// request names none; the scopes may narrow, never widen.
    fn refresh(
        &self,
        at: Endpoint<'_>,
        form: &Form<'_>,
        client: Option<&Client>,
    ) -> Result<Value, OAuthError> {
        let refresh_token = form.require("refresh_token")?;
        let unknown =
            || OAuthError::invalid_grant("the refresh token is unknown, revoked or expired");
        let grant = self
            .remember(|m| {
                m.refresh_tokens
                    .get(&digest(refresh_token))
                    .map(|r| r.grant.clone())
            })
            .filter(|g| g.tenant == at.tenant)
            .ok_or_else(unknown)?;
        match client {
            Some(client) if client.client_id != grant.client_id => return Err(unknown()),
            Some(_) => {}
            None => {
                let owner = self.clients.find(&grant.client_id).ok_or_else(unknown)?;
                if owner.is_confidential() {
                    return Err(OAuthError::invalid_client("this client must authenticate"));
                }
            }
        }
        let grant = match form.get("scope")? {
            None => grant,
            Some(narrower) => {
                if let Some(extra) = narrower
                    .split_whitespace()
                    .find(|s| !has_scope(&grant.scope, s))
                {
                    return Err(OAuthError::invalid_scope(format!(
                        "{extra} was not granted before"
                    )));
                }
                Grant {
                    scope: narrower.to_owned(),
                    ..grant
                }
            }
        };
        Ok(self.respond(at, &grant, Some(refresh_token)))
    }

    /// The token response for `grant`; a refresh token is made when the scopes ask for one
    /// and none is being used.
    fn respond(&self, at: Endpoint<'_>, grant: &Grant, refreshing: Option<&str>) -> Value {
        let backend = grant
            .scope
            .split_whitespace()
            .all(|s| s.starts_with("system/"));
        let subject = match (&grant.fhir_user, backend) {
            (Some(user), _) => user.clone(),
            (None, true) => grant.client_id.clone(),
            (None, false) => "fjord-dev-user".to_owned(),
        };
        let access_token = self.issuer.mint(&TokenRequest {
            audience: at.base_url.to_owned(),
            scope: grant.scope.clone(),
            patient: grant.patient.clone(),
            fhir_user: grant.fhir_user.clone(),
            subject: Some(subject.clone()),
            client_id: Some(grant.client_id.clone()),
            lifetime: std::time::Duration::from_secs(ACCESS_TOKEN_LIFETIME),
            extra: Map::new(),
        });
        let mut response = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": grant.scope,
        });
        let body = response.as_object_mut().expect("an object");
        if let Some(patient) = &grant.patient {
            body.insert("patient".into(), json!(patient));
            body.insert("need_patient_banner".into(), json!(!grant.ehr_launch));
        }
        if let Some(encounter) = &grant.encounter {
            body.insert("encounter".into(), json!(encounter));
        }
        if has_scope(&grant.scope, "openid") {
            let issued = now();
            let mut claims = json!({
                "iss": DEV_ISSUER,
                "sub": subject,
                "aud": grant.client_id,
                "iat": issued,
                "exp": issued + ACCESS_TOKEN_LIFETIME,
            });
            if let (true, Some(user)) = (has_scope(&grant.scope, "fhirUser"), &grant.fhir_user) {
                claims["fhirUser"] = json!(user);
            }
            body.insert("id_token".into(), json!(self.issuer.sign("JWT", &claims)));
        }
        let wants_refresh =
            has_scope(&grant.scope, "offline_access") || has_scope(&grant.scope, "online_access");
        match refreshing {
            Some(token) => {
                body.insert("refresh_token".into(), json!(token));
            }
            None if wants_refresh => {
                let token = random_secret();
                let kept = RefreshGrant {
                    grant: grant.clone(),
                    expires_at: now() + REFRESH_TOKEN_LIFETIME,
                };
                self.remember(|m| m.refresh_tokens.insert(digest(&token), kept));
                body.insert("refresh_token".into(), json!(token));
            }
            None => {}
        }
        response
    }

    /// Revokes a refresh token, or an access token, of the calling client (RFC 7009). An
    /// unknown token is no error: there is nothing left to revoke.
    #[tracing::instrument(skip_all, fields(tenant = at.tenant))]
    pub fn revoke(
        &self,
        at: Endpoint<'_>,
        form: &Form<'_>,
        basic: Option<(&str, &str)>,
    ) -> Result<(), OAuthError> {
        let (client, _) = self.authenticate_client(at, form, basic)?;
        let token = form.require("token")?;
        let owned_refresh = self.remember(|m| {
            let key = digest(token);
            let owned = m
                .refresh_tokens
                .get(&key)
                .is_some_and(|r| r.grant.client_id == client.client_id);
            if owned {
                m.refresh_tokens.remove(&key);
            }
            owned
        });
        if owned_refresh {
            return Ok(());
        }
        if let Some(claims) = self.issuer.open(token, "at+jwt") {
            let text = |name: &str| claims.get(name).and_then(Value::as_str);
            if let (Some(jti), Some(true)) = (
                text("jti"),
                text("client_id").map(|c| c == client.client_id),
            ) {
                let exp = claims
                    .get("exp")
                    .and_then(Value::as_u64)
                    .unwrap_or_default();
                self.remember(|m| m.revoked.insert(jti.to_owned(), exp));
            }
        }
        Ok(())
    }

    /// What a token is (RFC 7662), told to an authenticated client only.
    #[tracing::instrument(skip_all, fields(tenant = at.tenant))]
    pub fn introspect(
        &self,
        at: Endpoint<'_>,
        form: &Form<'_>,
        basic: Option<(&str, &str)>,
    ) -> Result<Value, OAuthError> {
        let (_, proof) = self.authenticate_client(at, form, basic)?;
        if proof != Proof::Authenticated {
            return Err(OAuthError::invalid_client(
                "introspection is for clients that authenticate",
            ));
        }
        let token = form.require("token")?;
        let inactive = json!({ "active": false });
        let refresh = self.remember(|m| {
            m.refresh_tokens
                .get(&digest(token))
                .map(|r| (r.grant.clone(), r.expires_at))
        });
        if let Some((grant, expires_at)) = refresh {
            if grant.tenant != at.tenant {
                return Ok(inactive);
            }
            return Ok(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": grant.scope,
                "client_id": grant.client_id,
                "patient": grant.patient,
                "fhirUser": grant.fhir_user,
                "exp": expires_at,
                "iss": DEV_ISSUER,
            }));
        }
        let Some(mut claims) = self.issuer.open(token, "at+jwt") else {
            return Ok(inactive);
        };
        let for_tenant = claims.get("aud").and_then(Value::as_str) == Some(at.base_url);
        let revoked = claims
            .get("jti")
            .and_then(Value::as_str)
            .is_some_and(|jti| self.is_revoked(jti));
        if !for_tenant || revoked {
            return Ok(inactive);
        }
        claims.insert("active".into(), json!(true));
        claims.insert("token_type".into(), json!("Bearer"));
        Ok(Value::Object(claims))
    }

    /// The client a request comes from, and how it proved it (RFC 6749 §2.3, RFC 7523 §2.2).
    fn authenticate_client(
        &self,
        at: Endpoint<'_>,
        form: &Form<'_>,
        basic: Option<(&str, &str)>,
    ) -> Result<(Client, Proof), OAuthError> {
        let named = form.get("client_id")?;
        let unknown = || OAuthError::invalid_client("unknown client");
        if let Some(assertion_type) = form.get("client_assertion_type")? {
            if assertion_type != JWT_BEARER {
                return Err(OAuthError::invalid_client(
                    "client_assertion_type must be jwt-bearer",
                ));
            }
            let assertion = form.require("client_assertion")?;
            let client = self.check_assertion(at, assertion)?;
            if named.is_some_and(|n| n != client.client_id) {
                return Err(OAuthError::invalid_client(
                    "client_id is not the assertion's issuer",
                ));
            }
            return Ok((client, Proof::Authenticated));
        }
        let secret = match basic {
            Some((id, secret)) => Some((id, secret)),
            None => form.get("client_secret")?.map(|s| (named.unwrap_or(""), s)),
        };
        if let Some((id, secret)) = secret {
            let client = self.clients.find(id).ok_or_else(unknown)?;
            if !client.secret_matches(secret) {
                return Err(OAuthError::invalid_client("the client secret is wrong"));
            }
            return Ok((client, Proof::Authenticated));
        }
        let id = named.ok_or_else(|| OAuthError::invalid_client("client_id is required"))?;
        let client = self.clients.find(id).ok_or_else(unknown)?;
        if client.is_confidential() {
            return Err(OAuthError::invalid_client(
                "this client must authenticate (a secret or a client assertion)",
            ));
        }
        Ok((client, Proof::None))
    }

    /// The client whose registered key signed `assertion`, with `iss` and `sub` its id, the
    /// endpoint as audience, a near expiry, and a `jti` never seen before.
    fn check_assertion(&self, at: Endpoint<'_>, assertion: &str) -> Result<Client, OAuthError> {
        let invalid = |m: &str| OAuthError::invalid_client(format!("client assertion: {m}"));
        let client_id = fjord_smart::assertion::claimed_issuer(assertion)
            .ok_or_else(|| invalid("iss is required"))?;
        let client = self
            .clients
            .find(&client_id)
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        let jwks = client
            .jwks
            .as_ref()
            .ok_or_else(|| invalid("the client has no registered keys"))?;
        let claims = fjord_smart::assertion::verify_assertion(
            assertion,
            jwks,
            &client_id,
            at.url,
            ASSERTION_LEEWAY,
        )
        .map_err(|why| invalid(&why))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        if exp > now() + ASSERTION_MAX_LIFETIME + ASSERTION_LEEWAY {
            return Err(invalid("exp is more than five minutes ahead"));
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("jti is required"))?;
        let fresh = self.remember(|m| {
            let key = format!("{client_id}\n{jti}");
            m.assertions.insert(key, exp).is_none()
        });
        if !fresh {
            return Err(invalid("this assertion was used before"));
        }
        Ok(client)
    }
}
