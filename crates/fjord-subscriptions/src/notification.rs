//! Notification Bundles as the Backport IG (STU 1.1) shapes them for R4: a `history` Bundle whose
//! first entry is the `Parameters` status (subscription, topic, status, type,
//! `events-since-subscription-start` and each `notification-event` with its number, as strings,
//! its focus and additional context), then the focus resources as `id-only` or `full-resource`
//! asks; and the `$status` and `$events` operations built on the same parts.

use fjord_engine::{Caller, EngineError, Tenant};
use fjord_store::{SubscriptionEvent, SubscriptionState};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

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
    ) -> Result<Notification, SubscriptionError> {
        let Notice {
            events, content, ..
        } = notice;
        let base = self.base(tenant);
        let status = self.status_parameters(tenant, live, state, notice);
        let mut entries = vec![Entry {
            full_url: format!("urn:uuid:{}", Uuid::new_v4()),
            resource: Some(EntryResource::Status(status)),
            request: Request {
                method: "GET",
                url: format!("{base}/Subscription/{}/$status", state.id),
            },
            response: Response::status("200"),
        }];
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
        Ok(Notification {
            resource_type: "Bundle",
            id: Uuid::new_v4().to_string(),
            meta: Meta::profile(NOTIFICATION_PROFILE),
            kind: "history",
            timestamp: instant(OffsetDateTime::now_utc()),
            entry: entries,
        })
    }

    /// The `Parameters` that open a notification and answer `$status`.
    fn status_parameters(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        notice: Notice<'_>,
    ) -> StatusParameters {
        let Notice {
            kind,
            events,
            content,
        } = notice;
        use ParameterValue::{Canonical, Code, Instant, Part, Reference, Text};
        let base = self.base(tenant);
        let subscription = format!("{base}/Subscription/{}", state.id);
        let mut parameters = vec![Parameter::new("subscription", Reference(subscription))];
        if let Some(topic) = live.spec.topic_url() {
            parameters.push(Parameter::new("topic", Canonical(topic.to_owned())));
        }
        parameters.push(Parameter::new("status", Code(state.status.clone())));
        parameters.push(Parameter::new("type", Code(kind.to_owned())));
        let count = ParameterValue::String(state.events.to_string());
        parameters.push(Parameter::new("events-since-subscription-start", count));
        for event in events {
            let number = ParameterValue::String(event.number.to_string());
            let mut parts = vec![
                Parameter::new("event-number", number),
                Parameter::new("timestamp", Instant(instant(event.at))),
            ];
            if content != Content::Empty {
                let focus = format!("{base}/{}/{}", event.resource_type, event.id);
                parts.push(Parameter::new("focus", Reference(focus)));
                for reference in &event.context {
                    let context = Reference(format!("{base}/{reference}"));
                    parts.push(Parameter::new("additional-context", context));
                }
            }
            parameters.push(Parameter::new("notification-event", Part(parts)));
        }
        if let Some(error) = &state.error {
            parameters.push(Parameter::new("error", Text(error.clone())));
        }
        StatusParameters {
            resource_type: "Parameters",
            id: Uuid::new_v4().to_string(),
            meta: Meta::profile(STATUS_PROFILE),
            parameter: parameters,
        }
    }

    /// The entry of an event's focus: its version as of the event, or only where it is.
    async fn focus_entry(
        &self,
        tenant: &Tenant,
        base: &str,
        event: &SubscriptionEvent,
        content: Content,
    ) -> Result<Entry, SubscriptionError> {
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
        let (method, url, status) = match (event.deleted, event.version) {
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
        let mut response = Response::status(status);
        let resource = match body {
            Some(body) => {
                response.etag = Some(fjord_engine::etag_of(event.version));
                let stored = RawValue::from_string(body)
                    .map_err(|e| EngineError::Internal(format!("stored body unreadable: {e}")))?;
                Some(EntryResource::Stored(stored))
            }
            None => None,
        };
        Ok(Entry {
            full_url: format!("{base}/{}/{}", event.resource_type, event.id),
            resource,
            request: Request { method, url },
            response,
        })
    }

    /// A context resource as the subscriber may read it now; `None` when it may not.
    async fn context_entry(&self, caller: &Caller, base: &str, reference: &str) -> Option<Entry> {
        let (resource_type, id) = reference.split_once('/')?;
        let version = self.engine.read(caller, resource_type, id).await.ok()?;
        let resource = RawValue::from_string(version.body?).ok()?;
        Some(Entry {
            full_url: format!("{base}/{reference}"),
            resource: Some(EntryResource::Stored(resource)),
            request: Request {
                method: "GET",
                url: reference.to_owned(),
            },
            response: Response::status("200"),
        })
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
            let parameters = serde_json::to_value(parameters)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
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
        let notification = self
            .notification(
                &caller.tenant,
                &live,
                &state,
                Notice {
                    kind: "query-event",
                    events: &events,
                    content,
                },
            )
            .await?;
        Ok(serde_json::to_value(notification).map_err(|e| EngineError::Internal(e.to_string()))?)
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

/// A notification Bundle. Typed rather than a `Value`, so that a notification is written
/// straight to its JSON: under load one goes out for every change a subscription matches.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Notification {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Meta,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    entry: Vec<Entry>,
}

impl Notification {
    pub fn to_json(&self) -> String {
        // Strings and stored JSON only: nothing here fails to serialise.
        serde_json::to_string(self).expect("a notification serialises")
    }

    /// The additional context the notification carried: its entries read as the subscriber.
    pub fn context_carried(&self) -> impl Iterator<Item = &str> {
        self.entry
            .iter()
            .skip(1)
            .filter(|e| e.request.method == "GET" && e.resource.is_some())
            .map(|e| e.request.url.as_str())
    }
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    full_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<EntryResource>,
    request: Request,
    response: Response,
}

#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum EntryResource {
    Status(StatusParameters),
    /// A stored version, as stored.
    Stored(Box<RawValue>),
}

