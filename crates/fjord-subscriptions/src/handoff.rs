//! Events the dispatcher hands a running worker in memory, so that a worker woken for new
//! events need not read them back from the store: the common case under load, where each
//! subscription's events come one or a few at a time.
//!
//! The store stays the truth. A worker takes handed events only when they follow what it
//! delivered without a gap and fit in one notification; otherwise (it just started, failed,
//! fell behind, or its queue overflowed) it reads the store, as it always may.

use std::collections::VecDeque;
use std::sync::Mutex;

use fjord_store::SubscriptionEvent;
use tokio::sync::Notify;

/// Handed events a worker keeps at most. Past it the queue is dropped and the worker told to
/// read the store: a subscription that cannot deliver does not hold its backlog in memory.
const HANDED_MAX: usize = 64;

/// A running delivery worker, as the dispatcher and the socket binder see it.
#[derive(Debug, Default)]
pub(crate) struct Worker {
    pub wake: Notify,
    handed: Mutex<Handed>,
}

#[derive(Debug, Default)]
struct Handed {
    events: VecDeque<SubscriptionEvent>,
    /// Events were dropped since the worker last read the store.
    dropped: bool,
}

/// What the handed events allow a worker to do next.
#[derive(Debug, PartialEq)]
pub(crate) enum Take {
    /// Nothing was handed beyond what the worker delivered.
    Nothing,
    /// One notification's events, following the delivered ones without a gap.
    Events(Vec<SubscriptionEvent>),
    /// Read the store: the handed events leave a gap, or are more than one notification.
    Store,
}

impl Worker {
    /// Appends events of one dispatcher round, numbered in order.
    pub fn hand(&self, events: Vec<SubscriptionEvent>) {
        let mut handed = self.handed.lock().expect("handed events");
        if handed.events.len() + events.len() > HANDED_MAX {
            handed.events.clear();
            handed.dropped = true;
            return;
        }
        handed.events.extend(events);
    }

    /// Drops the handed events up to `delivered`, which the worker sent already.
    pub fn forget_through(&self, delivered: i64) {
        let events = &mut self.handed.lock().expect("handed events").events;
        while events.front().is_some_and(|e| e.number <= delivered) {
            events.pop_front();
        }
    }

    /// Whether events after `delivered` were handed (or dropped).
    pub fn has_after(&self, delivered: i64) -> bool {
        self.forget_through(delivered);
        let handed = self.handed.lock().expect("handed events");
        handed.dropped || !handed.events.is_empty()
    }

    /// The events of the next notification, when the handed ones allow it: all of them, if
    /// they start right after `delivered` and are at most `max_count`. More than one
    /// notification's worth goes by the store, which keeps each notification's mark before the
    /// next one goes.
    pub fn take(&self, delivered: i64, max_count: usize) -> Take {
        self.forget_through(delivered);
        let mut handed = self.handed.lock().expect("handed events");
        if std::mem::take(&mut handed.dropped) {
            return Take::Store;
        }
        let count = handed.events.len();
        match handed.events.front() {
            None => Take::Nothing,
            Some(first) if first.number == delivered + 1 && count <= max_count => {
                Take::Events(handed.events.drain(..).collect())
            }
            Some(_) => Take::Store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(numbers: std::ops::RangeInclusive<i64>) -> Vec<SubscriptionEvent> {
        numbers
            .map(|number| SubscriptionEvent {
                subscription: "s".into(),
                number,
                seq: number,
                resource_type: "Observation".into(),
                id: format!("o{number}"),
                version: 1,
                deleted: false,
                at: time::OffsetDateTime::UNIX_EPOCH,
                context: Vec::new(),
                patients: Vec::new(),
            })
            .collect()
    }

    fn numbers(take: Take) -> Vec<i64> {
        match take {
            Take::Events(events) => events.iter().map(|e| e.number).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn handed_events_that_follow_the_delivered_ones_make_one_notification() {
        let worker = Worker::default();
        assert_eq!(worker.take(0, 1), Take::Nothing);
        assert!(!worker.has_after(0));
        worker.hand(events(1..=1));
        assert!(worker.has_after(0));
        assert_eq!(numbers(worker.take(0, 1)), [1]);
        assert_eq!(worker.take(1, 1), Take::Nothing);
        worker.hand(events(2..=3));
        assert_eq!(numbers(worker.take(1, 5)), [2, 3]);
    }

    #[test]
    fn a_gap_or_more_than_one_notification_goes_by_the_store() {
        let worker = Worker::default();
        worker.hand(events(3..=3));
        assert_eq!(worker.take(1, 1), Take::Store, "event 2 was not handed");
        // Read from the store meanwhile: what it delivered is forgotten here.
        assert_eq!(worker.take(3, 1), Take::Nothing);
        worker.hand(events(4..=5));
        assert_eq!(worker.take(3, 1), Take::Store, "two notifications' worth");
        assert_eq!(numbers(worker.take(4, 1)), [5]);
    }

    #[test]
    fn an_overflowing_queue_is_dropped_and_the_worker_reads_the_store() {
        let worker = Worker::default();
        worker.hand(events(1..=HANDED_MAX as i64));
        worker.hand(events(HANDED_MAX as i64 + 1..=HANDED_MAX as i64 + 1));
        // Nothing is in memory, yet events wait in the store.
        assert!(worker.has_after(0));
        assert_eq!(worker.take(0, 1000), Take::Store);
        // Read from the store through 65; what comes next follows.
        assert!(!worker.has_after(HANDED_MAX as i64 + 1));
        worker.hand(events(HANDED_MAX as i64 + 2..=HANDED_MAX as i64 + 2));
        assert_eq!(
            numbers(worker.take(HANDED_MAX as i64 + 1, 1)),
            [HANDED_MAX as i64 + 2]
        );
    }
}
