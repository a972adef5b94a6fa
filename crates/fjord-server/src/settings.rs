//! Configuration: defaults → optional TOML file → environment → flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

/// Where the database is, shared by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Data directory; holds the embedded Postgres cluster when no database URL is given.
    #[arg(long, env = "FJORD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Postgres URL of an external server; without it Fjord runs its embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of the full-text index (derived from the database, rebuilt when missing);
    /// `<data dir>/text` unless set.
    #[arg(long, env = "FJORD_TEXT_DIR", global = true)]
    pub text_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "FJORD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// The configuration file; every key optional, unknown keys rejected.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    text_dir: Option<PathBuf>,
    database_url: Option<String>,
    max_body_bytes: Option<usize>,
    max_json_depth: Option<usize>,
    max_connections: Option<u32>,
    shared_buffers_mb: Option<u64>,
    max_bundle_entries: Option<usize>,
    request_timeout_seconds: Option<u64>,
    public_url: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    rate_limit: Option<RateLimitSetting>,
    auth: Option<AuthSetting>,
    dev_issuer: Option<bool>,
    jwks_refetch_seconds: Option<u64>,
    #[serde(default)]
    clients: Vec<fjord_authz::Client>,
    #[serde(default)]
    subscriptions: SubscriptionSettings,
}

/// `[subscriptions]`: how rest-hook delivery retries, and how long delivered events stay. The
/// environment (`FJORD_SUBSCRIPTION_MAX_FAILURES`, `…_RETRY_MS`, `…_RETRY_MAX_MS`,
/// `…_KEEP_EVENTS_HOURS`) overrides the file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionSettings {
    /// Consecutive failed deliveries after which a subscription goes to `error`.
    pub max_failures: u32,
    /// The first retry's delay; doubled after each failure up to `retry_max_ms`.
    pub retry_ms: u64,
    pub retry_max_ms: u64,
    /// Hours a delivered event stays for `$events` (0: removed once delivered).
    pub keep_events_hours: u64,
}

impl Default for SubscriptionSettings {
    fn default() -> SubscriptionSettings {
        SubscriptionSettings {
            max_failures: 10,
            retry_ms: 1000,
            retry_max_ms: 60_000,
            keep_events_hours: 24 * 30,
        }
    }
}

impl SubscriptionSettings {
    fn with_environment(mut self) -> anyhow::Result<SubscriptionSettings> {
        fn read<T: std::str::FromStr>(name: &str, into: &mut T) -> anyhow::Result<()> {
            if let Ok(text) = std::env::var(name) {
                *into = text
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}: not a number: {text}"))?;
            }
            Ok(())
        }
        read("FJORD_SUBSCRIPTION_MAX_FAILURES", &mut self.max_failures)?;
        read("FJORD_SUBSCRIPTION_RETRY_MS", &mut self.retry_ms)?;
        read("FJORD_SUBSCRIPTION_RETRY_MAX_MS", &mut self.retry_max_ms)?;
        read(
            "FJORD_SUBSCRIPTION_KEEP_EVENTS_HOURS",
            &mut self.keep_events_hours,
        )?;
        Ok(self)
    }
}

/// `[rate_limit]`: requests per second each client may make to a tenant, and at once.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RateLimitSetting {
    per_second: u32,
    burst: Option<u32>,
}

/// The file's `[rate_limit]`, with the environment over it; a rate of 0 is no limit.
fn rate_limit(file: Option<RateLimitSetting>) -> anyhow::Result<Option<fjord_engine::RateLimit>> {
    let per_second = env_number("FJORD_RATE_LIMIT_PER_SECOND")?.or(file.map(|l| l.per_second));
    let burst = env_number("FJORD_RATE_LIMIT_BURST")?.or(file.and_then(|l| l.burst));
    Ok(match per_second {
        Some(0) | None => None,
        Some(per_second) => Some(fjord_engine::RateLimit {
            per_second,
            burst: burst.unwrap_or(per_second).max(1),
        }),
    })
}

/// The number in environment variable `name`, if it is set.
fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(text) => match text.trim().parse() {
            Ok(number) => Ok(Some(number)),
            Err(_) => anyhow::bail!("{name}: not a number: {text}"),
        },
        Err(_) => Ok(None),
    }
}

/// `--auth`: whether requests need an access token.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    Required,
    Off,
}

