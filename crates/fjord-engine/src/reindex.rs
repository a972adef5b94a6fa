//! `$reindex`: recomputes the index terms of every current resource of some types with the
//! tenant's current search parameters, in the background, page by page. Writes go on meanwhile;
//! a resource written during the job was indexed by its write and is skipped.

use crate::jobs::Job;
use crate::{Caller, Engine, EngineError, JobState};

/// Resources read and reindexed per step.
const PAGE: usize = 200;

/// A `$reindex` job's progress.
#[derive(Debug, Clone)]
pub struct ReindexProgress {
    pub types: Vec<String>,
    /// Resources current when the job started.
    pub total: i64,
    pub done: i64,
}

/// A `$reindex` job.
pub type ReindexJob = Job<ReindexProgress>;

impl Engine {
    /// Starts reindexing `resource_type` (every type when `None`) on this runtime.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, resource_type = ?resource_type))]
    pub async fn start_reindex(
        &self,
        caller: &Caller,
        resource_type: Option<&str>,
    ) -> Result<ReindexJob, EngineError> {
        self.authorize_maintenance(caller)?;
        let types: Vec<String> = match resource_type {
            Some(t) => vec![self.resource_type(t)?.to_owned()],
            None => self.search.resource_types().map(str::to_owned).collect(),
        };
        let progress = ReindexProgress {
            total: self.store.count_current(caller.key, &types).await?,
            types,
            done: 0,
        };
        let (job, _) = self.shared.reindexing.start(caller, progress);
        let engine = self.for_runtime();
        let (caller, id, types) = (caller.clone(), job.id.clone(), job.progress.types.clone());
        tokio::task::spawn_local(async move {
            let result = engine.reindex(&caller, &id, &types).await;
            let reindexing = &engine.shared.reindexing;
            reindexing.finish(&id, JobState::ended("reindex", &id, result));
        });
        Ok(job)
    }

    /// A job of this caller's tenant.
    pub fn reindex_job(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<ReindexJob>, EngineError> {
        self.authorize_maintenance(caller)?;
        Ok(self.shared.reindexing.get(caller, id))
    }

    async fn reindex(
        &self,
        caller: &Caller,
        id: &str,
        types: &[String],
    ) -> Result<(), EngineError> {
        let registry = self.registry(caller).await?;
        for resource_type in types {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .current_page(caller.key, resource_type, after.as_deref(), PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for version in &page {
                    let Some(body) = version.body.as_deref() else {
                        continue;
                    };
                    let resource: serde_json::Value = serde_json::from_str(body)
                        .map_err(|e| EngineError::BadRequest(format!("a stored resource: {e}")))?;
                    let entries = fjord_search::extract(&registry, &resource)?;
                    let terms = fjord_search::index_terms(resource_type, &entries);
                    self.store
                        .replace_terms(
                            caller.key,
                            resource_type,
                            &version.id,
                            version.version,
                            &terms,
                        )
                        .await?;
                }
                let count = page.len() as i64;
                (self.shared.reindexing).update(id, |progress| progress.done += count);
            }
        }
        Ok(())
    }
}
