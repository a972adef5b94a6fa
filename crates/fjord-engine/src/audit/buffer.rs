//! Events waiting for the flusher: events built by the requests that made them, and open reads
//! that later reads by the same actor of the same patient's resources join until the flush.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;

use fjord_store::{NewVersion, Tenant, TenantKey};
use tokio::sync::Notify;

use super::event::{audit_event, Actor};
use super::{Audited, Merged, StoredEvent};
use crate::{Caller, Engine, EngineError};

/// Buffered events beyond which the flusher is woken before its second is up.
const FLUSH_AT: usize = 2_000;
/// Buffered events beyond which a request waits for the flusher: memory stays bounded and no
/// event is dropped; reads slow to the rate the trail is written at.
const CAPACITY: usize = 20_000;
/// Entities at which an open read is closed and written as it is: an event stays a reasonable
/// size however fast one patient's resources are read.
const MOST_MERGED: usize = 1_000;

/// Events waiting to be written, shared by the engines of a process.
#[derive(Debug, Default)]
pub(crate) struct AuditBuffer {
    pending: Mutex<Pending>,
    /// Wakes the flusher early.
    full: Notify,
    /// Tells waiting requests that a flush emptied the buffer.
    drained: Notify,
    /// Held by a flush from taking the buffer to writing it: the flush at shutdown waits for
    /// the periodic one in progress, whose events would otherwise die with the process.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Events ready to be written, indexed already (by the requests, in parallel).
    events: Vec<(Tenant, StoredEvent)>,
    /// Reads not yet an event, by what their event says besides the entities read.
    reads: HashMap<ReadKey, OpenRead>,
}

impl Pending {
    /// Events this flush will write.
    fn len(&self) -> usize {
        self.events.len() + self.reads.len()
    }
}

/// What the reads one event records have in common.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ReadKey {
    tenant: TenantKey,
    actor: Actor,
    interaction: &'static str,
    /// The one patient the resources read belong to (events are per patient), if any.
    patient: Option<String>,
}

/// Reads waiting to be one event.
#[derive(Debug)]
struct OpenRead {
    tenant: Tenant,
    /// A version read twice is named once, in the period of the event.
    merged: Merged,
}

impl Audited {
    /// Whether the event may record other interactions of its actor too: a successful read of
    /// one version (a search has its own query and stays an event of its own).
    pub(super) fn merges(&self) -> bool {
        matches!(self.interaction, "read" | "vread")
            && self.failure.is_none()
            && self.query.is_none()
            && self.notification.is_none()
    }
}

impl Engine {
    /// Queues an event for the flusher; waits while the buffer is full.
    pub(super) async fn buffer_event(&self, tenant: Tenant, stored: StoredEvent) {
        let buffer = &self.shared.audit;
        let mut event = Some((tenant, stored));
        loop {
            let drained = buffer.drained.notified();
            {
                let mut pending = buffer.pending.lock().expect("audit buffer");
                if pending.len() < CAPACITY {
                    pending.events.extend(event.take());
                    if pending.len() >= FLUSH_AT {
                        buffer.full.notify_one();
                    }
                    return;
                }
            }
            buffer.full.notify_one();
            drained.await;
        }
    }

