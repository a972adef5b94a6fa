//! Writes that depend on what a search finds (conditional create, update and delete) and the
//! writes of a unit of work that transaction bundles share with them.
//!
//! A condition is a search; deciding on its matches and writing happen in one transaction that
//! first takes a lock named by the search, so two requests with the same condition decide one
//! after the other: N clients creating "the Observation with identifier X" at once create one.

use fjord_model::{Format, Resource};
use fjord_search::{Scope, SearchQuery};
use fjord_store::{Expected, StoredVersion, Tenant, Work};
use uuid::Uuid;

use crate::interactions::{check_id, version_moved};
use crate::{Engine, EngineError, Written};

/// What a conditional delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Nothing matched.
    Nothing,
    /// The matching resource, now deleted.
    One(Written),
}

impl Engine {
    /// The search of a condition (`identifier=sys|val`, the query of `Type?…` without `?`) on
    /// resources of `resource_type`. Unknown parameters are an error: a condition that ignored
    /// one would match more than its client meant.
    pub(crate) async fn condition(
        &self,
        tenant: &Tenant,
        resource_type: &str,
        condition: &str,
    ) -> Result<SearchQuery, EngineError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(condition.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            // The response's format, not a criterion.
            .filter(|(name, _)| !matches!(name.as_str(), "_format" | "_pretty"))
            .collect();
        if params.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "the condition '{condition}' names no search parameter"
            )));
        }
        let registry = self.registry(tenant).await?;
        let mut query = registry
            .parse_query(Scope::Type(resource_type), &params, true)
            .map_err(|e| EngineError::BadRequest(format!("the condition '{condition}': {e}")))?;
        self.answer_terminology(tenant, &registry, &mut query)
            .await?;
        self.answer_text(tenant, &mut query).await?;
        Ok(query)
    }

    /// Up to two matches of a condition, after taking the condition's lock in `work`.
    pub(crate) async fn matches_in(
        &self,
        work: &mut Work<'_>,
        query: &SearchQuery,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        work.lock(query.key).await?;
        Ok(work.find(query, 2).await?)
    }

    /// `create` with `If-None-Exist`: no match creates (201), one match is returned as it is
    /// (200), more than one is 412.
    #[tracing::instrument(skip(self, body), fields(tenant = %tenant.id))]
    pub async fn conditional_create(
        &self,
        tenant: &Tenant,
        resource_type: &str,
        body: &[u8],
        format: Format,
        condition: &str,
    ) -> Result<Written, EngineError> {
        let resource = self.parse_for(self.resource_type(resource_type)?, body, format)?;
        let mut work = self.store.begin(tenant.key).await?;
        let result = self
            .conditional_create_in(&mut work, tenant, resource, condition)
            .await;
        finish(work, result).await
    }

    /// `update` of `Type?condition`: the one match is updated; without a match the resource
    /// is created (with the body's id, if it has one); more than one match is 412.
    #[tracing::instrument(skip(self, body), fields(tenant = %tenant.id))]
    pub async fn conditional_update(
        &self,
        tenant: &Tenant,
        resource_type: &str,
        condition: &str,
        body: &[u8],
        format: Format,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource = self.parse_for(self.resource_type(resource_type)?, body, format)?;
        let mut work = self.store.begin(tenant.key).await?;
        let result = self
            .conditional_update_in(&mut work, tenant, resource, condition, if_match)
            .await;
        finish(work, result).await
    }

    /// `delete` of `Type?condition`: the one match is deleted; none deletes nothing; more than
    /// one is 412.
    #[tracing::instrument(skip(self), fields(tenant = %tenant.id))]
    pub async fn conditional_delete(
        &self,
        tenant: &Tenant,
        resource_type: &str,
        condition: &str,
        if_match: Option<i64>,
    ) -> Result<Deleted, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let mut work = self.store.begin(tenant.key).await?;
        let result = self
            .conditional_delete_in(&mut work, tenant, resource_type, condition, if_match)
            .await;
        finish(work, result).await
    }

    /// [`Engine::conditional_create`] in `work`.
    pub(crate) async fn conditional_create_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        resource: Resource,
        condition: &str,
    ) -> Result<Written, EngineError> {
        let resource_type = resource.resource_type().to_owned();
        let query = self.condition(tenant, &resource_type, condition).await?;
        match self.matches_in(work, &query).await?.as_slice() {
            [] => self.create_in(work, tenant, resource).await,
            [existing] => Ok(existing_version(existing)),
            _ => Err(several(&resource_type, condition)),
        }
    }

    /// [`Engine::conditional_update`] in `work`.
    pub(crate) async fn conditional_update_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        resource: Resource,
        condition: &str,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = resource.resource_type().to_owned();
        let query = self.condition(tenant, &resource_type, condition).await?;
        let id = match self.matches_in(work, &query).await?.as_slice() {
            [] => match resource.id() {
                Some(id) => id.to_owned(),
                None if if_match.is_some() => {
                    return Err(EngineError::PreconditionFailed(format!(
                        "If-Match names a version, but no {resource_type} matches '{condition}'"
                    )))
                }
                None => return self.create_in(work, tenant, resource).await,
            },
            [one] => {
                if resource.id().is_some_and(|id| id != one.id) {
                    return Err(EngineError::BadRequest(format!(
                        "the body's id '{}' differs from the id of the match, '{}'",
                        resource.id().unwrap_or_default(),
                        one.id
                    )));
                }
                one.id.clone()
            }
            _ => return Err(several(&resource_type, condition)),
        };
        self.update_in(work, tenant, &id, resource, if_match).await
    }

    /// [`Engine::conditional_delete`] in `work`.
    pub(crate) async fn conditional_delete_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        resource_type: &'static str,
        condition: &str,
        if_match: Option<i64>,
    ) -> Result<Deleted, EngineError> {
        let query = self.condition(tenant, resource_type, condition).await?;
        match self.matches_in(work, &query).await?.as_slice() {
            [] => Ok(Deleted::Nothing),
            [one] => Ok(self
                .delete_in(work, tenant, resource_type, &one.id, if_match)
                .await?
                .map_or(Deleted::Nothing, Deleted::One)),
            _ => Err(several(resource_type, condition)),
        }
    }

    /// Creates `resource` under a new id in `work`.
    pub(crate) async fn create_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        mut resource: Resource,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource.resource_type())?;
        let id = Uuid::new_v4().to_string();
        resource.set_id(Some(&id));
        self.write(
            tenant,
            Some(work),
            resource_type,
            &id,
            Some(resource),
            Expected::Absent,
        )
        .await
    }

    /// Updates (or creates, when it never existed or was deleted) the resource `id` in `work`;
    /// its current version stays locked until the work ends.
    pub(crate) async fn update_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        id: &str,
        mut resource: Resource,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource.resource_type())?;
        check_id(id)?;
        resource.set_id(Some(id));
        let current = work.lock_current(resource_type, id).await?;
        let expected = match (current, if_match) {
            (None, None) => Expected::Absent,
            (None, Some(_)) => return Err(version_moved(resource_type, id)),
            (Some(current), Some(v)) if v != current.version => {
                return Err(version_moved(resource_type, id))
            }
            (Some(current), _) => Expected::Version(current.version),
        };
        let recreated = current.is_some_and(|c| c.deleted);
        let mut written = self
            .write(
                tenant,
                Some(work),
                resource_type,
                id,
                Some(resource),
                expected,
            )
            .await?;
        written.created |= recreated;
        Ok(written)
    }

    /// Deletes the resource `id` in `work`; `None` when it does not exist or is deleted.
    pub(crate) async fn delete_in(
        &self,
        work: &mut Work<'_>,
        tenant: &Tenant,
        resource_type: &'static str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<Written>, EngineError> {
        check_id(id)?;
        let current = work
            .lock_current(resource_type, id)
            .await?
            .filter(|c| !c.deleted);
        let Some(current) = current else {
            return match if_match {
                Some(_) => Err(version_moved(resource_type, id)),
                None => Ok(None),
            };
        };
        if if_match.is_some_and(|v| v != current.version) {
            return Err(version_moved(resource_type, id));
        }
        let expected = Expected::Version(current.version);
        Ok(Some(
            self.write(tenant, Some(work), resource_type, id, None, expected)
                .await?,
        ))
    }
}

/// Ends `work`: committed when `result` is a success, rolled back otherwise.
pub(crate) async fn finish<T>(
    work: Work<'_>,
    result: Result<T, EngineError>,
) -> Result<T, EngineError> {
    match result {
        Ok(value) => {
            work.commit().await?;
            Ok(value)
        }
        Err(error) => {
            // The error is what the client needs; a failed rollback closes the connection.
            let _ = work.rollback().await;
            Err(error)
        }
    }
}

/// The existing match of a conditional create, answered as it is.
pub(crate) fn existing_version(existing: &StoredVersion) -> Written {
    Written {
        resource_type: fjord_model::resource_type(&existing.resource_type)
            .expect("stored resources have known types"),
        id: existing.id.clone(),
        version: existing.version,
        last_updated: existing.last_updated,
        body: existing.body.clone(),
        created: false,
    }
}

pub(crate) fn several(resource_type: &str, condition: &str) -> EngineError {
    EngineError::PreconditionFailed(format!(
        "more than one {resource_type} matches '{condition}'"
    ))
}
