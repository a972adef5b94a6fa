//! Delivery marks of workers that went idle. A worker that goes on to its next notification
//! stores the mark of the last one in the statement that reads the next events
//! (`Store::pending_events`); one that has nothing more to send leaves its mark here, and the
//! flusher writes every mark waiting, one statement per tenant, every 100 ms; a worker sends
//! events handed to it in memory only once no mark of its waits. Either way a crash sends again
//! at most the last notification of each subscription, and a notification costs no statement of
//! its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_store::TenantKey;

use crate::Subscriptions;

/// How often waiting marks are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Marks not yet written: the last event delivered, by tenant and subscription.
#[derive(Debug, Default)]
pub(crate) struct DeliveryMarks(Mutex<HashMap<TenantKey, HashMap<String, i64>>>);

impl Subscriptions {
    /// Notes that `id` delivered its events through `through`, for the flusher.
    pub(crate) fn mark_delivered(&self, tenant: TenantKey, id: &str, through: i64) {
        let mut marks = self.marks.0.lock().expect("delivery marks");
        let mark = marks
            .entry(tenant)
            .or_default()
            .entry(id.to_owned())
            .or_default();
        *mark = (*mark).max(through);
    }

    /// Whether a mark of `id` waits to be written. A worker sends its next notification from
    /// memory only once the last one's mark is stored.
    pub(crate) fn mark_waiting(&self, tenant: TenantKey, id: &str) -> bool {
        let marks = self.marks.0.lock().expect("delivery marks");
        marks.get(&tenant).is_some_and(|m| m.contains_key(id))
    }

    /// Writes the waiting marks every 100 ms, for ever. A mark stays waiting until its write
    /// committed (a later one of the same subscription stays after it).
    pub(crate) async fn flush_marks(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let marks = self.marks.0.lock().expect("delivery marks").clone();
            for (tenant, marks) in marks {
                let marks: Vec<(String, i64)> = marks.into_iter().collect();
                if marks.is_empty() {
                    continue;
                }
                if let Err(error) = self
                    .engine
                    .store()
                    .note_delivered(tenant, &marks, false)
                    .await
                {
                    // Not lost: the workers know what they sent, and store it with their next
                    // read; a crash before that sends it again.
                    tracing::warn!(%error, "delivery marks not written");
                    continue;
                }
                let mut waiting = self.marks.0.lock().expect("delivery marks");
                if let Some(of_tenant) = waiting.get_mut(&tenant) {
                    for (id, written) in marks {
                        if of_tenant.get(&id).is_some_and(|mark| *mark <= written) {
                            of_tenant.remove(&id);
                        }
                    }
                    if of_tenant.is_empty() {
                        waiting.remove(&tenant);
                    }
                }
            }
        }
    }
}
