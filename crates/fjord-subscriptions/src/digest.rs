//! Notification audit digests: the notifications a subscription delivers within [`WINDOW`]
//! are recorded as one AuditEvent (one per patient) naming all they carried, its `period` the
//! time they went in, instead of an event each. A subscriber that is sent a measurement a
//! second would otherwise double the audit trail's writes, and the subscription's busiest
//! producers would pay for them (issue 7). A failed notification is recorded at once.
//!
//! A digest waits in memory until its window closes (checked every second), it names
//! [`MAX_ENTITIES`], or the server shuts down; a crash loses the digests not yet recorded,
//! at most the last [`WINDOW`] of notifications, as it loses the last second of reads.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_engine::{Audited, Caller, Merged};
use fjord_store::TenantKey;

use crate::Subscriptions;

/// How long a subscription's notifications are gathered into one event.
const WINDOW: Duration = Duration::from_secs(10);
/// Entities after which a digest is recorded before its window closes: events stay small.
const MAX_ENTITIES: usize = 100;
/// How often closed windows are looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One subscription's notifications not yet recorded.
#[derive(Debug)]
struct Digest {
    caller: Caller,
    merged: Merged,
    opened: Instant,
}

/// Digests by tenant and subscription.
#[derive(Debug, Default)]
pub(crate) struct AuditDigests(Mutex<HashMap<(TenantKey, String), Digest>>);

impl Subscriptions {
    /// Records a notification `caller`'s subscription `id` delivered: into its digest when one
    /// is open for the same caller and destination, else at once (failures) or in a new one.
    pub(crate) async fn audit_delivered(
        &self,
        tenant: TenantKey,
        id: &str,
        caller: Caller,
        audited: Audited,
    ) {
        if audited.failure.is_some() {
            return self.engine.audit(&caller, audited).await;
        }
        let due = {
            let mut digests = self.digests.0.lock().expect("audit digests");
            match digests.entry((tenant, id.to_owned())) {
                Entry::Occupied(mut open)
                    if open.get().caller.access == caller.access
                        && open.get().merged.audited().absorbs(&audited) =>
                {
                    let digest = open.get_mut();
                    digest.merged.absorb(audited);
                    (digest.merged.entities() >= MAX_ENTITIES).then(|| open.remove())
                }
                Entry::Occupied(mut open) => Some(open.insert(Digest::new(caller, audited))),
                Entry::Vacant(vacant) => {
                    vacant.insert(Digest::new(caller, audited));
                    None
                }
            }
        };
        if let Some(digest) = due {
            self.engine
                .audit(&digest.caller, digest.merged.into_audited())
                .await;
        }
    }

    /// Records the digests whose window closed, every second, for ever.
    pub(crate) async fn follow_audit_digests(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            self.record_digests(false).await;
        }
    }

    /// Records every open digest: at shutdown, before the audit trail's last flush.
    pub async fn flush_audit_digests(&self) {
        self.record_digests(true).await;
    }

    async fn record_digests(&self, all: bool) {
        let due: Vec<Digest> = (self.digests.0.lock().expect("audit digests"))
            .extract_if(|_, digest| all || digest.opened.elapsed() >= WINDOW)
            .map(|(_, digest)| digest)
            .collect();
        for digest in due {
            self.engine
                .audit(&digest.caller, digest.merged.into_audited())
                .await;
        }
    }
}

impl Digest {
    fn new(caller: Caller, audited: Audited) -> Digest {
        Digest {
            caller,
            merged: Merged::open(audited),
            opened: Instant::now(),
        }
    }
}
