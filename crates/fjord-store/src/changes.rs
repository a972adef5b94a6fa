//! The change log as its consumers read it (the text index now; subscriptions and export later):
//! every version in `seq` order, without gaps.
//!
//! Positions come from a sequence, so they are not committed in order: a write may take
//! position 9 and commit after the write that took 10, and a failed write leaves 9 empty for
//! ever. A consumer that remembered only "the highest position seen" would skip the late 9. A
//! [`ChangeCursor`] therefore remembers each hole below what it has seen, with a bound on the
//! transaction ids that could still fill it, and closes the hole once a later snapshot's `xmin`
//! passes that bound: every transaction below it has ended, so the writer has committed (and
//! its row is read) or never will. The writer took its transaction id before its position (the
//! version insert reads the pointer update's row; `create_many` inserts the pointers first),
//! and its position before the higher one the reader saw committed, so before the reader's
//! statement began. The bound is the reader's own transaction id, taken during that statement,
//! plus one. (The snapshot's `xmax` is no such bound: it is the latest *completed* id plus one,
//! and a writer whose id is above every completed one is running yet not listed.)

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Store, StoreError, TenantKey};

/// How far a consumer has read a tenant's change log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCursor {
    /// Every position up to here is read or known to stay empty.
    pub through: i64,
    /// Positions above `through` that were empty when a later one was read, each with the
    /// bound on the transaction ids that could still fill it (see the module's documentation).
    #[serde(default)]
    pub holes: BTreeMap<i64, u64>,
    /// Positions above `through` already read (or holes known to stay empty).
    #[serde(default)]
    pub settled: BTreeSet<i64>,
}

impl ChangeCursor {
    /// Positions of the log up to `end` that this cursor has not read: how far its consumer is
    /// behind. Holes count until they are known to stay empty, as the consumer cannot tell yet.
    pub fn behind(&self, end: i64) -> i64 {
        let settled = self.settled.range(..=end).count() as i64;
        (end - self.through - settled).max(0)
    }
}

/// One version in the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// Canonical JSON; `None` for a delete.
    pub body: Option<String>,
}

/// Changes not read before, in `seq` order, and the cursor after them.
#[derive(Debug)]
pub struct ChangeBatch {
    pub changes: Vec<Change>,
    pub cursor: ChangeCursor,
    /// Whether `limit` cut the batch short: more may follow at once.
    pub full: bool,
}

impl Store {
    /// What identifies this database to state kept outside it: the id its migrations made and
    /// its oid, which differs in a copy.
    pub async fn instance_id(&self) -> Result<String, StoreError> {
        sqlx::query_scalar(
            "SELECT i.id::text || '/' || d.oid::text FROM instance i \
             JOIN pg_database d ON d.datname = current_database()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::database)
    }

    /// The highest position the tenant's change log has used (0 for none).
    pub async fn change_log_end(&self, tenant: TenantKey) -> Result<i64, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let end = sqlx::query_scalar(
            "SELECT coalesce(max(seq), 0) FROM resource_version WHERE tenant = $1",
        )
        .bind(tenant.0)
        .fetch_one(connection.connection())
        .await;
        connection.settle(end)
    }

    /// The next at most `limit` changes of the tenant after `cursor`.
    pub async fn changes(
        &self,
        tenant: TenantKey,
        cursor: &ChangeCursor,
        limit: usize,
    ) -> Result<ChangeBatch, StoreError> {
        self.changes_without_bodies_of(tenant, cursor, limit, &[])
            .await
    }

    /// [`Store::changes`], with the bodies of the `skipped` types left out (`None`): a
    /// consumer that ignores them need not read them.
    #[tracing::instrument(skip(self, cursor), fields(through = cursor.through))]
    pub async fn changes_without_bodies_of(
        &self,
        tenant: TenantKey,
        cursor: &ChangeCursor,
        limit: usize,
        skipped: &[&str],
    ) -> Result<ChangeBatch, StoreError> {
        // One statement, so the snapshot it reports is the one its rows come from.
        let sql = "SELECT pg_snapshot_xmin(s.snapshot)::text AS xmin, s.reader::text AS reader, \
                     v.seq, v.type, v.id, v.version, \
                     CASE WHEN v.type = ANY($5::text[]) THEN NULL ELSE v.body END AS body \
                   FROM (SELECT pg_current_snapshot() AS snapshot, pg_current_xact_id() AS reader) s \
                   LEFT JOIN LATERAL ( \
                     SELECT seq, type, id, version, body FROM resource_version \
                     WHERE tenant = $1 AND seq > $2 AND NOT seq = ANY($3::bigint[]) \
                     ORDER BY seq LIMIT $4) v ON true";
        let settled: Vec<i64> = cursor.settled.iter().copied().collect();
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = sqlx::query(sql)
            .bind(tenant.0)
            .bind(cursor.through)
            .bind(settled)
            .bind(limit as i64)
            .bind(skipped)
            .fetch_all(connection.connection())
            .await;
        let rows = connection.settle(rows)?;
        let snapshot = |column: &str| -> Result<u64, StoreError> {
            let text: String = rows
                .first()
                .map(|row| row.get(column))
                .ok_or_else(|| StoreError::Database("the snapshot query returned no row".into()))?;
            text.parse()
                .map_err(|_| StoreError::Database(format!("unreadable transaction id {text}")))
        };
        let (xmin, bound) = (snapshot("xmin")?, snapshot("reader")? + 1);
        let changes: Vec<Change> = rows
            .iter()
            .filter_map(|row| {
                Some(Change {
                    seq: row.get::<Option<i64>, _>("seq")?,
                    resource_type: row.get("type"),
                    id: row.get("id"),
                    version: row.get("version"),
                    body: row.get("body"),
                })
            })
            .collect();
        let full = changes.len() == limit;
        let seen: Vec<i64> = changes.iter().map(|c| c.seq).collect();
        Ok(ChangeBatch {
            cursor: advance(cursor, &seen, xmin, bound, full),
            changes,
            full,
        })
    }
}

