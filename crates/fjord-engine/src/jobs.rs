//! The bookkeeping every background job shares (`$import`, `$export`, `$reindex`): who may see
//! it, where it stands, cancelling, and how long a finished one is kept. Each kind brings its
//! own progress `P`. Jobs live in the process: a restart forgets them (every kind is idempotent
//! or restartable, so the client starts again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{Caller, EngineError};

/// A finished job nobody asked to remove is forgotten after this long.
const KEEP_FINISHED: Duration = Duration::from_secs(24 * 3600);

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed(String),
}

impl JobState {
    /// The state a job's work ends in, its error logged.
    pub(crate) fn ended(kind: &str, id: &str, result: Result<(), EngineError>) -> JobState {
        match result {
            Ok(()) => JobState::Completed,
            Err(e) => {
                tracing::error!(job = %id, "{kind} failed: {e}");
                JobState::Failed(e.to_string())
            }
        }
    }
}

/// A job and its progress.
#[derive(Debug, Clone)]
pub struct Job<P> {
    pub id: String,
    pub state: JobState,
    pub progress: P,
    tenant: String,
    /// Who may see it: the starting client, or empty when anyone of the tenant allowed to ask.
    owner: String,
    cancelled: bool,
    finished: Option<Instant>,
}

/// Who sees a job of a kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeenBy {
    /// Only the client that started it (issuer, subject and client of its token).
    Client,
    /// Any caller of its tenant allowed to ask (the kind checks that).
    Tenant,
}

/// The jobs of one kind in this process.
#[derive(Debug)]
pub(crate) struct Jobs<P> {
    seen_by: SeenBy,
    by_id: Mutex<HashMap<String, Job<P>>>,
}

/// What cancelling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The job was running: it stops at its next check and is then forgotten.
    Stopping,
    /// The job had finished and is forgotten now.
    Forgotten,
}

impl<P: Clone> Jobs<P> {
    pub(crate) fn new(seen_by: SeenBy) -> Self {
        Jobs {
            seen_by,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a running job of the caller's. Also forgets finished jobs past their time and
    /// returns their ids, so the kind can remove what they left behind.
    pub(crate) fn start(&self, caller: &Caller, progress: P) -> (Job<P>, Vec<String>) {
        let job = Job {
            id: Uuid::new_v4().simple().to_string(),
            state: JobState::Running,
            progress,
            tenant: caller.id.clone(),
            owner: self.owner(caller),
            cancelled: false,
            finished: None,
        };
        let mut jobs = self.lock();
        let expired = jobs
            .iter()
            .filter(|(_, j)| j.finished.is_some_and(|at| at.elapsed() >= KEEP_FINISHED))
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>();
        for id in &expired {
            jobs.remove(id);
        }
        jobs.insert(job.id.clone(), job.clone());
        (job, expired)
    }

    /// A job the caller may see, unless it was cancelled.
    pub(crate) fn get(&self, caller: &Caller, id: &str) -> Option<Job<P>> {
        self.with(caller, id, Job::clone)
    }

    /// `look` applied to a job the caller may see, unless it was cancelled.
    pub(crate) fn with<R>(
        &self,
        caller: &Caller,
        id: &str,
        look: impl FnOnce(&Job<P>) -> R,
    ) -> Option<R> {
        let owner = self.owner(caller);
        let jobs = self.lock();
        jobs.get(id)
            .filter(|j| j.tenant == caller.id && j.owner == owner && !j.cancelled)
            .map(look)
    }

    /// Cancels a running job the caller may see, or forgets a finished one; `None` when there
    /// is no such job.
    pub(crate) fn cancel(&self, caller: &Caller, id: &str) -> Option<Cancelled> {
        let owner = self.owner(caller);
        let mut jobs = self.lock();
        let job = jobs
            .get_mut(id)
            .filter(|j| j.tenant == caller.id && j.owner == owner)?;
        if job.state == JobState::Running {
            job.cancelled = true;
            Some(Cancelled::Stopping)
        } else {
            jobs.remove(id);
            Some(Cancelled::Forgotten)
        }
    }

    /// Applies `change` to a job's progress.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut P)) {
        if let Some(job) = self.lock().get_mut(id) {
            change(&mut job.progress);
        }
    }

    /// Whether a job was cancelled (or is gone): its work should stop.
    pub(crate) fn cancelled(&self, id: &str) -> bool {
        self.lock().get(id).is_none_or(|job| job.cancelled)
    }

    /// Records how a job's work ended; true when it had been cancelled and is now forgotten.
    pub(crate) fn finish(&self, id: &str, state: JobState) -> bool {
        let mut jobs = self.lock();
        let Some(job) = jobs.get_mut(id) else {
            return false;
        };
        if job.cancelled {
            jobs.remove(id);
            return true;
        }
        job.state = state;
        job.finished = Some(Instant::now());
        false
    }

    fn owner(&self, caller: &Caller) -> String {
        match (self.seen_by, caller.access.principal()) {
            (SeenBy::Client, Some(p)) => format!(
                "{}|{}|{}",
                p.issuer,
                p.subject.as_deref().unwrap_or_default(),
                p.client_id.as_deref().unwrap_or_default()
            ),
            _ => String::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job<P>>> {
        // A job's bookkeeping is never left half-changed, so a poisoned lock is still sound.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}
