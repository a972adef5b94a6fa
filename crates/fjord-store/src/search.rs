//! Searches: a [`SearchQuery`] as one SQL statement over the current rows and their index terms,
//! paged by keyset. The position after a page is kept in `search_cursor` under a random token,
//! so page links carry no sort values (names, dates) and survive concurrent writes.

use fjord_search::{Filter, Prefix, SearchQuery, SortBy, StringMatch, Total, UnitMatch, ValueTest};
use rust_decimal::Decimal;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Row};

use crate::resources::Op;
use crate::{Store, StoreError, StoredVersion, TenantKey};

/// One page of matches, in sort order.
#[derive(Debug)]
pub struct SearchPage {
    pub resources: Vec<StoredVersion>,
    /// The token of the next page, when there is one.
    pub next: Option<String>,
    /// All matches, when `_total` asked for them.
    pub total: Option<i64>,
}

/// A page token that is unknown, expired, or of another search.
#[derive(Debug, thiserror::Error)]
#[error("the page token is unknown or has expired; run the search again")]
pub struct UnknownCursor;

impl Store {
    /// Runs `query`; `cursor` is the `next` token of the previous page. `Ok(Err(_))` when the
    /// token is unknown.
    #[tracing::instrument(skip_all, fields(resource_type = %query.resource_type))]
    pub async fn search(
        &self,
        tenant: TenantKey,
        query: &SearchQuery,
        cursor: Option<&str>,
    ) -> Result<Result<SearchPage, UnknownCursor>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let result = run(connection.connection(), tenant, query, cursor).await;
        connection.settle(result)
    }
}

/// The statements of one search, on one connection.
async fn run(
    connection: &mut sqlx::PgConnection,
    tenant: TenantKey,
    query: &SearchQuery,
    cursor: Option<&str>,
) -> Result<Result<SearchPage, UnknownCursor>, sqlx::Error> {
    let after: Option<Vec<String>> = match cursor {
        None => None,
        Some(token) => {
            let after = sqlx::query_scalar::<_, Vec<String>>(
                "SELECT after FROM search_cursor WHERE tenant = $1 AND token = $2 \
                 AND created_at > now() - interval '1 day'",
            )
            .bind(tenant.0)
            .bind(token)
            .fetch_optional(&mut *connection)
            .await?;
            match after {
                Some(after) if after.len() == query.sort.len() + 1 => Some(after),
                _ => return Ok(Err(UnknownCursor)),
            }
        }
    };

    let mut sql = Sql::new(tenant, &query.resource_type);
    let page = sql.page(query, after.as_deref());
    let rows = sqlx::query_with(&page, sql.args)
        .fetch_all(&mut *connection)
        .await?;
    let more = rows.len() > query.count;
    let mut resources = Vec::with_capacity(rows.len().min(query.count));
    let mut last_keys = None;
    for row in rows.iter().take(query.count) {
        resources.push(StoredVersion {
            resource_type: query.resource_type.clone(),
            id: row.get("id"),
            version: row.get("version"),
            last_updated: row.get("last_updated"),
            op: Op::Update,
            body: row.get("body"),
        });
        last_keys = Some(row.get::<Vec<String>, _>("sort_keys"));
    }

    let next = match (more, last_keys) {
        (true, Some(after)) => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            // Old tokens go as new ones come: at most a day's worth is kept.
            sqlx::query(
                "WITH expired AS (DELETE FROM search_cursor WHERE tenant = $1 \
                   AND created_at < now() - interval '1 day') \
                 INSERT INTO search_cursor (tenant, token, after) VALUES ($1, $2, $3)",
            )
            .bind(tenant.0)
            .bind(&token)
            .bind(after)
            .execute(&mut *connection)
            .await?;
            Some(token)
        }
        _ => None,
    };

    let total = if query.total == Total::Accurate {
        let mut sql = Sql::new(tenant, &query.resource_type);
        let count = sql.count(query);
        Some(
            sqlx::query_scalar_with::<_, i64, _>(&count, sql.args)
                .fetch_one(&mut *connection)
                .await?,
        )
    } else {
        None
    };
    Ok(Ok(SearchPage {
        resources,
        next,
        total,
    }))
}

/// A statement being built, with its arguments.
struct Sql {
    args: PgArguments,
    next: usize,
}

