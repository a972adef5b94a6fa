//! Batch and transaction bundles.
//!
//! A transaction runs in one unit of work in the order R4 prescribes: deletes, then creates,
//! then updates, then reads. Before anything is written every entry gets its identity (a new id
//! for a create, the match of a conditional one), and then every reference in the bundle to an
//! entry's `fullUrl` (`urn:uuid:`, `urn:oid:` or a URL) or to a condition (`Patient?identifier=…`)
//! is rewritten to `Type/id`. The first entry that fails rolls everything back and the error
//! names it. A batch runs each entry as a transaction of its own and reports each outcome.

use std::collections::{BTreeSet, HashMap, HashSet};

use fjord_model::{resource_type, Format, Resource};
use fjord_search::Scope;
use fjord_store::{Expected, Op, StoredVersion, Tenant, Work};
use serde_json::Value;
use uuid::Uuid;

use crate::conditional::{existing_version, finish, several, Deleted};
use crate::{Engine, EngineError, Written};

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
}

impl Engine {
    /// Parses and checks a Bundle body (JSON or XML) as FHIR JSON.
    pub fn parse_bundle(&self, body: &[u8], format: Format) -> Result<Value, EngineError> {
        let bundle = Resource::parse(body, format, &self.limits).map_err(EngineError::Invalid)?;
        if bundle.resource_type() != "Bundle" {
            return Err(EngineError::BadRequest(format!(
                "the base takes a Bundle, not a {}",
                bundle.resource_type()
            )));
        }
        Ok(bundle.to_value())
    }