#[derive(Debug, serde::Serialize)]
struct Request {
    method: &'static str,
    url: String,
}

#[derive(Debug, serde::Serialize)]
struct Response {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

impl Response {
    fn status(status: &'static str) -> Response {
        Response { status, etag: None }
    }
}

#[derive(Debug, serde::Serialize)]
struct Meta {
    profile: [&'static str; 1],
}

impl Meta {
    fn profile(profile: &'static str) -> Meta {
        Meta { profile: [profile] }
    }
}

/// The subscription status `Parameters`.
#[derive(Debug, serde::Serialize)]
struct StatusParameters {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Meta,
    parameter: Vec<Parameter>,
}

/// A parameter: its name, and its value of the type it names.
#[derive(Debug)]
struct Parameter {
    name: &'static str,
    value: ParameterValue,
}

#[derive(Debug)]
enum ParameterValue {
    Reference(String),
    Canonical(String),
    Code(String),
    String(String),
    Instant(String),
    /// A `valueCodeableConcept` of text only.
    Text(String),
    Part(Vec<Parameter>),
}

impl Parameter {
    fn new(name: &'static str, value: ParameterValue) -> Parameter {
        Parameter { name, value }
    }
}

impl Serialize for Parameter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Reference<'a> {
            reference: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Text<'a> {
            text: &'a str,
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", self.name)?;
        match &self.value {
            ParameterValue::Reference(reference) => {
                map.serialize_entry("valueReference", &Reference { reference })?
            }
            ParameterValue::Canonical(value) => map.serialize_entry("valueCanonical", value)?,
            ParameterValue::Code(value) => map.serialize_entry("valueCode", value)?,
            ParameterValue::String(value) => map.serialize_entry("valueString", value)?,
            ParameterValue::Instant(value) => map.serialize_entry("valueInstant", value)?,
            ParameterValue::Text(text) => {
                map.serialize_entry("valueCodeableConcept", &Text { text })?
            }
            ParameterValue::Part(parts) => map.serialize_entry("part", parts)?,
        }
        map.end()
    }
}
