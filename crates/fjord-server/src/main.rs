//! The `fjord` binary: configuration, the embedded Postgres default, the CLI and the HTTP server.

mod clients;
mod embedded;
mod generate;
mod import;
mod otlp;
mod package;
mod settings;

use std::sync::Arc;

/// Many worker threads allocating and freeing request-sized buffers: mimalloc's per-thread
/// heaps instead of glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fjord_authz::{Clients, DevAuthServer};
use fjord_engine::{Caller, Engine, ParseLimits};
use fjord_rest::{AppState, AuthConfig, AuthMode, Gateway, RestConfig};
use fjord_smart::{DevIssuer, TokenRequest};
use fjord_subscriptions::{DeliverySettings, RevocationCheck, Subscriptions, Topics};

use crate::settings::{AuthSetting, ConnectionArgs, Settings};

#[derive(Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord, a FHIR R4 server for Norwegian health regions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR REST API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "FJORD_LISTEN")]
        listen: Option<String>,
        /// Whether requests need an access token: `required` unless the embedded default listens
        /// on loopback only, where it is `off`.
        #[arg(long, env = "FJORD_AUTH", value_enum)]
        auth: Option<AuthSetting>,
        /// Whether the development issuer signs, every tenant trusts it, and the development
        /// authorization server answers under /auth: on with the embedded database on a
        /// loopback address, off otherwise, unless set.
        #[arg(long, env = "FJORD_DEV_ISSUER")]
        dev_issuer: Option<bool>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print an access token signed by the development issuer, for scripts and tests.
    Token {
        /// The tenant the token is for.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Space-separated SMART scopes, e.g. "patient/*.rs" or "system/Observation.cruds".
        #[arg(long, default_value = "")]
        scope: String,
        /// The launch context's patient (a Patient id).
        #[arg(long)]
        patient: Option<String>,
        /// The user, as a reference (Practitioner/123).
        #[arg(long)]
        fhir_user: Option<String>,
        /// `aud`; the tenant's base URL at the configured listen address unless given.
        #[arg(long)]
        audience: Option<String>,
        /// A token for the administration API (scope `fjord:admin`, audience `…/admin`).
        #[arg(long)]
        admin: bool,
        /// Seconds the token is good for.
        #[arg(long, default_value_t = 3600)]
        lifetime: u64,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Register clients of the development authorization server.
    Client {
        #[command(subcommand)]
        command: clients::ClientCommand,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print the `launch` parameter of an EHR launch (or, with --app, the app's launch URL).
    Launch {
        /// The tenant the app is launched against.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The patient in context (a Patient id).
        #[arg(long)]
        patient: Option<String>,
        /// The encounter in context (an Encounter id).
        #[arg(long)]
        encounter: Option<String>,
        /// The user, as a reference (Practitioner/123).
        #[arg(long)]
        fhir_user: Option<String>,
        /// The app's launch URL, to which `iss` and `launch` are added.
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Install FHIR packages (profiles, value sets, code systems, search parameters).
    Package {
        #[command(subcommand)]
        command: PackageCommand,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Import NDJSON files (one resource per line, ids kept) into a tenant; importing the same
    /// data again changes nothing.
    Import {
        /// An NDJSON file, or a directory of `.ndjson` files.
        path: std::path::PathBuf,
        /// The tenant to import into.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Lines stored per unit of work.
        #[arg(long, default_value_t = import::DEFAULT_BATCH)]
        batch: usize,
        /// Batches stored side by side (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Write a synthetic Norwegian home-care data set (deterministic from a seed), as NDJSON or
    /// transaction Bundles.
    Generate(generate::GenerateArgs),
    /// Administer tenants (one per hospital trust).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// Store a package's conformance resources in a tenant: an npm-format `.tgz`, or a
    /// directory (its `package/` folder, or the resources themselves).
    Install {
        /// The package file or directory.
        path: std::path::PathBuf,
        /// The tenant to install it into.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Tenant id, used in URLs: /fhir/{id}.
        id: String,
        /// Display name, e.g. "Helse Bergen HF".
        #[arg(long)]
        name: String,
    },
    /// List the tenants.
    List,
    /// Change a tenant's display name (the id in its URLs stays).
    Rename {
        id: String,
        /// The new display name.
        name: String,
    },
    /// Refuse a tenant's requests (503) until it is resumed; its data stays.
    Suspend { id: String },
    /// Serve a suspended tenant again.
    Resume { id: String },
    /// Show a tenant's settings (JSON, secrets masked), or replace them with `--set FILE`
    /// (checked as the administration API checks them; a running server follows within 2 s).
    Settings {
        id: String,
        /// A JSON file of settings, or `-` for standard input.
        #[arg(long)]
        set: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;

    let cli = Cli::parse();
    let filter =
        |name: &str| EnvFilter::try_from_env(name).unwrap_or_else(|_| "info,sqlx=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // One JSON object per line, with the spans (a request's id) in it, for log collectors.
    let logs = if std::env::var("FJORD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        logs.boxed()
    };
    let (traces, tracer_provider) = match otlp::configured() {
        true => {
            let (layer, provider) = otlp::layer()?;
            (
                Some(layer.with_filter(filter("FJORD_TRACE"))),
                Some(provider),
            )
        }
        false => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter("FJORD_LOG")))
        .with(traces)
        .init();
    quiet_caught_parser_panics();
    let result = fjord_rest::block_on(run(cli));
    // Sends the spans still batched.
    if let Some(provider) = tracer_provider {
        if let Err(error) = provider.shutdown() {
            tracing::warn!(%error, "exporting the last traces");
        }
    }
    result
}

/// The database (migrated; the embedded default gets its `default` tenant) and an engine on it,
/// with the local account as the operator of `tenant`.
async fn open_as_operator(
    connection: &ConnectionArgs,
    tenant: &str,
) -> anyhow::Result<(embedded::Database, Engine, Caller)> {
    let settings = Settings::load(connection, None)?;
    let database = embedded::Database::open(&settings).await?;
    database.store.migrate().await?;
    if database.is_embedded() {
        database
            .store
            .ensure_tenant("default", "Default tenant")
            .await?;
    }
    let engine = Engine::new(database.store.clone(), ParseLimits::default());
    let caller = Caller::operator(engine.tenant(tenant).await?, local_account());
    Ok((database, engine, caller))
}

/// Writes the buffered AuditEvents (reads, refusals) every second, or sooner when many wait.
fn flush_audit_trail(engine: Engine) {
    tokio::spawn(async move { engine.follow_audit().await });
}

/// Keeps the text index close behind the change log, so that a search that needs it has little
/// to catch up on (it catches up anyway before it answers).
fn follow_text_index(engine: Engine) {
    tokio::spawn(async move {
        loop {
            if let Err(error) = engine.follow_text().await {
                tracing::warn!(%error, "feeding the text index");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// fhirbolt panics on some malformed inputs; `fjord-model` catches those panics and answers 400, so
/// they are logged as what they are instead of printing a panic report with a backtrace.
fn quiet_caught_parser_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("fhirbolt"))
        {
            tracing::debug!(location = %info.location().map(|l| l.to_string()).unwrap_or_default(), "fhirbolt rejected malformed input by panicking");
            return;
        }
        default_hook(info);
    }));
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            auth,
            dev_issuer,
            connection,
        } => {
            let mut settings = Settings::load_with_auth(&connection, listen, auth)?;
            settings.dev_issuer = dev_issuer.or(settings.dev_issuer);
            serve(settings).await
        }
        Command::Token {
            tenant,
            scope,
            patient,
            fhir_user,
            audience,
            admin,
            lifetime,
            connection,
        } => {
            let settings = Settings::load(&connection, None)?;
            let issuer = DevIssuer::load_or_create(&settings.dev_issuer_key())
                .context("reading the development issuer's key")?;
            let base = settings.origin();
            let (audience, scope) = if admin {
                let scope = format!("{} {scope}", fjord_rest::ADMIN_SCOPE);
                (audience.unwrap_or(format!("{base}/admin")), scope)
            } else {
                (audience.unwrap_or(format!("{base}/fhir/{tenant}")), scope)
            };
            let token = issuer.mint(&TokenRequest {
                audience,
                scope: scope.trim().to_owned(),
                patient,
                fhir_user,
                lifetime: std::time::Duration::from_secs(lifetime),
                ..Default::default()
            });
            println!("{token}");
            Ok(())
        }
        Command::Client {
            command,
            connection,
        } => clients::run(command, &Settings::load(&connection, None)?),
        Command::Launch {
            tenant,
            patient,
            encounter,
            fhir_user,
            app,
            connection,
        } => {
            let context = fjord_authz::LaunchContext {
                tenant: tenant.clone(),
                patient,
                encounter,
                fhir_user,
            };
            clients::launch(&Settings::load(&connection, None)?, tenant, context, app)
        }
        Command::Migrate { connection } => {
            let settings = Settings::load(&connection, None)?;
            let database = embedded::Database::open(&settings).await?;
            database.store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Generate(args) => generate::generate(args),
        Command::Package {
            command: PackageCommand::Install { path, tenant },
            connection,
        } => {
            let resources = package::read_package(&path)?;
            let (database, engine, tenant) = open_as_operator(&connection, &tenant).await?;
            let installed = engine.install_package(&tenant, resources).await?;
            for failure in &installed.failed {
                eprintln!("not installed: {failure}");
            }
            println!(
                "{}: {} stored, {} unchanged, {} not conformance resources, {} failed",
                path.display(),
                installed.stored.len(),
                installed.unchanged,
                installed.skipped,
                installed.failed.len()
            );
            database.close().await;
            if installed.failed.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} resources were not installed", installed.failed.len())
            }
        }
        Command::Import {
            path,
            tenant,
            batch,
            workers,
            connection,
        } => {
            let files = import::files_of(&path)?;
            let (database, engine, caller) = open_as_operator(&connection, &tenant).await?;
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            });
            let imported =
                import::run(Arc::new(engine), &caller, &path, &files, batch, workers).await;
            database.close().await;
            imported
        }
        Command::Tenant {
            command,
            connection,
        } => {
            let settings = Settings::load(&connection, None)?;
            let database = embedded::Database::open(&settings).await?;
            database.store.migrate().await?;
            let engine = Engine::new(database.store.clone(), ParseLimits::default());
            match command {
                TenantCommand::Create { id, name } => {
                    let tenant = engine.create_tenant(&id, &name).await?;
                    println!("created tenant {} ({})", tenant.id, tenant.name);
                }
                TenantCommand::List => {
                    for tenant in engine.list_tenants().await? {
                        let status = match tenant.suspended_at {
                            Some(_) => "suspended",
                            None => "active",
                        };
                        println!("{}\t{}\t{status}", tenant.id, tenant.name);
                    }
                }
                TenantCommand::Rename { id, name } => {
                    let tenant = engine.change_tenant(&id, Some(&name), None).await?;
                    println!("renamed tenant {} ({})", tenant.id, tenant.name);
                }
                TenantCommand::Suspend { id } => {
                    engine.change_tenant(&id, None, Some(true)).await?;
                    println!("suspended tenant {id}");
                }
                TenantCommand::Resume { id } => {
                    engine.change_tenant(&id, None, Some(false)).await?;
                    println!("resumed tenant {id}");
                }
                TenantCommand::Settings { id, set } => {
                    let mut tenant = engine.tenant(&id).await?;
                    if let Some(file) = set {
                        let body = match file.to_str() {
                            Some("-") => std::io::read_to_string(std::io::stdin())?.into_bytes(),
                            _ => std::fs::read(&file)
                                .with_context(|| format!("reading {}", file.display()))?,
                        };
                        let settings = fjord_rest::checked_settings(&body, &id, &tenant.settings)
                            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                        tenant = engine.set_tenant_settings(&id, &settings).await?;
                    }
                    let shown = fjord_rest::shown_settings(&tenant.settings);
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                }
            }
            Ok(())
        }
    }
}

/// Who runs this command, as the environment says (`sudo` keeps the invoking account).
fn local_account() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "an unnamed local account".into())
}

