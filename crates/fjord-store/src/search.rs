//! Searches: a [`SearchQuery`] as one SQL statement over the current rows and their index terms,
//! paged by keyset. The position after a page is kept in `search_cursor` under a random token,
//! so page links carry no sort values (names, dates) and survive concurrent writes.

mod common_keys;
pub(crate) mod sql;

pub(crate) use common_keys::{CommonKeys, Shares};

use fjord_search::{Filter, SearchQuery, Total};
use sqlx::Row;

use sql::Sql;

use crate::resources::Op;
use crate::{HistoryPage, Store, StoreError, StoredVersion, TenantKey};

/// One page of matches, in sort order.
#[derive(Debug)]
pub struct SearchPage {
    pub resources: Vec<StoredVersion>,
    /// The token of the next page, when there is one.
    pub next: Option<String>,
    /// The page before this one; `None` on the first page.
    pub previous: Option<PreviousPage>,
    /// All matches (`_total=accurate`), or the planner's estimate of them (`estimate`).
    pub total: Option<i64>,
}

/// Where the page before a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviousPage {
    /// The first page: the search without a token.
    First,
    Token(String),
}

/// A page token that is unknown, expired, or of another search.
#[derive(Debug, thiserror::Error)]
#[error(
    "the page token is unknown, has expired or belongs to another search; run the search again"
)]
pub struct UnknownCursor;

impl Store {
    /// Runs `query`; `cursor` is the `next` token of the previous page. `Ok(Err(_))` when the
    /// token is unknown.
    #[tracing::instrument(skip_all, fields(types = %query.types.join(",")))]
    pub async fn search(
        &self,
        tenant: TenantKey,
        query: &SearchQuery,
        cursor: Option<&str>,
    ) -> Result<Result<SearchPage, UnknownCursor>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let result = run(
            connection.connection(),
            tenant,
            query,
            cursor,
            &self.common_keys,
        )
        .await;
        connection.settle(result)
    }
}

