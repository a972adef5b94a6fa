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
        let options = ClusterOptions::embedded(settings.shared_buffers_mb);
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