/// Connections of each tenant's pool on each HTTP worker (there is a worker per CPU). Each busy
/// connection is a Postgres process competing for the CPUs: with 32 a worker, 16 clients searching
/// kept 16 backends runnable on 2 CPUs and Fjord's workers got a small share, so answers queued
/// (p99 310–380 ms); with 4, p99 was 120–133 ms at the same rate, and creates ran at 1,230–1,340/s
/// instead of 1,105–1,120/s.
const DEFAULT_POOL_SIZE: u32 = 4;

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub text_dir: PathBuf,
    pub database_url: Option<Secret>,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub max_connections: u32,
    /// `shared_buffers` of the embedded cluster; a quarter of the memory unless set.
    pub shared_buffers_mb: u64,
    pub max_bundle_entries: usize,
    /// How long a FHIR request may take (`FJORD_REQUEST_TIMEOUT_SECONDS`, default 60; 0: no
    /// limit); also the longest a database statement of a tenant may run.
    pub request_timeout: Option<std::time::Duration>,
    /// The server's public URL behind the region's gateway (`FJORD_PUBLIC_URL`): tenants'
    /// base URLs are `{public_url}/fhir/{tenant}` unless a tenant sets its own.
    pub public_url: Option<String>,
    /// Proxies whose `Forwarded`/`X-Forwarded-*` headers are believed
    /// (`FJORD_TRUSTED_PROXIES`, comma-separated addresses or networks).
    pub trusted_proxies: Vec<String>,
    /// Requests per second (and burst) each client may make to a tenant without a limit of
    /// its own (`FJORD_RATE_LIMIT_PER_SECOND`, `FJORD_RATE_LIMIT_BURST`); `None`: no limit.
    pub rate_limit: Option<fjord_engine::RateLimit>,
    /// `None`: required, unless the embedded default listens on loopback only.
    pub auth: Option<AuthSetting>,
    /// Whether the development issuer and authorization server are on; `None`: on with the
    /// embedded database on loopback, off otherwise.
    pub dev_issuer: Option<bool>,
    /// How often an issuer's keys are fetched again for a key id not seen before, at most.
    pub jwks_refetch_seconds: u64,
    /// Clients of the development authorization server given in the configuration file.
    pub clients: Vec<fjord_authz::Client>,
    pub subscriptions: SubscriptionSettings,
}

/// A value that never shows in logs or debug output.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Settings {
    pub fn load(args: &ConnectionArgs, listen: Option<String>) -> anyhow::Result<Settings> {
        Settings::load_with_auth(args, listen, None)
    }

    pub fn load_with_auth(
        args: &ConnectionArgs,
        listen: Option<String>,
        auth: Option<AuthSetting>,
    ) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "./data".into());
        Ok(Settings {
            listen: listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            text_dir: args
                .text_dir
                .clone()
                .or(file.text_dir)
                .unwrap_or_else(|| data_dir.join("text")),
            data_dir,
            database_url: args.database_url.clone().or(file.database_url).map(Secret),
            max_body_bytes: file.max_body_bytes.unwrap_or(16 * 1024 * 1024),
            max_json_depth: file.max_json_depth.unwrap_or(64),
            max_connections: file.max_connections.unwrap_or(DEFAULT_POOL_SIZE),
            shared_buffers_mb: file
                .shared_buffers_mb
                .unwrap_or_else(fjord_pg::default_shared_buffers_mb),
            max_bundle_entries: file
                .max_bundle_entries
                .unwrap_or(fjord_engine::DEFAULT_MAX_BUNDLE_ENTRIES),
            request_timeout: match env_number("FJORD_REQUEST_TIMEOUT_SECONDS")?
                .or(file.request_timeout_seconds)
                .unwrap_or(60)
            {
                0 => None,
                seconds => Some(std::time::Duration::from_secs(seconds)),
            },
            public_url: std::env::var("FJORD_PUBLIC_URL").ok().or(file.public_url),
            trusted_proxies: match std::env::var("FJORD_TRUSTED_PROXIES") {
                Ok(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Err(_) => file.trusted_proxies,
            },
            rate_limit: rate_limit(file.rate_limit)?,
            auth: auth.or(file.auth),
            dev_issuer: file.dev_issuer,
            jwks_refetch_seconds: file.jwks_refetch_seconds.unwrap_or(10),
            clients: file.clients,
            subscriptions: file.subscriptions.with_environment()?,
        })
    }

    /// Where the development issuer keeps its signing key.
    pub fn dev_issuer_key(&self) -> PathBuf {
        self.data_dir.join("auth").join("dev-issuer.pem")
    }

    /// The origin the server answers on at the configured listen address, as commands that
    /// print tokens and launch URLs name it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Where `fjord client add` keeps the clients it registers.
    pub fn clients_file(&self) -> PathBuf {
        self.data_dir.join("auth").join("clients.json")
    }

    /// Whether the development issuer and authorization server are on: as configured, else
    /// with the embedded database on a loopback address (where it lets anyone sign in as
    /// anyone, only the machine's own users can reach it).
    pub fn dev_issuer_enabled(&self) -> anyhow::Result<bool> {
        match self.dev_issuer {
            Some(on) => Ok(on),
            None => Ok(self.database_url.is_none() && self.listen_is_loopback()?),
        }
    }

    /// Whether every address `listen` resolves to is a loopback address.
    pub fn listen_is_loopback(&self) -> anyhow::Result<bool> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<SocketAddr> = self
            .listen
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.listen))?
            .collect();
        Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
    }
}
