//! `$reindex`: recomputes the index terms of every current resource of some types with the
//! tenant's current search parameters, in the background, page by page. Writes go on meanwhile;
//! a resource written during the job was indexed by its write and is skipped.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::{Caller, Engine, EngineError};

/// Resources read and reindexed per step.
const PAGE: usize = 200;

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed(String),
}

/// A `$reindex` job and its progress.
#[derive(Debug, Clone)]
pub struct ReindexJob {
    pub id: String,
    pub tenant: String,
    pub types: Vec<String>,
    /// Resources current when the job started.
    pub total: i64,
    pub done: i64,
    pub state: JobState,
}

/// The jobs of this process (lost on restart: run it again, it is idempotent).
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    by_id: Mutex<HashMap<String, ReindexJob>>,
}

impl Engine {
    /// Starts reindexing `resource_type` (every type when `None`) on this runtime.
    #[tracing::instrument(skip(self), fields(tenant = %caller.id))]
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
        let job = ReindexJob {
            id: Uuid::new_v4().simple().to_string(),
            tenant: caller.id.clone(),
            total: self.store.count_current(caller.key, &types).await?,
            types,
            done: 0,
            state: JobState::Running,
        };
        (self.shared.jobs.by_id.lock())
            .expect("jobs")
            .insert(job.id.clone(), job.clone());
        let engine = self.for_runtime();
        let (caller, id, types) = (caller.clone(), job.id.clone(), job.types.clone());
        tokio::task::spawn_local(async move {
            let state = match engine.reindex(&caller, &id, &types).await {
                Ok(()) => JobState::Completed,
                Err(e) => {
                    tracing::error!(job = %id, "reindex failed: {e}");
                    JobState::Failed(e.to_string())
                }
            };
            engine.update_job(&id, |job| job.state = state);
        });
        Ok(job)
    }

    /// A job of this caller.
    pub fn reindex_job(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<ReindexJob>, EngineError> {
        self.authorize_maintenance(caller)?;
        let jobs = self.shared.jobs.by_id.lock().expect("jobs");
        Ok(jobs.get(id).filter(|j| j.tenant == caller.id).cloned())
    }

    fn update_job(&self, id: &str, change: impl FnOnce(&mut ReindexJob)) {
        if let Some(job) = self.shared.jobs.by_id.lock().expect("jobs").get_mut(id) {
            change(job);
        }
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
                self.update_job(id, |job| job.done += count);
            }
        }
        Ok(())
    }
}
