//! The dispatcher: follows each tenant's change log, keeps the tenant's subscriptions as the
//! log changes them, matches every other change against them and records the events, with its
//! cursor, in one transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_engine::{Access, Caller, Permission, Tenant};
use fjord_search::{IndexEntry, IndexTerms, IndexValue, Registry};
use fjord_store::{
    Change, DispatchRound, Started, SubscriptionEvent, SubscriptionState, TenantKey,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::spec::{Kind, Spec};
use crate::topic::{Interaction, Version};
use crate::{SubscriptionError, Subscriptions};

const AUDIT_EVENT: &str = "AuditEvent";

/// The dispatcher's name among change-log consumers.
const CONSUMER: &str = "subscriptions";
/// Changes read per round: events reach the workers when their round commits, so smaller
/// rounds mean sooner notifications.
const BATCH: usize = 256;
/// How long the dispatcher sleeps when no write wakes it (writes of other processes, audit).
const POLL: Duration = Duration::from_millis(500);
/// The least time between two rounds that read changes.
const ROUND_GAP: Duration = Duration::from_millis(10);
/// How often the dispatcher lists the tenants again (a new one is served within this).
const TENANTS_EVERY: Duration = Duration::from_secs(1);

/// A subscription the dispatcher matches.
#[derive(Debug)]
pub(crate) struct Live {
    pub spec: Spec,
    pub access: Access,
    /// Only changes after this position are matched.
    pub since_seq: i64,
}

/// A change, parsed once for every subscription that may want it.
struct Parsed<'a> {
    change: &'a Change,
    interaction: Interaction,
    current: Option<(Value, IndexTerms)>,
    previous: Option<(Value, IndexTerms)>,
}

impl Subscriptions {
    /// Matches the change logs of every tenant, for ever; the server runs it in the background.
    pub async fn run_dispatcher(self: Arc<Self>) {
        tokio::spawn(self.clone().flush_marks());
        tokio::spawn(self.clone().prune_events());
        tokio::spawn(self.clone().follow_audit_digests());
        let mut loaded: std::collections::HashSet<TenantKey> = Default::default();
        let mut tenants = Vec::new();
        let mut listed: Option<Instant> = None;
        loop {
            // The tenants are listed at most once a second, not once per round.
            if listed.is_none_or(|at| at.elapsed() >= TENANTS_EVERY) {
                match self.engine.list_tenants().await {
                    Ok(all) => {
                        tenants = all;
                        listed = Some(Instant::now());
                    }
                    Err(error) => tracing::warn!(%error, "tenants unknown to the dispatcher"),
                }
            }
            let mut read = false;
            // A suspended tenant's log waits: its changes are matched once it is resumed.
            for tenant in tenants.iter().filter(|t| t.suspended_at.is_none()) {
                if !loaded.contains(&tenant.key) {
                    match self.load(tenant).await {
                        Ok(()) => {
                            loaded.insert(tenant.key);
                        }
                        Err(error) => {
                            tracing::warn!(tenant = %tenant.id, %error, "subscriptions not loaded");
                            continue;
                        }
                    }
                }
                match self.dispatch(tenant).await {
                    Ok(changes) => read |= changes,
                    Err(error) => {
                        tracing::warn!(tenant = %tenant.id, %error, "subscription dispatch failed")
                    }
                }
            }
            if read {
                // Under a stream of writes, rounds a little apart read many changes each rather
                // than one each: a round costs the database the same whatever it reads. A lone
                // write finds the dispatcher waiting below and is matched at once.
                tokio::time::sleep(ROUND_GAP).await;
            }
            let _ = tokio::time::timeout(POLL, self.engine.changes_written()).await;
        }
    }

