//! `fjord client …` and `fjord launch`: the development authorization server's clients and
//! EHR launches, from the command line.

use anyhow::Context;
use clap::Subcommand;
use fjord_authz::client::{self, Client, Login};
use fjord_authz::LaunchContext;
use fjord_smart::{DevIssuer, Jwk, JwkSet};

use crate::settings::Settings;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a client (or replace the one with the same id). A running server sees it at
    /// once.
    Add {
        /// The client id.
        id: String,
        /// A name to show on the login page.
        #[arg(long)]
        name: Option<String>,
        /// Where authorization answers may go (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Make a secret (a confidential client) and print it; only its hash is kept.
        #[arg(long)]
        secret: bool,
        /// The client's public keys (a JWK Set or one JWK, JSON) for signed client
        /// assertions: a backend service.
        #[arg(long)]
        jwks: Option<std::path::PathBuf>,
        /// The most the client may be granted (space-separated scopes).
        #[arg(long)]
        scope: Option<String>,
        /// Skip the login page, signing in with this patient (for clients driven by tests).
        #[arg(long)]
        login_patient: Option<String>,
        /// Skip the login page, signing in as this user (`Practitioner/123`).
        #[arg(long)]
        login_user: Option<String>,
    },
    /// List the registered clients.
    List,
    /// Remove a client.
    Remove { id: String },
}

/// Runs a `fjord client` command.
pub fn run(command: ClientCommand, settings: &Settings) -> anyhow::Result<()> {
    let file = settings.clients_file();
    match command {
        ClientCommand::Add {
            id,
            name,
            redirect_uris,
            secret,
            jwks,
            scope,
            login_patient,
            login_user,
        } => {
            let jwks = jwks.map(|path| read_jwks(&path)).transpose()?;
            let secret = secret.then(client::new_secret);
            let auto_login = (login_patient.is_some() || login_user.is_some()).then_some(Login {
                patient: login_patient,
                fhir_user: login_user,
            });
            let client = Client {
                client_id: id.clone(),
                name,
                redirect_uris,
                secret_sha256: secret.as_deref().map(client::secret_hash),
                jwks,
                scope,
                auto_login,
            };
            client::save_to_file(&file, client)
                .with_context(|| format!("writing {}", file.display()))?;
            println!("registered client {id}");
            if let Some(secret) = secret {
                println!("client secret (shown once): {secret}");
            }
            Ok(())
        }
        ClientCommand::List => {
            let configured = settings.clients.iter().map(|c| (c, "configuration"));
            let saved = client::read_file(&file)?;
            for (client, source) in configured.chain(saved.iter().map(|c| (c, "fjord client add")))
            {
                let kind = if client.jwks.is_some() {
                    "private_key_jwt"
                } else if client.secret_sha256.is_some() {
                    "client_secret"
                } else {
                    "public"
                };
                println!("{}\t{kind}\t{source}", client.client_id);
            }
            Ok(())
        }
        ClientCommand::Remove { id } => {
            if client::remove_from_file(&file, &id)? {
                println!("removed client {id}");
                Ok(())
            } else {
                anyhow::bail!("no client {id} in {}", file.display())
            }
        }
    }
}

/// A JWK Set, or one JWK made into a set.
fn read_jwks(path: &std::path::Path) -> anyhow::Result<JwkSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(set) = serde_json::from_str::<JwkSet>(&text) {
        return Ok(set);
    }
    let key: Jwk = serde_json::from_str(&text)
        .with_context(|| format!("{} is neither a JWK Set nor a JWK", path.display()))?;
    Ok(JwkSet { keys: vec![key] })
}

/// `fjord launch`: the `launch` parameter of an EHR launch, or the app's launch URL.
pub fn launch(
    settings: &Settings,
    tenant: String,
    context: LaunchContext,
    app: Option<String>,
) -> anyhow::Result<()> {
    let issuer = DevIssuer::load_or_create(&settings.dev_issuer_key())
        .context("reading the development issuer's key")?;
    let launch = LaunchContext {
        tenant: tenant.clone(),
        ..context
    }
    .sign(&issuer);
    match app {
        None => println!("{launch}"),
        Some(app) => {
            let iss = format!("{}/fhir/{tenant}", settings.origin());
            let mut query = form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("iss", &iss)
                .append_pair("launch", &launch);
            let separator = if app.contains('?') { '&' } else { '?' };
            println!("{app}{separator}{}", query.finish());
        }
    }
    Ok(())
}
