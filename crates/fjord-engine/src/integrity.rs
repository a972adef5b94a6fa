//! Units of work, and the referential integrity checked when one finishes.
//!
//! Referential integrity is a tenant setting, on by default: a write whose local references
//! (`Type/id`) name no current resource is refused (422, naming the element), and so is the
//! delete of a resource that current resources still refer to (409, listing them), unless the
//! tenant allows `_cascade=delete` and the request asks for it.
//!
//! The checks run when a unit finishes, just before it commits: a transaction may refer to what
//! a later entry creates, and delete what a later entry stops referring to. A single create or
//! update checks in its own statement. Writers look for their targets under shared advisory
//! locks and a delete looks for referrers under the exclusive one (migration 0007), so a write
//! and a delete racing over one target cannot both succeed. Referrers are found through the
//! reference search parameters (the search index): a reference in an element no search
//! parameter covers (an extension) is checked when written but does not hold back a delete.

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};

use fjord_definitions::SearchParamType;
use fjord_model::{is_valid_id, resource_type};
use fjord_search::keys;
use fjord_store::{Tenant, Work};
use serde_json::Value;

use crate::registries::SEARCH_PARAMETER;
use crate::{Engine, EngineError};

/// Referrers named in a 409, and resources a cascade deletes, at most.
pub const MAX_REFERRERS: usize = 100;

/// A unit of work with the integrity checks it owes before it commits.
pub(crate) struct Unit<'s> {
    work: Work<'s>,
    references: Vec<Reference>,
    deleted: Vec<(&'static str, String)>,
    /// Deletes in this unit take their referrers with them (`_cascade=delete`).
    pub(crate) cascade: bool,
    /// A SearchParameter was written: the tenant's registry is rebuilt after the commit (one
    /// built before it, by the checks, would miss the change).
    search_parameters_changed: bool,
}

/// A local reference written in a unit.
#[derive(Debug, Clone)]
struct Reference {
    referrer: String,
    /// Where in the referrer (`Observation.subject`).
    path: String,
    target_type: &'static str,
    target_id: String,
}

impl<'s> Deref for Unit<'s> {
    type Target = Work<'s>;

    fn deref(&self) -> &Work<'s> {
        &self.work
    }
}

impl DerefMut for Unit<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.work
    }
}

impl Unit<'_> {
    /// Notes the local references of a version written in this unit.
    pub(crate) fn wrote(&mut self, resource_type: &str, id: &str, body: &Value) {
        self.note_type(resource_type);
        self.references
            .extend(references_of(resource_type, id, body));
    }

    /// Notes a resource deleted in this unit.
    pub(crate) fn deleted(&mut self, resource_type: &'static str, id: &str) {
        self.note_type(resource_type);
        self.deleted.push((resource_type, id.to_owned()));
    }

    fn note_type(&mut self, resource_type: &str) {
        self.search_parameters_changed |= resource_type == SEARCH_PARAMETER;
    }
}

/// The local references of a version, with where they are.
fn references_of(resource_type: &str, id: &str, body: &Value) -> Vec<Reference> {
    let referrer = format!("{resource_type}/{id}");
    let mut references = Vec::new();
    collect(
        body,
        &mut resource_type.to_owned(),
        &mut |path, target_type, target_id| {
            references.push(Reference {
                referrer: referrer.clone(),
                path: path.to_owned(),
                target_type,
                target_id: target_id.to_owned(),
            })
        },
    );
    references
}

