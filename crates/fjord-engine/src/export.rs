//! Bulk Data `$export` (FHIR Bulk Data Access): every current resource the caller may search,
//! of the system, of all patients' compartments or of a Group's members', written as one NDJSON
//! file per type by a job in the background while the client polls.
//!
//! A job reads one snapshot of the tenant ([`fjord_store::Snapshot`]): its files agree with each
//! other as of the manifest's transaction time, and writers are never blocked. The request is
//! checked and turned into one query per type before the client gets its 202, so a bad
//! parameter is a 400 at kick-off rather than a failed job. Jobs and their files are seen only
//! by the client that started them, and live in the process: a restart forgets them (the client
//! starts again; the server clears the files an earlier process left).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use fjord_search::{Filter, Registry, Scope};
use fjord_smart::AuthError;
use time::OffsetDateTime;

use crate::audit::{Audited, AUDIT_EVENT, EXPORT};
use crate::jobs::{Cancelled, Job};
use crate::{Caller, Engine, EngineError, JobState};
/// Resources written between two updates of a job's progress (and checks for cancellation).
const PROGRESS_EVERY: u64 = 10_000;

/// Whose data an export covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLevel {
    /// `[base]/$export`: every type.
    System,
    /// `[base]/Patient/$export`: the compartments of all patients.
    Patient,
    /// `[base]/Group/[id]/$export`: the compartments of the group's patients.
    Group(String),
}

/// A kick-off request.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub level: ExportLevel,
    /// `_type`; empty for every type the level covers (the audit trail only when named).
    pub types: Vec<String>,
    /// `_since`: only resources last updated at or after this FHIR instant.
    pub since: Option<String>,
    /// `_typeFilter`, each `Type?query`; a type's filters are alternatives.
    pub type_filters: Vec<String>,
    /// The kick-off request as the client sent it, for the manifest and the audit trail.
    pub request: String,
}

/// One file of a finished export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOutput {
    pub resource_type: String,
    /// The file's name within the job.
    pub file: String,
    pub count: u64,
}

/// An `$export` job's progress, and its manifest once it is done.
#[derive(Debug, Clone)]
pub struct ExportProgress {
    /// The kick-off request.
    pub request: String,
    /// The snapshot's time, once the job has taken it.
    pub transaction_time: Option<OffsetDateTime>,
    /// Types to export, and how many are done.
    pub types: usize,
    pub types_done: usize,
    /// Resources written so far.
    pub resources: u64,
    /// The files of the types done that had resources.
    pub outputs: Vec<ExportOutput>,
    /// Whether the files need the client's token (false only while authentication is off).
    pub requires_access_token: bool,
}

/// An `$export` job.
pub type ExportJob = Job<ExportProgress>;

/// One type's query: the current resources of `resource_type` on which every filter holds.
#[derive(Debug)]
struct Planned {
    resource_type: String,
    filters: Vec<Filter>,
}