impl Sql {
    /// `$1` is the tenant and `$2` the type in every statement.
    fn new(tenant: TenantKey, resource_type: &str) -> Sql {
        let mut sql = Sql {
            args: PgArguments::default(),
            next: 1,
        };
        sql.bind(tenant.0);
        sql.bind(resource_type.to_owned());
        sql
    }

    fn bind<T>(&mut self, value: T) -> String
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
    {
        self.args
            .add(value)
            .expect("values of these types always encode");
        self.next += 1;
        format!("${}", self.next - 1)
    }

    fn decimal(&mut self, value: Decimal) -> String {
        format!("{}::numeric", self.bind(value.to_string()))
    }

    fn count(&mut self, query: &SearchQuery) -> String {
        let filters = self.filters(&query.filters);
        format!(
            "SELECT count(*) FROM resource_current c \
             WHERE c.tenant = $1 AND c.type = $2 AND NOT c.deleted{filters}"
        )
    }

    /// The page statement: one more row than asked, to know whether another page follows.
    fn page(&mut self, query: &SearchQuery, after: Option<&[String]>) -> String {
        let filters = self.filters(&query.filters);
        let mut sort_columns = Vec::new();
        for (index, key) in query.sort.iter().enumerate() {
            sort_columns.push((
                format!(
                    "{} AS s{index}",
                    self.sort_expression(&key.by, key.descending)
                ),
                format!("s{index}"),
                key.descending,
                sort_type(&key.by),
            ));
        }
        sort_columns.push((
            "c.id COLLATE \"C\" AS s_id".into(),
            "s_id".into(),
            false,
            "text",
        ));
        let keyset = match after {
            Some(after) => {
                // (s0, s1, …, id) after the cursor, each key in its own direction.
                let mut condition = String::from("false");
                for (index, (_, column, descending, cast)) in sort_columns.iter().enumerate().rev()
                {
                    let value = self.bind(after[index].clone());
                    let op = if *descending { "<" } else { ">" };
                    condition = format!(
                        "({column} {op} {value}::{cast} OR ({column} = {value}::{cast} AND {condition}))"
                    );
                }
                format!(" WHERE {condition}")
            }
            None => String::new(),
        };
        let order: Vec<String> = sort_columns
            .iter()
            .map(|(_, column, descending, _)| {
                format!("{column}{}", if *descending { " DESC" } else { "" })
            })
            .collect();
        let key_texts: Vec<String> = sort_columns
            .iter()
            .map(|(_, column, ..)| format!("{column}::text"))
            .collect();
        let selected: Vec<&str> = sort_columns.iter().map(|(s, ..)| s.as_str()).collect();
        let limit = self.bind(query.count as i64 + 1);
        format!(
            "SELECT q.id, q.version, q.last_updated, v.body, ARRAY[{keys}] AS sort_keys FROM ( \
               SELECT c.id, c.version, c.last_updated, {selected} FROM resource_current c \
               WHERE c.tenant = $1 AND c.type = $2 AND NOT c.deleted{filters}) q \
             JOIN resource_version v ON v.tenant = $1 AND v.type = $2 AND v.id = q.id \
               AND v.version = q.version{keyset} \
             ORDER BY {order} LIMIT {limit}",
            keys = key_texts.join(", "),
            selected = selected.join(", "),
            order = order.join(", "),
        )
    }

    /// A sort key as a value without NULLs: resources without one sort last either way.
    fn sort_expression(&mut self, by: &SortBy, descending: bool) -> String {
        let (aggregate, none) = match (by, descending) {
            (SortBy::Date(_), false) => ("min(d.low)", "9223372036854775807"),
            (SortBy::Date(_), true) => ("max(d.high)", "(-9223372036854775808)"),
            (SortBy::String(_), false) => ("min(s.normalized COLLATE \"C\")", "chr(1114111)"),
            (SortBy::String(_), true) => ("max(s.normalized COLLATE \"C\")", "''"),
            (SortBy::Id, _) => return "c.id COLLATE \"C\"".into(),
            (SortBy::LastUpdated, _) => return "c.last_updated".into(),
        };
        match by {
            SortBy::Date(param_key) => format!(
                "coalesce((SELECT {aggregate} FROM search_date d WHERE {} \
                 AND d.param_key = {}), {none})",
                rows_of("d"),
                self.bind(*param_key)
            ),
            SortBy::String(param_key) => format!(
                "coalesce((SELECT {aggregate} FROM search_string s WHERE {} \
                 AND s.param_key = {}), {none})",
                rows_of("s"),
                self.bind(*param_key)
            ),
            _ => unreachable!("handled above"),
        }
    }

