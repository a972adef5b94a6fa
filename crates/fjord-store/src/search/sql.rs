//! A [`SearchQuery`] as SQL over `resource_current` (alias `c`) and the ordered index tables.
//! Chains and reverse chains are subqueries over `resource_current` under aliases of their own.

use fjord_search::{
    date_bounds, number_bounds, Filter, Prefix, SearchQuery, SortBy, StringMatch, UnitMatch,
    ValueTest, SORT_LARGEST, SORT_SMALLEST,
};
use rust_decimal::Decimal;
use sqlx::postgres::PgArguments;
use sqlx::Arguments;

use super::common_keys::Shares;
use crate::TenantKey;

/// A statement being built, with its arguments.
pub(crate) struct Sql {
    pub(crate) args: PgArguments,
    /// The tenant's common keys (see [`super::common_keys`]).
    common: Shares,
    next: usize,
    /// Aliases handed out to subqueries so far.
    aliases: usize,
    /// The condition on `c.type`.
    types: String,
}

impl Sql {
    /// `$1` is the tenant and `$2` the type (or the array of types) in every statement.
    pub(crate) fn new(tenant: TenantKey, types: &[String], common: Shares) -> Sql {
        let mut sql = Sql {
            args: PgArguments::default(),
            common,
            next: 1,
            aliases: 0,
            types: String::new(),
        };
        sql.bind(tenant.0);
        sql.types = match types {
            [one] => {
                sql.bind(one.clone());
                "c.type = $2".into()
            }
            several => {
                sql.bind(several.to_vec());
                "c.type = ANY($2::text[])".into()
            }
        };
        sql
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
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

    pub(super) fn count(&mut self, query: &SearchQuery) -> String {
        let types = self.type_condition(&query.filters);
        let filters = self.filters("c", &query.filters);
        format!(
            "SELECT count(*) FROM resource_current c \
             WHERE c.tenant = $1 AND {types} AND NOT c.deleted{filters}"
        )
    }

    /// The condition on `c.type` beside the top-level `filters`. A rare key among them (not
    /// common, so looked up in the GIN index, and cheap to) implies the type, as keys hash it:
    /// the condition is then written so that no index takes it. Else the planner, misled by a
    /// key's estimate among many AuditEvents, ANDs the bitmap of every resource of the type
    /// from the `(tenant, type, last_updated)` index into the key's few rows (4.5 ms of a 5 ms
    /// search by patient). `IS TRUE` keeps the condition's estimate (the planner estimates
    /// the comparison inside) and its meaning (`type` is never NULL).
    fn type_condition(&self, filters: &[Filter]) -> String {
        if self.has_rare_key(filters) {
            format!("({}) IS TRUE", self.types)
        } else {
            self.types.clone()
        }
    }

    fn has_rare_key(&self, filters: &[Filter]) -> bool {
        filters
            .iter()
            .any(|filter| matches!(filter, Filter::Key(key) if !self.common.contains_key(key)))
    }

    /// Whether the page statement of `query` plans the same whatever its values, so that
    /// Postgres may plan it once per connection instead of on every search: equality keys
    /// only, one of them rare, in the default order. Such a search always reads the rare key's
    /// few rows from the keys' index and sorts them (no index gives the `COLLATE "C"` order);
    /// but Postgres's estimate of a generic plan's cost (the key's rows unknown) is higher than
    /// that of a plan for the values, so left to itself it plans every search again, which
    /// was 36% of Postgres's work in a search by patient.
    pub(super) fn plans_alike(&self, query: &SearchQuery) -> bool {
        query.sort.is_empty()
            && self.has_rare_key(&query.filters)
            && query
                .filters
                .iter()
                .all(|filter| matches!(filter, Filter::Key(_)))
    }

    /// Id and body of every current resource on which `filters` hold, in no order (bulk export).
    pub(crate) fn current_bodies(&mut self, filters: &[Filter]) -> String {
        let filters = self.filters("c", filters);
        format!(
            "SELECT c.id, v.body FROM resource_current c \
             JOIN resource_version v ON v.tenant = $1 AND v.type = c.type AND v.id = c.id \
               AND v.version = c.version \
             WHERE c.tenant = $1 AND {} AND NOT c.deleted{filters}",
            self.types
        )
    }

    /// The page statement: up to `limit` rows in sort order, after the keys `after`.
    pub(super) fn page(
        &mut self,
        query: &SearchQuery,
        after: Option<&[String]>,
        limit: usize,
    ) -> String {
        let types = self.type_condition(&query.filters);
        let filters = self.filters("c", &query.filters);
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
        // Type then id: unique among the rows of any search, so keyset paging never skips.
        sort_columns.push((
            "c.type COLLATE \"C\" AS s_type".into(),
            "s_type".into(),
            false,
            "text",
        ));
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
        let limit = self.bind(limit as i64);
        // The page is cut before the bodies are joined: joined first, every match's body would
        // be read and sorted to keep a page of them.
        format!(
            "SELECT p.type, p.id, p.version, p.last_updated, v.body, p.sort_keys FROM ( \
               SELECT q.*, ARRAY[{keys}] AS sort_keys FROM ( \
                 SELECT c.type, c.id, c.version, c.last_updated, {selected} \
                 FROM resource_current c \
                 WHERE c.tenant = $1 AND {types} AND NOT c.deleted{filters}) q{keyset} \
               ORDER BY {order} LIMIT {limit}) p \
             JOIN resource_version v ON v.tenant = $1 AND v.type = p.type AND v.id = p.id \
               AND v.version = p.version \
             ORDER BY {outer_order}",
            keys = key_texts.join(", "),
            selected = selected.join(", "),
            order = order.join(", "),
            outer_order = order
                .iter()
                .map(|o| format!("p.{o}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// The history statement (newest first, before the change-log position `cursor`, at or after
    /// `since`) of the resources each type's filter lets through as they are now; `None` lets
    /// through every resource of its type. `$2` names the types.
    pub(super) fn history(
        &mut self,
        grants: &[(String, Option<Filter>)],
        cursor: i64,
        since: Option<time::OffsetDateTime>,
        limit: i64,
    ) -> String {
        let mut arms = Vec::with_capacity(grants.len());
        for (resource_type, filter) in grants {
            let named = self.bind(resource_type.clone());
            match filter {
                None => arms.push(format!("v.type = {named}")),
                Some(filter) => {
                    let filters = self.filters("c", std::slice::from_ref(filter));
                    arms.push(format!(
                        "(v.type = {named} AND EXISTS (SELECT 1 FROM resource_current c \
                         WHERE c.tenant = $1 AND c.type = v.type AND c.id = v.id{filters}))"
                    ));
                }
            }
        }
        let cursor = self.bind(cursor);
        let since = self.bind(since);
        let limit = self.bind(limit);
        format!(
            "SELECT v.type, v.id, v.version, v.last_updated, v.op, v.body, v.seq AS position \
             FROM resource_version v WHERE v.tenant = $1 AND {types} AND v.seq < {cursor} \
             AND ({since}::timestamptz IS NULL OR v.last_updated >= {since}) AND ({arms}) \
             ORDER BY v.seq DESC LIMIT {limit}",
            types = self.types.replace("c.type", "v.type"),
            arms = arms.join(" OR "),
        )
    }

    /// A sort key as a value without NULLs: resources without one sort last either way.
    fn sort_expression(&mut self, by: &SortBy, descending: bool) -> String {
        let (aggregate, none) = match (by, descending) {
            (SortBy::Date(_), false) => ("min(d.low)", "9223372036854775807"),
            (SortBy::Date(_), true) => ("max(d.high)", "(-9223372036854775808)"),
            (SortBy::String(_), false) => ("min(s.normalized COLLATE \"C\")", "chr(1114111)"),
            (SortBy::String(_), true) => ("max(s.normalized COLLATE \"C\")", "''"),
            (SortBy::Value(param), descending) => {
                let (aggregate, none) = if descending {
                    ("max", "'-Infinity'")
                } else {
                    ("min", "'Infinity'")
                };
                return format!(
                    "coalesce((SELECT {aggregate}(coalesce(e->>'cv', e->>'v')::numeric) \
                     FROM jsonb_array_elements(c.vals -> {}) e), {none}::numeric)",
                    self.bind(param.clone())
                );
            }
            (SortBy::Text(param), descending) => {
                let param = self.bind(param.clone());
                let smallest = format!("c.vals -> '{SORT_SMALLEST}' ->> {param}");
                return if descending {
                    format!(
                        "coalesce(c.vals -> '{SORT_LARGEST}' ->> {param}, {smallest}, '') \
                         COLLATE \"C\""
                    )
                } else {
                    format!("coalesce({smallest}, chr(1114111)) COLLATE \"C\"")
                };
            }
            (SortBy::Id, _) => return "c.id COLLATE \"C\"".into(),
            (SortBy::LastUpdated, _) => return "c.last_updated".into(),
        };
        match by {
            SortBy::Date(param_keys) => format!(
                "coalesce((SELECT {aggregate} FROM search_date d WHERE {} \
                 AND d.param_key = ANY({}::bigint[])), {none})",
                rows_of("d", "c"),
                self.bind(param_keys.clone())
            ),
            SortBy::String(param_keys) => format!(
                "coalesce((SELECT {aggregate} FROM search_string s WHERE {} \
                 AND s.param_key = ANY({}::bigint[])), {none})",
                rows_of("s", "c"),
                self.bind(param_keys.clone())
            ),
            _ => unreachable!("handled above"),
        }
    }

    /// ` AND …` for every filter; the keys every match must have go in one GIN lookup.
    fn filters(&mut self, a: &str, filters: &[Filter]) -> String {
        let mut required = Vec::new();
        let mut conditions = Vec::new();
        for filter in filters {
            match filter {
                Filter::Key(key) => required.push(*key),
                other => conditions.push(self.filter(a, other)),
            }
        }
        let (looked_up, checked) = super::common_keys::split(required, &self.common);
        if !checked.is_empty() {
            // The function, not the operator: the planner does not take it to the index.
            conditions.insert(
                0,
                format!("arraycontains({a}.keys, {}::bigint[])", self.bind(checked)),
            );
        }
        if !looked_up.is_empty() {
            conditions.insert(0, format!("{a}.keys @> {}::bigint[]", self.bind(looked_up)));
        }
        conditions
            .iter()
            .map(|c| format!(" AND {c}"))
            .collect::<String>()
    }

    /// One filter on the current row under alias `a`.
    fn filter(&mut self, a: &str, filter: &Filter) -> String {
        match filter {
            Filter::Key(key) => format!("{a}.keys @> ARRAY[{}::bigint]", self.bind(*key)),
            Filter::Any(alternatives) => {
                // Keys and chains (keys of references to what a subquery finds) become one
                // overlap with one array: one GIN lookup, where ORed overlaps plan as a scan.
                let mut any_key = Vec::new();
                let mut arrays = Vec::new();
                let mut others = Vec::new();
                for alternative in alternatives {
                    match alternative {
                        Filter::Key(key) => any_key.push(*key),
                        Filter::Chain {
                            link,
                            target_type,
                            filter,
                        } => arrays.push(self.chain_keys(*link, target_type, filter)),
                        other => others.push(self.filter(a, other)),
                    }
                }
                if !any_key.is_empty() {
                    arrays.insert(0, format!("{}::bigint[]", self.bind(any_key)));
                }
                if !arrays.is_empty() {
                    others.insert(0, format!("{a}.keys && ({})", arrays.join(" || ")));
                }
                if others.is_empty() {
                    "false".into()
                } else {
                    format!("({})", others.join(" OR "))
                }
            }
            Filter::All(parts) => format!("(true{})", self.filters(a, parts)),
            // Rows without terms (written before indexing) match no `:not` either.
            Filter::Not(inner) => format!(
                "({a}.keys IS NOT NULL AND NOT coalesce({}, false))",
                self.filter(a, inner)
            ),
            Filter::Id(id) => format!("{a}.id = {}", self.bind(id.clone())),
            Filter::OfType(resource_type, inner) => format!(
                "({a}.type = {} AND {})",
                self.bind(resource_type.clone()),
                self.filter(a, inner)
            ),
            // The keys of references to the targets found, computed from their own keys.
            Filter::Chain {
                link,
                target_type,
                filter,
            } => format!(
                "{a}.keys && {}",
                self.chain_keys(*link, target_type, filter)
            ),
            Filter::Has {
                link,
                source_type,
                filter,
            } => {
                let h = self.alias();
                let link = self.bind(*link);
                let source_type = self.bind(source_type.clone());
                let filters = self.filters(&h, std::slice::from_ref(filter));
                format!(
                    "EXISTS (SELECT 1 FROM resource_current {h} WHERE {h}.tenant = $1 \
                     AND {h}.type = {source_type} AND NOT {h}.deleted \
                     AND {h}.keys @> ARRAY[{a}.resource_key # {link}::bigint]{filters})"
                )
            }
            Filter::Date {
                param_key: None,
                prefix,
                low,
                high,
            } => {
                let (low, high) = date_bounds(*prefix, *low, *high);
                let stored =
                    format!("(floor(extract(epoch FROM {a}.last_updated) * 1000)::bigint)");
                let (sl, sh) = (self.bind(low), self.bind(high));
                range(*prefix, &stored, &stored, &sl, &sh)
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
                    rows_of("d", a),
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
                    rows_of("s", a)
                )
            }
            Filter::Among { resource_type, ids } => format!(
                "({a}.type = {} AND {a}.id = ANY({}::text[]))",
                self.bind(resource_type.clone()),
                self.bind(ids.clone())
            ),
            // The engine answers text and terminology filters before a query reaches the
            // store; one that got here unanswered matches nothing rather than everything.
            Filter::Text { .. } | Filter::Concepts { .. } => "false".into(),
            Filter::Value { param, test } => {
                let param = self.bind(param.clone());
                format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements({a}.vals -> {param}) e WHERE {})",
                    self.value_test(test)
                )
            }
        }
    }

    /// The keys that references under `link` to the current resources of `target_type` on
    /// which `filter` holds have: each target's own key combined with the link.
    fn chain_keys(&mut self, link: i64, target_type: &str, filter: &Filter) -> String {
        let t = self.alias();
        let link = self.bind(link);
        let target_type = self.bind(target_type.to_owned());
        let filters = self.filters(&t, std::slice::from_ref(filter));
        format!(
            "ARRAY(SELECT {t}.resource_key # {link}::bigint \
             FROM resource_current {t} WHERE {t}.tenant = $1 AND {t}.type = {target_type} \
             AND NOT {t}.deleted{filters})"
        )
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

/// The ordered rows (dates, strings) of the current row under alias `a`, by either index. The
/// tenant is the parameter, not the row's column, so the plan prunes to the tenant's partition.
fn rows_of(table: &str, a: &str) -> String {
    format!(
        "{table}.tenant = $1 AND {table}.resource_key = {a}.resource_key \
         AND {table}.type = {a}.type AND {table}.id = {a}.id"
    )
}

fn sort_type(by: &SortBy) -> &'static str {
    match by {
        SortBy::Date(_) => "bigint",
        SortBy::String(_) | SortBy::Text(_) | SortBy::Id => "text",
        SortBy::LastUpdated => "timestamptz",
        SortBy::Value(_) => "numeric",
    }
}

/// The comparison of a stored range [tl, th] with the search range [sl, sh], as R4 defines
/// each prefix. `ap` arrives with its range already widened and means overlap.
/// The SQL of `fjord_search::admits`: keep the two in step.
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

/// Escapes LIKE's wildcards (the default escape is a backslash).
fn like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use fjord_search::SortKey;

    use super::*;

    fn query(filters: Vec<Filter>, sort: Vec<SortKey>) -> SearchQuery {
        SearchQuery {
            sort,
            ..SearchQuery::of(vec!["Observation".into()], filters, 50)
        }
    }

    #[test]
    fn only_rare_equality_keys_in_the_default_order_plan_alike() {
        let common = Arc::new(HashMap::from([(10, 0.3)]));
        let sql = Sql::new(TenantKey(1), &["Observation".into()], common);
        let by_date = SortKey {
            by: SortBy::LastUpdated,
            descending: true,
        };
        let range = Filter::Date {
            param_key: None,
            prefix: Prefix::Gt,
            low: 0,
            high: 1,
        };
        assert!(sql.plans_alike(&query(vec![Filter::Key(1)], vec![])));
        assert!(sql.plans_alike(&query(vec![Filter::Key(1), Filter::Key(10)], vec![])));
        // A common key's rows, a sort order or another kind of filter depend on the values.
        assert!(!sql.plans_alike(&query(vec![Filter::Key(10)], vec![])));
        assert!(!sql.plans_alike(&query(vec![Filter::Key(1)], vec![by_date])));
        assert!(!sql.plans_alike(&query(vec![Filter::Key(1), range], vec![])));
        assert!(!sql.plans_alike(&query(vec![], vec![])));
    }
}