    /// Adds a read ([`Audited::merges`]) to the open event of its actor and patient, or opens
    /// one; waits while the buffer is full.
    pub(super) async fn buffer_read(&self, tenant: &Tenant, actor: Actor, audited: Audited) {
        let buffer = &self.shared.audit;
        let key = ReadKey {
            tenant: tenant.key,
            actor,
            interaction: audited.interaction,
            patient: audited.patients.first().cloned(),
        };
        let mut read = Some((key, audited));
        loop {
            let drained = buffer.drained.notified();
            let closed = {
                let mut pending = buffer.pending.lock().expect("audit buffer");
                let (key, audited) = read.take().expect("a read to buffer");
                let events = pending.len();
                match pending.reads.entry(key) {
                    Entry::Occupied(mut open) => {
                        open.get_mut().merged.absorb(audited);
                        if open.get().merged.entities() < MOST_MERGED {
                            return;
                        }
                        Some(open.remove_entry())
                    }
                    Entry::Vacant(vacant) if events < CAPACITY => {
                        vacant.insert(OpenRead {
                            tenant: tenant.clone(),
                            merged: Merged::open(audited),
                        });
                        if events + 1 >= FLUSH_AT {
                            buffer.full.notify_one();
                        }
                        return;
                    }
                    Entry::Vacant(vacant) => {
                        read = Some((vacant.into_key(), audited));
                        None
                    }
                }
            };
            match closed {
                Some((key, open)) => {
                    if let Some(stored) = self.read_event(key.actor, &open).await {
                        self.buffer_event(open.tenant, stored).await;
                    }
                    return;
                }
                None => {
                    buffer.full.notify_one();
                    drained.await;
                }
            }
        }
    }

    /// The event of reads, built and indexed; `None` (logged) if it could not be indexed.
    async fn read_event(&self, actor: Actor, open: &OpenRead) -> Option<StoredEvent> {
        let internal = Caller::internal(open.tenant.clone());
        match self
            .stored_event(&internal, audit_event(&actor, open.merged.audited()))
            .await
        {
            Ok(stored) => Some(stored),
            Err(error) => {
                tracing::error!(%error, "an AuditEvent could not be indexed");
                None
            }
        }
    }

    /// Writes the buffered events once a second, or sooner when many wait; runs until the
    /// process ends.
    pub async fn follow_audit(&self) {
        loop {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.shared.audit.full.notified(),
            )
            .await;
            if let Err(error) = self.flush_audit().await {
                tracing::error!(%error, "writing the audit trail");
            }
        }
    }

    /// Writes every buffered event, one statement per tenant (also at shutdown), after any
    /// flush in progress.
    pub async fn flush_audit(&self) -> Result<usize, EngineError> {
        let _flushing = self.shared.audit.flushing.lock().await;
        let Pending { mut events, reads } =
            std::mem::take(&mut *self.shared.audit.pending.lock().expect("audit buffer"));
        // Room again: requests waiting for it go on while these are written.
        self.shared.audit.drained.notify_waiters();
        for (key, open) in reads {
            if let Some(stored) = self.read_event(key.actor, &open).await {
                events.push((open.tenant, stored));
            }
        }
        let mut written = 0;
        let mut by_tenant: Vec<(Tenant, Vec<StoredEvent>)> = Vec::new();
        for (tenant, event) in events {
            match by_tenant.iter_mut().find(|(t, _)| t.key == tenant.key) {
                Some((_, events)) => events.push(event),
                None => by_tenant.push((tenant, vec![event])),
            }
        }
        let mut groups = by_tenant.into_iter();
        while let Some((tenant, stored)) = groups.next() {
            match self.write_events(&tenant, &stored).await {
                Ok(count) => written += count,
                Err(error @ EngineError::Unavailable(_)) => {
                    // The database is away: the events wait for the next flush, ahead of those
                    // buffered since, so none is lost to an outage.
                    let unwritten = std::iter::once((tenant, stored)).chain(groups).flat_map(
                        |(tenant, events)| events.into_iter().map(move |e| (tenant.clone(), e)),
                    );
                    let mut pending = self.shared.audit.pending.lock().expect("audit buffer");
                    let since = std::mem::take(&mut pending.events);
                    pending.events.extend(unwritten);
                    pending.events.extend(since);
                    return Err(error);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(written)
    }

    /// Writes one tenant's buffered events in one unit of work.
    async fn write_events(
        &self,
        tenant: &Tenant,
        stored: &[StoredEvent],
    ) -> Result<usize, EngineError> {
        let caller = Caller::internal(tenant.clone());
        let versions: Vec<NewVersion<'_>> = stored.iter().map(StoredEvent::new_version).collect();
        let mut unit = self.begin(&caller).await?;
        let result = unit.create_many(&versions).await.map_err(EngineError::from);
        self.finish(&caller, unit, result).await
    }
}
