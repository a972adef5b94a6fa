use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

use fjord_search::IndexTerms;

use crate::index::{bind_terms, statement};
use crate::{Store, StoreError, TenantKey};

/// What a version did to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Op {
        match s {
            "create" => Op::Create,
            "delete" => Op::Delete,
            _ => Op::Update,
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: OffsetDateTime,
    pub op: Op,
    /// Canonical JSON; `None` for a delete.
    pub body: Option<String>,
}

/// What the writer believes the current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The resource has never existed.
    Absent,
    /// The current version is this one (deleted or not).
    Version(i64),
}

impl Expected {
    /// The number of the version a writer with this expectation adds (versions are numbered 1,
    /// 2, 3… without gaps).
    pub fn next_version(self) -> i64 {
        match self {
            Expected::Absent => 1,
            Expected::Version(current) => current + 1,
        }
    }
}

/// A version to write; its number is `expected.next_version()`.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub expected: Expected,
    pub last_updated: OffsetDateTime,
    pub op: Op,
    pub body: Option<&'a str>,
    /// The search index terms of this version (none for a deletion), which replace the
    /// resource's previous ones.
    pub index: &'a IndexTerms,
    /// Resources (type, id, each once) that must be current for the version to be written: its
    /// references, when the statement itself checks them.
    pub targets: &'a [(&'a str, &'a str)],
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// `expected` did not hold: a concurrent writer came first.
    NotExpected,
    /// A target is not a current resource.
    MissingTarget,
}

/// Which history to read.
#[derive(Debug, Clone, Copy)]
pub enum HistoryScope<'a> {
    System,
    /// The system's history without one type's versions (the audit trail's).
    SystemExcept(&'a str),
    Type(&'a str),
    Instance(&'a str, &'a str),
}

/// A page of history, newest first, and the cursor of the next (older) page.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub versions: Vec<StoredVersion>,
    pub next_cursor: Option<i64>,
}

impl Store {
    /// The latest version of a resource, deleted or not.
    #[tracing::instrument(skip_all, fields(tenant = tenant.0, %resource_type))]
    pub async fn read_latest(
        &self,
        tenant: TenantKey,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let latest = read_latest_on(connection.connection(), tenant, resource_type, id).await;
        connection.settle(latest)
    }

    /// One version of a resource.
    #[tracing::instrument(skip_all, fields(tenant = tenant.0, %resource_type))]
    pub async fn read_version(
        &self,
        tenant: TenantKey,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let row =
            read_version_on(connection.connection(), tenant, resource_type, id, version).await;
        connection.settle(row)
    }

    /// Adds a version with its change-log position, moves the current-version pointer to it and
    /// replaces the resource's search index rows, in one statement. Returns false and writes
    /// nothing when `expected` no longer holds (a concurrent writer came first): the pointer is
    /// the row writers serialise on.
    #[tracing::instrument(skip_all, fields(resource_type = new.resource_type))]
    pub async fn write_version(
        &self,
        tenant: TenantKey,
        new: &NewVersion<'_>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let written = write_on(connection.connection(), tenant, new).await;
        connection.settle(written)
    }