/// The cursor after reading the positions `seen` (ascending) in a snapshot with `xmin`, by a
/// reader whose transaction ids below `bound` include every writer of a position below the
/// highest seen; `full` when the read stopped at its limit, so positions above the last seen
/// were not looked at.
fn advance(cursor: &ChangeCursor, seen: &[i64], xmin: u64, bound: u64, full: bool) -> ChangeCursor {
    let mut next = cursor.clone();
    next.settled.extend(seen.iter().copied());
    for seq in seen {
        next.holes.remove(seq);
    }
    let looked_up_to = match (full, seen.last()) {
        (true, Some(last)) => *last,
        _ => i64::MAX,
    };
    // Holes whose writers have all ended, and that this read would have seen filled.
    let closed: Vec<i64> = next
        .holes
        .iter()
        .filter(|(seq, bound)| **seq <= looked_up_to && xmin >= **bound)
        .map(|(seq, _)| *seq)
        .collect();
    for seq in closed {
        next.holes.remove(&seq);
        next.settled.insert(seq);
    }
    // New holes: empty positions below the highest one read.
    if let Some(highest) = seen.last() {
        for seq in next.through + 1..*highest {
            if !next.settled.contains(&seq) {
                next.holes.entry(seq).or_insert(bound);
            }
        }
    }
    while next.settled.remove(&(next.through + 1)) {
        next.through += 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_behind_by_the_positions_it_has_not_read() {
        let cursor = advance(&ChangeCursor::default(), &[1, 2, 4, 5], 10, 12, false);
        assert_eq!((cursor.through, cursor.settled.len()), (2, 2));
        // 3 is a hole (it may still fill); 6 and 7 are new.
        assert_eq!(cursor.behind(7), 3);
        assert_eq!(cursor.behind(5), 1);
        assert_eq!(ChangeCursor::default().behind(0), 0);
        assert_eq!(cursor.behind(1), 0);
    }

    #[test]
    fn contiguous_reads_move_the_cursor() {
        let cursor = advance(&ChangeCursor::default(), &[1, 2, 3], 10, 12, false);
        assert_eq!(cursor.through, 3);
        assert!(cursor.holes.is_empty() && cursor.settled.is_empty());
    }

    #[test]
    fn a_late_commit_below_the_highest_position_is_still_read() {
        // 2 is taken by a writer that commits after 3 was read.
        let first = advance(&ChangeCursor::default(), &[1, 3], 10, 12, false);
        assert_eq!(first.through, 1);
        assert_eq!(first.holes, BTreeMap::from([(2, 12)]));
        // Its writer may still run: xmin 11 < 12.
        let waiting = advance(&first, &[], 11, 13, false);
        assert_eq!(waiting.holes, BTreeMap::from([(2, 12)]));
        let filled = advance(&waiting, &[2], 11, 13, false);
        assert_eq!(filled.through, 3);
        assert!(filled.holes.is_empty() && filled.settled.is_empty());
    }

    #[test]
    fn a_hole_closes_once_its_writers_have_ended() {
        let first = advance(&ChangeCursor::default(), &[1, 3, 4], 10, 12, false);
        let closed = advance(&first, &[5], 12, 14, false);
        assert_eq!(closed.through, 5);
        assert!(closed.holes.is_empty() && closed.settled.is_empty());
    }

    #[test]
    fn a_full_read_leaves_holes_above_it_open() {
        let first = advance(&ChangeCursor::default(), &[1, 3, 6], 10, 12, false);
        assert_eq!(first.holes.keys().copied().collect::<Vec<_>>(), [2, 4, 5]);
        // Limit 1: only 2 was looked at; 4 and 5 stay open though xmin passed.
        let next = advance(&first, &[2], 20, 21, true);
        assert_eq!(next.through, 3);
        assert_eq!(next.holes.keys().copied().collect::<Vec<_>>(), [4, 5]);
        let last = advance(&next, &[], 20, 21, false);
        assert_eq!(last.through, 6);
    }
}