/// How requests are authenticated, from the settings; warns when they are not.
fn auth_config(settings: &Settings, embedded: bool) -> anyhow::Result<AuthConfig> {
    let loopback = settings.listen_is_loopback()?;
    let mode = match settings.auth {
        Some(AuthSetting::Required) => AuthMode::Required,
        Some(AuthSetting::Off) => AuthMode::Off,
        None if embedded && loopback => AuthMode::Off,
        None => AuthMode::Required,
    };
    if mode == AuthMode::Off {
        tracing::warn!(
            loopback,
            "authentication is off: every request may read and write everything"
        );
    }
    let dev_server = if settings.dev_issuer_enabled()? {
        let issuer = DevIssuer::load_or_create(&settings.dev_issuer_key())
            .context("reading the development issuer's key")?;
        tracing::warn!(
            issuer = fjord_smart::DEV_ISSUER,
            loopback,
            "the development issuer is on: every tenant trusts the tokens `fjord token` prints \
             and the development authorization server (/auth) lets anyone sign in as anyone"
        );
        let clients = Clients::new(settings.clients.clone(), Some(settings.clients_file()));
        Some(Arc::new(DevAuthServer::new(Arc::new(issuer), clients)))
    } else {
        None
    };
    Ok(AuthConfig::new(
        mode,
        dev_server,
        std::time::Duration::from_secs(settings.jwks_refetch_seconds),
    ))
}