    /// A page of history, newest first. `cursor` is the `next_cursor` of the previous page.
    #[tracing::instrument(skip_all, fields(tenant = tenant.0))]
    pub async fn history(
        &self,
        tenant: TenantKey,
        scope: HistoryScope<'_>,
        since: Option<OffsetDateTime>,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<HistoryPage, StoreError> {
        let cursor = cursor.unwrap_or(i64::MAX);
        let (sql, resource_type, id) = match scope {
            HistoryScope::Instance(resource_type, id) => {
                (INSTANCE_HISTORY, Some(resource_type), Some(id))
            }
            HistoryScope::Type(resource_type) => (TYPE_HISTORY, Some(resource_type), None),
            HistoryScope::System => (SYSTEM_HISTORY, None, None),
            HistoryScope::SystemExcept(resource_type) => {
                (SYSTEM_HISTORY_EXCEPT, Some(resource_type), None)
            }
        };
        // One row more than asked tells whether another page follows.
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = sqlx::query(sql)
            .bind(tenant.0)
            .bind(resource_type)
            .bind(id)
            .bind(cursor)
            .bind(since)
            .bind(limit + 1)
            .fetch_all(connection.connection())
            .await;
        let rows = connection.settle(rows)?;
        Ok(history_page(&rows, limit))
    }
}

/// A page of history from rows in `seq` order, one more than `limit` asked for to tell whether
/// another page follows.
pub(crate) fn history_page(rows: &[PgRow], limit: i64) -> HistoryPage {
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    HistoryPage {
        next_cursor: more
            .then(|| rows.last().map(|r| r.get::<i64, _>("position")))
            .flatten(),
        versions: rows
            .iter()
            .map(|row| {
                version_from_row(
                    row,
                    &row.get::<String, _>("type"),
                    &row.get::<String, _>("id"),
                )
            })
            .collect(),
    }
}

/// [`Store::write_version`] on a connection (alone, or inside a transaction).
pub(crate) async fn write_on(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    new: &NewVersion<'_>,
) -> Result<WriteOutcome, sqlx::Error> {
    let update = matches!(new.expected, Expected::Version(_));
    let change_sequence = tenant.change_sequence();
    let targets = !new.targets.is_empty();
    let query = sqlx::query_scalar::<_, i64>(statement(targets, update, new.index))
        .bind(tenant.0)
        .bind(new.resource_type)
        .bind(new.id)
        .bind(new.expected.next_version())
        .bind(&change_sequence)
        .bind(new.last_updated)
        .bind(new.op.as_str())
        .bind(new.body);
    let resource_key = fjord_search::keys::resource(new.resource_type, new.id);
    let mut query = bind_terms(query, resource_key, new.index);
    if targets {
        let (types, ids): (Vec<&str>, Vec<&str>) = new.targets.iter().copied().unzip();
        query = query.bind(types).bind(ids).bind(new.targets.len() as i64);
    }
    Ok(match query.fetch_one(connection).await? {
        1 => WriteOutcome::Written,
        2 => WriteOutcome::MissingTarget,
        _ => WriteOutcome::NotExpected,
    })
}

/// [`Store::read_latest`] on a connection.
pub(crate) async fn read_latest_on(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    resource_type: &str,
    id: &str,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, last_updated, op, body FROM resource_version \
         WHERE tenant = $1 AND type = $2 AND id = $3 ORDER BY version DESC LIMIT 1",
    )
    .bind(tenant.0)
    .bind(resource_type)
    .bind(id)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(|row| version_from_row(&row, resource_type, id)))
}

/// [`Store::read_version`] on a connection.
pub(crate) async fn read_version_on(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    resource_type: &str,
    id: &str,
    version: i64,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, last_updated, op, body FROM resource_version \
         WHERE tenant = $1 AND type = $2 AND id = $3 AND version = $4",
    )
    .bind(tenant.0)
    .bind(resource_type)
    .bind(id)
    .bind(version)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(|row| version_from_row(&row, resource_type, id)))
}

// History queries share their parameters: $1 tenant, $2 type, $3 id, $4 cursor (exclusive), $5
// `_since` (or NULL), $6 row limit. Type and system history page over the change-log position.
const INSTANCE_HISTORY: &str =
    "SELECT type, id, version, last_updated, op, body, version AS position \
     FROM resource_version WHERE tenant = $1 AND type = $2 AND id = $3 \
     AND version < $4 AND ($5::timestamptz IS NULL OR last_updated >= $5) \
     ORDER BY version DESC LIMIT $6";
const TYPE_HISTORY: &str = "SELECT type, id, version, last_updated, op, body, seq AS position \
     FROM resource_version WHERE tenant = $1 AND type = $2 AND seq < $4 \
     AND ($5::timestamptz IS NULL OR last_updated >= $5) \
     ORDER BY seq DESC LIMIT $6";
const SYSTEM_HISTORY: &str = "SELECT type, id, version, last_updated, op, body, seq AS position \
     FROM resource_version WHERE tenant = $1 AND seq < $4 \
     AND ($5::timestamptz IS NULL OR last_updated >= $5) \
     ORDER BY seq DESC LIMIT $6";

const SYSTEM_HISTORY_EXCEPT: &str =
    "SELECT type, id, version, last_updated, op, body, seq AS position \
     FROM resource_version WHERE tenant = $1 AND type <> $2 AND seq < $4 \
     AND ($5::timestamptz IS NULL OR last_updated >= $5) \
     ORDER BY seq DESC LIMIT $6";

pub(crate) fn version_from_row(row: &PgRow, resource_type: &str, id: &str) -> StoredVersion {
    StoredVersion {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version: row.get("version"),
        last_updated: row.get("last_updated"),
        op: Op::parse(row.get("op")),
        body: row.get("body"),
    }
}
