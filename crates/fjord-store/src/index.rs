//! The search index as the store writes it: the one statement that writes a version together with
//! its index terms (see `migrations/0003_search_index.sql` and `fjord_search::terms`).

use std::sync::LazyLock;

use fjord_search::IndexTerms;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::Postgres;

/// The write statements, by (checks targets, update, has dates, has strings): sqlx prepares
/// each text once per connection, so they are built once.
static STATEMENTS: LazyLock<[String; 16]> = LazyLock::new(|| {
    std::array::from_fn(|shape| {
        write_statement(
            shape & 8 != 0,
            shape & 4 != 0,
            shape & 2 != 0,
            shape & 1 != 0,
        )
    })
});

/// The statement for a write of `terms`, an update (the pointer exists) or a create, that
/// checks `targets` when it has any.
pub(crate) fn statement(targets: bool, update: bool, terms: &IndexTerms) -> &'static str {
    let shape = (targets as usize) << 3
        | (update as usize) << 2
        | (!terms.dates.is_empty() as usize) << 1
        | !terms.strings.is_empty() as usize;
    &STATEMENTS[shape]
}

// Parameters: $1 tenant, $2 type, $3 id, $4 new version, $5 change sequence, $6 last updated,
// $7 op, $8 body, $9 resource key, $10 keys, $11 values; then the date and string rows as one
// array per column; then, when the write checks targets, their types, their ids and their
// count. A concurrent creator makes the pointer's insert a no-op; a concurrent updater makes
// `version = $4 - 1` false once its commit is seen. Everything after the pointer happens only
// when it moved. One statement: one implicit transaction and one round trip, and naming only
// the tables that get rows spares Postgres the setup of the others.
//
// Targets are the current resources the version refers to (referential integrity), looked for
// under their shared reference locks (migration 0007), so a concurrent delete of one is either
// waited for and seen, or waits for this write and sees it. Missing any, nothing is written
// and the statement answers 2.
fn write_statement(targets: bool, update: bool, dates: bool, strings: bool) -> String {
    let first_target = 12 + 3 * (dates as usize + strings as usize);
    let (check, found_all) = if targets {
        (
            format!(
                "targets AS (SELECT count(*) AS found \
                 FROM fjord_current_targets($1, ${}::text[], ${}::text[])), ",
                first_target,
                first_target + 1
            ),
            format!("(SELECT found FROM targets) = ${}::int8", first_target + 2),
        )
    } else {
        (String::new(), "true".to_owned())
    };
    let current = if update {
        format!(
            "UPDATE resource_current SET version = $4, last_updated = $6, \
               deleted = ($7 = 'delete'), resource_key = $9, keys = $10, vals = $11::jsonb \
             WHERE tenant = $1 AND type = $2 AND id = $3 AND version = $4 - 1 AND {found_all} \
             RETURNING 1"
        )
    } else {
        format!(
            "INSERT INTO resource_current \
               (tenant, type, id, version, last_updated, deleted, resource_key, keys, vals) \
             SELECT $1, $2, $3, $4, $6, $7 = 'delete', $9, $10, $11::jsonb WHERE {found_all} \
             ON CONFLICT DO NOTHING RETURNING 1"
        )
    };
    let mut sql = format!(
        "WITH {check}current AS ({current}), version AS ( \
           INSERT INTO resource_version (tenant, type, id, version, seq, last_updated, op, body) \
           SELECT $1, $2, $3, $4, nextval($5::regclass), $6, $7, $8 FROM current RETURNING 1)"
    );
    sql += &term_statements(update, dates, strings, "$9", 12);
    if targets {
        sql + &format!(
            " SELECT CASE WHEN {found_all} THEN (SELECT count(*) FROM version) ELSE 2 END"
        )
    } else {
        sql + " SELECT count(*) FROM version"
    }
}

/// The statements that replace a resource's date and string rows once the CTE `version` has a
/// row: `resource_key` names the key's parameter and `next` the first of the rows' parameters.
fn term_statements(
    update: bool,
    dates: bool,
    strings: bool,
    resource_key: &str,
    mut next: usize,
) -> String {
    let mut sql = String::new();
    for (table, columns, filled) in [
        ("search_date", [("low", "int8"), ("high", "int8")], dates),
        (
            "search_string",
            [("normalized", "text"), ("exact", "text")],
            strings,
        ),
    ] {
        if update {
            sql += &format!(
                ", clear_{table} AS (DELETE FROM {table} \
                 WHERE tenant = $1 AND resource_key = {resource_key} \
                 AND EXISTS (SELECT 1 FROM version))"
            );
        }
        if filled {
            let (first, second) = (columns[0], columns[1]);
            sql += &format!(
                ", fill_{table} AS (INSERT INTO {table} \
                   (tenant, type, id, resource_key, param_key, {}, {}) \
                 SELECT $1, $2, $3, {resource_key}, u.* \
                 FROM unnest(${}::int8[], ${}::{}[], ${}::{}[]) AS u \
                 WHERE EXISTS (SELECT 1 FROM version))",
                first.0,
                second.0,
                next,
                next + 1,
                first.1,
                next + 2,
                second.1
            );
            next += 3;
        }
    }
    sql
}

