//! Delivery marks, written by group commit. A worker that delivered a notification waits until
//! its mark is in the store before it sends the next one, so a crash sends again at most the one
//! notification each subscription had in flight. Waiting for a transaction per notification
//! would cost the writes more than the notifications: the flusher writes every mark that came
//! in while it wrote the last ones, one statement per tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_store::TenantKey;
use tokio::sync::{oneshot, Notify};

use crate::Subscriptions;

/// Marks not yet written, and the workers waiting for them.
#[derive(Debug, Default)]
pub(crate) struct DeliveryMarks {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// The last event delivered, by tenant and subscription.
    through: HashMap<TenantKey, HashMap<String, i64>>,
    waiting: Vec<oneshot::Sender<()>>,
}

impl DeliveryMarks {
    /// Notes that `id` delivered its events through `through`; the answer comes once the note
    /// is written.
    fn note(&self, tenant: TenantKey, id: &str, through: i64) -> oneshot::Receiver<()> {
        let (written, wait) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("delivery marks");
            let mark = pending
                .through
                .entry(tenant)
                .or_default()
                .entry(id.to_owned())
                .or_default();
            *mark = (*mark).max(through);
            pending.waiting.push(written);
        }
        self.ready.notify_one();
        wait
    }

    /// Puts back marks whose write failed, keeping any later ones noted meanwhile.
    fn restore(&self, mut failed: Pending) {
        let mut pending = self.pending.lock().expect("delivery marks");
        for (tenant, marks) in failed.through.drain() {
            let into = pending.through.entry(tenant).or_default();
            for (id, through) in marks {
                let mark = into.entry(id).or_default();
                *mark = (*mark).max(through);
            }
        }
        pending.waiting.append(&mut failed.waiting);
    }
}

impl Subscriptions {
    /// Records a delivery and waits until the record is stored.
    pub(crate) async fn mark_delivered(&self, tenant: TenantKey, id: &str, through: i64) {
        // A flusher that is gone (the process ending) answers nothing: going on is as safe as
        // a crash here.
        let _ = self.marks.note(tenant, id, through).await;
    }

    /// Writes the delivery marks as they come, for ever.
    pub(crate) async fn flush_marks(self: Arc<Self>) {
        loop {
            self.marks.ready.notified().await;
            let pending = std::mem::take(&mut *self.marks.pending.lock().expect("delivery marks"));
            let mut failed = false;
            for (tenant, marks) in &pending.through {
                let marks: Vec<(String, i64)> =
                    marks.iter().map(|(id, n)| (id.clone(), *n)).collect();
                if let Err(error) = self
                    .engine
                    .store()
                    .note_delivered(*tenant, &marks, false)
                    .await
                {
                    tracing::warn!(%error, "delivery marks not written; retrying");
                    failed = true;
                    break;
                }
            }
            if failed {
                // The workers keep waiting: they send nothing more until the store has their
                // marks again. Rewriting a tenant's written marks is harmless.
                self.marks.restore(pending);
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.marks.ready.notify_one();
                continue;
            }
            for written in pending.waiting {
                let _ = written.send(());
            }
        }
    }
}