impl Engine {
    /// Checks an export request and starts it on this runtime; errors are the request's
    /// (unknown types, bad filters, a Group the caller cannot read, no type it may search).
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, level = ?request.level))]
    pub async fn start_export(
        &self,
        caller: &Caller,
        request: ExportRequest,
    ) -> Result<ExportJob, EngineError> {
        let plan = self.plan_export(caller, &request).await?;
        let progress = ExportProgress {
            request: request.request,
            transaction_time: None,
            types: plan.len(),
            types_done: 0,
            resources: 0,
            outputs: Vec::new(),
            requires_access_token: caller.access.principal().is_some(),
        };
        let (job, expired) = self.shared.exports.start(caller, progress);
        // A thread of its own: the job streams for minutes and writes files with blocking
        // calls, neither of which an HTTP worker's runtime should carry.
        let engine = self.for_runtime();
        let (caller, id, request) = (caller.clone(), job.id.clone(), job.progress.request.clone());
        std::thread::Builder::new()
            .name(format!("export-{id}"))
            .spawn(move || {
                for id in expired {
                    engine.remove_export_files(&id);
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let result = match runtime {
                    Ok(runtime) => {
                        runtime.block_on(engine.run_export(&caller, &id, &request, plan))
                    }
                    Err(e) => Err(EngineError::Internal(format!("an export's runtime: {e}"))),
                };
                let state = JobState::ended("export", &id, result);
                let completed = state == JobState::Completed;
                let forgotten = engine.shared.exports.finish(&id, state);
                if forgotten || !completed {
                    engine.remove_export_files(&id);
                }
            })
            .map_err(|e| EngineError::Internal(format!("starting an export: {e}")))?;
        Ok(job)
    }

    /// A job the caller started, if it exists (and was not cancelled).
    pub fn export_job(&self, caller: &Caller, id: &str) -> Option<ExportJob> {
        self.shared.exports.get(caller, id)
    }

    /// Cancels a running job the caller started (it stops within [`PROGRESS_EVERY`]
    /// resources) or forgets a finished one; either way its files are deleted. False when there
    /// is no such job.
    pub fn cancel_export(&self, caller: &Caller, id: &str) -> bool {
        match self.shared.exports.cancel(caller, id) {
            None => false,
            // The job's thread removes them when it stops.
            Some(Cancelled::Stopping) => true,
            Some(Cancelled::Forgotten) => {
                let dir = self.export_dir.join(id);
                // Off the caller's runtime: a large export's directory takes a while.
                std::thread::spawn(move || remove_dir(&dir));
                true
            }
        }
    }

    /// The path of a file of a finished job the caller started.
    pub fn export_file(&self, caller: &Caller, id: &str, file: &str) -> Option<PathBuf> {
        let found = self.shared.exports.with(caller, id, |job| {
            job.state == JobState::Completed && job.progress.outputs.iter().any(|o| o.file == file)
        });
        found
            .unwrap_or(false)
            .then(|| self.export_dir.join(id).join(file))
    }

    fn remove_export_files(&self, id: &str) {
        remove_dir(&self.export_dir.join(id));
    }

    /// The request as one query per type, with the caller's grant in it.
    async fn plan_export(
        &self,
        caller: &Caller,
        request: &ExportRequest,
    ) -> Result<Vec<Planned>, EngineError> {
        let registry = self.registry(caller).await?;
        let (mut covered, owners) = match &request.level {
            ExportLevel::System => (registry.resource_types().map(str::to_owned).collect(), None),
            ExportLevel::Patient => (
                registry.compartment_types("Patient"),
                Some(Filter::All(Vec::new())),
            ),
            ExportLevel::Group(id) => {
                let ids = self.group_patients(caller, id).await?;
                let members = Filter::Among {
                    resource_type: "Patient".into(),
                    ids,
                };
                (registry.compartment_types("Patient"), Some(members))
            }
        };
        let named = !request.types.is_empty();
        if named {
            for t in &request.types {
                self.resource_type(t).map_err(|_| {
                    EngineError::BadRequest(format!(
                        "_type names {t}, which is not a resource type"
                    ))
                })?;
                if !covered.contains(t) {
                    return Err(EngineError::BadRequest(format!(
                        "_type names {t}, which is never in a patient's compartment"
                    )));
                }
            }
            covered.retain(|t| request.types.contains(t));
        } else {
            covered.retain(|t| t != AUDIT_EVENT);
        }
        covered.sort();

        let mut filters_of: HashMap<String, Vec<Vec<(String, String)>>> = HashMap::new();
        for type_filter in &request.type_filters {
            let (t, query) = type_filter.split_once('?').ok_or_else(|| {
                EngineError::BadRequest(format!(
                    "_typeFilter '{type_filter}' is not of the form Type?query"
                ))
            })?;
            self.resource_type(t).map_err(|_| {
                EngineError::BadRequest(format!(
                    "_typeFilter names {t}, which is not a resource type"
                ))
            })?;
            if !covered.iter().any(|c| c == t) {
                return Err(EngineError::BadRequest(format!(
                    "_typeFilter names {t}, which this export does not cover"
                )));
            }
            let params = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            filters_of.entry(t.to_owned()).or_default().push(params);
        }

        let mut plan = Vec::new();
        let mut denied = None;
        for resource_type in covered {
            let queries = filters_of
                .remove(&resource_type)
                .unwrap_or_else(|| vec![Vec::new()]);
            match self
                .type_export(caller, &registry, &resource_type, queries, request, &owners)
                .await
            {
                Ok(planned) => plan.extend(planned),
                // Without `_type`, the types the caller may not search are left out.
                Err(EngineError::Auth(error)) if !named => denied = Some(error),
                Err(error) => return Err(error),
            }
        }
        if plan.is_empty() {
            return Err(denied
                .unwrap_or_else(|| AuthError::InsufficientScope("no type to export".into()))
                .into());
        }
        Ok(plan)
    }

    /// One type's query: its `_typeFilter` alternatives and `_since`, each confined to the
    /// caller's grant, and the compartments of `owners` when there are some. `None` when the
    /// type is never in them.
    async fn type_export(
        &self,
        caller: &Caller,
        registry: &Registry,
        resource_type: &str,
        queries: Vec<Vec<(String, String)>>,
        request: &ExportRequest,
        owners: &Option<Filter>,
    ) -> Result<Option<Planned>, EngineError> {
        let mut alternatives = Vec::with_capacity(queries.len());
        for mut params in queries {
            if let Some(since) = &request.since {
                params.push(("_lastUpdated".into(), format!("ge{since}")));
            }
            let (_, query) = self
                .prepare_query(caller, Scope::Type(resource_type), &params, true)
                .await?;
            alternatives.push(query.filters);
        }
        let mut filters = if alternatives.len() == 1 {
            alternatives.pop().unwrap_or_default()
        } else {
            vec![Filter::Any(
                alternatives.into_iter().map(Filter::All).collect(),
            )]
        };
        if let Some(owners) = owners {
            let Some(mut within) = registry.in_compartment_of_any("Patient", resource_type, owners)
            else {
                return Ok(None);
            };
            crate::authorize::confine_nested(caller, registry, &mut within);
            filters.push(within);
        }
        Ok(Some(Planned {
            resource_type: resource_type.to_owned(),
            filters,
        }))
    }

    /// The ids of a Group's active Patient members; the Group is read under the caller's grant.
    async fn group_patients(&self, caller: &Caller, id: &str) -> Result<Vec<String>, EngineError> {
        let group = self.read(caller, "Group", id).await?;
        let body: serde_json::Value =
            serde_json::from_str(group.body.as_deref().unwrap_or("{}"))
                .map_err(|e| EngineError::Internal(format!("Group/{id} as stored: {e}")))?;
        let members = body["member"].as_array().into_iter().flatten();
        Ok(members
            .filter(|m| m["inactive"] != true)
            .filter_map(|m| m["entity"]["reference"].as_str())
            .filter_map(|r| r.strip_prefix("Patient/"))
            .filter(|id| fjord_model::is_valid_id(id))
            .map(str::to_owned)
            .collect())
    }

    /// Writes each type's file from one snapshot, then records the export in the audit trail.
    async fn run_export(
        &self,
        caller: &Caller,
        id: &str,
        request: &str,
        plan: Vec<Planned>,
    ) -> Result<(), EngineError> {
        let dir = self.export_dir.join(id);
        std::fs::create_dir_all(&dir).map_err(|e| output_error(&dir, e))?;
        let mut snapshot = self.store.snapshot(caller.key).await?;
        let transaction_time = snapshot.transaction_time;
        let exports = &self.shared.exports;
        exports.update(id, |p| p.transaction_time = Some(transaction_time));
        let mut patients = BTreeSet::new();
        // Resources in the files of the types done.
        let mut done = 0;
        for planned in plan {
            if exports.cancelled(id) {
                return Ok(());
            }
            let file = format!("{}.ndjson", planned.resource_type);
            let path = dir.join(&file);
            let mut out = BufWriter::with_capacity(
                1 << 16,
                File::create(&path).map_err(|e| output_error(&path, e))?,
            );
            let is_patient = planned.resource_type == "Patient";
            let mut written = 0u64;
            let streamed = snapshot
                .each_current(
                    &planned.resource_type,
                    &planned.filters,
                    |resource_id, body| {
                        if is_patient {
                            patients.insert(format!("Patient/{resource_id}"));
                        }
                        out.write_all(body.as_bytes())?;
                        out.write_all(b"\n")?;
                        written += 1;
                        if written.is_multiple_of(PROGRESS_EVERY) {
                            // A large type shows progress and stops when cancelled.
                            exports.update(id, |p| p.resources = done + written);
                            if exports.cancelled(id) {
                                return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
                            }
                        }
                        Ok(())
                    },
                )
                .await?;
            let count = match streamed {
                Ok(count) => count,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(output_error(&path, e)),
            };
            out.flush().map_err(|e| output_error(&path, e))?;
            drop(out);
            let output = if count == 0 {
                std::fs::remove_file(&path).map_err(|e| output_error(&path, e))?;
                None
            } else {
                Some(ExportOutput {
                    resource_type: planned.resource_type,
                    file,
                    count,
                })
            };
            done += count;
            exports.update(id, |p| {
                p.types_done += 1;
                p.resources = done;
                p.outputs.extend(output);
            });
        }
        snapshot.finish().await?;
        self.audit_export(caller, request, patients).await;
        Ok(())
    }

    /// An export is a disclosure: DICOM Export events naming the request and the patients
    /// whose Patient resources it wrote (one event per patient).
    async fn audit_export(&self, caller: &Caller, request: &str, patients: BTreeSet<String>) {
        let mut audited = Audited::new(EXPORT);
        audited.query = Some(request.to_owned());
        audited.patients = patients;
        self.audit(caller, audited).await;
    }

    /// Where export jobs write their files (one directory per job).
    pub fn export_dir(&self) -> &Path {
        &self.export_dir
    }
}

/// Removes an export's directory, if it is there.
fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "could not remove an export's files: {e}");
        }
    }
}

fn output_error(path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Internal(format!("export file {}: {error}", path.display()))
}
