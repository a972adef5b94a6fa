//! What `$reindex` needs: the current resources of a type in id order, and replacing the index
//! terms of a current version without writing a new one. A writer that moves the version first
//! wins: its own write indexed it already, so the stale terms are dropped.

use crate::index::{bind_terms, reindex_statement};
use crate::search::select_current;
use crate::{Store, StoreError, StoredVersion, TenantKey};
use fjord_search::IndexTerms;

impl Store {
    /// How many resources of these types are current (not deleted).
    #[tracing::instrument(skip(self))]
    pub async fn count_current(
        &self,
        tenant: TenantKey,
        types: &[String],
    ) -> Result<i64, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM resource_current \
             WHERE tenant = $1 AND type = ANY($2) AND NOT deleted",
        )
        .bind(tenant.0)
        .bind(types)
        .fetch_one(connection.connection())
        .await;
        connection.settle(count)
    }

    /// Up to `limit` current resources of a type with ids after `after`, in id order.
    #[tracing::instrument(skip(self))]
    pub async fn current_page(
        &self,
        tenant: TenantKey,
        resource_type: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let sql = select_current(
            "c.type = $2 AND ($3::text IS NULL OR c.id > $3) ORDER BY c.id LIMIT $4",
        );
        let query = sqlx::query(&sql)
            .bind(tenant.0)
            .bind(resource_type)
            .bind(after)
            .bind(limit as i64);
        self.fetch_current(tenant, query).await
    }

    /// Replaces the index terms of `version` of a resource, if it is still the current one;
    /// false when it is not.
    #[tracing::instrument(skip_all, fields(tenant = tenant.0, %resource_type))]
    pub async fn replace_terms(
        &self,
        tenant: TenantKey,
        resource_type: &str,
        id: &str,
        version: i64,
        terms: &IndexTerms,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query_scalar::<_, i64>(reindex_statement(terms))
            .bind(tenant.0)
            .bind(resource_type)
            .bind(id)
            .bind(version);
        let resource_key = fjord_search::keys::resource(resource_type, id);
        let mut connection = self.tenant_connection(tenant).await?;
        let replaced = bind_terms(query, resource_key, terms)
            .fetch_one(connection.connection())
            .await;
        Ok(connection.settle(replaced)? == 1)
    }
}
