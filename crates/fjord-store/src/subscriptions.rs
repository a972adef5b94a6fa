//! What subscription delivery keeps (migration 0008): each Subscription's state, the events
//! matched for it, numbered per subscription, and the cursors of change-log consumers.
//!
//! The dispatcher numbers events and moves its cursor in one transaction
//! ([`Store::record_events`]), so every committed change is matched exactly once whatever
//! crashes; delivery then moves `delivered` after the receiver said yes, so a crash between the
//! two sends an event again (at least once), never skips it.

use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

use crate::work::Work;
use crate::{ChangeCursor, Store, StoreError, TenantKey};

/// A subscription's delivery as the server last left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    /// The access record of the last client that wrote the Subscription.
    pub access: String,
    pub status: String,
    /// Events since the subscription started: the number of the last one.
    pub events: i64,
    /// Every event up to this number was delivered.
    pub delivered: i64,
    pub failures: i32,
    pub error: Option<String>,
    /// Only changes after this change-log position are matched.
    pub since_seq: i64,
}

/// One matched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    pub subscription: String,
    /// Numbered from 1 per subscription; 0 until recorded.
    pub number: i64,
    pub seq: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// The version is a delete.
    pub deleted: bool,
    pub at: OffsetDateTime,
    /// References (`Type/id`) of the topic's additional context.
    pub context: Vec<String>,
    /// The patients the version belongs to (`Patient/id`).
    pub patients: Vec<String>,
}

/// What one round of the dispatcher changes, written in one transaction.
#[derive(Debug, Default)]
pub struct DispatchRound {
    /// Subscriptions (re)started: status `requested`, failures cleared, matched from `seq` on,
    /// with the access record of their writer (a state is made anew for one deleted and
    /// created again within the round).
    pub started: Vec<Started>,
    /// Subscriptions the client turned off.
    pub stopped: Vec<String>,
    /// Subscriptions deleted: their state and events go (before any start of the round).
    pub removed: Vec<String>,
    /// Events in change-log order.
    pub events: Vec<SubscriptionEvent>,
}

/// A subscription (re)started by a dispatcher round.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// Its version's position in the change log: it matches the changes after it.
    pub seq: i64,
    /// The access record of the client that wrote it.
    pub access: String,
}

impl DispatchRound {
    /// Notes a subscription started; this round's earlier stop of it no longer holds.
    pub fn start(&mut self, started: Started) {
        self.stopped.retain(|id| *id != started.id);
        self.started.retain(|s| s.id != started.id);
        self.started.push(started);
    }

    /// Notes a subscription turned off; this round's earlier start of it no longer holds.
    pub fn stop(&mut self, id: String) {
        self.started.retain(|s| s.id != id);
        if !self.stopped.contains(&id) {
            self.stopped.push(id);
        }
    }

    /// Notes a subscription deleted; this round's earlier start or stop of it, and the events
    /// it raised, no longer hold.
    pub fn remove(&mut self, id: String) {
        self.started.retain(|s| s.id != id);
        self.events.retain(|e| e.subscription != id);
        self.stopped.retain(|s| *s != id);
        if !self.removed.contains(&id) {
            self.removed.push(id);
        }
    }
}

const STATE_COLUMNS: &str =
    "s.id, s.access::text AS access, s.status, s.events, s.delivered, s.failures, s.error, s.since_seq";

/// An event's columns, named apart from the state's (`subscription_event e`).
const EVENT_COLUMNS: &str = "e.subscription, e.number, e.seq, e.type AS event_type, \
     e.id AS event_id, e.version, e.deleted, e.at, e.context, e.patients";

fn event_from_row(row: &PgRow) -> SubscriptionEvent {
    SubscriptionEvent {
        subscription: row.get("subscription"),
        number: row.get("number"),
        seq: row.get("seq"),
        resource_type: row.get("event_type"),
        id: row.get("event_id"),
        version: row.get("version"),
        deleted: row.get("deleted"),
        at: row.get("at"),
        context: row.get("context"),
        patients: row.get("patients"),
    }
}

fn state_from_row(row: &PgRow) -> SubscriptionState {
    SubscriptionState {
        id: row.get("id"),
        access: row.get("access"),
        status: row.get("status"),
        events: row.get("events"),
        delivered: row.get("delivered"),
        failures: row.get("failures"),
        error: row.get("error"),
        since_seq: row.get("since_seq"),
    }
}

