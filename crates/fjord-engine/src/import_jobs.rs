//! `$import` jobs: an NDJSON body imported in the background ([`Engine::import`], batch by
//! batch) while its client polls. A job is seen and cancelled only by the client that started
//! it, in its tenant. Jobs live in the process ([`crate::jobs`]): a restart forgets them, and as
//! an import is idempotent the client posts the data again.

use crate::import::{ImportLine, Imported};
use crate::jobs::Job;
use crate::{Caller, Engine, EngineError, JobState};

/// Lines per unit of work.
const BATCH: usize = 1_000;

/// An `$import` job's progress.
#[derive(Debug, Clone, Default)]
pub struct ImportProgress {
    /// Lines in the body (blank ones left out).
    pub lines: usize,
    /// What the batches done so far did.
    pub imported: Imported,
}

/// An `$import` job.
pub type ImportJob = Job<ImportProgress>;

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
        let progress = ImportProgress {
            lines: lines.len(),
            imported: Imported::default(),
        };
        let (job, _) = self.shared.imports.start(caller, progress);
        let engine = self.for_runtime();
        let (caller, id) = (caller.clone(), job.id.clone());
        tokio::task::spawn_local(async move {
            let result = engine.run_import(&caller, &id, lines).await;
            let imports = &engine.shared.imports;
            imports.finish(&id, JobState::ended("import", &id, result));
        });
        job
    }

    /// A job the caller started, if it exists (and was not cancelled).
    pub fn import_job(&self, caller: &Caller, id: &str) -> Option<ImportJob> {
        self.shared.imports.get(caller, id)
    }

    /// Cancels a job the caller started: the batch under way finishes, no other starts, and
    /// the job is forgotten. False when there is no such job.
    pub fn cancel_import(&self, caller: &Caller, id: &str) -> bool {
        self.shared.imports.cancel(caller, id).is_some()
    }

    async fn run_import(
        &self,
        caller: &Caller,
        id: &str,
        mut lines: Vec<ImportLine>,
    ) -> Result<(), EngineError> {
        while !lines.is_empty() {
            if self.shared.imports.cancelled(id) {
                return Ok(());
            }
            let rest = lines.split_off(lines.len().min(BATCH));
            let done = self
                .import(caller, std::mem::replace(&mut lines, rest))
                .await?;
            (self.shared.imports).update(id, |progress| progress.imported.add(done));
        }
        Ok(())
    }
}
