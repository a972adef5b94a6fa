//! Notification Bundles as the Backport IG (STU 1.1) shapes them for R4: a `history` Bundle whose
//! first entry is the `Parameters` status (subscription, topic, status, type,
//! `events-since-subscription-start` and each `notification-event` with its number, as strings,
//! its focus and additional context), then the focus resources as `id-only` or `full-resource`
//! asks; and the `$status` and `$events` operations built on the same parts.

use fjord_engine::{Caller, EngineError, Tenant};
use fjord_store::{SubscriptionEvent, SubscriptionState};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::dispatch::Live;
use crate::spec::Content;
use crate::{SubscriptionError, Subscriptions};

pub const NOTIFICATION_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
pub const STATUS_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// The most events one `$events` answer holds.
const MAX_EVENTS: usize = 100;

/// What `$events` asks.
#[derive(Debug, Clone, Default)]
pub struct EventsQuery {
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// `content`: the payload content to answer with; the subscription's by default.
    pub content: Option<String>,
}

/// What a notification says: its type, its events and how much of their resources it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notice<'a> {
    /// `handshake`, `heartbeat`, `event-notification`, `query-status` or `query-event`.
    pub kind: &'static str,
    pub events: &'a [SubscriptionEvent],
    pub content: Content,
}

impl Notice<'_> {
    /// A notice without events.
    pub fn bare(kind: &'static str, content: Content) -> Notice<'static> {
        Notice {
            kind,
            events: &[],
            content,
        }
    }
}

