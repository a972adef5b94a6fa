//! A unit of work: several statements of one tenant in one Postgres transaction, for the writes
//! that must be all or nothing (transaction bundles) or that decide on what they read
//! (conditional create, update and delete).
//!
//! A [`Work`] that is neither committed nor rolled back when dropped (its future was cancelled,
//! the process is going down) closes its connection, and the server rolls the transaction back.

use fjord_search::SearchQuery;
use sqlx::Row;

use crate::pool::Lease;
use crate::resources::{
    read_latest_on, read_version_on, version_from_row, write_on, NewVersion, StoredVersion,
    WriteOutcome,
};
use crate::search::find_on;
use crate::{Store, StoreError, TenantKey};

/// An open transaction on a connection of one tenant.
pub struct Work<'s> {
    store: &'s Store,
    tenant: TenantKey,
    lease: Lease,
}

/// The current version of a resource, locked until the work ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub version: i64,
    pub deleted: bool,
}

impl Store {
    /// Begins a unit of work for the tenant.
    #[tracing::instrument(skip(self))]
    pub async fn begin(&self, tenant: TenantKey) -> Result<Work<'_>, StoreError> {
        let mut lease = self.tenant_connection(tenant).await?;
        // On failure the lease is dropped unsettled and its connection closed.
        sqlx::query("BEGIN")
            .execute(lease.connection())
            .await
            .map_err(StoreError::database)?;
        Ok(Work {
            store: self,
            tenant,
            lease,
        })
    }
}