/// The statements that replace the terms of a current version, without writing a version
/// (`$reindex`), by (has dates, has strings). Parameters: $1 tenant, $2 type, $3 id, $4 the
/// version the terms are of (nothing happens when it is no longer current), $5 resource key,
/// $6 keys, $7 values, then the rows as for [`statement`].
static REINDEX_STATEMENTS: LazyLock<[String; 4]> = LazyLock::new(|| {
    std::array::from_fn(|shape| {
        format!(
            "WITH version AS (UPDATE resource_current SET resource_key = $5, keys = $6, \
               vals = $7::jsonb \
             WHERE tenant = $1 AND type = $2 AND id = $3 AND version = $4 AND NOT deleted \
             RETURNING 1){} SELECT count(*) FROM version",
            term_statements(true, shape & 2 != 0, shape & 1 != 0, "$5", 8)
        )
    })
});

/// The statement that replaces the terms of a current version with `terms`.
pub(crate) fn reindex_statement(terms: &IndexTerms) -> &'static str {
    let shape = (!terms.dates.is_empty() as usize) << 1 | !terms.strings.is_empty() as usize;
    &REINDEX_STATEMENTS[shape]
}

/// Binds $9 onwards for [`statement`] ($5 onwards for [`reindex_statement`]).
pub(crate) fn bind_terms<'q>(
    query: QueryScalar<'q, Postgres, i64, PgArguments>,
    resource_key: i64,
    terms: &'q IndexTerms,
) -> QueryScalar<'q, Postgres, i64, PgArguments> {
    let mut query = query
        .bind(resource_key)
        .bind(&terms.keys)
        .bind(terms.values.as_deref());
    if !terms.dates.is_empty() {
        let dates = &terms.dates;
        query = query
            .bind(dates.iter().map(|d| d.param_key).collect::<Vec<_>>())
            .bind(dates.iter().map(|d| d.low).collect::<Vec<_>>())
            .bind(dates.iter().map(|d| d.high).collect::<Vec<_>>());
    }
    if !terms.strings.is_empty() {
        let strings = &terms.strings;
        query = query
            .bind(strings.iter().map(|s| s.param_key).collect::<Vec<_>>())
            .bind(
                strings
                    .iter()
                    .map(|s| s.normalized.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(strings.iter().map(|s| s.exact.as_str()).collect::<Vec<_>>());
    }
    query
}

/// Creates many new resources (first versions, fresh ids) with their terms in one statement:
/// the audit trail's buffered events. The per-resource columns come as one array each; keys,
/// which differ in number, as one flat array sliced by `key_from..=key_to` (1-based, an empty
/// slice when `from > to`); date and string rows as flat arrays naming their resource by index.
/// The versions take their positions only after the pointers are inserted, so the transaction
/// has its id before its first position, as change-log readers rely on (`changes`).
/// Parameters: $1 tenant, $2 change sequence, $3 types, $4 ids, $5 last updated, $6 bodies,
/// $7 resource keys, $8 values (JSON text or null), $9 flat keys, $10 key_from, $11 key_to,
/// $12–$15 date rows (resource index, param key, low, high), $16–$19 string rows (resource
/// index, param key, normalized, exact).
pub(crate) const CREATE_MANY: &str = "WITH new AS ( \
      SELECT * FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::int8[], \
                           $8::text[], $10::int4[], $11::int4[]) WITH ORDINALITY \
        AS u(type, id, last_updated, body, resource_key, vals, key_from, key_to, at)), \
    current AS (INSERT INTO resource_current \
        (tenant, type, id, version, last_updated, deleted, resource_key, keys, vals) \
      SELECT $1, type, id, 1, last_updated, false, resource_key, \
             coalesce(($9::int8[])[key_from:key_to], '{}'), vals::jsonb FROM new \
      RETURNING 1), \
    version AS (INSERT INTO resource_version (tenant, type, id, version, seq, last_updated, op, body) \
      SELECT $1, type, id, 1, nextval($2::regclass), last_updated, 'create', body FROM new \
      WHERE (SELECT count(*) FROM current) > 0 \
      RETURNING 1), \
    dates AS (INSERT INTO search_date (tenant, type, id, resource_key, param_key, low, high) \
      SELECT $1, n.type, n.id, n.resource_key, d.param_key, d.low, d.high \
      FROM unnest($12::int4[], $13::int8[], $14::int8[], $15::int8[]) AS d(at, param_key, low, high) \
      JOIN new n ON n.at = d.at), \
    strings AS (INSERT INTO search_string (tenant, type, id, resource_key, param_key, normalized, exact) \
      SELECT $1, n.type, n.id, n.resource_key, s.param_key, s.normalized, s.exact \
      FROM unnest($16::int4[], $17::int8[], $18::text[], $19::text[]) AS s(at, param_key, normalized, exact) \
      JOIN new n ON n.at = s.at) \
    SELECT (SELECT count(*) FROM current) + (SELECT count(*) FROM version)";
