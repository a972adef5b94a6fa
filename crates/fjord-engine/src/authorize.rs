//! The caller's access applied to every interaction, as `fjord-smart` states it: queries are
//! rewritten before they run (the types searched, chains and `_has` into other types, includes),
//! one resource is looked up under the same filters, and a version about to be written is
//! checked in memory against them. Nothing is filtered after a query ran, so totals and pages
//! are those of the allowed query.
//!
//! A resource outside the caller's grant is answered as if it did not exist (404), so that a
//! patient-scoped token cannot learn which ids other patients' resources have; a type or an
//! interaction no scope names is 403 (`insufficient_scope`).

use fjord_search::{Filter, IndexTerms, Registry, SearchQuery};
use fjord_smart::{AuthError, Grant, Permission};
use fjord_store::{Expected, StoredVersion};

use crate::{Caller, Engine, EngineError};

impl Engine {
    /// Adds the caller's access to a parsed search: types no scope lets it search are left out
    /// (403 when none is left), the others carry their scopes' filters, and so does every chain
    /// and `_has` into another type.
    pub(crate) fn confine(
        &self,
        caller: &Caller,
        registry: &Registry,
        query: &mut SearchQuery,
    ) -> Result<(), EngineError> {
        let access = &caller.access;
        if access.is_unrestricted() {
            return Ok(());
        }
        for filter in &mut query.filters {
            confine_nested(caller, registry, filter);
        }
        let mut allowed = Vec::new();
        let mut denial = None;
        for resource_type in &query.types {
            match access.filter(registry, Permission::Search, resource_type) {
                Ok(filter) => allowed.push((resource_type.clone(), filter)),
                Err(error) => denial = Some(error),
            }
        }
        if allowed.is_empty() {
            return Err(denial
                .unwrap_or_else(|| AuthError::InsufficientScope("no type to search".into()))
                .into());
        }
        if allowed.iter().any(|(_, filter)| filter.is_some()) || allowed.len() < query.types.len() {
            let filter = match allowed.as_slice() {
                [(_, Some(filter))] if query.types.len() == 1 => filter.clone(),
                _ => Filter::Any(
                    allowed
                        .iter()
                        .map(|(t, filter)| {
                            let filter = filter.clone().unwrap_or(Filter::All(Vec::new()));
                            Filter::OfType(t.clone(), Box::new(filter))
                        })
                        .collect(),
                ),
            };
            query.filters.push(filter);
            query.types = allowed.into_iter().map(|(t, _)| t).collect();
        }
        query.refresh_key();
        Ok(())
    }

    /// Whether some scope grants one of `permissions` on `resource_type` at all: what an
    /// operation that touches no stored resource of the type asks (`$validate` of a body, the
    /// terminology operations).
    pub(crate) fn authorize_any(
        &self,
        caller: &Caller,
        resource_type: &str,
        permissions: &[Permission],
    ) -> Result<(), EngineError> {
        if permissions
            .iter()
            .any(|p| caller.access.grant(*p, resource_type) != Grant::Denied)
        {
            return Ok(());
        }
        Err(
            AuthError::InsufficientScope(format!("no scope grants access to {resource_type}"))
                .into(),
        )
    }

    /// Whether the caller may run tenant-wide maintenance (`$reindex`): a `system/` or `user/`
    /// scope on every type with update, without conditions.
    pub(crate) fn authorize_maintenance(&self, caller: &Caller) -> Result<(), EngineError> {
        if caller.access.grants_everything(Permission::Update) {
            return Ok(());
        }
        Err(AuthError::InsufficientScope(
            "maintenance needs a scope that grants update (u) on every type (system/*.u)".into(),
        )
        .into())
    }

    /// What of a type's (or, without one, the system's) history the caller may search: `None`
    /// when all of it, else each type with the filter its current resources must match
    /// (`None` for all of that type); 403 when no scope grants search on any of it. The audit
    /// trail is not part of the system's history.
    pub(crate) async fn history_grants(
        &self,
        caller: &Caller,
        resource_type: Option<&str>,
    ) -> Result<Option<Vec<(String, Option<Filter>)>>, EngineError> {
        let access = &caller.access;
        let types: Vec<&str> = match resource_type {
            Some(t) if access.grant(Permission::Search, t) == Grant::Full => return Ok(None),
            Some(t) => vec![t],
            None if access.grants_everything(Permission::Search) => return Ok(None),
            None => fjord_model::RESOURCE_TYPES
                .iter()
                .copied()
                .filter(|t| *t != crate::audit::AUDIT_EVENT)
                .collect(),
        };
        let registry = self.registry(caller).await?;
        let mut grants = Vec::new();
        for t in types {
            match access.filter(&registry, Permission::Search, t) {
                // A rule of no resource of this type (outside the patient's compartment).
                Ok(Some(Filter::Any(rules))) if rules.is_empty() => {}
                Ok(filter) => grants.push((t.to_owned(), filter)),
                Err(_) => {}
            }
        }
        if grants.is_empty() {
            return Err(AuthError::InsufficientScope(format!(
                "no scope grants search (s) on {}",
                resource_type.unwrap_or("any type")
            ))
            .into());
        }
        Ok(Some(grants))
    }

