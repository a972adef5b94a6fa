//! Real Postgres for tests.
//!
//! `TEST_DATABASE_URL` (a superuser URL) names a server to use; otherwise the first test of a
//! process starts a private cluster under `/tmp/fjord-testkit-<pid>` from the machine's Postgres
//! binaries (as an unprivileged account when run as root), tuned for speed rather than durability.
//! A template database is migrated once per process and every test gets its own copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use fjord_pg::{Binaries, Cluster, ClusterOptions, SUPERUSER};
use fjord_store::Store;
use tokio::sync::OnceCell;

/// The role tests connect as: not a superuser, so row-level security applies as in production.
pub const ROLE: &str = "fjord";
const TEMPLATE: &str = "fjord_template";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

/// A fresh, migrated database of one test.
pub struct TestDatabase {
    /// URL to connect as the application role.
    pub url: String,
    /// A pool on it.
    pub store: Store,
}

/// The superuser URL of a given database on the test server.
pub fn superuser_url(database: &str) -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return replace_database(&url, database);
    }
    cluster().url(SUPERUSER, database)
}

/// The application-role URL of a given database on the test server.
pub fn role_url(database: &str) -> String {
    let url = superuser_url(database);
    match url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?.1)))
    {
        Some((scheme, rest)) => format!("{scheme}://{ROLE}@{rest}"),
        None => url,
    }
}

fn replace_database(url: &str, database: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let base = head.rsplit_once('/').map_or(head, |(base, _)| base);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        remove_stale_clusters();
        let binaries = Binaries::locate().expect("PostgreSQL server binaries");
        let dir = PathBuf::from(format!("/tmp/fjord-testkit-{}", std::process::id()));
        let settings = [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
        ];
        let options = ClusterOptions {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fast_init: true,
        };
        Cluster::start(&binaries, &dir, &options).expect("starting the test cluster")
    })
}

/// Clusters of test processes that are gone (their postmaster stopped with them).
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("fjord-testkit-")) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A new database for one test, migrated, with a pool connected as the application role.
pub async fn database() -> TestDatabase {
    TEMPLATE_READY
        .get_or_init(|| async {
            Store::prepare_database(&superuser_url("postgres"), ROLE, TEMPLATE)
                .await
                .expect("template database");
            let store = Store::connect(&role_url(TEMPLATE), 2)
                .await
                .expect("connect to template");
            store.migrate().await.expect("migrate template");
            store.close().await;
        })
        .await;
    let name = unique_database_name();
    Store::create_database_from_template(&superuser_url("postgres"), &name, TEMPLATE, ROLE)
        .await
        .expect("create test database");
    let url = role_url(&name);
    let store = Store::connect(&url, 16)
        .await
        .expect("connect to test database");
    TestDatabase { url, store }
}

/// A new database without Fjord's schema (for migration tests); returns the application role's URL.
pub async fn unmigrated_database() -> String {
    let name = unique_database_name();
    Store::prepare_database(&superuser_url("postgres"), ROLE, &name)
        .await
        .expect("create unmigrated database");
    role_url(&name)
}

fn unique_database_name() -> String {
    format!(
        "fjord_test_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    )
}
