//! The database: an external server from `DATABASE_URL`, or the embedded default, a private
//! Postgres cluster under the data directory.

use anyhow::Context;
use fjord_pg::{Binaries, Cluster, ClusterOptions, SUPERUSER};
use fjord_store::Store;

use crate::settings::Settings;

const ROLE: &str = "fjord";
const DATABASE: &str = "fjord";

/// The store and, in embedded mode, the cluster behind it (stopped when this is closed).
pub struct Database {
    pub store: Store,
    cluster: Option<Cluster>,
}

impl Database {
    pub async fn open(settings: &Settings) -> anyhow::Result<Database> {
        if let Some(url) = &settings.database_url {
            let store = Store::connect(&url.0, settings.max_connections)
                .await
                .context("connecting to DATABASE_URL")?;
            return Ok(Database {
                store,
                cluster: None,
            });
        }
        let binaries = Binaries::locate()?;
        let dir = settings.data_dir.join("postgres");
        let options = ClusterOptions {
            settings: vec![
                ("max_connections".into(), "200".into()),
                (
                    "shared_buffers".into(),
                    format!("{}MB", settings.shared_buffers_mb),
                ),
                // Statistics within seconds of a bulk load, not a minute: without them a
                // conditional create scans every resource of its type instead of the index.
                ("autovacuum_naptime".into(), "10s".into()),
                // Fewer checkpoints while bundles load; recovery replays at most this much.
                ("max_wal_size".into(), "4GB".into()),
            ],
            fast_init: false,
        };
        let cluster = Cluster::start(&binaries, &dir, &options)
            .with_context(|| format!("starting the embedded Postgres in {}", dir.display()))?;
        Store::prepare_database(&cluster.url(SUPERUSER, "postgres"), ROLE, DATABASE).await?;
        let store = Store::connect(&cluster.url(ROLE, DATABASE), settings.max_connections).await?;
        Ok(Database {
            store,
            cluster: Some(cluster),
        })
    }

    pub fn is_embedded(&self) -> bool {
        self.cluster.is_some()
    }

    /// Closes the pool, then stops the embedded cluster if this process started it.
    pub async fn close(mut self) {
        self.store.close().await;
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.stop();
        }
    }
}
