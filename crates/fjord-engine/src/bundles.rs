//! Batch and transaction bundles.
//!
//! A transaction runs in one unit of work in the order R4 prescribes: deletes, then creates,
//! then updates and patches, then reads. Before anything is written every entry gets its
//! identity (a new id for a create, the match of a conditional one), and then every reference
//! in the bundle to an entry's `fullUrl` (`urn:uuid:`, `urn:oid:` or a URL) or to a condition
//! (`Patient?identifier=…`) is rewritten to `Type/id`. The first entry that fails rolls
//! everything back and the error names it. A batch runs each entry as a transaction of its own
//! and reports each outcome.

use std::collections::{BTreeSet, HashMap, HashSet};

use fjord_model::{resource_type, Format, ParseLimits, Resource};
use fjord_search::{Scope, SearchQuery};
use fjord_store::{Expected, Op, StoredVersion};
use serde_json::Value;
use uuid::Uuid;

use crate::conditional::Condition;
use crate::integrity::Unit;
use crate::search::query_params;
use crate::{version_of_etag, Caller, Engine, EngineError, TenantLimits, Written};

/// Entries a bundle may have at most, unless configured otherwise.
pub const DEFAULT_MAX_BUNDLE_ENTRIES: usize = 10_000;

/// What one entry did.
#[derive(Debug)]
pub enum EntryOutcome {
    /// Created (`created`) or updated, or the existing match of a conditional create.
    Written(Written),
    /// A delete: the deleted version, or `None` when there was nothing to delete.
    Deleted(Option<Written>),
    /// A read.
    Read(StoredVersion),
    /// A search: its matches (one page, no links).
    Searched(Vec<StoredVersion>),
    /// A batch entry that failed.
    Failed(EngineError),
}

/// Whether a bundle is a batch or a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Batch,
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    // In the order a transaction processes them.
    Delete,
    Post,
    Put,
    Patch,
    Get,
}