/// What a version refers to, each once, without itself (a create may refer to its own id).
pub(crate) fn targets_of(
    resource_type: &str,
    id: &str,
    body: &Value,
) -> Vec<(&'static str, String)> {
    let mut targets: Vec<(&'static str, String)> = references_of(resource_type, id, body)
        .into_iter()
        .filter(|r| !(r.target_type == resource_type && r.target_id == id))
        .map(|r| (r.target_type, r.target_id))
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

/// Calls `found(path, type, id)` for every `reference` of `value` that is local and literal
/// (`Patient/p1`, `Patient/p1/_history/2`). Absolute URLs, `#contained`, `urn:` and conditional
/// references are not Fjord's to check.
fn collect(value: &Value, path: &mut String, found: &mut impl FnMut(&str, &'static str, &str)) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match child {
                    Value::String(reference) if key == "reference" => {
                        if let Some((target_type, id)) = local_target(reference) {
                            // The path names the Reference element, not its `reference`.
                            found(&path[..len], target_type, id);
                        }
                    }
                    Value::Array(items) => {
                        for (index, item) in items.iter().enumerate() {
                            let item_len = path.len();
                            path.push_str(&format!("[{index}]"));
                            collect(item, path, found);
                            path.truncate(item_len);
                        }
                    }
                    _ => collect(child, path, found),
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, found)),
        _ => {}
    }
}

fn local_target(reference: &str) -> Option<(&'static str, &str)> {
    let mut segments = reference.split('/');
    let target_type = resource_type(segments.next()?)?;
    let id = segments.next()?;
    match (segments.next(), segments.next(), segments.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) if is_valid_id(id) => {
            Some((target_type, id))
        }
        _ => None,
    }
}

