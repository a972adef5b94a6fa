use fjord_model::{resource_type, Format, ParseLimits, Resource};
use fjord_store::{
    Expected, HistoryPage, HistoryScope, IndexTerms, NewVersion, Op, StoredVersion, WriteOutcome,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::integrity::Unit;
use crate::registries::SEARCH_PARAMETER;
use crate::{Caller, Engine, EngineError, Permission, TenantLimits, ValidationIssue};

const SUBSCRIPTION: &str = "Subscription";

/// Writers that lose a race retry this often before answering 409.
const WRITE_ATTEMPTS: usize = 16;

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    pub resource_type: &'static str,
    pub id: String,
    pub version: i64,
    pub last_updated: OffsetDateTime,
    /// Canonical JSON of the stored version; `None` for a delete.
    pub body: Option<String>,
    /// Whether the write brought the resource into existence (201 rather than 200).
    pub created: bool,
    /// What the tenant's lenient validation found wrong with the stored resource.
    pub issues: Vec<ValidationIssue>,
}

/// A version ready to be written.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub resource_type: &'static str,
    pub id: String,
    pub expected: Expected,
    pub version: i64,
    pub last_updated: OffsetDateTime,
    /// `None` for a delete.
    pub body: Option<String>,
    /// The body as JSON, for the integrity checks.
    pub value: Option<serde_json::Value>,
    pub index: IndexTerms,
    /// Validation issues the tenant stores resources with (lenient mode).
    pub issues: Vec<ValidationIssue>,
}

impl Prepared {
    pub fn new_version(&self) -> NewVersion<'_> {
        let op = match (&self.body, self.expected) {
            (None, _) => Op::Delete,
            (Some(_), Expected::Absent) => Op::Create,
            (Some(_), Expected::Version(_)) => Op::Update,
        };
        NewVersion {
            resource_type: self.resource_type,
            id: &self.id,
            expected: self.expected,
            last_updated: self.last_updated,
            op,
            body: self.body.as_deref(),
            index: &self.index,
            targets: &[],
        }
    }
}

/// Parameters of a history read.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryQuery {
    pub since: Option<OffsetDateTime>,
    pub cursor: Option<i64>,
    pub count: i64,
}

fn changed_concurrently(resource_type: &str, id: &str) -> EngineError {
    EngineError::Conflict(format!(
        "{resource_type}/{id} changed concurrently; try again"
    ))
}

/// Postgres keeps microseconds; the body's `meta.lastUpdated` must say exactly what is stored.
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("truncated nanoseconds are valid")
}

/// `instant` formatting of a timestamp.
pub fn format_instant(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("UTC timestamps format as RFC 3339")
}