/// What an entry's `request.url` names.
#[derive(Debug, Clone)]
enum Target {
    Type(&'static str),
    Instance(&'static str, String),
    Version(&'static str, String, i64),
    /// `Type?query`: a conditional update or delete, or a search.
    Query(&'static str, String),
}

/// One entry of a bundle, checked.
#[derive(Debug)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    target: Target,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
    resource: Option<Value>,
    /// The entry's condition (`ifNoneExist`, or the query of a conditional update or delete),
    /// prepared before the work begins.
    condition: Option<Condition>,
    /// The query of a search entry, prepared before the work begins.
    search: Option<SearchQuery>,
}

/// A conditional reference (`Organization?identifier=…`) of the bundle, prepared before the
/// work begins.
#[derive(Debug)]
struct ConditionalReference {
    reference: String,
    resource_type: &'static str,
    condition: Condition,
}

impl Engine {
    /// Parses a Bundle body (JSON or XML) into FHIR JSON, its envelope checked. In JSON each
    /// entry's resource is checked when its entry runs, as any resource written is: once, and
    /// failing that entry alone (a batch's other entries still run).
    pub fn parse_bundle(
        &self,
        body: &[u8],
        format: Format,
        limits: &ParseLimits,
    ) -> Result<Value, EngineError> {
        let parsed = match format {
            Format::Json => serde_json::from_slice::<Value>(body).ok(),
            Format::Xml => None,
        };
        // XML, or JSON that does not parse: the model converts it, or says what is wrong where.
        let Some(mut bundle) = parsed else {
            return self
                .checked_bundle(body, format, limits)
                .map(|b| b.to_value());
        };
        let entries = bundle.get_mut("entry").and_then(Value::as_array_mut);
        let resources: Vec<Option<Value>> = entries
            .map(|entries| {
                entries
                    .iter_mut()
                    .map(|e| e.as_object_mut().and_then(|e| e.remove("resource")))
                    .collect()
            })
            .unwrap_or_default();
        let envelope =
            serde_json::to_vec(&bundle).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.checked_bundle(&envelope, format, limits)?;
        if let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) {
            for (entry, resource) in entries.iter_mut().zip(resources) {
                if let (Some(entry), Some(resource)) = (entry.as_object_mut(), resource) {
                    entry.insert("resource".to_owned(), resource);
                }
            }
        }
        Ok(bundle)
    }

    /// A Bundle parsed by the model, strictly.
    fn checked_bundle(
        &self,
        body: &[u8],
        format: Format,
        limits: &ParseLimits,
    ) -> Result<Resource, EngineError> {
        let bundle = Resource::parse(body, format, limits).map_err(EngineError::Invalid)?;
        if bundle.resource_type() != "Bundle" {
            return Err(EngineError::BadRequest(format!(
                "the base takes a Bundle, not a {}",
                bundle.resource_type()
            )));
        }
        Ok(bundle)
    }

    /// Runs a `batch` or `transaction` Bundle (JSON, as `parse_bundle` returns it).
    /// A transaction answers every entry or fails as a whole with the error of the first entry
    /// that failed (`EngineError::InEntry`); a batch answers every entry.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id))]
    pub async fn bundle(
        &self,
        caller: &Caller,
        mut bundle: Value,
    ) -> Result<(BundleKind, Vec<EntryOutcome>), EngineError> {
        let kind = match bundle["type"].as_str() {
            Some("transaction") => BundleKind::Transaction,
            Some("batch") => BundleKind::Batch,
            other => {
                return Err(EngineError::BadRequest(format!(
                    "a Bundle posted to the base must be a batch or a transaction, not {}",
                    other.unwrap_or("untyped")
                )))
            }
        };
        let raw = match bundle.get_mut("entry").map(Value::take) {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        let max_entries = TenantLimits::tighter(
            self.max_bundle_entries,
            caller.tenant.settings.limits.max_bundle_entries,
        );
        if raw.len() > max_entries {
            return Err(EngineError::TooLarge(format!(
                "the bundle has {} entries; at most {max_entries} are accepted",
                raw.len(),
            )));
        }
        let count = raw.len();
        let entries = raw
            .into_iter()
            .enumerate()
            .map(|(index, entry)| parse_entry(index, entry));
        match kind {
            BundleKind::Transaction => {
                let entries = entries
                    .enumerate()
                    .map(|(index, entry)| entry.map_err(|e| in_entry(index, e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let (entries, references) = self.prepare_entries(caller, entries).await?;
                let mut work = self.begin(caller).await?;
                let result = match self
                    .transaction_in(&mut work, caller, entries, references)
                    .await
                {
                    // Checked here rather than by `finish`, to name the entry that broke it.
                    Ok(outcomes) => match self.check_integrity(caller, &mut work).await {
                        Ok(()) => Ok(outcomes),
                        Err(error) => Err(blame(error, &outcomes)),
                    },
                    Err(error) => Err(error),
                };
                Ok((kind, self.finish(caller, work, result).await?))
            }
            BundleKind::Batch => {
                let mut outcomes = Vec::with_capacity(count);
                for entry in entries {
                    let outcome = match entry {
                        Ok(entry) => self.batch_entry(caller, entry).await,
                        Err(e) => Err(e),
                    };
                    outcomes.push(outcome.unwrap_or_else(EntryOutcome::Failed));
                }
                Ok((kind, outcomes))
            }
        }
    }

    /// One batch entry, in a unit of work of its own.
    async fn batch_entry(
        &self,
        caller: &Caller,
        entry: Entry,
    ) -> Result<EntryOutcome, EngineError> {
        let outcomes = async {
            let (entries, references) = self.prepare_entries(caller, vec![entry]).await?;
            let mut work = self.begin(caller).await?;
            let result = self
                .transaction_in(&mut work, caller, entries, references)
                .await;
            self.finish(caller, work, result).await
        };
        let mut outcomes = outcomes.await.map_err(|e| match e {
            EngineError::InEntry(_, inner) => *inner,
            other => other,
        })?;
        Ok(outcomes.pop().expect("one outcome per entry"))
    }

    /// The entries of a transaction in `work`; outcomes in the order of the entries.
    async fn transaction_in(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        mut entries: Vec<Entry>,
        references: Vec<ConditionalReference>,
    ) -> Result<Vec<EntryOutcome>, EngineError> {
        // By entry index: a batch runs its entries one at a time, each with its own index.
        let mut outcomes: HashMap<usize, EntryOutcome> = HashMap::new();
        let order: Vec<usize> = entries.iter().map(|e| e.index).collect();
        entries.sort_by_key(|e| (e.method, e.index));
        let mut full_urls = HashSet::new();
        for entry in &entries {
            if let Some(url) = &entry.full_url {
                if !full_urls.insert(url.clone()) {
                    return Err(in_entry(
                        entry.index,
                        EngineError::BadRequest(format!("the fullUrl {url} appears twice")),
                    ));
                }
            }
        }

        // Deletes first: what the conditions of later entries find is after them.
        for entry in entries.iter().filter(|e| e.method == Method::Delete) {
            let outcome = self
                .delete_entry(work, caller, entry)
                .await
                .map_err(|e| in_entry(entry.index, e))?;
            outcomes.insert(entry.index, outcome);
        }

        // Identities: the id each create and update will have, and the resources conditional
        // creates found instead.
        let mut local: HashMap<String, String> = HashMap::new();
        let mut ids: HashMap<usize, String> = HashMap::new();
        for entry in entries
            .iter()
            .filter(|e| matches!(e.method, Method::Post | Method::Put))
        {
            let (resource_type, id) = self
                .identity(work, entry, &mut outcomes)
                .await
                .map_err(|e| in_entry(entry.index, e))?;
            if let Some(url) = &entry.full_url {
                local.insert(url.clone(), format!("{resource_type}/{id}"));
            }
            ids.insert(entry.index, id);
        }

        // Conditional references, each searched once.
        for reference in references {
            let resolved = resolve(work, &reference)
                .await
                .map_err(|e| in_entry(referrer(&entries, &reference.reference), e))?;
            local.insert(reference.reference, resolved);
        }

        // Creates, then updates and patches, each with its references rewritten.
        for entry in entries
            .iter_mut()
            .filter(|e| matches!(e.method, Method::Post | Method::Put | Method::Patch))
        {
            if outcomes.contains_key(&entry.index) {
                continue; // a conditional create that found its match
            }
            let index = entry.index;
            let outcome = match entry.method {
                Method::Patch => self.patch_entry(work, caller, entry, &local).await,
                _ => {
                    let id = ids
                        .remove(&index)
                        .expect("every create and update has an id");
                    self.write_entry(work, caller, entry, &id, &local).await
                }
            };
            let outcome = outcome.map_err(|e| in_entry(index, e))?;
            outcomes.insert(index, EntryOutcome::Written(outcome));
        }

        for entry in entries.iter().filter(|e| e.method == Method::Get) {
            let outcome = self
                .read_entry(work, caller, entry)
                .await
                .map_err(|e| in_entry(entry.index, e))?;
            outcomes.insert(entry.index, outcome);
        }
        Ok(order
            .iter()
            .map(|index| outcomes.remove(index).expect("every entry has an outcome"))
            .collect())
    }

    async fn delete_entry(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        entry: &Entry,
    ) -> Result<EntryOutcome, EngineError> {
        match &entry.target {
            Target::Instance(resource_type, id) => Ok(EntryOutcome::Deleted(
                self.delete_in(work, caller, resource_type, id, entry.if_match)
                    .await?,
            )),
            Target::Query(resource_type, _) => {
                let condition = entry.condition.as_ref().expect("prepared");
                let mut deleted = self
                    .conditional_delete_in(work, caller, resource_type, condition, entry.if_match)
                    .await?;
                // Several deleted: no one location to answer with.
                let one = if deleted.len() == 1 {
                    deleted.pop()
                } else {
                    None
                };
                Ok(EntryOutcome::Deleted(one))
            }
            _ => Err(EngineError::BadRequest(
                "DELETE takes Type/id or Type?criteria".into(),
            )),
        }
    }

    /// The type and id a create or update entry writes; a conditional create that finds its
    /// match gets its outcome here.
    async fn identity(
        &self,
        work: &mut Unit<'_>,
        entry: &Entry,
        outcomes: &mut HashMap<usize, EntryOutcome>,
    ) -> Result<(&'static str, String), EngineError> {
        let body_id = entry.resource.as_ref().and_then(|r| r["id"].as_str());
        match (&entry.method, &entry.target) {
            (Method::Post, Target::Type(resource_type)) => {
                if let Some(condition) = &entry.condition {
                    let found = self.create_match(work, condition).await?;
                    if let Some(existing) = found {
                        let id = existing.id.clone();
                        outcomes.insert(entry.index, EntryOutcome::Written(existing));
                        return Ok((resource_type, id));
                    }
                }
                Ok((resource_type, Uuid::new_v4().to_string()))
            }
            (Method::Put, Target::Instance(resource_type, id)) => {
                if body_id.is_some_and(|b| b != id) {
                    return Err(EngineError::BadRequest(format!(
                        "the resource's id '{}' differs from the URL's '{id}'",
                        body_id.unwrap_or_default()
                    )));
                }
                Ok((resource_type, id.clone()))
            }
            (Method::Put, Target::Query(resource_type, _)) => {
                let condition = entry.condition.as_ref().expect("prepared");
                let id = self.update_target(work, condition, body_id).await?;
                Ok((resource_type, id))
            }
            (Method::Post, _) => Err(EngineError::BadRequest(
                "POST takes the URL of a type".into(),
            )),
            _ => Err(EngineError::BadRequest(
                "PUT takes Type/id or Type?criteria".into(),
            )),
        }
    }

    /// Prepares the queries of the entries and of the bundle's conditional references, so
    /// that the work does not wait for them (they may wait for the text index).
    async fn prepare_entries(
        &self,
        caller: &Caller,
        mut entries: Vec<Entry>,
    ) -> Result<(Vec<Entry>, Vec<ConditionalReference>), EngineError> {
        for entry in &mut entries {
            let (condition, search) = self
                .entry_queries(caller, entry)
                .await
                .map_err(|e| in_entry(entry.index, e))?;
            entry.condition = condition;
            entry.search = search;
        }
        let mut texts = BTreeSet::new();
        for resource in entries.iter().filter_map(|e| e.resource.as_ref()) {
            collect_conditions(resource, &mut texts);
        }
        let mut references = Vec::with_capacity(texts.len());
        for reference in texts {
            let prepared = async {
                let (type_name, text) = reference.split_once('?').expect("collected with a '?'");
                let resource_type = self.resource_type(type_name)?;
                let condition = self.condition(caller, resource_type, text).await?;
                Ok((resource_type, condition))
            };
            let (resource_type, condition) = prepared
                .await
                .map_err(|e| in_entry(referrer(&entries, &reference), e))?;
            references.push(ConditionalReference {
                reference,
                resource_type,
                condition,
            });
        }
        Ok((entries, references))
    }

    /// The condition and the search query an entry has, if any.
    async fn entry_queries(
        &self,
        caller: &Caller,
        entry: &Entry,
    ) -> Result<(Option<Condition>, Option<SearchQuery>), EngineError> {
        match (entry.method, &entry.target) {
            (Method::Post, Target::Type(resource_type)) => match &entry.if_none_exist {
                Some(text) => Ok((
                    Some(self.condition(caller, resource_type, text).await?),
                    None,
                )),
                None => Ok((None, None)),
            },
            (Method::Put | Method::Patch | Method::Delete, Target::Query(resource_type, text)) => {
                Ok((
                    Some(self.condition(caller, resource_type, text).await?),
                    None,
                ))
            }
            (Method::Get, Target::Type(resource_type) | Target::Query(resource_type, _)) => {
                let text = match &entry.target {
                    Target::Query(_, text) => text.as_str(),
                    _ => "",
                };
                let scope = Scope::Type(resource_type);
                let (_, query) = self
                    .prepare_query(caller, scope, &query_params(text), false)
                    .await?;
                Ok((None, Some(query)))
            }
            _ => Ok((None, None)),
        }
    }

    async fn write_entry(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        entry: &mut Entry,
        id: &str,
        local: &HashMap<String, String>,
    ) -> Result<Written, EngineError> {
        let (Target::Type(resource_type)
        | Target::Instance(resource_type, _)
        | Target::Query(resource_type, _)) = entry.target
        else {
            unreachable!("identity() accepted only these targets");
        };
        let Some(mut value) = entry.resource.take() else {
            return Err(EngineError::BadRequest(
                "a POST or PUT entry needs a resource".into(),
            ));
        };
        rewrite_references(&mut value, local)?;
        if value["resourceType"].as_str() != Some(resource_type) {
            return Err(EngineError::BadRequest(format!(
                "the entry's resource is not a {resource_type}, as its URL says"
            )));
        }
        value["id"] = Value::String(id.to_owned());
        let body = serde_json::to_vec(&value).map_err(|e| EngineError::Internal(e.to_string()))?;
        let resource = self.parse_for(caller, resource_type, &body, Format::Json)?;
        match entry.method {
            Method::Post => {
                self.write(
                    caller,
                    Some(work),
                    resource_type,
                    id,
                    Some(resource),
                    Expected::Absent,
                )
                .await
            }
            _ => {
                self.update_in(work, caller, id, resource, entry.if_match)
                    .await
            }
        }
    }

    async fn patch_entry(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        entry: &mut Entry,
        local: &HashMap<String, String>,
    ) -> Result<Written, EngineError> {
        let Some(mut body) = entry.resource.take() else {
            return Err(EngineError::BadRequest(
                "a PATCH entry needs a resource: Parameters or a Binary JSON Patch".into(),
            ));
        };
        rewrite_references(&mut body, local)?;
        let patch = self.patch_of_entry(body, &self.parse_limits(caller))?;
        let (resource_type, id) = match &entry.target {
            Target::Instance(resource_type, id) => (*resource_type, id.clone()),
            Target::Query(resource_type, _) => {
                let condition = entry.condition.as_ref().expect("prepared");
                let id = self.patch_target(work, resource_type, condition).await?;
                (*resource_type, id)
            }
            _ => {
                return Err(EngineError::BadRequest(
                    "PATCH takes Type/id or Type?criteria".into(),
                ))
            }
        };
        self.patch_in(work, caller, resource_type, &id, &patch, entry.if_match)
            .await
    }
}

impl Engine {
    /// A read or search entry, as `work` sees the bundle's writes. A search was confined to
    /// the caller's grant when it was prepared; a read is judged by the version it finds.
    async fn read_entry(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        entry: &Entry,
    ) -> Result<EntryOutcome, EngineError> {
        let (version, name) = match &entry.target {
            Target::Instance(resource_type, id) => (
                work.read_latest(resource_type, id).await?,
                format!("{resource_type}/{id}"),
            ),
            Target::Version(resource_type, id, version) => (
                work.read_version(resource_type, id, *version).await?,
                format!("{resource_type}/{id}/_history/{version}"),
            ),
            Target::Type(_) | Target::Query(..) => {
                let query = entry.search.as_ref().expect("prepared");
                return Ok(EntryOutcome::Searched(work.find(query, query.count).await?));
            }
        };
        match version {
            None => Err(EngineError::NotFound(name)),
            Some(v) if !self.version_readable(caller, &v).await? => {
                Err(EngineError::NotFound(name))
            }
            Some(v) if v.op == Op::Delete => Err(EngineError::Gone(name)),
            Some(v) => Ok(EntryOutcome::Read(v)),
        }
    }
}

/// An integrity error of a transaction, as the error of the entry that wrote the referrer (or
/// deleted the resource still referred to).
fn blame(error: EngineError, outcomes: &[EntryOutcome]) -> EngineError {
    let culprit = match &error {
        EngineError::DanglingReference { referrer, .. } => referrer,
        EngineError::StillReferenced { resource, .. } => resource,
        _ => return error,
    };
    let index = outcomes.iter().position(|outcome| match outcome {
        EntryOutcome::Written(w) | EntryOutcome::Deleted(Some(w)) => {
            culprit.split_once('/') == Some((w.resource_type, w.id.as_str()))
        }
        _ => false,
    });
    match index {
        Some(index) => in_entry(index, error),
        None => error,
    }
}

fn in_entry(index: usize, error: EngineError) -> EngineError {
    EngineError::InEntry(index, Box::new(error))
}

fn parse_entry(index: usize, mut entry: Value) -> Result<Entry, EngineError> {
    let request = &entry["request"];
    let method = match request["method"].as_str() {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some("PATCH") => Method::Patch,
        Some(other) => {
            return Err(EngineError::NotSupported(format!(
                "request.method {other} is not supported in bundles"
            )))
        }
        None => {
            return Err(EngineError::BadRequest(
                "the entry has no request.method".into(),
            ))
        }
    };
    let url = request["url"]
        .as_str()
        .ok_or_else(|| EngineError::BadRequest("the entry has no request.url".into()))?;
    let if_match = match request["ifMatch"].as_str() {
        None => None,
        Some(tag) => Some(version_of_etag(tag).ok_or_else(|| {
            EngineError::BadRequest(format!("ifMatch '{tag}' does not name a version"))
        })?),
    };
    Ok(Entry {
        index,
        full_url: entry["fullUrl"].as_str().map(str::to_owned),
        method,
        target: parse_target(url)?,
        if_none_exist: request["ifNoneExist"]
            .as_str()
            .map(|c| c.split_once('?').map_or(c, |(_, q)| q).to_owned()),
        if_match,
        resource: entry.get_mut("resource").map(Value::take),
        condition: None,
        search: None,
    })
}

/// `Type`, `Type/id`, `Type/id/_history/vid` or `Type?query`, relative to the base (an absolute
/// URL is taken from its first resource type on).
fn parse_target(url: &str) -> Result<Target, EngineError> {
    let unknown = || EngineError::BadRequest(format!("request.url '{url}' names no resource type"));
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segments
        .iter()
        .position(|s| resource_type(s).is_some())
        .ok_or_else(unknown)?;
    let resource_type = resource_type(segments[start]).ok_or_else(unknown)?;
    match (&segments[start + 1..], query) {
        ([], None) => Ok(Target::Type(resource_type)),
        ([], Some(query)) => Ok(Target::Query(resource_type, query.to_owned())),
        ([id], None) => Ok(Target::Instance(resource_type, (*id).to_owned())),
        ([id, "_history", version], None) => Ok(Target::Version(
            resource_type,
            (*id).to_owned(),
            version
                .parse()
                .map_err(|_| EngineError::BadRequest(format!("'{version}' is not a version")))?,
        )),
        _ => Err(EngineError::NotSupported(format!(
            "request.url '{url}' is not an interaction bundles support"
        ))),
    }
}

/// Every `reference` of `value` that is a condition (`Type?query`).
fn collect_conditions(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match child {
                    Value::String(reference) if key == "reference" && reference.contains('?') => {
                        found.insert(reference.clone());
                    }
                    _ => collect_conditions(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_conditions(i, found)),
        _ => {}
    }
}

/// The index of the first entry whose resource has `reference`, for the error it caused.
fn referrer(entries: &[Entry], reference: &str) -> usize {
    entries
        .iter()
        .find(|entry| {
            entry.resource.as_ref().is_some_and(|resource| {
                let mut found = BTreeSet::new();
                collect_conditions(resource, &mut found);
                found.contains(reference)
            })
        })
        .map_or(0, |entry| entry.index)
}

/// `Type/id` of the one resource a conditional reference names.
async fn resolve(
    work: &mut Unit<'_>,
    reference: &ConditionalReference,
) -> Result<String, EngineError> {
    let name = &reference.reference;
    match work.find(&reference.condition.query, 2).await?.as_slice() {
        [one] => Ok(format!("{}/{}", reference.resource_type, one.id)),
        [] => Err(EngineError::PreconditionFailed(format!(
            "the conditional reference {name} matches no resource"
        ))),
        _ => Err(EngineError::PreconditionFailed(format!(
            "the conditional reference {name} matches more than one resource"
        ))),
    }
}

/// Rewrites every `reference` to an entry's `fullUrl` or to a condition into `Type/id`. A
/// `urn:uuid:`/`urn:oid:` reference that no entry has as its `fullUrl` is an error: it could
/// never be resolved later.
fn rewrite_references(
    value: &mut Value,
    local: &HashMap<String, String>,
) -> Result<(), EngineError> {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match child {
                    Value::String(reference) if key == "reference" => {
                        if let Some(resolved) = local.get(reference.as_str()) {
                            *reference = resolved.clone();
                        } else if reference.starts_with("urn:uuid:")
                            || reference.starts_with("urn:oid:")
                        {
                            return Err(EngineError::BadRequest(format!(
                                "the reference {reference} names no entry of the bundle"
                            )));
                        }
                    }
                    _ => rewrite_references(child, local)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|item| rewrite_references(item, local)),
        _ => Ok(()),
    }
}
