//! Units of work, and the referential integrity checked when one finishes.
//!
//! Referential integrity is a tenant setting, on by default: a write whose local references
//! (`Type/id`) name no current resource is refused (422, naming the element), and so is the
//! delete of a resource that current resources still refer to (409, listing them), unless the
//! tenant allows `_cascade=delete` and the request asks for it.
//!
//! The checks run when a unit finishes, just before it commits: a transaction may refer to what
//! a later entry creates, and delete what a later entry stops referring to. Every write is a
//! unit (its AuditEvent commits with it). Writers look for their targets under shared advisory
//! locks and a delete looks for referrers under the exclusive one (migration 0007), so a write
//! and a delete racing over one target cannot both succeed. Referrers are found through the
//! reference search parameters (the search index): a reference in an element no search
//! parameter covers (an extension) is checked when written but does not hold back a delete.

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};

use fjord_model::{for_each_object, is_valid_id, resource_type};
use fjord_search::keys;
use fjord_store::Work;
use serde_json::Value;

use crate::{Caller, Engine, EngineError, Permission};

/// Referrers named in a 409, and resources a cascade deletes, at most.
pub const MAX_REFERRERS: usize = 100;

/// A unit of work with the integrity checks it owes before it commits.
pub(crate) struct Unit<'s> {
    work: Work<'s>,
    /// The tenant checks referential integrity: the unit notes what the checks need.
    checked: bool,
    references: Vec<Reference>,
    deleted: Vec<(&'static str, String)>,
    /// Deletes in this unit take their referrers with them (`_cascade=delete`).
    pub(crate) cascade: bool,
    /// A definition (SearchParameter, profile, value set, code system) was written: what
    /// depends on it is rebuilt after the commit (one built before it, by the checks, would
    /// miss the change).
    definitions_changed: bool,
    /// What the unit wrote, for the AuditEvent it writes before it commits.
    pub(crate) audited: Option<crate::Audited>,
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
        if self.checked {
            self.references
                .extend(references_of(resource_type, id, body));
        }
    }

    /// Notes a resource deleted in this unit.
    pub(crate) fn deleted(&mut self, resource_type: &'static str, id: &str) {
        self.note_type(resource_type);
        if self.checked {
            self.deleted.push((resource_type, id.to_owned()));
        }
    }

    /// Notes a version a bulk import wrote: its references are not checked.
    pub(crate) fn imported(&mut self, resource_type: &str) {
        self.note_type(resource_type);
    }

    fn note_type(&mut self, resource_type: &str) {
        self.definitions_changed |= crate::conformance::is_definition(resource_type);
    }
}

/// The local references of a version, with where they are.
fn references_of(resource_type: &str, id: &str, body: &Value) -> Vec<Reference> {
    let referrer = format!("{resource_type}/{id}");
    let mut references = Vec::new();
    collect(body, resource_type, &mut |path, target_type, target_id| {
        references.push(Reference {
            referrer: referrer.clone(),
            path: path.to_owned(),
            target_type,
            target_id: target_id.to_owned(),
        })
    });
    references
}