    /// Whether the caller may `permission` the current version of `resource_type/id`: 403 when
    /// no scope grants it on the type, 404 when the resource is outside the grant (or absent).
    pub(crate) async fn authorize_current(
        &self,
        caller: &Caller,
        permission: Permission,
        resource_type: &str,
        id: &str,
    ) -> Result<(), EngineError> {
        if caller.access.is_unrestricted() {
            return Ok(());
        }
        let registry = self.registry(caller).await?;
        let Some(filter) = caller.access.filter(&registry, permission, resource_type)? else {
            return Ok(());
        };
        if self
            .found_under(
                caller,
                resource_type,
                vec![Filter::Id(id.to_owned()), filter],
                1,
            )
            .await?
            .is_empty()
        {
            return Err(EngineError::NotFound(format!("{resource_type}/{id}")));
        }
        Ok(())
    }

    /// Whether the caller may write this version (with these index terms) over `expected`: the
    /// new version must be inside its grant, and so must the version it replaces.
    pub(crate) async fn authorize_write(
        &self,
        caller: &Caller,
        registry: &Registry,
        resource_type: &str,
        id: &str,
        expected: Expected,
        terms: Option<&IndexTerms>,
    ) -> Result<(), EngineError> {
        if caller.access.is_unrestricted() {
            return Ok(());
        }
        let permission = match (terms, expected) {
            (None, _) => Permission::Delete,
            (Some(_), Expected::Absent) => Permission::Create,
            (Some(_), Expected::Version(_)) => Permission::Update,
        };
        let filter = caller.access.filter(registry, permission, resource_type)?;
        if let (Some(filter), Some(terms)) = (&filter, terms) {
            if filter.holds_on(resource_type, id, terms) != Some(true) {
                return Err(outside(resource_type, id, "the resource written"));
            }
        }
        if filter.is_some() && matches!(expected, Expected::Version(_)) {
            match self
                .authorize_current(caller, permission, resource_type, id)
                .await
            {
                Err(EngineError::NotFound(_)) => {
                    return Err(outside(resource_type, id, "the version replaced"))
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Whether a stored version (an older one: `vread`, history) lies inside the caller's grant
    /// to read, judged from its own content.
    pub(crate) async fn version_readable(
        &self,
        caller: &Caller,
        version: &StoredVersion,
    ) -> Result<bool, EngineError> {
        if caller.access.is_unrestricted() {
            return Ok(true);
        }
        let registry = self.registry(caller).await?;
        let Some(filter) =
            caller
                .access
                .filter(&registry, Permission::Read, &version.resource_type)?
        else {
            return Ok(true);
        };
        let Some(body) = version.body.as_deref() else {
            // A deletion says nothing of a patient: readable where the resource is.
            return Ok(true);
        };
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| EngineError::Internal(format!("a stored version: {e}")))?;
        let entries = fjord_search::extract(&registry, &value)?;
        let terms = fjord_search::index_terms(&version.resource_type, &entries);
        Ok(filter.holds_on(&version.resource_type, &version.id, &terms) == Some(true))
    }

    /// Current resources of `resource_type` on which every filter holds, at most `count`.
    pub(crate) async fn found_under(
        &self,
        caller: &Caller,
        resource_type: &str,
        filters: Vec<Filter>,
        count: usize,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        let query = SearchQuery::of(vec![resource_type.to_owned()], filters, count);
        let page = self
            .store
            .search(caller.key, &query, None)
            .await?
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(page.resources)
    }
}

fn outside(resource_type: &str, id: &str, what: &str) -> EngineError {
    EngineError::Auth(AuthError::InsufficientScope(format!(
        "{what} ({resource_type}/{id}) is outside what the token's scopes grant"
    )))
}

/// Every chain and `_has` in `filter` looks only at what the caller may search of its type.
pub(crate) fn confine_nested(caller: &Caller, registry: &Registry, filter: &mut Filter) {
    let restrict = |inner: &mut Box<Filter>, resource_type: &str| match caller.access.filter(
        registry,
        Permission::Search,
        resource_type,
    ) {
        Ok(None) => {}
        Ok(Some(access)) => {
            let original = std::mem::replace(inner.as_mut(), Filter::All(Vec::new()));
            **inner = Filter::All(vec![original, access]);
        }
        Err(_) => **inner = Filter::Any(Vec::new()),
    };
    match filter {
        Filter::Any(parts) | Filter::All(parts) => parts
            .iter_mut()
            .for_each(|part| confine_nested(caller, registry, part)),
        Filter::Not(inner) | Filter::OfType(_, inner) => confine_nested(caller, registry, inner),
        Filter::Chain {
            target_type,
            filter: inner,
            ..
        } => {
            confine_nested(caller, registry, inner);
            restrict(inner, target_type);
        }
        Filter::Has {
            source_type,
            filter: inner,
            ..
        } => {
            confine_nested(caller, registry, inner);
            restrict(inner, source_type);
        }
        _ => {}
    }
}