impl Subscriptions {
    /// A notification of `kind` (handshake, heartbeat, event-notification, query-event) with
    /// these events.
    pub(crate) async fn notification(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        notice: Notice<'_>,
    ) -> Result<Value, SubscriptionError> {
        let Notice {
            events, content, ..
        } = notice;
        let base = self.base(tenant);
        let status = self.status_parameters(tenant, live, state, notice);
        let mut entries = vec![json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": status,
            "request": { "method": "GET", "url": format!("{base}/Subscription/{}/$status", state.id) },
            "response": { "status": "200" },
        })];
        if content != Content::Empty {
            let caller = self.caller_of(tenant, live);
            for event in events {
                entries.push(self.focus_entry(tenant, &base, event, content).await?);
                if content == Content::FullResource {
                    for reference in &event.context {
                        if let Some(entry) = self.context_entry(&caller, &base, reference).await {
                            entries.push(entry);
                        }
                    }
                }
            }
        }
        Ok(json!({
            "resourceType": "Bundle",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": { "profile": [NOTIFICATION_PROFILE] },
            "type": "history",
            "timestamp": instant(OffsetDateTime::now_utc()),
            "entry": entries,
        }))
    }

    /// The `Parameters` that open a notification and answer `$status`.
    fn status_parameters(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        notice: Notice<'_>,
    ) -> Value {
        let Notice {
            kind,
            events,
            content,
        } = notice;
        let base = self.base(tenant);
        let mut parameters = vec![
            json!({ "name": "subscription", "valueReference": { "reference": format!("{base}/Subscription/{}", state.id) } }),
        ];
        if let Some(topic) = live.spec.topic_url() {
            parameters.push(json!({ "name": "topic", "valueCanonical": topic }));
        }
        parameters.push(json!({ "name": "status", "valueCode": state.status }));
        parameters.push(json!({ "name": "type", "valueCode": kind }));
        parameters.push(json!({ "name": "events-since-subscription-start", "valueString": state.events.to_string() }));
        for event in events {
            let mut parts = vec![
                json!({ "name": "event-number", "valueString": event.number.to_string() }),
                json!({ "name": "timestamp", "valueInstant": instant(event.at) }),
            ];
            if content != Content::Empty {
                parts.push(json!({ "name": "focus", "valueReference": { "reference": format!("{base}/{}/{}", event.resource_type, event.id) } }));
                for reference in &event.context {
                    parts.push(json!({ "name": "additional-context", "valueReference": { "reference": format!("{base}/{reference}") } }));
                }
            }
            parameters.push(json!({ "name": "notification-event", "part": parts }));
        }
        if let Some(error) = &state.error {
            parameters.push(json!({ "name": "error", "valueCodeableConcept": { "text": error } }));
        }
        json!({
            "resourceType": "Parameters",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": { "profile": [STATUS_PROFILE] },
            "parameter": parameters,
        })
    }

    /// The entry of an event's focus: its version as of the event, or only where it is.
    async fn focus_entry(
        &self,
        tenant: &Tenant,
        base: &str,
        event: &SubscriptionEvent,
        content: Content,
    ) -> Result<Value, SubscriptionError> {
        let url = format!("{base}/{}/{}", event.resource_type, event.id);
        // Only a full-resource notification reads the version; the event says if it is a delete.
        let body = match content {
            Content::FullResource if !event.deleted => self
                .engine
                .store()
                .read_version(tenant.key, &event.resource_type, &event.id, event.version)
                .await?
                .and_then(|v| v.body),
            _ => None,
        };
        let (method, request_url, status) = match (event.deleted, event.version) {
            (true, _) => (
                "DELETE",
                format!("{}/{}", event.resource_type, event.id),
                "204",
            ),
            (_, 1) => ("POST", event.resource_type.clone(), "201"),
            _ => (
                "PUT",
                format!("{}/{}", event.resource_type, event.id),
                "200",
            ),
        };
        let mut entry = json!({
            "fullUrl": url,
            "request": { "method": method, "url": request_url },
            "response": { "status": status },
        });
        if let Some(body) = body {
            let resource: Value = serde_json::from_str(&body)
                .map_err(|e| EngineError::Internal(format!("stored body unreadable: {e}")))?;
            entry["response"]["etag"] = json!(format!("W/\"{}\"", event.version));
            entry["resource"] = resource;
        }
        Ok(entry)
    }

    /// A context resource as the subscriber may read it now; `None` when it may not.
    async fn context_entry(&self, caller: &Caller, base: &str, reference: &str) -> Option<Value> {
        let (resource_type, id) = reference.split_once('/')?;
        let version = self.engine.read(caller, resource_type, id).await.ok()?;
        let resource: Value = serde_json::from_str(version.body.as_deref()?).ok()?;
        Some(json!({
            "fullUrl": format!("{base}/{reference}"),
            "resource": resource,
            "request": { "method": "GET", "url": reference },
            "response": { "status": "200" },
        }))
    }

    /// `$status`: a searchset of the status of the subscription `id`, or of every subscription
    /// the caller may read.
    pub async fn status(
        &self,
        caller: &Caller,
        id: Option<&str>,
    ) -> Result<Value, SubscriptionError> {
        let store = self.engine.store();
        let states = match id {
            Some(id) => {
                self.engine.read(caller, "Subscription", id).await?;
                store
                    .subscription_state(caller.key, id)
                    .await?
                    .into_iter()
                    .collect()
            }
            None => store.subscription_states(caller.key).await?,
        };
        let mut entries = Vec::new();
        for state in states {
            if id.is_none()
                && self
                    .engine
                    .read(caller, "Subscription", &state.id)
                    .await
                    .is_err()
            {
                continue;
            }
            let Some(live) = self.live_or_stored(&caller.tenant, &state).await? else {
                continue;
            };
            let notice = Notice::bare("query-status", live.spec.content);
            let parameters = self.status_parameters(&caller.tenant, &live, &state, notice);
            entries.push(json!({
                "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                "resource": parameters,
                "search": { "mode": "match" },
            }));
        }
        Ok(json!({
            "resourceType": "Bundle",
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        }))
    }

    /// `$events`: the events numbered `since..=until` (at most 100) as a `query-event`
    /// notification, so a client recovers what it missed.
    pub async fn events(
        &self,
        caller: &Caller,
        id: &str,
        query: EventsQuery,
    ) -> Result<Value, SubscriptionError> {
        self.engine.read(caller, "Subscription", id).await?;
        let store = self.engine.store();
        let Some(state) = store.subscription_state(caller.key, id).await? else {
            return Err(EngineError::NotFound(format!("Subscription/{id}")).into());
        };
        let Some(live) = self.live_or_stored(&caller.tenant, &state).await? else {
            return Err(EngineError::NotFound(format!("Subscription/{id}")).into());
        };
        let until = query.until.unwrap_or(state.events).min(state.events);
        let since = query
            .since
            .unwrap_or_else(|| (until - MAX_EVENTS as i64 + 1).max(1))
            .max(1);
        let content = match query.content.as_deref() {
            None => live.spec.content,
            Some("empty") => Content::Empty,
            Some("id-only") => Content::IdOnly,
            Some("full-resource") => Content::FullResource,
            Some(other) => {
                return Err(EngineError::BadRequest(format!("content '{other}' is unknown")).into())
            }
        };
        let events = store
            .subscription_events(caller.key, id, since, until, MAX_EVENTS)
            .await?;
        self.notification(
            &caller.tenant,
            &live,
            &state,
            Notice {
                kind: "query-event",
                events: &events,
                content,
            },
        )
        .await
    }

    /// The subscription as the dispatcher holds it, or read from its stored version (one turned
    /// off is no longer held).
    async fn live_or_stored(
        &self,
        tenant: &Tenant,
        state: &SubscriptionState,
    ) -> Result<Option<std::sync::Arc<Live>>, SubscriptionError> {
        if let Some(live) = self.live(tenant.key, &state.id) {
            return Ok(Some(live));
        }
        let registry = self.engine.search_registry(tenant).await?;
        let stored = self.stored_live(tenant, &registry, state).await?;
        Ok(stored.and_then(Result::ok).map(std::sync::Arc::new))
    }
}

pub(crate) fn instant(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
