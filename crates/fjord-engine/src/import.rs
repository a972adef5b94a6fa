//! Bulk import: NDJSON lines (one resource each, any types, ids kept) stored in batches, each
//! batch one unit of work, indexed as it is written.
//!
//! Import is idempotent: a line whose resource is stored as it is (server-owned `meta` aside)
//! changes nothing, a changed one becomes a new version, a new one a first version. A line that
//! cannot be stored (not JSON, not a valid resource, no id, a `urn:uuid` reference, refused by
//! validation or the caller's grant) is reported with its number; the others are stored.
//! References are not checked: the targets of a data set's resources may come later in it, in
//! another file or another batch. A batch that lost a race with a concurrent writer is read and
//! written again.

use std::collections::{HashMap, HashSet};

use fjord_model::{for_each_object, Format, ParseLimits, Resource};
use fjord_store::{Expected, NewVersion, Op, StoredVersion};

use crate::audit::{patients_in, Audited, IMPORT};
use crate::interactions::{check_id, Prepared};
use crate::{Caller, Engine, EngineError};

/// Times a batch is read and written again after a concurrent writer got in its way.
const ATTEMPTS: usize = 4;

/// Lines prepared between two chances for other tasks of the thread to run.
const YIELD_EVERY: usize = 64;

/// One line of NDJSON and its number in its file (from 1).
#[derive(Debug, Clone)]
pub struct ImportLine {
    pub number: u64,
    pub text: Vec<u8>,
}

/// What an import did with its lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Stored as first versions.
    pub created: usize,
    /// Stored as new versions of resources that differed or were deleted.
    pub updated: usize,
    /// Already stored as they are.
    pub unchanged: usize,
    /// Lines left out, with why.
    pub failed: Vec<LineFailure>,
}

impl Imported {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: Imported) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.failed.extend(other.failed);
    }

    /// Lines read, stored or not.
    pub fn lines(&self) -> usize {
        self.created + self.updated + self.unchanged + self.failed.len()
    }
}

/// A line that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFailure {
    pub line: u64,
    /// `Type/id`, when the line got that far.
    pub resource: Option<String>,
    pub error: String,
}

/// A line parsed into a resource with its id.
struct Parsed {
    line: u64,
    resource_type: &'static str,
    id: String,
    resource: Resource,
}

