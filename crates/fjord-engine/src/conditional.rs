//! Writes that depend on what a search finds (conditional create, update and delete) and the
//! writes of a unit of work that transaction bundles share with them.
//!
//! A condition is a search; deciding on its matches and writing happen in one transaction that
//! first takes a lock named by the search, so two requests with the same condition decide one
//! after the other: N clients creating "the Observation with identifier X" at once create one.

use fjord_model::{Format, Resource};
use fjord_search::{Scope, SearchQuery};
use fjord_store::{Expected, StoredVersion};
use uuid::Uuid;

use crate::integrity::Unit;
use crate::interactions::{check_id, delete_expectation, require_if_match, update_expectation};
use crate::search::query_params;
use crate::{Caller, Engine, EngineError, Written};

/// Resources a conditional delete deletes at most, where the tenant allows several.
pub const MAX_CONDITIONAL_DELETES: usize = 100;

/// A condition, parsed and answered (text, terminology) before any unit of work begins, so a
/// work never waits for the text index while it holds its connection and locks.
#[derive(Debug)]
pub(crate) struct Condition {
    /// As the client wrote it, for messages.
    pub text: String,
    pub query: SearchQuery,
}

impl Engine {
    /// The condition `text` (`identifier=sys|val`, the query of `Type?…` without `?`) on
    /// resources of `resource_type`. Unknown parameters are an error: a condition that ignored
    /// one would match more than its client meant.
    pub(crate) async fn condition(
        &self,
        caller: &Caller,
        resource_type: &str,
        text: &str,
    ) -> Result<Condition, EngineError> {
        let mut params = query_params(text);
        // The response's format, not a criterion.
        params.retain(|(name, _)| !matches!(name.as_str(), "_format" | "_pretty"));
        if params.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "the condition '{text}' names no search parameter"
            )));
        }
        let (_, query) = self
            .prepare_query(caller, Scope::Type(resource_type), &params, true)
            .await
            .map_err(|e| match e {
                EngineError::BadRequest(message) => {
                    EngineError::BadRequest(format!("the condition '{text}': {message}"))
                }
                other => other,
            })?;
        Ok(Condition {
            text: text.to_owned(),
            query,
        })
    }

    /// Up to two matches of a condition, after taking the condition's lock in `work`.
    pub(crate) async fn matches_in(
        &self,
        work: &mut Unit<'_>,
        condition: &Condition,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        self.matches_up_to(work, condition, 2).await
    }

    /// Up to `limit` matches of a condition, after taking the condition's lock in `work`.
    async fn matches_up_to(
        &self,
        work: &mut Unit<'_>,
        condition: &Condition,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, EngineError> {
        work.lock(condition.query.key).await?;
        Ok(work.find(&condition.query, limit).await?)
    }

    /// `create` with `If-None-Exist`: no match creates (201), one match is returned as it is
    /// (200), more than one is 412.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn conditional_create(
        &self,
        caller: &Caller,
        resource_type: &str,
        body: &[u8],
        format: Format,
        condition: &str,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let resource = self.parse_for(caller, resource_type, body, format)?;
        let condition = self.condition(caller, resource_type, condition).await?;
        let mut work = self.begin(caller).await?;
        let result = match self.create_match(&mut work, &condition).await {
            Ok(Some(existing)) => Ok(existing),
            Ok(None) => self.create_in(&mut work, caller, resource).await,
            Err(e) => Err(e),
        };
        self.finish(caller, work, result).await
    }

    /// `update` of `Type?condition`: the one match is updated; without a match the resource
    /// is created (with the body's id, if it has one); more than one match is 412.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn conditional_update(
        &self,
        caller: &Caller,
        resource_type: &str,
        condition: &str,
        body: &[u8],
        format: Format,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let resource = self.parse_for(caller, resource_type, body, format)?;
        let condition = self.condition(caller, resource_type, condition).await?;
        let mut work = self.begin(caller).await?;
        let result = match self
            .update_target(&mut work, &condition, resource.id())
            .await
        {
            Ok(id) => {
                self.update_in(&mut work, caller, &id, resource, if_match)
                    .await
            }
            Err(e) => Err(e),
        };
        self.finish(caller, work, result).await
    }

    /// `delete` of `Type?condition`: the one match is deleted; none deletes nothing; more than
    /// one is 412, unless the tenant allows deleting several (at most
    /// [`MAX_CONDITIONAL_DELETES`]). Returns what was deleted.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn conditional_delete(
        &self,
        caller: &Caller,
        resource_type: &str,
        condition: &str,
        if_match: Option<i64>,
    ) -> Result<Vec<Written>, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let condition = self.condition(caller, resource_type, condition).await?;
        let mut work = self.begin(caller).await?;
        let result = self
            .conditional_delete_in(&mut work, caller, resource_type, &condition, if_match)
            .await;
        self.finish(caller, work, result).await
    }

    /// [`Engine::conditional_delete`] in `work`.
    pub(crate) async fn conditional_delete_in(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        resource_type: &'static str,
        condition: &Condition,
        if_match: Option<i64>,
    ) -> Result<Vec<Written>, EngineError> {
        let matches = if caller.settings.conditional_delete_multiple {
            let found = self
                .matches_up_to(work, condition, MAX_CONDITIONAL_DELETES + 1)
                .await?;
            if found.len() > MAX_CONDITIONAL_DELETES {
                return Err(EngineError::PreconditionFailed(format!(
                    "more than {MAX_CONDITIONAL_DELETES} {resource_type} match '{}'; \
                     a conditional delete deletes at most that many",
                    condition.text
                )));
            }
            found
        } else {
            let found = self.matches_in(work, condition).await?;
            if found.len() > 1 {
                return Err(several(resource_type, condition));
            }
            found
        };
        let mut deleted = Vec::with_capacity(matches.len());
        for found in matches {
            // With If-Match only one match can be meant.
            deleted.extend(
                self.delete_in(work, caller, resource_type, &found.id, if_match)
                    .await?,
            );
        }
        Ok(deleted)
    }

    /// The resource a conditional create finds instead of creating, if any; more than one
    /// match is 412. The condition stays locked until the work ends.
    pub(crate) async fn create_match(
        &self,
        work: &mut Unit<'_>,
        condition: &Condition,
    ) -> Result<Option<Written>, EngineError> {
        match self.matches_in(work, condition).await?.as_slice() {
            [] => Ok(None),
            [existing] => Ok(Some(existing_version(existing))),
            [first, ..] => Err(several(&first.resource_type, condition)),
        }
    }

    /// The id a conditional update writes: its one match (which `body_id`, when given, must
    /// be), or without a match `body_id` or a new id; more than one match is 412. The
    /// condition stays locked until the work ends.
    pub(crate) async fn update_target(
        &self,
        work: &mut Unit<'_>,
        condition: &Condition,
        body_id: Option<&str>,
    ) -> Result<String, EngineError> {
        match self.matches_in(work, condition).await?.as_slice() {
            [] => Ok(body_id.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)),
            [one] if body_id.is_none_or(|id| id == one.id) => Ok(one.id.clone()),
            [one] => Err(EngineError::BadRequest(format!(
                "the body's id '{}' differs from the id of the match, '{}'",
                body_id.unwrap_or_default(),
                one.id
            ))),
            [first, ..] => Err(several(&first.resource_type, condition)),
        }
    }

    /// Creates `resource` under a new id in `work`.
    pub(crate) async fn create_in(
        &self,
        work: &mut Unit<'_>,
        caller: &Caller,
        mut resource: Resource,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource.resource_type())?;
        let id = Uuid::new_v4().to_string();
        resource.set_id(Some(&id));
        self.write(
            caller,
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
        work: &mut Unit<'_>,
        caller: &Caller,
        id: &str,
        mut resource: Resource,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource.resource_type())?;
        check_id(id)?;
        resource.set_id(Some(id));
        let current = work.lock_current(resource_type, id).await?;
        require_if_match(caller, if_match, current.is_some_and(|c| !c.deleted))?;
        let expected = update_expectation(current.map(|c| c.version), if_match, resource_type, id)?;
        let recreated = current.is_some_and(|c| c.deleted);
        let mut written = self
            .write(
                caller,
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
        work: &mut Unit<'_>,
        caller: &Caller,
        resource_type: &'static str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<Written>, EngineError> {
        check_id(id)?;
        let live = work
            .lock_current(resource_type, id)
            .await?
            .filter(|c| !c.deleted)
            .map(|c| c.version);
        let Some(expected) = delete_expectation(live, if_match, resource_type, id)? else {
            return Ok(None);
        };
        Ok(Some(
            self.write(caller, Some(work), resource_type, id, None, expected)
                .await?,
        ))
    }
}

/// The existing match of a conditional create, answered as it is.
fn existing_version(existing: &StoredVersion) -> Written {
    Written {
        resource_type: fjord_model::resource_type(&existing.resource_type)
            .expect("stored resources have known types"),
        id: existing.id.clone(),
        version: existing.version,
        last_updated: existing.last_updated,
        body: existing.body.clone(),
        created: false,
        issues: Vec::new(),
    }
}

pub(crate) fn several(resource_type: &str, condition: &Condition) -> EngineError {
    EngineError::PreconditionFailed(format!(
        "more than one {resource_type} matches '{}'",
        condition.text
    ))
}