impl Engine {
    /// The canonical resource type name for a URL segment.
    pub fn resource_type(&self, name: &str) -> Result<&'static str, EngineError> {
        resource_type(name).ok_or_else(|| EngineError::UnknownType(name.to_owned()))
    }

    /// The parse limits of the caller's tenant: the server's, or its own where tighter.
    pub fn parse_limits(&self, caller: &Caller) -> ParseLimits {
        let tenant = caller.tenant.settings.limits.max_json_depth;
        ParseLimits {
            max_depth: TenantLimits::tighter(self.limits.max_depth, tenant),
        }
    }

    pub(crate) fn parse_for(
        &self,
        caller: &Caller,
        resource_type: &str,
        body: &[u8],
        format: Format,
    ) -> Result<Resource, EngineError> {
        let resource = Resource::parse(body, format, &self.parse_limits(caller))
            .map_err(EngineError::Invalid)?;
        if resource.resource_type() != resource_type {
            return Err(EngineError::BadRequest(format!(
                "the body is a {} but the URL names {resource_type}",
                resource.resource_type()
            )));
        }
        let violations = resource.invariant_violations();
        if !violations.is_empty() {
            return Err(EngineError::Unprocessable(violations));
        }
        Ok(resource)
    }

    /// `create`: stores the body under a new server-assigned id (an id in the body is ignored).
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn create(
        &self,
        caller: &Caller,
        resource_type: &str,
        body: &[u8],
        format: Format,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let mut resource = self.parse_for(caller, resource_type, body, format)?;
        let id = Uuid::new_v4().to_string();
        resource.set_id(Some(&id));
        self.write(
            caller,
            None,
            resource_type,
            &id,
            Some(resource),
            Expected::Absent,
        )
        .await
    }

    /// `update`, including update-as-create with a client-chosen id. `if_match` is the version the
    /// client expects to replace.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn update(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        body: &[u8],
        format: Format,
        if_match: Option<i64>,
    ) -> Result<Written, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        check_id(id)?;
        let resource = self.parse_for(caller, resource_type, body, format)?;
        match resource.id() {
            Some(body_id) if body_id == id => {}
            Some(body_id) => {
                return Err(EngineError::BadRequest(format!(
                    "the body's id '{body_id}' differs from the URL's '{id}'"
                )))
            }
            None => {
                return Err(EngineError::BadRequest(
                    "an update needs the resource id in the body".into(),
                ))
            }
        }
        for _ in 0..WRITE_ATTEMPTS {
            let latest = self
                .store
                .read_latest(caller.key, resource_type, id)
                .await?;
            let current = latest.as_ref().map(|l| l.version);
            let recreated = latest.as_ref().is_some_and(|l| l.op == Op::Delete);
            require_if_match(caller, if_match, current.is_some() && !recreated)?;
            let expected = update_expectation(current, if_match, resource_type, id)?;
            match self
                .write(
                    caller,
                    None,
                    resource_type,
                    id,
                    Some(resource.clone()),
                    expected,
                )
                .await
            {
                Err(EngineError::Conflict(_)) if if_match.is_none() => continue,
                Err(EngineError::Conflict(_)) => return Err(version_moved(resource_type, id)),
                written => {
                    return written.map(|mut w| {
                        w.created |= recreated;
                        w
                    })
                }
            }
        }
        Err(EngineError::Conflict(format!(
            "{resource_type}/{id} is being changed by others; try again"
        )))
    }

    /// `delete`: writes a deletion version. Deleting what does not exist (or is deleted) succeeds
    /// and changes nothing; it returns `None`. With `cascade` (where the tenant allows it) what
    /// refers to the resource is deleted too.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn delete(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        if_match: Option<i64>,
        cascade: bool,
    ) -> Result<Option<Written>, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        check_id(id)?;
        if cascade {
            if !caller.settings.cascade_delete {
                return Err(EngineError::BadRequest(format!(
                    "tenant '{}' does not allow _cascade=delete",
                    caller.id
                )));
            }
            let mut unit = self.begin(caller).await?;
            unit.cascade = true;
            let result = self
                .delete_in(&mut unit, caller, resource_type, id, if_match)
                .await;
            return self.finish(caller, unit, result).await;
        }
        for _ in 0..WRITE_ATTEMPTS {
            let latest = self
                .store
                .read_latest(caller.key, resource_type, id)
                .await?;
            let live = latest.filter(|l| l.op != Op::Delete).map(|l| l.version);
            let Some(expected) = delete_expectation(live, if_match, resource_type, id)? else {
                return Ok(None);
            };
            match self
                .write(caller, None, resource_type, id, None, expected)
                .await
            {
                Err(EngineError::Conflict(_)) if if_match.is_none() => continue,
                Err(EngineError::Conflict(_)) => return Err(version_moved(resource_type, id)),
                written => return written.map(Some),
            }
        }
        Err(EngineError::Conflict(format!(
            "{resource_type}/{id} is being changed by others; try again"
        )))
    }

    /// Writes a version, alone or as part of `work`.
    pub(crate) async fn write(
        &self,
        caller: &Caller,
        work: Option<&mut Unit<'_>>,
        resource_type: &'static str,
        id: &str,
        resource: Option<Resource>,
        expected: Expected,
    ) -> Result<Written, EngineError> {
        let prepared = self
            .prepare(caller, resource_type, id, resource, expected)
            .await?;
        match work {
            Some(unit) => self.write_prepared(caller, unit, prepared).await,
            // A unit of its own: the write's AuditEvent commits with it.
            None => {
                let mut unit = self.begin(caller).await?;
                let result = self.write_prepared(caller, &mut unit, prepared).await;
                self.finish(caller, unit, result).await
            }
        }
    }

    /// Writes a prepared version in `unit`, noting what its integrity checks need.
    async fn write_prepared(
        &self,
        caller: &Caller,
        unit: &mut Unit<'_>,
        prepared: Prepared,
    ) -> Result<Written, EngineError> {
        // References are checked when the unit finishes (a later entry may create the target).
        if unit.write_version(&prepared.new_version()).await? != WriteOutcome::Written {
            // In a unit only a create can lose: an update holds the current version's lock.
            return Err(changed_concurrently(prepared.resource_type, &prepared.id));
        }
        match &prepared.value {
            Some(value) => unit.wrote(prepared.resource_type, &prepared.id, value),
            None => unit.deleted(prepared.resource_type, &prepared.id),
        }
        // A Subscription acts for whoever last wrote it; Fjord's own status changes keep that.
        if prepared.resource_type == SUBSCRIPTION && prepared.value.is_some() && !caller.internal {
            unit.record_subscription_access(&prepared.id, &caller.access.record())
                .await?;
        }
        let patients = match &prepared.value {
            Some(value) => {
                let registry = self.registry(caller).await?;
                crate::audit::patients_in(&registry, prepared.resource_type, &prepared.id, value)
            }
            None => Vec::new(),
        };
        let op = prepared.new_version().op;
        crate::audit::note_write(
            &mut unit.audited,
            prepared.resource_type,
            &prepared.id,
            prepared.version,
            op,
            patients,
        );
        Ok(self.written(caller, prepared))
    }

    /// The version a write adds: its number, time, body with `meta`, and index terms.
    pub(crate) async fn prepare(
        &self,
        caller: &Caller,
        resource_type: &'static str,
        id: &str,
        resource: Option<Resource>,
        expected: Expected,
    ) -> Result<Prepared, EngineError> {
        caller.may_write(resource_type, expected, resource.is_none())?;
        let version = expected.next_version();
        let last_updated = now();
        let registry = self.registry(caller).await?;
        let (body, value, index, issues) = match resource {
            Some(mut resource) => {
                resource.set_version(&version.to_string(), &format_instant(last_updated));
                // The stored body, and the value checked and indexed, from one serialisation.
                let (body, value) = resource.to_json_and_value();
                if resource_type == SEARCH_PARAMETER {
                    self.check_search_parameter(&value)?;
                }
                for (checked_type, check) in self.write_checks.iter() {
                    if *checked_type == resource_type {
                        check
                            .check(&registry, &value)
                            .map_err(EngineError::Rejected)?;
                    }
                }
                let issues = self.validate(caller, &value).await?;
                let entries = fjord_search::extract(&registry, &value)?;
                let index = fjord_search::index_terms(resource_type, &entries);
                self.authorize_write(caller, &registry, resource_type, id, expected, Some(&index))
                    .await?;
                (Some(body), Some(value), index, issues)
            }
            None => {
                self.authorize_write(caller, &registry, resource_type, id, expected, None)
                    .await?;
                (None, None, IndexTerms::default(), Vec::new())
            }
        };
        Ok(Prepared {
            resource_type,
            id: id.to_owned(),
            expected,
            version,
            last_updated,
            body,
            value,
            index,
            issues,
        })
    }

    /// What a stored version tells its writer; a new definition (search parameter, profile)
    /// takes effect.
    pub(crate) fn written(&self, caller: &Caller, prepared: Prepared) -> Written {
        if crate::conformance::is_definition(prepared.resource_type) {
            self.forget_definitions(caller);
        }
        Written {
            resource_type: prepared.resource_type,
            id: prepared.id,
            version: prepared.version,
            last_updated: prepared.last_updated,
            body: prepared.body,
            created: prepared.expected == Expected::Absent,
            issues: prepared.issues,
        }
    }

    /// `read`: the current version; `Gone` when deleted.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn read(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
    ) -> Result<StoredVersion, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let name = format!("{resource_type}/{id}");
        if !fjord_model::is_valid_id(id) {
            return Err(EngineError::NotFound(name));
        }
        self.authorize_current(caller, Permission::Read, resource_type, id)
            .await?;
        match self
            .store
            .read_latest(caller.key, resource_type, id)
            .await?
        {
            None => Err(EngineError::NotFound(name)),
            Some(v) if v.op == Op::Delete => Err(EngineError::Gone(name)),
            Some(v) => Ok(v),
        }
    }

    /// `vread`: one version; `Gone` when that version is a deletion.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, %resource_type))]
    pub async fn vread(
        &self,
        caller: &Caller,
        resource_type: &str,
        id: &str,
        version: &str,
    ) -> Result<StoredVersion, EngineError> {
        let resource_type = self.resource_type(resource_type)?;
        let name = format!("{resource_type}/{id}/_history/{version}");
        let Some(number) = version
            .parse::<i64>()
            .ok()
            .filter(|_| fjord_model::is_valid_id(id))
        else {
            return Err(EngineError::NotFound(name));
        };
        self.authorize_current(caller, Permission::Read, resource_type, id)
            .await?;
        match self
            .store
            .read_version(caller.key, resource_type, id, number)
            .await?
        {
            None => Err(EngineError::NotFound(name)),
            Some(v) if !self.version_readable(caller, &v).await? => {
                Err(EngineError::NotFound(name))
            }
            Some(v) if v.op == Op::Delete => Err(EngineError::Gone(name)),
            Some(v) => Ok(v),
        }
    }

    /// `history` at instance (`Some(type), Some(id)`), type or system level.
    #[tracing::instrument(skip_all, fields(tenant = %caller.id, resource_type = ?resource_type))]
    pub async fn history(
        &self,
        caller: &Caller,
        resource_type: Option<&str>,
        id: Option<&str>,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let resource_type = resource_type.map(|t| self.resource_type(t)).transpose()?;
        let scope = match (resource_type, id) {
            (Some(t), Some(id)) => {
                check_id(id)?;
                self.authorize_current(caller, Permission::Read, t, id)
                    .await?;
                HistoryScope::Instance(t, id)
            }
            (Some(t), None) => HistoryScope::Type(t),
            // The audit trail is not the tenant's data: its history is AuditEvent/_history.
            _ => HistoryScope::SystemExcept(crate::audit::AUDIT_EVENT),
        };
        let grants = match scope {
            HistoryScope::Instance(..) => None,
            _ => self.history_grants(caller, resource_type).await?,
        };
        let mut page = match &grants {
            None => {
                self.store
                    .history(caller.key, scope, query.since, query.cursor, query.count)
                    .await?
            }
            // Conditional scopes: the history of the resources they allow as they are now.
            Some(grants) => {
                self.store
                    .history_within(caller.key, grants, query.since, query.cursor, query.count)
                    .await?
            }
        };
        if matches!(scope, HistoryScope::Instance(..)) || grants.is_some() {
            // Versions from before a resource came into the caller's grant (a measurement
            // moved from another patient) are not the caller's to see.
            let mut readable = Vec::with_capacity(page.versions.len());
            for version in page.versions {
                if self.version_readable(caller, &version).await? {
                    readable.push(version);
                }
            }
            page.versions = readable;
        }
        if let (HistoryScope::Instance(t, id), true, None) =
            (scope, page.versions.is_empty(), query.cursor)
        {
            if query.since.is_none() {
                return Err(EngineError::NotFound(format!("{t}/{id}")));
            }
        }
        Ok(page)
    }
}