/// Starts matching and delivering subscriptions in the background.
fn start_subscriptions(
    settings: &Settings,
    engine: &Engine,
    topics: Arc<Topics>,
    auth: &AuthConfig,
    metrics: Arc<fjord_metrics::Metrics>,
) -> Arc<Subscriptions> {
    let delivery = DeliverySettings {
        max_failures: settings.subscriptions.max_failures.max(1),
        backoff: std::time::Duration::from_millis(settings.subscriptions.retry_ms),
        max_backoff: std::time::Duration::from_millis(settings.subscriptions.retry_max_ms),
        keep_events: std::time::Duration::from_secs(
            settings
                .subscriptions
                .keep_events_hours
                .saturating_mul(3600),
        ),
    };
    // Tokens the development authorization server revoked stop their subscriptions.
    let revoked: Option<RevocationCheck> = auth
        .dev_authorization_server()
        .map(|server| Arc::new(move |jti: &str| server.is_revoked(jti)) as RevocationCheck);
    Subscriptions::new(engine.for_runtime(), topics, delivery, revoked, metrics)
}

/// Where `$export` files go: `exports` in the data directory, emptied at start, as the jobs
/// an earlier process left are forgotten with it.
fn export_dir(settings: &Settings) -> anyhow::Result<std::path::PathBuf> {
    let dir = settings.data_dir.join("exports");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("emptying {}", dir.display()))
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let database = embedded::Database::open(&settings).await?;
    database
        .store
        .migrate()
        .await
        .context("applying migrations")?;
    if database.is_embedded() {
        database
            .store
            .ensure_tenant("default", "Default tenant")
            .await?;
    }
    let auth = auth_config(&settings, database.is_embedded())?;
    let gateway = Gateway::new(settings.public_url.as_deref(), &settings.trusted_proxies)
        .map_err(|e| anyhow::anyhow!("public_url or trusted_proxies: {e}"))?;
    let instance = database.store.instance_id().await?;
    let text_index = fjord_text::TextIndex::open(&settings.text_dir, &instance)
        .with_context(|| format!("opening the text index in {}", settings.text_dir.display()))?;
    let metrics = Arc::new(fjord_metrics::Metrics::new());
    let store = match settings.request_timeout {
        Some(limit) => database.store.clone().with_statement_timeout(limit),
        None => database.store.clone(),
    };
    let engine = Engine::new(
        store,
        ParseLimits {
            max_depth: settings.max_json_depth,
        },
    )
    .with_text_index(Arc::new(text_index))
    .with_max_bundle_entries(settings.max_bundle_entries)
    .with_export_dir(export_dir(&settings)?)
    .with_metrics(metrics.clone());
    let topics = Arc::new(Topics::shipped()?);
    let engine = engine.with_write_check(
        "Subscription",
        Arc::new(Subscriptions::check(topics.clone())),
    );
    follow_text_index(engine.for_runtime());
    flush_audit_trail(engine.for_runtime());
    let subscriptions = start_subscriptions(&settings, &engine, topics, &auth, metrics.clone());
    let state_engine = Arc::new(engine);
    let state = AppState {
        engine: state_engine.clone(),
        config: RestConfig {
            max_body_bytes: settings.max_body_bytes,
            auth,
            gateway,
            rate_limits: Arc::new(fjord_rest::RateLimits::new(settings.rate_limit)),
            request_timeout: settings.request_timeout,
        },
        subscriptions: Some(subscriptions.clone()),
        metrics,
    };
    let gateway_url = state.config.gateway.public_url().map(str::to_owned);
    let (server, addrs) = fjord_rest::bind(state, &settings.listen)
        .with_context(|| format!("binding {}", settings.listen))?;
    if let Some(public) = gateway_url {
        subscriptions.set_origin(&public);
    } else if let Some(addr) = addrs.first() {
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        subscriptions.set_origin(&format!("http://{host}:{}", addr.port()));
    }
    // Matching starts once notifications can name the server.
    tokio::spawn(subscriptions.clone().run_dispatcher());
    for addr in addrs {
        // Tests and scripts read this line to find the port when listening on port 0.
        println!("fjord listening on http://{addr}/fhir/");
        tracing::info!(%addr, "listening");
    }
    server.await?;
    tracing::info!("shutting down");
    // What the requests drained last recorded, before the database goes.
    subscriptions.flush_audit_digests().await;
    if let Err(error) = state_engine.flush_audit().await {
        tracing::error!(%error, "writing the audit trail at shutdown");
    }
    database.close().await;
    Ok(())
}
