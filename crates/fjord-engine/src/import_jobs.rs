//! `$import` jobs: an NDJSON body imported in the background ([`Engine::import`], batch by
//! batch) while its client polls. A job is seen and cancelled only by the client that started
//! it, in its tenant. Jobs live in the process (like `$reindex`'s): a restart forgets them, and
//! as an import is idempotent the client posts the data again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::import::{ImportLine, Imported};
use crate::{Caller, Engine, EngineError, JobState};

/// Lines per unit of work.
const BATCH: usize = 1_000;
/// A finished job nobody asked to remove is forgotten after this long.
const KEEP_FINISHED: Duration = Duration::from_secs(24 * 3600);

/// An `$import` job and its progress.
#[derive(Debug, Clone)]
pub struct ImportJob {
    pub id: String,
    /// Lines in the body (blank ones left out).
    pub lines: usize,
    /// What the batches done so far did.
    pub imported: Imported,
    pub state: JobState,
    tenant: String,
    /// Who started it (issuer, subject, client): nobody else sees it.
    owner: String,
    cancelled: bool,
    finished: Option<Instant>,
}

/// The `$import` jobs of this process.
#[derive(Debug, Default)]
pub(crate) struct ImportJobs {
    by_id: Mutex<HashMap<String, ImportJob>>,
}

/// Who a job belongs to: the token's issuer, subject and client.
pub(crate) fn owner_of(caller: &Caller) -> String {
    match caller.access.principal() {
        Some(p) => format!(
            "{}|{}|{}",
            p.issuer,
            p.subject.as_deref().unwrap_or_default(),
            p.client_id.as_deref().unwrap_or_default()
        ),
        None => String::new(),
    }
}

impl Engine {
    /// Starts importing `body` (NDJSON) into the caller's tenant on this runtime.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, bytes = body.len()))]
    pub fn start_import(&self, caller: &Caller, body: &[u8]) -> ImportJob {
        let lines: Vec<ImportLine> = body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(index, line)| ImportLine {
                number: index as u64 + 1,
                text: line.to_vec(),
            })
            .collect();
        let job = ImportJob {
            id: Uuid::new_v4().simple().to_string(),
            lines: lines.len(),
            imported: Imported::default(),
            state: JobState::Running,
            tenant: caller.id.clone(),
            owner: owner_of(caller),
            cancelled: false,
            finished: None,
        };
        {
            let mut jobs = self.shared.imports.by_id.lock().expect("import jobs");
            jobs.retain(|_, j| j.finished.is_none_or(|at| at.elapsed() < KEEP_FINISHED));
            jobs.insert(job.id.clone(), job.clone());
        }
        let engine = self.for_runtime();
        let (caller, id) = (caller.clone(), job.id.clone());
        tokio::task::spawn_local(async move {
            let state = match engine.run_import(&caller, &id, lines).await {
                Ok(()) => JobState::Completed,
                Err(e) => {
                    tracing::error!(job = %id, "import failed: {e}");
                    JobState::Failed(e.to_string())
                }
            };
            engine.update_import(&id, |job| {
                job.state = state;
                job.finished = Some(Instant::now());
            });
        });
        job
    }

    /// A job the caller started, if it exists (and was not cancelled).
    pub fn import_job(&self, caller: &Caller, id: &str) -> Option<ImportJob> {
        let jobs = self.shared.imports.by_id.lock().expect("import jobs");
        jobs.get(id)
            .filter(|j| j.tenant == caller.id && j.owner == owner_of(caller) && !j.cancelled)
            .cloned()
    }

    /// Cancels a job the caller started: the batch under way finishes, no other starts, and
    /// the job is forgotten. False when there is no such job.
    pub fn cancel_import(&self, caller: &Caller, id: &str) -> bool {
        let mut jobs = self.shared.imports.by_id.lock().expect("import jobs");
        match jobs.get_mut(id) {
            Some(job) if job.tenant == caller.id && job.owner == owner_of(caller) => {
                if job.state == JobState::Running {
                    job.cancelled = true;
                } else {
                    jobs.remove(id);
                }
                true
            }
            _ => false,
        }
    }

    fn update_import(&self, id: &str, change: impl FnOnce(&mut ImportJob)) {
        let mut jobs = self.shared.imports.by_id.lock().expect("import jobs");
        if let Some(job) = jobs.get_mut(id) {
            change(job);
            if job.cancelled && job.finished.is_some() {
                jobs.remove(id);
            }
        }
    }

    async fn run_import(
        &self,
        caller: &Caller,
        id: &str,
        mut lines: Vec<ImportLine>,
    ) -> Result<(), EngineError> {
        while !lines.is_empty() {
            let cancelled = (self.shared.imports.by_id.lock().expect("import jobs"))
                .get(id)
                .is_none_or(|job| job.cancelled);
            if cancelled {
                return Ok(());
            }
            let rest = lines.split_off(lines.len().min(BATCH));
            let done = self
                .import(caller, std::mem::replace(&mut lines, rest))
                .await?;
            self.update_import(id, |job| job.imported.add(done));
        }
        Ok(())
    }
}