impl Work<'_> {
    /// Records who wrote a Subscription: its notifications carry only what `access` may read.
    pub async fn record_subscription_access(
        &mut self,
        id: &str,
        access: &str,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant();
        sqlx::query(
            "INSERT INTO subscription_state (tenant, id, access) VALUES ($1, $2, $3::jsonb) \
             ON CONFLICT (tenant, id) DO UPDATE SET access = EXCLUDED.access",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(access)
        .execute(self.connection())
        .await
        .map(drop)
        .map_err(StoreError::database)
    }
}

impl Store {
    /// Every subscription's state in the tenant.
    pub async fn subscription_states(
        &self,
        tenant: TenantKey,
    ) -> Result<Vec<SubscriptionState>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM subscription_state s WHERE tenant = $1 ORDER BY id"
        ))
        .bind(tenant.0)
        .fetch_all(connection.connection())
        .await;
        Ok(connection
            .settle(rows)?
            .iter()
            .map(state_from_row)
            .collect())
    }

    /// One subscription's state.
    pub async fn subscription_state(
        &self,
        tenant: TenantKey,
        id: &str,
    ) -> Result<Option<SubscriptionState>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM subscription_state s WHERE tenant = $1 AND id = $2"
        ))
        .bind(tenant.0)
        .bind(id)
        .fetch_optional(connection.connection())
        .await;
        Ok(connection.settle(row)?.as_ref().map(state_from_row))
    }

    /// Where every consumer that records its cursor in the database stands in the tenant's
    /// change log, by name.
    pub async fn consumer_cursors(
        &self,
        tenant: TenantKey,
    ) -> Result<Vec<(String, ChangeCursor)>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let rows: Result<Vec<(String, String)>, _> = sqlx::query_as(
            "SELECT name, cursor::text FROM change_consumer WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant.0)
        .fetch_all(connection.connection())
        .await;
        connection
            .settle(rows)?
            .into_iter()
            .map(|(name, text)| match serde_json::from_str(&text) {
                Ok(cursor) => Ok((name, cursor)),
                Err(e) => Err(StoreError::Database(format!(
                    "unreadable cursor of {name}: {e}"
                ))),
            })
            .collect()
    }

    /// Where the consumer `name` stands in the tenant's change log.
    pub async fn consumer_cursor(
        &self,
        tenant: TenantKey,
        name: &str,
    ) -> Result<Option<ChangeCursor>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let text: Result<Option<String>, _> = sqlx::query_scalar(
            "SELECT cursor::text FROM change_consumer WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant.0)
        .bind(name)
        .fetch_optional(connection.connection())
        .await;
        match connection.settle(text)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Database(format!("unreadable cursor of {name}: {e}"))),
        }
    }

    /// Applies a dispatcher round and moves the consumer `name` to `cursor`, all in one
    /// transaction; the events come back numbered.
    #[tracing::instrument(skip_all, fields(events = round.events.len()))]
    pub async fn record_dispatch(
        &self,
        tenant: TenantKey,
        name: &str,
        cursor: &ChangeCursor,
        mut round: DispatchRound,
    ) -> Result<Vec<SubscriptionEvent>, StoreError> {
        let mut work = self.begin(tenant).await?;
        let connection = work.connection();
        // Deletes first: a subscription deleted and created again within the round starts
        // afresh, with a new state. (Most rounds delete nothing, and send no statement.)
        if !round.removed.is_empty() {
            for (table, column) in [
                ("subscription_event", "subscription"),
                ("subscription_state", "id"),
            ] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE tenant = $1 AND {column} = ANY($2)"
                ))
                .bind(tenant.0)
                .bind(&round.removed)
                .execute(&mut *connection)
                .await
                .map_err(StoreError::database)?;
            }
        }
        for started in &round.started {
            sqlx::query(
                "INSERT INTO subscription_state (tenant, id, access, status, since_seq) \
                 VALUES ($1, $2, $4::jsonb, 'requested', $3) \
                 ON CONFLICT (tenant, id) DO UPDATE SET status = 'requested', failures = 0, \
                 error = NULL, since_seq = EXCLUDED.since_seq",
            )
            .bind(tenant.0)
            .bind(&started.id)
            .bind(started.seq)
            .bind(&started.access)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::database)?;
        }
        for id in &round.stopped {
            sqlx::query(
                "UPDATE subscription_state SET status = 'off' WHERE tenant = $1 AND id = $2",
            )
            .bind(tenant.0)
            .bind(id)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::database)?;
        }
        if !round.events.is_empty() {
            let mut subscriptions: Vec<String> = round
                .events
                .iter()
                .map(|e| e.subscription.clone())
                .collect();
            subscriptions.sort();
            subscriptions.dedup();
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, events FROM subscription_state WHERE tenant = $1 AND id = ANY($2) \
                 ORDER BY id FOR UPDATE",
            )
            .bind(tenant.0)
            .bind(&subscriptions)
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::database)?;
            let mut last: std::collections::HashMap<String, i64> = rows.into_iter().collect();
            // A subscription removed meanwhile has no state: its events are dropped.
            round.events.retain(|e| last.contains_key(&e.subscription));
            for event in &mut round.events {
                let number = last.get_mut(&event.subscription).expect("kept above");
                *number += 1;
                event.number = *number;
            }
            let column = |f: fn(&SubscriptionEvent) -> String| -> Vec<String> {
                round.events.iter().map(f).collect()
            };
            // Lists of strings travel as JSON: UNNEST flattens arrays of arrays.
            let lists = |f: fn(&SubscriptionEvent) -> &Vec<String>| -> Vec<String> {
                round
                    .events
                    .iter()
                    .map(|e| serde_json::to_string(f(e)).expect("strings serialize"))
                    .collect()
            };
            sqlx::query(
                "INSERT INTO subscription_event \
                 (tenant, subscription, number, seq, type, id, version, deleted, at, context, \
                  patients) \
                 SELECT $1, s, n, q, t, i, v, d, a, \
                   ARRAY(SELECT jsonb_array_elements_text(c::jsonb)), \
                   ARRAY(SELECT jsonb_array_elements_text(p::jsonb)) \
                 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
                             $7::bigint[], $8::boolean[], $9::timestamptz[], $10::text[], \
                             $11::text[]) \
                   AS e(s, n, q, t, i, v, d, a, c, p)",
            )
            .bind(tenant.0)
            .bind(column(|e| e.subscription.clone()))
            .bind(round.events.iter().map(|e| e.number).collect::<Vec<_>>())
            .bind(round.events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(column(|e| e.resource_type.clone()))
            .bind(column(|e| e.id.clone()))
            .bind(round.events.iter().map(|e| e.version).collect::<Vec<_>>())
            .bind(round.events.iter().map(|e| e.deleted).collect::<Vec<_>>())
            .bind(round.events.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(lists(|e| &e.context))
            .bind(lists(|e| &e.patients))
            .execute(&mut *connection)
            .await
            .map_err(StoreError::database)?;
            let (ids, numbers): (Vec<String>, Vec<i64>) = last.into_iter().unzip();
            sqlx::query(
                "UPDATE subscription_state s SET events = n.events \
                 FROM UNNEST($2::text[], $3::bigint[]) AS n(id, events) \
                 WHERE s.tenant = $1 AND s.id = n.id",
            )
            .bind(tenant.0)
            .bind(ids)
            .bind(numbers)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::database)?;
        }
        let cursor = serde_json::to_string(cursor).expect("a cursor serializes");
        sqlx::query(
            "INSERT INTO change_consumer (tenant, name, cursor) VALUES ($1, $2, $3::jsonb) \
             ON CONFLICT (tenant, name) DO UPDATE SET cursor = EXCLUDED.cursor",
        )
        .bind(tenant.0)
        .bind(name)
        .bind(cursor)
        .execute(&mut *connection)
        .await
        .map_err(StoreError::database)?;
        work.commit().await?;
        Ok(round.events)
    }

    /// Removes the events recorded before `before` that were delivered; events still to be
    /// delivered stay, however old. The number removed.
    pub async fn prune_subscription_events(
        &self,
        tenant: TenantKey,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let result = sqlx::query(
            "DELETE FROM subscription_event e USING subscription_state s \
             WHERE e.tenant = $1 AND s.tenant = $1 AND s.id = e.subscription \
             AND e.number <= s.delivered AND e.at < $2",
        )
        .bind(tenant.0)
        .bind(before)
        .execute(connection.connection())
        .await;
        Ok(connection.settle(result)?.rows_affected())
    }

    /// A subscription's events numbered `from..=to`, at most `limit`, in order.
    pub async fn subscription_events(
        &self,
        tenant: TenantKey,
        subscription: &str,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<SubscriptionEvent>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM subscription_event e \
             WHERE tenant = $1 AND subscription = $2 AND number BETWEEN $3 AND $4 \
             ORDER BY number LIMIT $5"
        ))
        .bind(tenant.0)
        .bind(subscription)
        .bind(from)
        .bind(to)
        .bind(limit as i64)
        .fetch_all(connection.connection())
        .await;
        Ok(connection
            .settle(rows)?
            .iter()
            .map(event_from_row)
            .collect())
    }

    /// A subscription's state and, when it is active, its first `limit` events after
    /// `delivered` and `after` (what the worker knows it delivered), in one statement (a
    /// delivery worker's every step), which also records `after` as delivered: a worker that
    /// goes on to its next notification has stored the mark of the last one first, without a
    /// statement of its own. Committed without waiting for the disk, like `note_delivered`.
    pub async fn pending_events(
        &self,
        tenant: TenantKey,
        subscription: &str,
        after: i64,
        limit: usize,
    ) -> Result<Option<(SubscriptionState, Vec<SubscriptionEvent>)>, StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let rows = sqlx::query(&format!(
            "WITH mark AS (UPDATE subscription_state SET delivered = $4 \
               WHERE tenant = $1 AND id = $2 AND delivered < $4 RETURNING 1) \
             SELECT {STATE_COLUMNS}, e.* \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous, \
               subscription_state s \
             LEFT JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM subscription_event e \
               WHERE e.tenant = s.tenant AND e.subscription = s.id \
               AND e.number > GREATEST(s.delivered, $4) \
               ORDER BY e.number LIMIT $3) e ON s.status = 'active' \
             WHERE s.tenant = $1 AND s.id = $2"
        ))
        .bind(tenant.0)
        .bind(subscription)
        .bind(limit as i64)
        .bind(after)
        .fetch_all(connection.connection())
        .await;
        let rows = connection.settle(rows)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let events = rows
            .iter()
            .filter(|row| row.get::<Option<i64>, _>("number").is_some())
            .map(event_from_row)
            .collect();
        Ok(Some((state_from_row(first), events)))
    }

    /// Notes, for each subscription, that the receiver took every event up to its number:
    /// `delivered` moves (never back); failures clear when `clear_failures`.
    pub async fn note_delivered(
        &self,
        tenant: TenantKey,
        delivered: &[(String, i64)],
        clear_failures: bool,
    ) -> Result<(), StoreError> {
        // Committed without waiting for the disk: visible at once and kept when Fjord dies; only
        // a crash of Postgres itself can lose the last notes, and then those notifications go
        // again, which at-least-once allows. A flush per note would cost the writes more.
        let mut work = self.begin(tenant).await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(work.connection())
            .await
            .map_err(StoreError::database)?;
        let (ids, numbers): (Vec<&str>, Vec<i64>) =
            delivered.iter().map(|(id, n)| (id.as_str(), *n)).unzip();
        sqlx::query(
            "UPDATE subscription_state s SET delivered = GREATEST(s.delivered, n.through), \
             failures = CASE WHEN $4 THEN 0 ELSE s.failures END, \
             error = CASE WHEN $4 THEN NULL ELSE s.error END \
             FROM UNNEST($2::text[], $3::bigint[]) AS n(id, through) \
             WHERE s.tenant = $1 AND s.id = n.id",
        )
        .bind(tenant.0)
        .bind(ids)
        .bind(numbers)
        .bind(clear_failures)
        .execute(work.connection())
        .await
        .map_err(StoreError::database)?;
        work.commit().await
    }

    /// Notes a failed delivery (the count, the reason and, past the limit, `error`), or a new
    /// status.
    pub async fn note_delivery(
        &self,
        tenant: TenantKey,
        id: &str,
        outcome: Delivery<'_>,
    ) -> Result<(), StoreError> {
        let mut connection = self.tenant_connection(tenant).await?;
        let result = match outcome {
            Delivery::Failed {
                failures,
                error,
                status,
            } => {
                sqlx::query(
                    "UPDATE subscription_state SET failures = $3, error = $4, \
                     status = COALESCE($5, status) WHERE tenant = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id)
                .bind(failures)
                .bind(error)
                .bind(status)
                .execute(connection.connection())
                .await
            }
            Delivery::Status(status) => {
                sqlx::query(
                    "UPDATE subscription_state SET status = $3, failures = 0, error = NULL \
                     WHERE tenant = $1 AND id = $2",
                )
                .bind(tenant.0)
                .bind(id)
                .bind(status)
                .execute(connection.connection())
                .await
            }
        };
        connection.settle(result).map(drop)
    }
}

/// What a delivery attempt that did not deliver came to.
#[derive(Debug, Clone, Copy)]
pub enum Delivery<'a> {
    /// The attempt failed; `status` is set when the subscription changes state (`error`).
    Failed {
        failures: i32,
        error: &'a str,
        status: Option<&'a str>,
    },
    /// The subscription moved to this status (the handshake passed: `active`).
    Status(&'a str),
}