    /// Runs a `batch` or `transaction` Bundle (JSON, as parsed and checked by the model).
    /// A transaction answers every entry or fails as a whole with the error of the first entry
    /// that failed (`EngineError::InEntry`); a batch answers every entry.
    #[tracing::instrument(skip_all, fields(tenant = %tenant.id))]
    pub async fn bundle(
        &self,
        tenant: &Tenant,
        bundle: &Value,
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
        let raw = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if raw.len() > self.max_bundle_entries {
            return Err(EngineError::TooLarge(format!(
                "the bundle has {} entries; at most {} are accepted",
                raw.len(),
                self.max_bundle_entries
            )));
        }
        let mut entries = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            match parse_entry(index, entry) {
                Ok(entry) => entries.push(Ok(entry)),
                Err(e) if kind == BundleKind::Batch => entries.push(Err(e)),
                Err(e) => return Err(in_entry(index, e)),
            }
        }
        match kind {
            BundleKind::Transaction => {
                let entries = entries.into_iter().map(|e| e.expect("checked")).collect();
                let mut work = self.store.begin(tenant.key).await?;
                let result = self.transaction_in(&mut work, tenant, entries).await;
                Ok((kind, finish(work, result).await?))
            }
            BundleKind::Batch => {
                let mut outcomes = Vec::with_capacity(entries.len());
                for entry in entries {
                    let outcome = match entry {
                        Ok(entry) => self.batch_entry(tenant, entry).await,
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
        tenant: &Tenant,
        entry: Entry,
    ) -> Result<EntryOutcome, EngineError> {
        let mut work = self.store.begin(tenant.key).await?;
        let result = self.transaction_in(&mut work, tenant, vec![entry]).await;
        let mut outcomes = finish(work, result).await.map_err(|e| match e {
            EngineError::InEntry(_, inner) => *inner,
            other => other,
        })?;
        Ok(outcomes.pop().expect("one outcome per entry"))
    }

    /// The entries of a transaction in `work`; outcomes in the order of the entries.
    async fn transaction_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        mut entries: Vec<Entry>,
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
                .delete_entry(work, tenant, entry)
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
                .identity(work, tenant, entry, &mut outcomes)
                .await
                .map_err(|e| in_entry(entry.index, e))?;
            if let Some(url) = &entry.full_url {
                local.insert(url.clone(), format!("{resource_type}/{id}"));
            }
            ids.insert(entry.index, id);
        }

        // Conditional references, each searched once.
        let mut conditions = BTreeSet::new();
        for entry in &entries {
            if let Some(resource) = &entry.resource {
                collect_conditions(resource, &mut conditions);
            }
        }
        for reference in conditions {
            let resolved = self
                .resolve_condition(work, tenant, &reference)
                .await
                .map_err(|e| {
                    let index = entries
                        .iter()
                        .find(|e| {
                            e.resource
                                .as_ref()
                                .is_some_and(|r| refers_to(r, &reference))
                        })
                        .map_or(0, |e| e.index);
                    in_entry(index, e)
                })?;
            local.insert(reference, resolved);
        }

        // Creates, then updates, each with its references rewritten.
        for entry in entries
            .iter_mut()
            .filter(|e| matches!(e.method, Method::Post | Method::Put))
        {
            if outcomes.contains_key(&entry.index) {
                continue; // a conditional create that found its match
            }
            let index = entry.index;
            let id = ids
                .remove(&index)
                .expect("every create and update has an id");
            let outcome = self
                .write_entry(work, tenant, entry, &id, &local)
                .await
                .map_err(|e| in_entry(index, e))?;
            outcomes.insert(index, EntryOutcome::Written(outcome));
        }

        for entry in entries.iter().filter(|e| e.method == Method::Get) {
            let outcome = self
                .read_entry(work, tenant, entry)
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
        work: &mut Work<'_>,
        tenant: &Tenant,
        entry: &Entry,
    ) -> Result<EntryOutcome, EngineError> {
        match &entry.target {
            Target::Instance(resource_type, id) => Ok(EntryOutcome::Deleted(
                self.delete_in(work, tenant, resource_type, id, entry.if_match)
                    .await?,
            )),
            Target::Query(resource_type, condition) => {
                let deleted = self
                    .conditional_delete_in(work, tenant, resource_type, condition, entry.if_match)
                    .await?;
                Ok(EntryOutcome::Deleted(match deleted {
                    Deleted::One(written) => Some(written),
                    Deleted::Nothing => None,
                }))
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
        work: &mut Work<'_>,
        tenant: &Tenant,
        entry: &Entry,
        outcomes: &mut HashMap<usize, EntryOutcome>,
    ) -> Result<(&'static str, String), EngineError> {
        let body_id = entry.resource.as_ref().and_then(|r| r["id"].as_str());
        match (&entry.method, &entry.target) {
            (Method::Post, Target::Type(resource_type)) => {
                if let Some(condition) = &entry.if_none_exist {
                    let query = self.condition(tenant, resource_type, condition).await?;
                    match self.matches_in(work, &query).await?.as_slice() {
                        [] => {}
                        [existing] => {
                            outcomes.insert(
                                entry.index,
                                EntryOutcome::Written(existing_version(existing)),
                            );
                            return Ok((resource_type, existing.id.clone()));
                        }
                        _ => return Err(several(resource_type, condition)),
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
            (Method::Put, Target::Query(resource_type, condition)) => {
                let query = self.condition(tenant, resource_type, condition).await?;
                match self.matches_in(work, &query).await?.as_slice() {
                    [] => Ok((
                        resource_type,
                        body_id.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned),
                    )),
                    [one] if body_id.is_none_or(|b| b == one.id) => {
                        Ok((resource_type, one.id.clone()))
                    }
                    [one] => Err(EngineError::BadRequest(format!(
                        "the resource's id '{}' differs from the id of the match, '{}'",
                        body_id.unwrap_or_default(),
                        one.id
                    ))),
                    _ => Err(several(resource_type, condition)),
                }
            }
            (Method::Post, _) => Err(EngineError::BadRequest(
                "POST takes the URL of a type".into(),
            )),
            _ => Err(EngineError::BadRequest(
                "PUT takes Type/id or Type?criteria".into(),
            )),
        }
    }

    /// `Type/id` of the one resource a conditional reference (`Type?query`) names.
    async fn resolve_condition(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        reference: &str,
    ) -> Result<String, EngineError> {
        let (type_name, condition) = reference.split_once('?').expect("collected with a '?'");
        let resource_type = self.resource_type(type_name)?;
        let query = self.condition(tenant, resource_type, condition).await?;
        match work.find(&query, 2).await?.as_slice() {
            [one] => Ok(format!("{resource_type}/{}", one.id)),
            [] => Err(EngineError::PreconditionFailed(format!(
                "the conditional reference {reference} matches no resource"
            ))),
            _ => Err(EngineError::PreconditionFailed(format!(
                "the conditional reference {reference} matches more than one resource"
            ))),
        }
    }

    async fn write_entry(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
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
        let resource = self.parse_for(resource_type, &body, Format::Json)?;
        match entry.method {
            Method::Post => {
                self.write(
                    tenant,
                    Some(work),
                    resource_type,
                    id,
                    Some(resource),
                    Expected::Absent,
                )
                .await
            }
            _ => {
                self.update_in(work, tenant, id, resource, entry.if_match)
                    .await
            }
        }
    }

    async fn read_entry(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        entry: &Entry,
    ) -> Result<EntryOutcome, EngineError> {
        let gone_or_found = |version: Option<StoredVersion>, name: String| match version {
            None => Err(EngineError::NotFound(name)),
            Some(v) if v.op == Op::Delete => Err(EngineError::Gone(name)),
            Some(v) => Ok(EntryOutcome::Read(v)),
        };
        match &entry.target {
            Target::Instance(resource_type, id) => gone_or_found(
                work.read_latest(resource_type, id).await?,
                format!("{resource_type}/{id}"),
            ),
            Target::Version(resource_type, id, version) => gone_or_found(
                work.read_version(resource_type, id, *version).await?,
                format!("{resource_type}/{id}/_history/{version}"),
            ),
            Target::Type(resource_type) | Target::Query(resource_type, _) => {
                let query_string = match &entry.target {
                    Target::Query(_, q) => q.as_str(),
                    _ => "",
                };
                let params: Vec<(String, String)> = form_urlencoded::parse(query_string.as_bytes())
                    .map(|(n, v)| (n.into_owned(), v.into_owned()))
                    .collect();
                let registry = self.registry(tenant).await?;
                let mut query = registry
                    .parse_query(Scope::Type(resource_type), &params, false)
                    .map_err(|e| EngineError::BadRequest(e.to_string()))?;
                self.answer_terminology(tenant, &registry, &mut query)
                    .await?;
                self.answer_text(tenant, &mut query).await?;
                let count = query.count;
                Ok(EntryOutcome::Searched(work.find(&query, count).await?))
            }
        }
    }
}

fn in_entry(index: usize, error: EngineError) -> EngineError {
    EngineError::InEntry(index, Box::new(error))
}

fn parse_entry(index: usize, entry: &Value) -> Result<Entry, EngineError> {
    let request = &entry["request"];
    let method = match request["method"].as_str() {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
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
        Some(tag) => Some(
            tag.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse()
                .map_err(|_| {
                    EngineError::BadRequest(format!("ifMatch '{tag}' does not name a version"))
                })?,
        ),
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
        resource: entry.get("resource").cloned(),
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

fn refers_to(value: &Value, reference: &str) -> bool {
    let mut found = BTreeSet::new();
    collect_conditions(value, &mut found);
    found.contains(reference)
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