    /// ` AND …` for every filter; the keys every match must have go in one GIN lookup.
    fn filters(&mut self, filters: &[Filter]) -> String {
        let mut required = Vec::new();
        let mut conditions = Vec::new();
        for filter in filters {
            match filter {
                Filter::Key(key) => required.push(*key),
                other => conditions.push(self.filter(other)),
            }
        }
        if !required.is_empty() {
            conditions.insert(0, format!("c.keys @> {}::bigint[]", self.bind(required)));
        }
        conditions
            .iter()
            .map(|c| format!(" AND {c}"))
            .collect::<String>()
    }

    fn filter(&mut self, filter: &Filter) -> String {
        match filter {
            Filter::Key(key) => format!("c.keys @> ARRAY[{}::bigint]", self.bind(*key)),
            Filter::Any(alternatives) => {
                let mut any_key = Vec::new();
                let mut others = Vec::new();
                for alternative in alternatives {
                    match alternative {
                        Filter::Key(key) => any_key.push(*key),
                        other => others.push(self.filter(other)),
                    }
                }
                if !any_key.is_empty() {
                    others.insert(0, format!("c.keys && {}::bigint[]", self.bind(any_key)));
                }
                if others.is_empty() {
                    "false".into()
                } else {
                    format!("({})", others.join(" OR "))
                }
            }
            // Rows without terms (written before indexing) match no `:not` either.
            Filter::Not(inner) => format!(
                "(c.keys IS NOT NULL AND NOT coalesce({}, false))",
                self.filter(inner)
            ),
            Filter::Id(id) => format!("c.id = {}", self.bind(id.clone())),
            Filter::Date {
                param_key: None,
                prefix,
                low,
                high,
            } => {
                let (low, high) = date_bounds(*prefix, *low, *high);
                let stored = "(floor(extract(epoch FROM c.last_updated) * 1000)::bigint)";
                let (sl, sh) = (self.bind(low), self.bind(high));
                range(*prefix, stored, stored, &sl, &sh)
            }
            Filter::Date {
                param_key: Some(param_key),
                prefix,
                low,
                high,
            } => {
                let (low, high) = date_bounds(*prefix, *low, *high);
                let key = self.bind(*param_key);
                let (sl, sh) = (self.bind(low), self.bind(high));
                format!(
                    "EXISTS (SELECT 1 FROM search_date d WHERE {} AND d.param_key = {key} AND {})",
                    rows_of("d"),
                    range(*prefix, "d.low", "d.high", &sl, &sh)
                )
            }
            Filter::String {
                param_key,
                matching,
            } => {
                let key = self.bind(*param_key);
                let condition = match matching {
                    StringMatch::Prefix(text) => {
                        let from = self.bind(text.clone());
                        let to = self.bind(format!("{text}\u{10FFFF}"));
                        format!("s.normalized ~>=~ {from} AND s.normalized ~<~ {to}")
                    }
                    StringMatch::Exact(text) => format!("s.exact = {}", self.bind(text.clone())),
                    StringMatch::Contains(text) => {
                        format!(
                            "s.normalized LIKE {}",
                            self.bind(format!("%{}%", like(text)))
                        )
                    }
                };
                format!(
                    "EXISTS (SELECT 1 FROM search_string s WHERE {} AND s.param_key = {key} \
                     AND {condition})",
                    rows_of("s")
                )
            }
            Filter::Value { param, test } => {
                let param = self.bind(param.clone());
                format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements(c.vals -> {param}) e WHERE {})",
                    self.value_test(test)
                )
            }
        }
    }

    /// A condition on one kept value `e` (see `fjord_search::terms`).
    fn value_test(&mut self, test: &ValueTest) -> String {
        match test {
            ValueTest::Number { prefix, low, high } => {
                let (low, high) = number_bounds(*prefix, *low, *high);
                let (sl, sh) = (self.decimal(low), self.decimal(high));
                range(
                    *prefix,
                    "(e->>'lo')::numeric",
                    "(e->>'hi')::numeric",
                    &sl,
                    &sh,
                )
            }
            ValueTest::Quantity {
                prefix,
                low,
                high,
                unit,
            } => {
                let (low, high) = number_bounds(*prefix, *low, *high);
                let (sl, sh) = (self.decimal(low), self.decimal(high));
                let (stored, unit_condition) = match unit {
                    UnitMatch::Any => ("(e->>'v')::numeric", "true".to_owned()),
                    UnitMatch::Canonical(unit) => (
                        "(e->>'cv')::numeric",
                        format!("e->>'cc' = {}", self.bind(unit.clone())),
                    ),
                    UnitMatch::Code {
                        system: Some(system),
                        code,
                    } => (
                        "(e->>'v')::numeric",
                        format!(
                            "e->>'s' = {} AND e->>'c' = {}",
                            self.bind(system.clone()),
                            self.bind(code.clone())
                        ),
                    ),
                    UnitMatch::Code { system: None, code } => {
                        let code = self.bind(code.clone());
                        (
                            "(e->>'v')::numeric",
                            format!("(e->>'c' = {code} OR e->>'u' = {code})"),
                        )
                    }
                };
                format!(
                    "{unit_condition} AND {}",
                    range(*prefix, stored, stored, &sl, &sh)
                )
            }
            ValueTest::Text(text) => {
                format!("e->>'t' LIKE {}", self.bind(format!("{}%", like(text))))
            }
            ValueTest::Date { prefix, low, high } => {
                let (low, high) = date_bounds(*prefix, *low, *high);
                let (sl, sh) = (self.bind(low), self.bind(high));
                range(
                    *prefix,
                    "(e->>'lo')::bigint",
                    "(e->>'hi')::bigint",
                    &sl,
                    &sh,
                )
            }
            ValueTest::Composite { key, last } => {
                let key = self.bind(*key);
                format!(
                    "e->'k' @> to_jsonb({key}::bigint) AND {}",
                    self.value_test(last)
                )
            }
        }
    }
}