impl Store {
    /// A page of history, newest first, of the resources each type's filter lets through as
    /// they are now (`None`: all of the type): what a token with conditional scopes may see of
    /// a type's or the system's history. `cursor` is the previous page's `next_cursor`.
    #[tracing::instrument(skip_all, fields(types = grants.len()))]
    pub async fn history_within(
        &self,
        tenant: TenantKey,
        grants: &[(String, Option<Filter>)],
        since: Option<time::OffsetDateTime>,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<HistoryPage, StoreError> {
        let types: Vec<String> = grants.iter().map(|(t, _)| t.clone()).collect();
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = async {
            let common = self.common_keys.of(tenant, connection.connection()).await?;
            let mut sql = Sql::new(tenant, &types, common);
            // One row more than asked tells whether another page follows.
            let statement = sql.history(grants, cursor.unwrap_or(i64::MAX), since, limit + 1);
            sqlx::query_with(&statement, sql.args)
                .fetch_all(connection.connection())
                .await
        }
        .await;
        let rows = connection.settle(rows)?;
        Ok(crate::resources::history_page(&rows, limit))
    }
}

/// The statements of one search, on one connection.
async fn run(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    query: &SearchQuery,
    cursor: Option<&str>,
    common_keys: &CommonKeys,
) -> Result<Result<SearchPage, UnknownCursor>, sqlx::Error> {
    let common = common_keys.of(tenant, &mut *connection).await?;
    let (after, previous) = match cursor {
        None => (None, None),
        Some(token) => {
            let row = sqlx::query_as::<_, (Vec<String>, Option<String>)>(
                "SELECT after, previous FROM search_cursor WHERE tenant = $1 AND token = $2 \
                 AND query_key = $3 AND created_at > now() - interval '1 day'",
            )
            .bind(tenant.0)
            .bind(token)
            .bind(query.key)
            .fetch_optional(&mut *connection)
            .await?;
            match row {
                // The sort keys, then type and id.
                Some((after, previous)) if after.len() == query.sort.len() + 2 => (
                    Some(after),
                    Some(previous.map_or(PreviousPage::First, PreviousPage::Token)),
                ),
                _ => return Ok(Err(UnknownCursor)),
            }
        }
    };

    let rows = if query.count == 0 {
        Vec::new()
    } else {
        // One more row than asked tells whether another page follows.
        let sql = Sql::new(tenant, &query.types, common.clone());
        fetch_page(connection, sql, query, after.as_deref(), query.count + 1).await?
    };
    let more = rows.len() > query.count;
    let mut resources = Vec::with_capacity(rows.len().min(query.count));
    for row in rows.iter().take(query.count) {
        resources.push(current_from_row(row));
    }
    let last_keys = rows
        .get(query.count.min(rows.len()).wrapping_sub(1))
        .map(|row| row.get::<Vec<String>, _>("sort_keys"));

    let next = match (more, last_keys) {
        (true, Some(after)) => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            // Old tokens go as new ones come: at most a day's worth is kept.
            sqlx::query(
                "WITH expired AS (DELETE FROM search_cursor WHERE tenant = $1 \
                   AND created_at < now() - interval '1 day') \
                 INSERT INTO search_cursor (tenant, token, after, query_key, previous) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant.0)
            .bind(&token)
            .bind(after)
            .bind(query.key)
            .bind(cursor)
            .execute(&mut *connection)
            .await?;
            Some(token)
        }
        _ => None,
    };

    let total = match query.total {
        Total::None => None,
        // The only page, after no other: its size is the total.
        _ if query.count > 0 && next.is_none() && previous.is_none() => {
            Some(resources.len() as i64)
        }
        Total::Accurate | Total::Estimate => {
            let mut sql = Sql::new(tenant, &query.types, common);
            let count = sql.count(query);
            if query.total == Total::Accurate {
                Some(
                    sqlx::query_scalar_with::<_, i64, _>(&count, sql.args)
                        .fetch_one(&mut *connection)
                        .await?,
                )
            } else {
                // The planner's row estimate of the count's input: no rows are read.
                let plan: Vec<String> =
                    sqlx::query_scalar_with(&format!("EXPLAIN {count}"), sql.args)
                        .fetch_all(&mut *connection)
                        .await?;
                Some(estimated_rows(&plan))
            }
        }
    };
    Ok(Ok(SearchPage {
        resources,
        next,
        previous,
        total,
    }))
}

/// The first `limit` matches of `query` in its sort order, without paging (the matches of a
/// condition).
pub(crate) async fn find_on(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    query: &SearchQuery,
    limit: usize,
    common_keys: &CommonKeys,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let common = common_keys.of(tenant, &mut *connection).await?;
    let sql = Sql::new(tenant, &query.types, common);
    let rows = fetch_page(connection, sql, query, None, limit).await?;
    Ok(rows.iter().map(current_from_row).collect())
}

/// Runs the page statement of `query` ([`Sql::page`]); under the plan Postgres keeps for the
/// statement when [`Sql::plans_alike`], instead of one made for its values.
async fn fetch_page(
    connection: &mut sqlx::PgConnection,
    mut sql: Sql,
    query: &SearchQuery,
    after: Option<&[String]>,
    limit: usize,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let generic = sql.plans_alike(query);
    let page = sql.page(query, after, limit);
    let args = sql.args;
    if !generic {
        return sqlx::query_with(&page, args).fetch_all(connection).await;
    }
    // A session setting: in a unit of work that fails, its rollback undoes it.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *connection)
        .await?;
    let rows = sqlx::query_with(&page, args)
        .fetch_all(&mut *connection)
        .await;
    let reset = sqlx::query("RESET plan_cache_mode")
        .execute(&mut *connection)
        .await;
    let rows = rows?;
    reset?;
    Ok(rows)
}

/// The rows the plan of a `count(*)` expects to count: the estimate of the aggregate's input,
/// the first node below it (`  ->  … (cost=… rows=N width=…)`).
fn estimated_rows(plan: &[String]) -> i64 {
    plan.iter()
        .find(|line| line.trim_start().starts_with("->"))
        .or(plan.first())
        .and_then(|line| line.split(" rows=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// The current, not deleted versions of these `(type, id)` resources (`_include`); the
    /// ones that do not exist are left out.
    #[tracing::instrument(skip_all, fields(count = references.len()))]
    pub async fn read_current(
        &self,
        tenant: TenantKey,
        references: &[(String, String)],
    ) -> Result<Vec<StoredVersion>, StoreError> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let (types, ids): (Vec<&str>, Vec<&str>) = references
            .iter()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .unzip();
        let sql =
            select_current("(c.type, c.id) IN (SELECT * FROM unnest($2::text[], $3::text[]))");
        self.fetch_current(
            tenant,
            sqlx::query(&sql).bind(tenant.0).bind(types).bind(ids),
        )
        .await
    }

    /// The current versions of resources of `resource_type` with any of `keys`, at most `limit`
    /// (`_revinclude`: the keys of references to the matches).
    #[tracing::instrument(skip(self, keys), fields(keys = keys.len()))]
    pub async fn referrers(
        &self,
        tenant: TenantKey,
        resource_type: &str,
        keys: &[i64],
        limit: usize,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The referrers first, then their order: a plan that misjudged the keys would walk
        // every resource of the type in id order looking for the few that refer.
        let sql = format!(
            "WITH found AS MATERIALIZED ({}) SELECT * FROM found ORDER BY id LIMIT $4",
            select_current("c.type = $2 AND c.keys && $3::bigint[]")
        );
        let query = sqlx::query(&sql)
            .bind(tenant.0)
            .bind(resource_type)
            .bind(keys)
            .bind(limit as i64);
        self.fetch_current(tenant, query).await
    }

    /// Runs a statement of [`select_current`] on a connection of the tenant.
    pub(crate) async fn fetch_current(
        &self,
        tenant: TenantKey,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = query.fetch_all(connection.connection()).await;
        Ok(connection
            .settle(rows)?
            .iter()
            .map(current_from_row)
            .collect())
    }
}

/// The current, not deleted versions with their bodies of the tenant `$1` on which
/// `condition` (over `c`, the current row) holds; read with [`current_from_row`].
pub(crate) fn select_current(condition: &str) -> String {
    format!(
        "SELECT c.type, c.id, c.version, c.last_updated, v.body FROM resource_current c \
         JOIN resource_version v ON v.tenant = $1 AND v.type = c.type AND v.id = c.id \
           AND v.version = c.version \
         WHERE c.tenant = $1 AND NOT c.deleted AND {condition}"
    )
}

pub(crate) fn current_from_row(row: &sqlx::postgres::PgRow) -> StoredVersion {
    StoredVersion {
        resource_type: row.get("type"),
        id: row.get("id"),
        version: row.get("version"),
        last_updated: row.get("last_updated"),
        op: Op::Update,
        body: row.get("body"),
    }
}
