//! The authorization endpoint: the authorization code grant (RFC 6749 §4.1) with PKCE
//! (RFC 7636, S256 only), as SMART App Launch uses it for EHR and standalone launches.

use crate::{
    grantable, has_scope, now, random_secret, Client, DevAuthServer, Flow, Grant, LaunchContext,
    Login, PendingCode, CODE_LIFETIME,
};

/// The parameters of an authorization request, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub launch: Option<String>,
}

impl AuthorizeRequest {
    /// The request of a query string or form; other parameters are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut request = AuthorizeRequest::default();
        for (name, value) in pairs {
            let slot = match name {
                "response_type" => &mut request.response_type,
                "client_id" => &mut request.client_id,
                "redirect_uri" => &mut request.redirect_uri,
                "scope" => &mut request.scope,
                "state" => &mut request.state,
                "aud" => &mut request.aud,
                "code_challenge" => &mut request.code_challenge,
                "code_challenge_method" => &mut request.code_challenge_method,
                "launch" => &mut request.launch,
                _ => continue,
            };
            *slot = Some(value.to_owned());
        }
        request
    }

    /// The parameters given, to carry through the login page.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("aud", &self.aud),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("launch", &self.launch),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
        .collect()
    }
}

/// What the browser gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Go back to the client: its redirect URI with a code, or with an error.
    Redirect(String),
    /// The user must sign in, and perhaps pick a patient, first.
    Login(Box<LoginPrompt>),
    /// A request that cannot be sent back to the client (unknown client, a redirect URI not
    /// registered): shown to the user, never redirected (RFC 6749 §4.1.2.1).
    Refused(String),
}

/// What the login page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPrompt {
    pub client_name: String,
    pub scope: String,
    pub needs_patient: bool,
    pub request: AuthorizeRequest,
}

impl DevAuthServer {
    /// Answers an authorization request to `tenant`, whose FHIR base URL is `base_url`;
    /// `login` is what the login page sent, if it was shown.
    #[tracing::instrument(skip_all, fields(tenant))]
    pub fn authorize(
        &self,
        tenant: &str,
        base_url: &str,
        request: &AuthorizeRequest,
        login: Option<&Login>,
    ) -> Authorization {
        let Some(client) = request
            .client_id
            .as_deref()
            .and_then(|id| self.clients.find(id))
        else {
            return Authorization::Refused("unknown client_id".into());
        };
        let Some(redirect_uri) = request.redirect_uri.as_deref() else {
            return Authorization::Refused("redirect_uri is required".into());
        };
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Authorization::Refused("redirect_uri is not one the client registered".into());
        }
        let state = request.state.as_deref();
        let fail = |error: &str, description: &str| {
            let mut params = vec![("error", error), ("error_description", description)];
            params.extend(state.map(|s| ("state", s)));
            Authorization::Redirect(with_query(redirect_uri, &params))
        };
        if request.response_type.as_deref() != Some("code") {
            return fail("unsupported_response_type", "only response_type=code");
        }
        if request.code_challenge_method.as_deref() != Some("S256") {
            return fail(
                "invalid_request",
                "PKCE is required, with code_challenge_method=S256",
            );
        }
        let Some(code_challenge) = request.code_challenge.as_deref().filter(|c| c.len() == 43)
        else {
            return fail(
                "invalid_request",
                "code_challenge must be a SHA-256, base64url",
            );
        };
        if request.aud.as_deref().map(|a| a.trim_end_matches('/'))
            != Some(base_url.trim_end_matches('/'))
        {
            return fail("invalid_request", "aud must be this tenant's FHIR base URL");
        }
        let scope = grantable(request.scope.as_deref().unwrap_or(""), &client, Flow::User);
        if scope
            .split_whitespace()
            .all(|s| fjord_smart::Scope::parse(s).is_none())
        {
            return fail(
                "invalid_scope",
                "no resource scope the client may have was asked for",
            );
        }
        let launched = match request.launch.as_deref() {
            Some(launch) => match LaunchContext::open(launch, &self.issuer) {
                Some(context) if context.tenant == tenant => Some(context),
                _ => return fail("invalid_request", "the launch is unknown or has expired"),
            },
            None if has_scope(&scope, "launch") => {
                return fail(
                    "invalid_request",
                    "the launch scope needs a launch parameter",
                )
            }
            None => None,
        };
        let auto_login = client.auto_login.as_ref().filter(|_| login.is_none());
        let login = login.or(auto_login);
        let wants_patient = has_scope(&scope, "launch/patient")
            || scope.split_whitespace().any(|s| s.starts_with("patient/"));
        let patient = launched
            .as_ref()
            .and_then(|c| c.patient.clone())
            .or_else(|| login.and_then(|l| l.patient.clone()));
        let fhir_user = launched
            .as_ref()
            .and_then(|c| c.fhir_user.clone())
            .or_else(|| login.and_then(|l| l.fhir_user.clone()));
        let wants_user = has_scope(&scope, "fhirUser");
        let missing_patient = wants_patient && patient.is_none();
        if login.is_none() && (missing_patient || (wants_user && fhir_user.is_none())) {
            return Authorization::Login(Box::new(LoginPrompt {
                client_name: client.name.clone().unwrap_or(client.client_id.clone()),
                scope,
                needs_patient: missing_patient,
                request: request.clone(),
            }));
        }
        if missing_patient {
            return fail("access_denied", "no patient was chosen");
        }
        let code = random_secret();
        let grant = Grant {
            client_id: client.client_id.clone(),
            tenant: tenant.to_owned(),
            scope,
            patient,
            encounter: launched.as_ref().and_then(|c| c.encounter.clone()),
            fhir_user,
            ehr_launch: launched.is_some(),
        };
        let pending = PendingCode {
            grant,
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: code_challenge.to_owned(),
            expires_at: now() + CODE_LIFETIME,
        };
        self.remember(|m| m.codes.insert(crate::digest(&code), pending));
        let mut params = vec![("code", code.as_str())];
        params.extend(state.map(|s| ("state", s)));
        Authorization::Redirect(with_query(redirect_uri, &params))
    }

    /// The client a request names, for the login page.
    pub fn client(&self, client_id: &str) -> Option<Client> {
        self.clients.find(client_id)
    }
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(params);
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", query.finish())
}