/// The resources `references` name, each once, in order.
fn distinct_targets(references: &[Reference]) -> Vec<(&'static str, &str)> {
    let targets: BTreeSet<(&'static str, &str)> = references
        .iter()
        .map(|r| (r.target_type, r.target_id.as_str()))
        .collect();
    targets.into_iter().collect()
}

/// The error of the first of `references` whose target is not among `existing`.
fn first_dangling(
    references: Vec<Reference>,
    existing: &[(String, String)],
) -> Option<EngineError> {
    let existing: BTreeSet<(&str, &str)> = existing
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .collect();
    let missing = references
        .into_iter()
        .find(|r| !existing.contains(&(r.target_type, r.target_id.as_str())))?;
    Some(EngineError::DanglingReference {
        reference: format!("{}/{}", missing.target_type, missing.target_id),
        referrer: missing.referrer,
        path: missing.path,
    })
}

/// Calls `found(path, type, id)` for every `reference` of `value` that is local and literal
/// (`Patient/p1`, `Patient/p1/_history/2`), with the path of its Reference element. Absolute
/// URLs, `#contained`, `urn:` and conditional references are not Fjord's to check.
fn collect(value: &Value, root: &str, found: &mut impl FnMut(&str, &'static str, &str)) {
    for_each_object(value, root, &mut |element, path| {
        if let Some((target_type, id)) = element["reference"].as_str().and_then(local_target) {
            found(path, target_type, id);
        }
    });
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
    /// Begins a unit of work for the caller.
    pub(crate) async fn begin(&self, caller: &Caller) -> Result<Unit<'_>, EngineError> {
        Ok(Unit {
            work: self.store.begin(caller.key).await?,
            checked: caller.settings.referential_integrity,
            references: Vec::new(),
            deleted: Vec::new(),
            cascade: false,
            definitions_changed: false,
            audited: None,
        })
    }

    /// Ends a unit: commits what succeeded once its integrity checks pass, rolls back the rest.
    pub(crate) async fn finish<T>(
        &self,
        caller: &Caller,
        mut unit: Unit<'_>,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let result = match result {
            Ok(value) => match self.check_integrity(caller, &mut unit).await {
                Ok(()) => self.audit_unit(caller, &mut unit).await.map(|()| value),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let changed = unit.definitions_changed;
        let result = match result {
            Ok(value) => {
                let committed = unit.work.commit().await;
                if committed.is_ok() {
                    self.shared.written.notify_one();
                }
                committed.map(|()| value).map_err(Into::into)
            }
            Err(error) => {
                // The error is what the client needs; a failed rollback closes the connection.
                let _ = unit.work.rollback().await;
                Err(error)
            }
        };
        if changed {
            self.forget_definitions(caller);
        }
        result
    }

    /// The checks a unit owes: no deleted resource is still referred to (or, cascading, its
    /// referrers are deleted too), and every reference written names a current resource.
    pub(crate) async fn check_integrity(
        &self,
        caller: &Caller,
        unit: &mut Unit<'_>,
    ) -> Result<(), EngineError> {
        let mut cascaded = 0;
        while let Some((resource_type, id)) = unit.deleted.pop() {
            // Writers that refer to it hold its reference lock shared until they commit: the
            // referrers below include them, and later ones wait for this commit.
            unit.lock_references(resource_type, &id).await?;
            let keys = self.reference_keys(caller, resource_type, &id).await?;
            let referrers = unit
                .referrers(resource_type, &id, &keys, MAX_REFERRERS as i64 + 1)
                .await?;
            if referrers.is_empty() {
                continue;
            }
            if !unit.cascade {
                // Only what the caller may read is named: the ids of another patient's
                // resources are not theirs to learn.
                let mut named = Vec::new();
                let mut unnamed = false;
                for (t, i) in referrers.iter().take(MAX_REFERRERS) {
                    let readable = caller.access.is_unrestricted()
                        || self
                            .authorize_current(caller, Permission::Read, t, i)
                            .await
                            .is_ok();
                    if readable {
                        named.push(format!("{t}/{i}"));
                    } else {
                        unnamed = true;
                    }
                }
                if unnamed {
                    named.push("resources this caller may not read".into());
                }
                return Err(EngineError::StillReferenced {
                    resource: format!("{resource_type}/{id}"),
                    referrers: named,
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
                Box::pin(self.delete_in(unit, caller, referrer_type, &referrer_id, None)).await?;
            }
        }
        let references = std::mem::take(&mut unit.references);
        if references.is_empty() {
            return Ok(());
        }
        let existing = unit.existing(&distinct_targets(&references)).await?;
        match first_dangling(references, &existing) {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// Up to [`MAX_REFERRERS`] current resources that refer to `Type/id` (what a delete would
    /// be refused for), as `Type/id`.
    pub(crate) async fn referrers_of(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<String>, EngineError> {
        let keys = self.reference_keys(caller, resource_type, id).await?;
        let mut unit = self.begin(caller).await?;
        let found = unit
            .referrers(resource_type, id, &keys, MAX_REFERRERS as i64)
            .await;
        // Read only: nothing to keep.
        let _ = unit.work.rollback().await;
        Ok(found?
            .into_iter()
            .map(|(t, i)| format!("{t}/{i}"))
            .collect())
    }

    /// The index keys a reference to `target_type/id` has in its referrers: one per reference
    /// search parameter of the tenant that may point at the type.
    async fn reference_keys(
        &self,
        caller: &Caller,
        target_type: &str,
        id: &str,
    ) -> Result<Vec<i64>, EngineError> {
        let registry = self.registry(caller).await?;
        // The audit trail names what it saw; it holds nothing back.
        Ok(registry
            .references_to(target_type)
            .filter(|(source, _)| *source != crate::audit::AUDIT_EVENT)
            .map(|(source, param)| keys::reference(source, &param.code, target_type, id))
            .collect())
    }
}