impl Work<'_> {
    pub(crate) fn tenant(&self) -> TenantKey {
        self.tenant
    }

    pub(crate) fn connection(&mut self) -> &mut sqlx::PgConnection {
        self.lease.connection()
    }

    /// Waits for, then holds until the work ends, the lock named `key` within the tenant: units
    /// of work that take the same key run one after another from that point.
    pub async fn lock(&mut self, key: i64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1::bigint # ($2::bigint << 32))")
            .bind(key)
            .bind(self.tenant.0 as i64)
            .execute(self.lease.connection())
            .await
            .map(drop)
            .map_err(classify)
    }

    /// The current version of a resource, locked against other writers until the work ends;
    /// `None` when it never existed.
    pub async fn lock_current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Locked>, StoreError> {
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM resource_current \
             WHERE tenant = $1 AND type = $2 AND id = $3 FOR UPDATE",
        )
        .bind(self.tenant.0)
        .bind(resource_type)
        .bind(id)
        .fetch_optional(self.lease.connection())
        .await
        .map_err(classify)?;
        Ok(row.map(|(version, deleted)| Locked { version, deleted }))
    }

    /// The latest version of a resource (deleted or not), as this work sees it.
    pub async fn read_latest(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        read_latest_on(self.lease.connection(), self.tenant, resource_type, id)
            .await
            .map_err(classify)
    }

    /// The latest versions (deleted or not) of these `(type, id)` resources, as this work sees
    /// them; those that never existed are left out.
    pub async fn read_latest_many(
        &mut self,
        resources: &[(&str, &str)],
    ) -> Result<Vec<StoredVersion>, StoreError> {
        if resources.is_empty() {
            return Ok(Vec::new());
        }
        let (types, ids): (Vec<&str>, Vec<&str>) = resources.iter().copied().unzip();
        let rows = sqlx::query(
            // A backward primary-key scan per name, whatever the planner thinks of the tables'
            // sizes (an import grows them faster than statistics follow).
            "SELECT n.type, n.id, v.version, v.last_updated, v.op, v.body \
             FROM unnest($2::text[], $3::text[]) AS n(type, id) \
             CROSS JOIN LATERAL (SELECT version, last_updated, op, body FROM resource_version \
               WHERE tenant = $1 AND type = n.type AND id = n.id \
               ORDER BY version DESC LIMIT 1) v",
        )
        .bind(self.tenant.0)
        .bind(types)
        .bind(ids)
        .fetch_all(self.lease.connection())
        .await
        .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|row| {
                let (resource_type, id): (&str, &str) = (row.get("type"), row.get("id"));
                version_from_row(row, resource_type, id)
            })
            .collect())
    }

    /// One version of a resource, as this work sees it.
    pub async fn read_version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredVersion>, StoreError> {
        read_version_on(
            self.lease.connection(),
            self.tenant,
            resource_type,
            id,
            version,
        )
        .await
        .map_err(classify)
    }

    /// Writes a version (see [`Store::write_version`]); false when `expected` did not hold.
    pub async fn write_version(
        &mut self,
        new: &NewVersion<'_>,
    ) -> Result<WriteOutcome, StoreError> {
        write_on(self.lease.connection(), self.tenant, new)
            .await
            .map_err(classify)
    }

    /// Creates resources that do not exist yet (fresh ids: the audit trail's events), first
    /// versions with their terms, in one statement; how many.
    pub async fn create_many(&mut self, new: &[NewVersion<'_>]) -> Result<usize, StoreError> {
        if new.is_empty() {
            return Ok(0);
        }
        let mut keys = Vec::new();
        let (mut key_from, mut key_to) = (Vec::new(), Vec::new());
        let (mut date_at, mut date_param, mut low, mut high) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut string_at, mut string_param, mut normalized, mut exact) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (at, version) in (1i32..).zip(new) {
            key_from.push(keys.len() as i32 + 1);
            keys.extend_from_slice(&version.index.keys);
            key_to.push(keys.len() as i32);
            for date in &version.index.dates {
                date_at.push(at);
                date_param.push(date.param_key);
                low.push(date.low);
                high.push(date.high);
            }
            for string in &version.index.strings {
                string_at.push(at);
                string_param.push(string.param_key);
                normalized.push(string.normalized.as_str());
                exact.push(string.exact.as_str());
            }
        }
        let written: i64 = sqlx::query_scalar(crate::index::CREATE_MANY)
            .bind(self.tenant.0)
            .bind(self.tenant.change_sequence())
            .bind(new.iter().map(|v| v.resource_type).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.id).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.last_updated).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.body).collect::<Vec<_>>())
            .bind(
                new.iter()
                    .map(|v| fjord_search::keys::resource(v.resource_type, v.id))
                    .collect::<Vec<_>>(),
            )
            .bind(
                new.iter()
                    .map(|v| v.index.values.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(keys)
            .bind(key_from)
            .bind(key_to)
            .bind(date_at)
            .bind(date_param)
            .bind(low)
            .bind(high)
            .bind(string_at)
            .bind(string_param)
            .bind(normalized)
            .bind(exact)
            .fetch_one(self.lease.connection())
            .await
            .map_err(classify)?;
        Ok(written as usize / 2)
    }

    /// The first `limit` matches of `query`, this work's own writes included.
    pub async fn find(
        &mut self,
        query: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        find_on(
            self.lease.connection(),
            self.tenant,
            query,
            limit,
            &self.store.common_keys,
        )
        .await
        .map_err(classify)
    }

    /// Which of `targets` (type, id) are current resources, looked for under their shared
    /// reference locks, held until the work ends: a delete of one waits for this work, and
    /// one being deleted is waited for and then not found (migration 0007).
    pub async fn existing(
        &mut self,
        targets: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (types, ids): (Vec<&str>, Vec<&str>) = targets.iter().copied().unzip();
        sqlx::query_as("SELECT type, id FROM fjord_current_targets($1, $2::text[], $3::text[])")
            .bind(self.tenant.0)
            .bind(types)
            .bind(ids)
            .fetch_all(self.lease.connection())
            .await
            .map_err(classify)
    }

    /// Takes, until the work ends, the exclusive reference lock of a resource about to be
    /// deleted: writers that refer to it finish first, later ones wait and find it deleted.
    pub async fn lock_references(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, fjord_reference_lock_key($2, $3))")
            .bind(self.tenant.0)
            .bind(resource_type)
            .bind(id)
            .execute(self.lease.connection())
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Up to `limit` current resources (other than itself) that refer to `type/id`: whose
    /// index has one of `reference_keys`, the keys of such a reference.
    pub async fn referrers(
        &mut self,
        resource_type: &str,
        id: &str,
        reference_keys: &[i64],
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as(
            "SELECT type, id FROM resource_current \
             WHERE tenant = $1 AND NOT deleted AND NOT (type = $2 AND id = $3) \
               AND keys && $4::int8[] \
             ORDER BY type, id LIMIT $5",
        )
        .bind(self.tenant.0)
        .bind(resource_type)
        .bind(id)
        .bind(reference_keys)
        .bind(limit)
        .fetch_all(self.lease.connection())
        .await
        .map_err(classify)
    }

    /// Commits; the connection returns to its pool.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let committed = sqlx::query("COMMIT").execute(self.lease.connection()).await;
        self.lease.settle(committed.map(drop))
    }

    /// Rolls back; the connection returns to its pool.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        let rolled_back = sqlx::query("ROLLBACK")
            .execute(self.lease.connection())
            .await;
        self.lease.settle(rolled_back.map(drop))
    }
}

/// A deadlock or serialization failure is a conflict the client may retry; the rest are
/// database errors.
fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        // Deadlock, serialisation failure, or a create that met a concurrent one's row.
        sqlx::Error::Database(e)
            if matches!(e.code().as_deref(), Some("40P01" | "40001" | "23505")) =>
        {
            StoreError::Conflict(e.message().to_owned())
        }
        _ => StoreError::database(error),
    }
}