    /// Removes delivered events once they are older than the settings keep them, for ever: a
    /// tenth of that period apart, at least a second and at most an hour.
    async fn prune_events(self: Arc<Self>) {
        let keep = self.settings.keep_events;
        let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            tokio::time::sleep(every).await;
            let Ok(tenants) = self.engine.list_tenants().await else {
                continue;
            };
            // A period past the calendar keeps everything.
            let now = time::OffsetDateTime::now_utc();
            let Some(before) = time::Duration::try_from(keep)
                .ok()
                .and_then(|keep| now.checked_sub(keep))
            else {
                continue;
            };
            for tenant in tenants {
                match self
                    .engine
                    .store()
                    .prune_subscription_events(tenant.key, before)
                    .await
                {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::debug!(tenant = %tenant.id, removed, "delivered events removed")
                    }
                    Err(error) => {
                        tracing::warn!(tenant = %tenant.id, %error, "delivered events not removed")
                    }
                }
            }
        }
    }

    /// Reads the tenant's subscriptions as stored, and starts the workers of those with
    /// something to do.
    async fn load(&self, tenant: &Tenant) -> Result<(), SubscriptionError> {
        let registry = self.engine.search_registry(tenant).await?;
        let store = self.engine.store();
        for state in store.subscription_states(tenant.key).await? {
            if state.since_seq == 0 {
                // Not started yet: its version is still ahead of the cursor, and starts it there
                // (loaded now, it would match the changes before it).
                continue;
            }
            match self.stored_live(tenant, &registry, &state).await? {
                Some(Ok(live)) if live.spec.status != "off" => {
                    self.live
                        .write()
                        .expect("live subscriptions")
                        .insert((tenant.key, state.id.clone()), Arc::new(live));
                    self.wake(tenant, &state.id);
                }
                Some(Ok(_)) | None => {}
                Some(Err(error)) => {
                    tracing::warn!(tenant = %tenant.id, subscription = %state.id, %error, "a stored subscription cannot be served")
                }
            }
        }
        Ok(())
    }

    /// A subscription as its current stored version and state say; `None` when deleted,
    /// `Some(Err)` when it cannot be served.
    pub(crate) async fn stored_live(
        &self,
        tenant: &Tenant,
        registry: &Registry,
        state: &SubscriptionState,
    ) -> Result<Option<Result<Live, String>>, SubscriptionError> {
        let Some(body) = self
            .engine
            .store()
            .read_latest(tenant.key, "Subscription", &state.id)
            .await?
            .and_then(|v| v.body)
        else {
            return Ok(None);
        };
        let json: Value = serde_json::from_str(&body).map_err(|e| {
            SubscriptionError::Topic(format!("stored Subscription/{}: {e}", state.id))
        })?;
        Ok(Some(self.live_of(
            registry,
            &json,
            &state.access,
            state.since_seq,
        )))
    }

    /// The subscription as the dispatcher holds it (not off, not deleted).
    pub(crate) fn live(&self, tenant: TenantKey, id: &str) -> Option<Arc<Live>> {
        self.live
            .read()
            .expect("live subscriptions")
            .get(&(tenant, id.to_owned()))
    }

    pub(crate) fn live_of(
        &self,
        registry: &Registry,
        json: &Value,
        access: &str,
        since_seq: i64,
    ) -> Result<Live, String> {
        Ok(Live {
            spec: Spec::read(registry, &self.topics, json)?,
            access: Access::from_record(access)?,
            since_seq,
        })
    }

    /// Matches the tenant's changes up to the end of its log as of now; whether there were any.
    #[tracing::instrument(skip_all, fields(tenant = %tenant.id))]
    async fn dispatch(&self, tenant: &Tenant) -> Result<bool, SubscriptionError> {
        let store = self.engine.store();
        let mut read = false;
        loop {
            let cursor = store
                .consumer_cursor(tenant.key, CONSUMER)
                .await?
                .unwrap_or_default();
            // Bodies of types no subscription wants stay in the database (every interaction
            // writes an AuditEvent).
            let skipped: &[&str] = if self.wanted(tenant.key, AUDIT_EVENT) {
                &[]
            } else {
                &[AUDIT_EVENT]
            };
            let batch = store
                .changes_without_bodies_of(tenant.key, &cursor, BATCH, skipped)
                .await?;
            if batch.changes.is_empty() && batch.cursor == cursor {
                return Ok(read);
            }
            read = true;
            let registry = self.engine.search_registry(tenant).await?;
            let mut round = DispatchRound::default();
            let mut woken = Vec::new();
            for change in &batch.changes {
                if skipped.contains(&change.resource_type.as_str()) {
                    continue;
                }
                if change.resource_type == "Subscription" {
                    self.subscription_changed(tenant, &registry, change, &mut round, &mut woken)
                        .await?;
                    continue;
                }
                self.match_change(tenant, &registry, change, &mut round.events)
                    .await?;
            }
            let events = store
                .record_dispatch(tenant.key, CONSUMER, &batch.cursor, round)
                .await?;
            // Each worker gets its events in hand, in number order; the others a wake-up.
            let mut handed: std::collections::BTreeMap<String, Vec<SubscriptionEvent>> =
                woken.into_iter().map(|id| (id, Vec::new())).collect();
            for event in events {
                handed
                    .entry(event.subscription.clone())
                    .or_default()
                    .push(event);
            }
            for (id, events) in handed {
                self.hand(tenant, &id, events);
            }
            if !batch.full {
                return Ok(read);
            }
        }
    }

    /// Whether a subscription of the tenant may match changes of this type.
    fn wanted(&self, tenant: TenantKey, resource_type: &str) -> bool {
        let live = self.live.read().expect("live subscriptions");
        !live.candidates(tenant, resource_type).is_empty()
    }

    /// A Subscription was written: it starts, changes, stops or goes.
    async fn subscription_changed(
        &self,
        tenant: &Tenant,
        registry: &Registry,
        change: &Change,
        round: &mut DispatchRound,
        woken: &mut Vec<String>,
    ) -> Result<(), SubscriptionError> {
        let key = (tenant.key, change.id.clone());
        let Some(body) = &change.body else {
            self.live.write().expect("live subscriptions").remove(&key);
            round.remove(change.id.clone());
            woken.push(change.id.clone());
            return Ok(());
        };
        let store = self.engine.store();
        let Some(state) = store.subscription_state(tenant.key, &change.id).await? else {
            return Ok(());
        };
        let json: Value = serde_json::from_str(body)
            .map_err(|e| SubscriptionError::Topic(format!("Subscription/{}: {e}", change.id)))?;
        let was = self.live(tenant.key, &change.id).map(|l| l.since_seq);
        let live = match self.live_of(registry, &json, &state.access, state.since_seq) {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(tenant = %tenant.id, subscription = %change.id, %error, "a subscription cannot be served");
                self.live.write().expect("live subscriptions").remove(&key);
                return Ok(());
            }
        };
        let starts = match live.spec.status.as_str() {
            "off" => {
                self.live.write().expect("live subscriptions").remove(&key);
                round.stop(change.id.clone());
                woken.push(change.id.clone());
                return Ok(());
            }
            // Set by the server: the state says so already.
            "error" => false,
            // requested or active: new, or set back by the client after error or off.
            _ => was.is_none() || matches!(state.status.as_str(), "error" | "off"),
        };
        let live = if starts {
            round.start(Started {
                id: change.id.clone(),
                seq: change.seq,
                access: state.access.clone(),
            });
            Live {
                since_seq: change.seq,
                ..live
            }
        } else {
            Live {
                since_seq: was.unwrap_or(state.since_seq),
                ..live
            }
        };
        self.live
            .write()
            .expect("live subscriptions")
            .insert(key, Arc::new(live));
        woken.push(change.id.clone());
        Ok(())
    }

    /// The events a change raises, appended to `events`.
    async fn match_change(
        &self,
        tenant: &Tenant,
        registry: &Registry,
        change: &Change,
        events: &mut Vec<SubscriptionEvent>,
    ) -> Result<(), SubscriptionError> {
        let candidates = self
            .live
            .read()
            .expect("live subscriptions")
            .candidates(tenant.key, &change.resource_type);
        if !candidates.any_started_before(change.seq) {
            return Ok(());
        }
        let needed: Option<Vec<&str>> = candidates
            .needed
            .as_ref()
            .map(|codes| codes.iter().map(String::as_str).collect());
        let needed = needed.as_deref();
        let mut parsed = Parsed {
            change,
            interaction: match (&change.body, change.version) {
                (None, _) => Interaction::Delete,
                (Some(_), 1) => Interaction::Create,
                _ => Interaction::Update,
            },
            current: change
                .body
                .as_deref()
                .and_then(|b| terms_of(registry, b, needed)),
            previous: None,
        };
        if change.version > 1 {
            parsed.previous = self
                .engine
                .store()
                .read_version(
                    tenant.key,
                    &change.resource_type,
                    &change.id,
                    change.version - 1,
                )
                .await?
                .and_then(|v| v.body)
                .and_then(|b| terms_of(registry, &b, needed));
        }
        let at = OffsetDateTime::now_utc();
        // Found once, for the first event the change raises (a delete's, on the version before).
        let mut patients: Option<Vec<String>> = None;
        let mut revoked = Vec::new();
        // What the subscriber would see decides: the new version, or the deleted one.
        let seen = parsed.current.as_ref().or(parsed.previous.as_ref());
        let keys = seen.map_or(&[][..], |(_, terms)| terms.keys.as_slice());
        for (id, live) in candidates.meeting(keys) {
            if live.since_seq >= change.seq {
                continue;
            }
            if self.is_revoked(&live.access) {
                // Its worker stops it.
                revoked.push(id.clone());
                continue;
            }
            if let Some(context) = self.raises(registry, live, &parsed) {
                let patients = patients
                    .get_or_insert_with(|| {
                        seen.map_or_else(Vec::new, |(value, _)| {
                            fjord_engine::patients_in(
                                registry,
                                &change.resource_type,
                                &change.id,
                                value,
                            )
                        })
                    })
                    .clone();
                events.push(SubscriptionEvent {
                    subscription: id.clone(),
                    number: 0,
                    seq: change.seq,
                    resource_type: change.resource_type.clone(),
                    id: change.id.clone(),
                    version: change.version,
                    deleted: change.body.is_none(),
                    at,
                    context,
                    patients,
                });
            }
        }
        for id in revoked {
            self.wake(tenant, &id);
        }
        Ok(())
    }

    /// Whether the change raises an event for the subscription; the event's context if so.
    fn raises(&self, registry: &Registry, live: &Live, parsed: &Parsed<'_>) -> Option<Vec<String>> {
        let resource_type = parsed.change.resource_type.as_str();
        let id = parsed.change.id.as_str();
        fn version<'v>(id: &'v str, v: &'v Option<(Value, IndexTerms)>) -> Option<Version<'v>> {
            v.as_ref().map(|(body, terms)| Version { id, body, terms })
        }
        let (current, previous) = (version(id, &parsed.current), version(id, &parsed.previous));
        // What the subscriber would see: the new version, or the deleted one.
        let seen = current.or(previous)?;
        let matched = match &live.spec.kind {
            Kind::Topic { topic, filters } => {
                let trigger = topic.trigger(resource_type, parsed.interaction)?;
                let mut mine = filters.iter().filter(|(t, _)| t == resource_type);
                if trigger.resource_type.is_none() && mine.clone().next().is_none() {
                    // A topic on any type covers the types its filters name.
                    return None;
                }
                mine.all(|(_, f)| f.holds_on(resource_type, id, seen.terms) == Some(true))
                    && trigger.fires(registry, resource_type, previous, current)
            }
            Kind::Criteria { filter, .. } => {
                parsed.interaction != Interaction::Delete
                    && filter.holds_on(resource_type, id, seen.terms) == Some(true)
            }
        };
        if !matched || !self.may_read(registry, &live.access, resource_type, id, seen.terms) {
            return None;
        }
        Some(context_of(registry, live, resource_type, seen.body))
    }

    /// Whether the subscriber's grant reads this version (and its token stands).
    fn may_read(
        &self,
        registry: &Registry,
        access: &Access,
        resource_type: &str,
        id: &str,
        terms: &IndexTerms,
    ) -> bool {
        if self.is_revoked(access) {
            return false;
        }
        match access.filter(registry, Permission::Read, resource_type) {
            Ok(None) => true,
            Ok(Some(filter)) => filter.holds_on(resource_type, id, terms) == Some(true),
            Err(_) => false,
        }
    }

    pub(crate) fn is_revoked(&self, access: &Access) -> bool {
        let token = access.principal().and_then(|p| p.token_id.as_deref());
        matches!((&self.revoked, token), (Some(revoked), Some(jti)) if revoked(jti))
    }

    /// The caller a subscription reads as.
    pub(crate) fn caller_of(&self, tenant: &Tenant, live: &Live) -> Caller {
        Caller::new(tenant.clone(), live.access.clone())
    }
}

