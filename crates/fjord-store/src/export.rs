//! Bulk export's read: one snapshot of a tenant (a `REPEATABLE READ`, `READ ONLY` transaction)
//! from which each type's current resources stream, so an export is consistent across its
//! types, sees no write that commits while it runs, and blocks no writer.

use fjord_search::Filter;
use futures_util::TryStreamExt;
use sqlx::Row;
use time::OffsetDateTime;

use crate::pool::Lease;
use crate::search::sql::Sql;
use crate::search::Shares;
use crate::{Store, StoreError, TenantKey};

/// A tenant as it was at one moment; dropped without [`Snapshot::finish`], its connection is
/// closed and the transaction with it.
pub struct Snapshot {
    lease: Lease,
    tenant: TenantKey,
    common: Shares,
    /// Every version last updated up to this instant is in the snapshot.
    pub transaction_time: OffsetDateTime,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("tenant", &self.tenant)
            .field("transaction_time", &self.transaction_time)
            .finish()
    }
}

/// How far before the snapshot its `transaction_time` is put. A writer stamps a version's
/// `last_updated` with the server's clock just before its transaction begins, so a version
/// stamped an instant before the snapshot may commit after it: a later export `_since` the
/// transaction time must still find it, at the price of exporting a few versions twice.
const STAMP_MARGIN_SECONDS: f64 = 2.0;

impl Store {
    /// Takes a snapshot of the tenant. Its transaction time is the start of the oldest
    /// transaction still writing when it was taken (or the snapshot's own start), less a
    /// margin (see [`STAMP_MARGIN_SECONDS`]).
    #[tracing::instrument(skip(self))]
    pub async fn snapshot(&self, tenant: TenantKey) -> Result<Snapshot, StoreError> {
        let mut lease = self.tenant_connection(tenant).await?;
        let started = async {
            let connection = lease.connection();
            sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *connection)
                .await?;
            // An export streams for as long as its data takes: no statement time limit.
            sqlx::query("SET LOCAL statement_timeout = 0")
                .execute(&mut *connection)
                .await?;
            // The first statement takes the snapshot.
            let time: OffsetDateTime = sqlx::query_scalar(
                "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid())) \
                 - make_interval(secs => $1)",
            )
            .bind(STAMP_MARGIN_SECONDS)
            .fetch_one(&mut *connection)
            .await?;
            let common = self.common_keys.of(tenant, connection).await?;
            Ok::<_, sqlx::Error>((time, common))
        }
        .await;
        match started {
            Ok((transaction_time, common)) => Ok(Snapshot {
                lease,
                tenant,
                common,
                transaction_time,
            }),
            // Dropped: the connection closes, and the transaction with it.
            Err(e) => Err(StoreError::database(e)),
        }
    }
}

impl Snapshot {
    /// Hands `each` the id and body of every current resource of `resource_type` on which all
    /// `filters` hold, as the rows arrive; returns how many there were. An error of `each`
    /// stops the export and comes back as `Ok(Err(_))`.
    #[tracing::instrument(skip_all, fields(resource_type))]
    pub async fn each_current<E>(
        &mut self,
        resource_type: &str,
        filters: &[Filter],
        mut each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Result<u64, E>, StoreError> {
        let mut sql = Sql::new(
            self.tenant,
            &[resource_type.to_owned()],
            self.common.clone(),
        );
        let statement = sql.current_bodies(filters);
        let mut rows = sqlx::query_with(&statement, sql.args).fetch(self.lease.connection());
        let mut count = 0;
        loop {
            let row = match rows.try_next().await {
                Ok(Some(row)) => row,
                Ok(None) => return Ok(Ok(count)),
                Err(e) => return Err(StoreError::database(e)),
            };
            let id: &str = row.try_get(0).map_err(StoreError::database)?;
            let body: &str = row.try_get(1).map_err(StoreError::database)?;
            if let Err(e) = each(id, body) {
                // The connection is mid-statement: dropping the snapshot closes it.
                return Ok(Err(e));
            }
            count += 1;
        }
    }

    /// Ends the snapshot's transaction; its connection goes back to the pool.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let result = sqlx::query("COMMIT")
            .execute(self.lease.connection())
            .await
            .map(|_| ());
        self.lease.settle(result)
    }
}