impl Engine {
    /// Stores the resources of `lines` in the caller's tenant (see the module documentation).
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, lines = lines.len()))]
    pub async fn import(
        &self,
        caller: &Caller,
        lines: Vec<ImportLine>,
    ) -> Result<Imported, EngineError> {
        let mut imported = Imported::default();
        // A batch names each resource once: a repeated one waits for the next batch, so that it
        // is compared with what its earlier line stored.
        let mut batch: Vec<Parsed> = Vec::new();
        let mut named: HashSet<(&'static str, String)> = HashSet::new();
        let limits = self.parse_limits(caller);
        for line in lines {
            let parsed = match self.parse_line(&line, &limits) {
                Ok(parsed) => parsed,
                Err(failure) => {
                    imported.failed.push(failure);
                    continue;
                }
            };
            if !named.insert((parsed.resource_type, parsed.id.clone())) {
                imported.add(
                    self.import_batch(caller, std::mem::take(&mut batch))
                        .await?,
                );
                named.clear();
                named.insert((parsed.resource_type, parsed.id.clone()));
            }
            batch.push(parsed);
        }
        imported.add(self.import_batch(caller, batch).await?);
        imported.failed.sort_by_key(|f| f.line);
        Ok(imported)
    }

    fn parse_line(&self, line: &ImportLine, limits: &ParseLimits) -> Result<Parsed, LineFailure> {
        let fail = |resource: Option<String>, error: String| LineFailure {
            line: line.number,
            resource,
            error,
        };
        let resource = Resource::parse(&line.text, Format::Json, limits)
            .map_err(|e| fail(None, format!("invalid resource: {e}")))?;
        let resource_type = fjord_model::resource_type(resource.resource_type())
            .ok_or_else(|| fail(None, "unknown resource type".into()))?;
        let id = resource
            .id()
            .ok_or_else(|| fail(None, format!("a {resource_type} without an id")))?
            .to_owned();
        let name = || Some(format!("{resource_type}/{id}"));
        check_id(&id).map_err(|e| fail(name(), e.to_string()))?;
        if resource_type == "Subscription" {
            // Its grant is whoever creates it through the API.
            return Err(fail(
                name(),
                "Subscriptions are not imported: create them through the API".into(),
            ));
        }
        let violations = resource.invariant_violations();
        if !violations.is_empty() {
            let error = EngineError::Unprocessable(violations);
            return Err(fail(name(), error.to_string()));
        }
        // Only a line that mentions one is walked for its place.
        if line
            .text
            .windows(URN_UUID.len())
            .any(|w| w == URN_UUID.as_bytes())
        {
            if let Some(error) = temporary_reference(&resource.to_value(), resource_type) {
                return Err(fail(name(), error));
            }
        }
        Ok(Parsed {
            line: line.number,
            resource_type,
            id,
            resource,
        })
    }

    /// Stores one batch (each resource named once) in one unit of work.
    async fn import_batch(
        &self,
        caller: &Caller,
        batch: Vec<Parsed>,
    ) -> Result<Imported, EngineError> {
        if batch.is_empty() {
            return Ok(Imported::default());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_import_batch(caller, &batch).await {
                Err(EngineError::Store(fjord_store::StoreError::Conflict(_)))
                    if attempt < ATTEMPTS =>
                {
                    continue
                }
                result => return result,
            }
        }
    }

    async fn try_import_batch(
        &self,
        caller: &Caller,
        batch: &[Parsed],
    ) -> Result<Imported, EngineError> {
        let mut imported = Imported::default();
        let mut unit = self.begin(caller).await?;
        let names: Vec<(&str, &str)> = batch
            .iter()
            .map(|p| (p.resource_type, p.id.as_str()))
            .collect();
        let latest: HashMap<(String, String), StoredVersion> =
            match unit.read_latest_many(&names).await {
                Ok(found) => found
                    .into_iter()
                    .map(|v| ((v.resource_type.clone(), v.id.clone()), v))
                    .collect(),
                Err(error) => return self.finish(caller, unit, Err(error.into())).await,
            };
        let mut creates: Vec<Prepared> = Vec::new();
        let mut updates: Vec<Prepared> = Vec::new();
        for (index, parsed) in batch.iter().enumerate() {
            if index % YIELD_EVERY == YIELD_EVERY - 1 {
                // A server's `$import` shares its worker thread with requests.
                tokio::task::yield_now().await;
            }
            let stored = latest.get(&(parsed.resource_type.to_owned(), parsed.id.clone()));
            let expected = match stored {
                Some(stored) if stored.op != Op::Delete => {
                    if is_same(&parsed.resource, stored) {
                        imported.unchanged += 1;
                        continue;
                    }
                    Expected::Version(stored.version)
                }
                Some(stored) => Expected::Version(stored.version),
                None => Expected::Absent,
            };
            match self
                .prepare(
                    caller,
                    parsed.resource_type,
                    &parsed.id,
                    Some(parsed.resource.clone()),
                    expected,
                )
                .await
            {
                Ok(prepared) if expected == Expected::Absent => creates.push(prepared),
                Ok(prepared) => updates.push(prepared),
                Err(error) => imported.failed.push(LineFailure {
                    line: parsed.line,
                    resource: Some(format!("{}/{}", parsed.resource_type, parsed.id)),
                    error: error.to_string(),
                }),
            }
        }
        let result = self
            .write_imported(caller, &mut unit, &creates, &updates)
            .await;
        imported.created = creates.len();
        imported.updated = updates.len();
        self.finish(caller, unit, result.map(|()| imported)).await
    }

    /// Writes a batch's new versions, and the import's AuditEvent, in `unit`.
    async fn write_imported(
        &self,
        caller: &Caller,
        unit: &mut crate::integrity::Unit<'_>,
        creates: &[Prepared],
        updates: &[Prepared],
    ) -> Result<(), EngineError> {
        let versions: Vec<NewVersion<'_>> = creates.iter().map(Prepared::new_version).collect();
        unit.create_many(&versions).await?;
        for prepared in updates {
            if unit.write_version(&prepared.new_version()).await?
                != fjord_store::WriteOutcome::Written
            {
                return Err(fjord_store::StoreError::Conflict(format!(
                    "{}/{} changed during the import",
                    prepared.resource_type, prepared.id
                ))
                .into());
            }
        }
        if creates.is_empty() && updates.is_empty() {
            return Ok(());
        }
        let registry = self.registry(caller).await?;
        let mut audited = Audited::new(IMPORT);
        for prepared in creates.iter().chain(updates) {
            unit.imported(prepared.resource_type);
            let patients = prepared
                .value
                .as_ref()
                .map(|value| patients_in(&registry, prepared.resource_type, &prepared.id, value));
            audited.named_version(
                prepared.resource_type,
                &prepared.id,
                prepared.version,
                patients.into_iter().flatten(),
            );
        }
        unit.audited = Some(audited);
        Ok(())
    }
}

const URN_UUID: &str = "urn:uuid:";

/// Why a resource cannot be imported for a `urn:uuid` reference in it, if it has one.
fn temporary_reference(value: &serde_json::Value, resource_type: &str) -> Option<String> {
    let mut temporary = None;
    for_each_object(value, resource_type, &mut |element, path| {
        if let Some(reference) = element["reference"].as_str() {
            if reference.starts_with(URN_UUID) && temporary.is_none() {
                temporary = Some(format!(
                    "{path} refers to {reference}: bulk data has no urn:uuid references"
                ));
            }
        }
    });
    temporary
}

/// Whether `stored` is `resource` as Fjord would store it (server-owned `meta` aside).
pub(crate) fn is_same(resource: &Resource, stored: &StoredVersion) -> bool {
    let Some(stored) = stored
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
    else {
        return false;
    };
    without_server_meta(resource.to_value()) == without_server_meta(stored)
}

pub(crate) fn without_server_meta(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = value
        .get_mut("meta")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            value.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    value
}