/// A version's body and index terms: of every parameter, or only of `needed`.
fn terms_of(
    registry: &Registry,
    body: &str,
    needed: Option<&[&str]>,
) -> Option<(Value, IndexTerms)> {
    let value: Value = serde_json::from_str(body).ok()?;
    let resource_type = value["resourceType"].as_str()?.to_owned();
    let entries = match needed {
        None => fjord_search::extract(registry, &value).ok()?,
        Some(codes) => {
            let mut entries = Vec::new();
            for code in codes {
                for value in fjord_search::values_of(registry, &value, code).ok()? {
                    entries.push(IndexEntry {
                        code: (*code).to_owned(),
                        value,
                    });
                }
            }
            entries
        }
    };
    let terms = fjord_search::index_terms(&resource_type, &entries);
    Some((value, terms))
}

/// The references the topic's notification shape includes (`Observation:patient`).
fn context_of(registry: &Registry, live: &Live, resource_type: &str, body: &Value) -> Vec<String> {
    let Kind::Topic { topic, .. } = &live.spec.kind else {
        return Vec::new();
    };
    let params: Vec<&str> = topic
        .includes
        .iter()
        .filter(|(t, _)| t == resource_type)
        .map(|(_, p)| p.as_str())
        .collect();
    if params.is_empty() {
        return Vec::new();
    }
    let mut references: Vec<String> = params
        .iter()
        .flat_map(|code| fjord_search::values_of(registry, body, code).unwrap_or_default())
        .filter_map(|value| match value {
            IndexValue::Reference {
                resource_type: Some(t),
                id: Some(i),
                ..
            } => Some(format!("{t}/{i}")),
            _ => None,
        })
        .collect();
    references.sort();
    references.dedup();
    references
}