impl Engine {
    /// Begins a unit of work for the tenant.
    pub(crate) async fn begin(&self, tenant: &Tenant) -> Result<Unit<'_>, EngineError> {
        Ok(Unit {
            work: self.store.begin(tenant.key).await?,
            references: Vec::new(),
            deleted: Vec::new(),
            cascade: false,
            search_parameters_changed: false,
        })
    }

    /// Ends a unit: commits what succeeded once its integrity checks pass, rolls back the rest.
    pub(crate) async fn finish<T>(
        &self,
        tenant: &Tenant,
        mut unit: Unit<'_>,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let result = match result {
            Ok(value) => self
                .check_integrity(tenant, &mut unit)
                .await
                .map(|()| value),
            Err(error) => Err(error),
        };
        let changed = unit.search_parameters_changed;
        let result = match result {
            Ok(value) => unit.work.commit().await.map(|()| value).map_err(Into::into),
            Err(error) => {
                // The error is what the client needs; a failed rollback closes the connection.
                let _ = unit.work.rollback().await;
                Err(error)
            }
        };
        if changed {
            self.forget_registry(tenant);
        }
        result
    }

    /// The checks a unit owes: no deleted resource is still referred to (or, cascading, its
    /// referrers are deleted too), and every reference written names a current resource.
    pub(crate) async fn check_integrity(
        &self,
        tenant: &Tenant,
        unit: &mut Unit<'_>,
    ) -> Result<(), EngineError> {
        if !tenant.settings.referential_integrity {
            unit.references.clear();
            unit.deleted.clear();
            return Ok(());
        }
        let mut cascaded = 0;
        while let Some((resource_type, id)) = unit.deleted.pop() {
            // Writers that refer to it hold its reference lock shared until they commit: the
            // referrers below include them, and later ones wait for this commit.
            unit.lock_references(resource_type, &id).await?;
            let links = self.links_to(tenant, resource_type).await?;
            let referrers = unit
                .referrers(resource_type, &id, &links, MAX_REFERRERS as i64 + 1)
                .await?;
            if referrers.is_empty() {
                continue;
            }
            if !unit.cascade {
                return Err(EngineError::StillReferenced {
                    resource: format!("{resource_type}/{id}"),
                    referrers: referrers
                        .iter()
                        .take(MAX_REFERRERS)
                        .map(|(t, i)| format!("{t}/{i}"))
                        .collect(),
                });
            }
            for (referrer_type, referrer_id) in referrers {
                cascaded += 1;
                if cascaded > MAX_REFERRERS {
                    return Err(EngineError::Conflict(format!(
                        "deleting {resource_type}/{id} would cascade to more than \
                         {MAX_REFERRERS} resources"
                    )));
                }
                let referrer_type = self.resource_type(&referrer_type)?;
                // Boxed: a delete may finish a unit of its own, which may cascade.
                Box::pin(self.delete_in(unit, tenant, referrer_type, &referrer_id, None)).await?;
            }
        }
        let references = std::mem::take(&mut unit.references);
        if references.is_empty() {
            return Ok(());
        }
        let targets: BTreeSet<(&str, &str)> = references
            .iter()
            .map(|r| (r.target_type, r.target_id.as_str()))
            .collect();
        let targets: Vec<(&str, &str)> = targets.into_iter().collect();
        let existing: BTreeSet<(String, String)> =
            unit.existing(&targets).await?.into_iter().collect();
        match references
            .iter()
            .find(|r| !existing.contains(&(r.target_type.to_owned(), r.target_id.clone())))
        {
            None => Ok(()),
            Some(missing) => Err(EngineError::DanglingReference {
                referrer: missing.referrer.clone(),
                path: missing.path.clone(),
                reference: format!("{}/{}", missing.target_type, missing.target_id),
            }),
        }
    }

    /// The error of a write whose statement found a target missing: which reference it was.
    pub(crate) async fn dangling(
        &self,
        tenant: &Tenant,
        resource_type: &str,
        id: &str,
        body: &Value,
    ) -> EngineError {
        let references = references_of(resource_type, id, body);
        let targets: Vec<(&str, &str)> = references
            .iter()
            .map(|r| (r.target_type, r.target_id.as_str()))
            .collect();
        let existing = match self.begin(tenant).await {
            Ok(mut unit) => {
                let found = unit.existing(&targets).await;
                let _ = unit.work.rollback().await;
                match found {
                    Ok(found) => found.into_iter().collect::<BTreeSet<_>>(),
                    Err(e) => return e.into(),
                }
            }
            Err(e) => return e,
        };
        // A reference to the resource itself is to the version being written.
        let is_self = |r: &Reference| r.target_type == resource_type && r.target_id == id;
        match references.into_iter().find(|r| {
            !is_self(r) && !existing.contains(&(r.target_type.to_owned(), r.target_id.clone()))
        }) {
            Some(missing) => EngineError::DanglingReference {
                referrer: missing.referrer,
                path: missing.path,
                reference: format!("{}/{}", missing.target_type, missing.target_id),
            },
            None => EngineError::Conflict(format!(
                "{resource_type}/{id}: what it refers to changed concurrently; try again"
            )),
        }
    }

    /// The link keys of every reference search parameter of the tenant that may point at a
    /// resource of `target_type`.
    async fn links_to(&self, tenant: &Tenant, target_type: &str) -> Result<Vec<i64>, EngineError> {
        let registry = self.registry(tenant).await?;
        let mut links = Vec::new();
        for source in registry.resource_types() {
            for param in registry.parameters_of(source) {
                if param.kind == SearchParamType::Reference
                    && param.is_searchable()
                    && param.targets.allows(target_type)
                {
                    links.push(keys::link(source, &param.code));
                }
            }
        }
        Ok(links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_references_are_found_with_their_paths() {
        let observation = json!({
            "resourceType": "Observation",
            "subject": { "reference": "Patient/p1" },
            "performer": [
                { "reference": "https://other.example/fhir/Practitioner/x" },
                { "reference": "Practitioner/pr1/_history/2" },
            ],
            "hasMember": [{ "reference": "#contained" }, { "reference": "urn:uuid:1" }],
            "focus": [{ "reference": "Patient?identifier=a|b" }, { "reference": "Nothing/1" }],
        });
        let mut found = Vec::new();
        collect(
            &observation,
            &mut "Observation".to_owned(),
            &mut |path, t, id| found.push(format!("{path} → {t}/{id}")),
        );
        assert_eq!(
            found,
            [
                "Observation.subject → Patient/p1",
                "Observation.performer[1] → Practitioner/pr1"
            ]
        );
    }
}