/// The ordered rows (dates, strings) of the current row `c`, by either index.
fn rows_of(table: &str) -> String {
    format!(
        "{table}.tenant = c.tenant AND {table}.resource_key = c.resource_key \
         AND {table}.type = c.type AND {table}.id = c.id"
    )
}

fn sort_type(by: &SortBy) -> &'static str {
    match by {
        SortBy::Date(_) => "bigint",
        SortBy::String(_) | SortBy::Id => "text",
        SortBy::LastUpdated => "timestamptz",
    }
}

/// The comparison of a stored range [tl, th] with the search range [sl, sh], as R4 defines
/// each prefix. `ap` arrives with its range already widened and means overlap.
fn range(prefix: Prefix, tl: &str, th: &str, sl: &str, sh: &str) -> String {
    let within = format!("({tl} >= {sl} AND {th} <= {sh})");
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => format!("NOT {within}"),
        Prefix::Gt => format!("{th} > {sh}"),
        Prefix::Lt => format!("{tl} < {sl}"),
        Prefix::Ge => format!("({th} > {sh} OR {within})"),
        Prefix::Le => format!("({tl} < {sl} OR {within})"),
        Prefix::Sa => format!("{tl} > {sh}"),
        Prefix::Eb => format!("{th} < {sl}"),
        Prefix::Ap => format!("({tl} <= {sh} AND {th} >= {sl})"),
    }
}

/// `ap` on a date: the value's span widened by a tenth of its distance from now.
fn date_bounds(prefix: Prefix, low: i64, high: i64) -> (i64, i64) {
    if prefix != Prefix::Ap {
        return (low, high);
    }
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let middle = low / 2 + high / 2;
    let margin = (now - middle).abs() / 10;
    (low.saturating_sub(margin), high.saturating_add(margin))
}

/// `ap` on a number: the value's range widened by a tenth of the value.
fn number_bounds(prefix: Prefix, low: Decimal, high: Decimal) -> (Decimal, Decimal) {
    if prefix != Prefix::Ap {
        return (low, high);
    }
    let margin = ((low + high) / Decimal::TWO).abs() / Decimal::TEN;
    (low - margin, high + margin)
}

/// Escapes LIKE's wildcards (the default escape is a backslash).
fn like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