pub(crate) fn check_id(id: &str) -> Result<(), EngineError> {
    if fjord_model::is_valid_id(id) {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "invalid resource id '{id}'"
        )))
    }
}

pub(crate) fn version_moved(resource_type: &str, id: &str) -> EngineError {
    EngineError::PreconditionFailed(format!(
        "{resource_type}/{id} is not at the version named by If-Match"
    ))
}

/// What an update of a resource whose current version is `current` (deleted or not) expects.
pub(crate) fn update_expectation(
    current: Option<i64>,
    if_match: Option<i64>,
    resource_type: &str,
    id: &str,
) -> Result<Expected, EngineError> {
    match (current, if_match) {
        (None, None) => Ok(Expected::Absent),
        (None, Some(_)) => Err(version_moved(resource_type, id)),
        (Some(current), Some(v)) if v != current => Err(version_moved(resource_type, id)),
        (Some(current), _) => Ok(Expected::Version(current)),
    }
}

/// Refuses an update or patch of a live resource without `If-Match` where the tenant requires
/// it. R4 answers that with 400 ("servers can require that clients provide an If-Match
/// header by returning 400 Client Error").
pub(crate) fn require_if_match(
    caller: &Caller,
    if_match: Option<i64>,
    live: bool,
) -> Result<(), EngineError> {
    if caller.settings.require_if_match && if_match.is_none() && live {
        return Err(EngineError::BadRequest(format!(
            "tenant '{}' requires If-Match on updates and patches: send the version you change \
             (If-Match: W/\"n\")",
            caller.id
        )));
    }
    Ok(())
}

/// What a delete of a resource whose live (not deleted) version is `live` expects; `None` when
/// there is nothing to delete.
pub(crate) fn delete_expectation(
    live: Option<i64>,
    if_match: Option<i64>,
    resource_type: &str,
    id: &str,
) -> Result<Option<Expected>, EngineError> {
    match (live, if_match) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(version_moved(resource_type, id)),
        (Some(live), Some(v)) if v != live => Err(version_moved(resource_type, id)),
        (Some(live), _) => Ok(Some(Expected::Version(live))),
    }
}

/// The weak entity tag of a version (`W/"3"`), as `ETag` and `Bundle.entry.response.etag`
/// carry it.
pub fn etag_of(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The version an entity tag names (`W/"3"`, `"3"` or `3`).
pub fn version_of_etag(tag: &str) -> Option<i64> {
    tag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}
