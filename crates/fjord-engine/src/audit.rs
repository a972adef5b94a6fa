//! The audit trail: an AuditEvent for every interaction, stored as a resource of the tenant, so
//! audit readers search it like any other (`user/AuditEvent.rs`), and a patient-scoped token
//! finds the events of its own patient (an event names the patients it concerns as entities).
//!
//! A write records its event in its own transaction: no change without its trace, no trace of
//! a change that rolled back. Reads and refusals are buffered and written by
//! [`Engine::flush_audit`], which the server runs every second and at shutdown. AuditEvents are
//! never changed or deleted, not even by the tenant's own administrators; a client with a scope
//! to create them may add its own. They are not the tenant's data: they hold back no delete,
//! and system-wide history and searches (and `$everything`) leave them out unless `_type`
//! names them.
//!
//! A notification to a subscriber is a disclosure too: it is recorded as a DICOM Export by the
//! subscriber's user, naming the subscription (role subscriber), what the notification carried,
//! the patients it concerns and the endpoint's origin.
//! The notifications of one subscription within a few seconds may be one event
//! ([`Audited::absorb`]), its `period` the time they went in.
//!
//! The shape follows the Norwegian AuditEvent profile (`no-domain-Trustframework-Auditevent`)
//! where Fjord knows the facts: the patient extension, `agent.who` as the user (`fhirUser`,
//! else the token's subject) with the client and role claims beside it, `source` the server.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use fjord_search::{IndexValue, Registry};
use fjord_smart::Shared;
use fjord_store::{Expected, NewVersion, Op, StoredVersion, Tenant};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::interactions::{format_instant, now};
use crate::{Caller, Engine, EngineError};

pub(crate) const AUDIT_EVENT: &str = "AuditEvent";

const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";

const PATIENT_EXTENSION: &str =
    "http://hl7.no/fhir/StructureDefinition/auditevent-patient-extension";

/// The code system of Fjord's own audit subtypes.
pub const FJORD_AUDIT: &str = "urn:fjord:audit";
/// The subtype of an access by another tenant's caller under a sharing grant.
pub const CROSS_TENANT: &str = "cross-tenant";

/// What an interaction did, for its AuditEvent.
#[derive(Debug, Clone)]
pub struct Audited {
    /// The RESTful interaction (`read`, `search-type`, `create`, `transaction`, …).
    pub interaction: &'static str,
    /// The resources read or written, as `Type/id/_history/n` or `Type/id`.
    pub entities: Vec<String>,
    /// The query of a search, as the client sent it.
    pub query: Option<String>,
    /// Patients the resources belong to (`Patient/id`).
    pub patients: BTreeSet<String>,
    /// The patients of each entity that belongs to some, so that an event naming several
    /// patients can be split into one per patient.
    owners: HashMap<String, BTreeSet<String>>,
    /// Versions read whose patients [`Engine::audit`] finds (it has the tenant's parameters).
    read: Vec<StoredVersion>,
    /// `None` for success, else why it failed and whether the client (4) or the server (8) did.
    pub failure: Option<(u8, String)>,
    /// The request had no valid token (its caller is no one).
    pub unauthenticated: bool,
    /// A notification sent to a subscriber, not a request answered.
    notification: Option<Notification>,
}

/// Where a notification went.
#[derive(Debug, Clone)]
struct Notification {
    /// `Subscription/id`.
    subscription: String,
    /// The endpoint's origin (`https://host:port`), for a rest-hook.
    destination: Option<String>,
    /// When the first notification the event records went (see [`Audited::absorb`]).
    since: time::OffsetDateTime,
}

/// An event naming several patients, as one event per patient (as IHE's Basic Audit Log
/// Patterns ask): a patient's token finds the events of its own patient (their compartment), and
/// must not learn from them which other patients the same request touched. Each names its
/// patient and, of the entities, only that patient's and those of no patient.
fn per_patient(mut audited: Audited) -> Vec<Audited> {
    if audited.patients.len() < 2 {
        return vec![audited];
    }
    let entities = std::mem::take(&mut audited.entities);
    let owners = std::mem::take(&mut audited.owners);
    let patients = std::mem::take(&mut audited.patients);
    patients
        .into_iter()
        .map(|patient| {
            let entities = entities
                .iter()
                .filter(|e| owners.get(*e).is_none_or(|of| of.contains(&patient)))
                .cloned()
                .collect();
            Audited {
                entities,
                patients: BTreeSet::from([patient]),
                ..audited.clone()
            }
        })
        .collect()
}

/// How an event names a version: `Type/id/_history/n`.
fn version_entity(resource_type: &str, id: &str, version: i64) -> String {
    format!("{resource_type}/{id}/_history/{version}")
}

/// What the audit trail calls a notification: data exported to a subscriber.
const NOTIFY: &str = "notify";
/// A batch of a bulk import: data imported from outside.
pub(crate) const IMPORT: &str = "import";
/// A bulk export (`$export`): data leaving the system in files.
pub(crate) const EXPORT: &str = "export";

impl Audited {
    pub fn new(interaction: &'static str) -> Audited {
        Audited {
            interaction,
            entities: Vec::new(),
            query: None,
            patients: BTreeSet::new(),
            owners: HashMap::new(),
            read: Vec::new(),
            failure: None,
            unauthenticated: false,
            notification: None,
        }
    }

    /// A notification to the subscriber of `subscription` (an id), sent to `destination` (an
    /// origin, never a full URL: an endpoint's path or query may hold a secret). Name what it
    /// carried with [`Audited::named`] and its patients in `patients`.
    pub fn notification(subscription: &str, destination: Option<String>) -> Audited {
        Audited {
            notification: Some(Notification {
                subscription: format!("Subscription/{subscription}"),
                destination,
                since: now(),
            }),
            ..Audited::new(NOTIFY)
        }
    }

    /// Names a resource (`Type/id/_history/n` or `Type/id`) whose version was not read.
    pub fn named(&mut self, reference: String) {
        self.entities.push(reference);
    }

    /// Names a version written or sent, and the patients it belongs to.
    pub fn named_version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: i64,
        patients: impl IntoIterator<Item = String>,
    ) {
        let entity = version_entity(resource_type, id, version);
        self.belongs_to(&entity, patients);
        self.entities.push(entity);
    }

    /// Notes the patients an entity (`Type/id/_history/n`) belongs to.
    fn belongs_to(&mut self, entity: &str, patients: impl IntoIterator<Item = String>) {
        let mut patients = patients.into_iter().peekable();
        if patients.peek().is_none() {
            return;
        }
        let owners = self.owners.entry(entity.to_owned()).or_default();
        for patient in patients {
            self.patients.insert(patient.clone());
            owners.insert(patient);
        }
    }

    /// Whether [`Audited::absorb`] may add `later` to this: both are notifications of the same
    /// subscription to the same destination, and neither failed.
    pub fn absorbs(&self, later: &Audited) -> bool {
        let same = match (&self.notification, &later.notification) {
            (Some(first), Some(then)) => {
                first.subscription == then.subscription && first.destination == then.destination
            }
            _ => false,
        };
        same && self.failure.is_none() && later.failure.is_none()
    }

    /// Adds what a later notification carried (see [`Audited::absorbs`]): one event records
    /// both, its `period` from the first to the last.
    pub fn absorb(&mut self, later: Audited) {
        debug_assert!(self.absorbs(&later));
        for entity in later.entities {
            if !self.entities.contains(&entity) {
                self.entities.push(entity);
            }
        }
        self.patients.extend(later.patients);
        for (entity, patients) in later.owners {
            self.owners.entry(entity).or_default().extend(patients);
        }
    }

    /// A notification or a request that failed for a reason outside Fjord and the client (a
    /// subscriber's endpoint that did not answer).
    pub fn not_delivered(mut self, why: String) -> Audited {
        self.failure = Some((4, why));
        self
    }

    /// A search's query, and the patients of what it found.
    pub fn searched<'v>(
        mut self,
        query: String,
        found: impl IntoIterator<Item = &'v StoredVersion>,
    ) -> Audited {
        self.query = Some(query);
        self.read.extend(found.into_iter().cloned());
        self
    }

    /// A request refused before it had a caller (no token, a bad one).
    pub fn refused(mut self, why: String) -> Audited {
        self.failure = Some((4, why));
        self.unauthenticated = true;
        self
    }

    /// Names a stored version and the patient it belongs to.
    pub fn version(mut self, version: &StoredVersion) -> Audited {
        self.add(version);
        self
    }

    pub fn add(&mut self, version: &StoredVersion) {
        self.entities.push(version_entity(
            &version.resource_type,
            &version.id,
            version.version,
        ));
        self.read.push(version.clone());
    }

    pub fn failed(mut self, error: &EngineError) -> Audited {
        let code = match error {
            // The server's failure (8), not the client's (4).
            EngineError::Store(_)
            | EngineError::Internal(_)
            | EngineError::Unavailable(_)
            | EngineError::TimedOut(_) => 8,
            _ => 4,
        };
        self.failure = Some((code, error.to_string()));
        self
    }

    fn action(&self) -> &'static str {
        match self.interaction {
            "create" | IMPORT => "C",
            "update" | "patch" => "U",
            "delete" => "D",
            "read" | "vread" | "history-instance" | "history-type" | "history-system"
            | "search-type" | "search-system" | "search-compartment" => "R",
            // DICOM's Export is a read of what leaves the system.
            NOTIFY | EXPORT => "R",
            _ => "E",
        }
    }
}

/// Buffered events beyond which the flusher is woken before its second is up.
const FLUSH_AT: usize = 2_000;
/// Buffered events beyond which a request waits for the flusher: memory stays bounded and no
/// event is dropped; reads slow to the rate the trail is written at.
const CAPACITY: usize = 20_000;

/// Events waiting to be written, shared by the engines of a process.
#[derive(Debug, Default)]
pub(crate) struct AuditBuffer {
    /// Events ready to be written, indexed already (by the requests, in parallel).
    pending: Mutex<Vec<(Tenant, StoredEvent)>>,
    /// Wakes the flusher early.
    full: tokio::sync::Notify,
    /// Tells waiting requests that a flush emptied the buffer.
    drained: tokio::sync::Notify,
}

impl Caller {
    /// Whether the caller may write this version of a resource of this type: an AuditEvent is
    /// created (by Fjord, or by a client with a scope to create one) and then never changed.
    pub(crate) fn may_write(
        &self,
        resource_type: &str,
        expected: Expected,
        delete: bool,
    ) -> Result<(), EngineError> {
        if resource_type == AUDIT_EVENT
            && !self.internal
            && (delete || expected != Expected::Absent)
        {
            return Err(EngineError::Immutable(
                "an AuditEvent is never changed or deleted".into(),
            ));
        }
        Ok(())
    }
}

impl Engine {
    /// Records a read or a refusal: written within a second by [`Engine::follow_audit`]. Waits
    /// while the buffer is full.
    pub async fn audit(&self, caller: &Caller, mut audited: Audited) {
        if !audited.read.is_empty() {
            match self.registry(caller).await {
                Ok(registry) => {
                    for version in std::mem::take(&mut audited.read) {
                        let Some(body) = version.body.as_deref() else {
                            continue;
                        };
                        // A Patient is its own patient; a Practitioner is nobody's: no parse.
                        let patients = if version.resource_type == "Patient" {
                            vec![format!("Patient/{}", version.id)]
                        } else if compartment_parameters(&version.resource_type).is_empty() {
                            continue;
                        } else if let Ok(value) = serde_json::from_str::<Value>(body) {
                            patients_in(&registry, &version.resource_type, &version.id, &value)
                        } else {
                            continue;
                        };
                        let entity =
                            version_entity(&version.resource_type, &version.id, version.version);
                        audited.belongs_to(&entity, patients);
                    }
                }
                Err(error) => tracing::warn!(%error, "an audited read's patients are unknown"),
            }
        }
        let internal = Caller::internal(caller.tenant.clone());
        for audited in per_patient(audited) {
            let stored = match self
                .stored_event(&internal, audit_event(caller, &audited))
                .await
            {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::error!(%error, "an AuditEvent could not be indexed");
                    return;
                }
            };
            self.buffer_event(internal.tenant.clone(), stored).await;
        }
    }

    /// Queues an event for the flusher; waits while the buffer is full.
    async fn buffer_event(&self, tenant: Tenant, stored: StoredEvent) {
        let buffer = &self.shared.audit;
        let mut event = Some((tenant, stored));
        loop {
            let drained = buffer.drained.notified();
            {
                let mut pending = buffer.pending.lock().expect("audit buffer");
                if pending.len() < CAPACITY {
                    pending.extend(event.take());
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

    /// Records the outcome of an interaction: failures are buffered, successful writes have
    /// recorded theirs in their transaction, successful reads are recorded by `on_success`.
    pub async fn audit_outcome<T>(
        &self,
        caller: &Caller,
        interaction: &'static str,
        result: &Result<T, EngineError>,
        on_success: impl FnOnce(&T) -> Option<Audited>,
    ) {
        let audited = match result {
            Ok(value) => on_success(value),
            Err(error) => Some(Audited::new(interaction).failed(error)),
        };
        if let Some(audited) = audited {
            self.audit(caller, audited).await;
        }
    }

    /// Writes every buffered event, one statement per tenant (also at shutdown).
    pub async fn flush_audit(&self) -> Result<usize, EngineError> {
        let pending = std::mem::take(&mut *self.shared.audit.pending.lock().expect("audit buffer"));
        // Room again: requests waiting for it go on while these are written.
        self.shared.audit.drained.notify_waiters();
        let mut written = 0;
        let mut by_tenant: Vec<(Tenant, Vec<StoredEvent>)> = Vec::new();
        for (tenant, event) in pending {
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
                    let since = std::mem::take(&mut *pending);
                    pending.extend(unwritten);
                    pending.extend(since);
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

    /// Adds the AuditEvent of what `unit` wrote to it, before it commits.
    pub(crate) async fn audit_unit(
        &self,
        caller: &Caller,
        unit: &mut crate::integrity::Unit<'_>,
    ) -> Result<(), EngineError> {
        let Some(audited) = unit.audited.take() else {
            return Ok(());
        };
        let internal = Caller::internal(caller.tenant.clone());
        for audited in per_patient(audited) {
            let event = audit_event(caller, &audited);
            self.write_audit_event(&internal, unit, event).await?;
        }
        Ok(())
    }

    /// Writes an event Fjord made into `unit`.
    async fn write_audit_event(
        &self,
        internal: &Caller,
        unit: &mut crate::integrity::Unit<'_>,
        event: Value,
    ) -> Result<(), EngineError> {
        let stored = self.stored_event(internal, event).await?;
        if unit.write_version(&stored.new_version()).await? != fjord_store::WriteOutcome::Written {
            return Err(EngineError::Internal("an AuditEvent id was taken".into()));
        }
        Ok(())
    }

    /// An event Fjord made as a first version: built valid, so neither parsed again nor
    /// validated; indexed like any AuditEvent.
    async fn stored_event(
        &self,
        internal: &Caller,
        event: Value,
    ) -> Result<StoredEvent, EngineError> {
        let id = Uuid::new_v4().to_string();
        let last_updated = now();
        let mut stored = Map::new();
        stored.insert("resourceType".into(), json!(AUDIT_EVENT));
        stored.insert("id".into(), json!(id));
        stored.insert(
            "meta".into(),
            json!({ "versionId": "1", "lastUpdated": format_instant(last_updated) }),
        );
        if let Value::Object(elements) = event {
            stored.extend(
                elements
                    .into_iter()
                    .filter(|(name, _)| name != "resourceType"),
            );
        }
        let stored = Value::Object(stored);
        let registry = self.registry(internal).await?;
        let entries = fjord_search::extract(&registry, &stored)?;
        Ok(StoredEvent {
            index: fjord_search::index_terms(AUDIT_EVENT, &entries),
            // Straight into bytes: `Display` goes through a formatter, twice as slow here.
            body: serde_json::to_string(&stored).expect("a JSON value serializes"),
            id,
            last_updated,
        })
    }
}

/// An AuditEvent ready to be written.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    id: String,
    body: String,
    index: fjord_search::IndexTerms,
    last_updated: time::OffsetDateTime,
}

impl StoredEvent {
    fn new_version(&self) -> NewVersion<'_> {
        NewVersion {
            resource_type: AUDIT_EVENT,
            id: &self.id,
            expected: Expected::Absent,
            last_updated: self.last_updated,
            op: Op::Create,
            body: Some(&self.body),
            index: &self.index,
            targets: &[],
        }
    }
}

/// What a unit wrote, for its AuditEvent: the interaction named by its versions' operations,
/// the version, and the patients it belongs to.
pub(crate) fn note_write(
    audited: &mut Option<Audited>,
    resource_type: &str,
    id: &str,
    version: i64,
    op: Op,
    patients: Vec<String>,
) {
    let interaction = match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Delete => "delete",
    };
    let audited = audited.get_or_insert_with(|| Audited::new(interaction));
    if audited.interaction != interaction {
        audited.interaction = "transaction";
    }
    audited.named_version(resource_type, id, version, patients);
}

/// The patients whose compartment a resource is in: itself, or the patients its compartment
/// parameters (R4's Patient CompartmentDefinition) refer to.
pub fn patients_in(
    registry: &Registry,
    resource_type: &str,
    id: &str,
    value: &Value,
) -> Vec<String> {
    if resource_type == "Patient" {
        return vec![format!("Patient/{id}")];
    }
    compartment_parameters(resource_type)
        .iter()
        .flat_map(|code| fjord_search::values_of(registry, value, code).unwrap_or_default())
        .filter_map(|value| match value {
            IndexValue::Reference {
                resource_type: Some(t),
                id: Some(id),
                ..
            } if t == "Patient" => Some(format!("Patient/{id}")),
            _ => None,
        })
        .collect()
}

/// The parameters by which a resource of `resource_type` is in a patient's compartment (R4's
/// Patient CompartmentDefinition); none for types outside it.
fn compartment_parameters(resource_type: &str) -> &'static [&'static str] {
    fjord_definitions::compartment("Patient")
        .and_then(|c| c.parameters_of(resource_type))
        .unwrap_or_default()
}

/// The AuditEvent of an interaction by `caller`, its elements in the specification's order.
fn audit_event(caller: &Caller, audited: &Audited) -> Value {
    let principal = caller.access.principal();
    let mut user = Map::new();
    let who = match principal {
        Some(principal) => match (&principal.fhir_user, &principal.subject) {
            (Some(fhir_user), _) => json!({ "reference": fhir_user }),
            (None, Some(subject)) => {
                json!({ "identifier": { "system": principal.issuer, "value": subject } })
            }
            (None, None) => json!({ "display": "unnamed subject" }),
        },
        None if audited.unauthenticated => json!({ "display": "no valid access token" }),
        None => match &caller.operator {
            Some(operator) => {
                user.insert("name".into(), json!(format!("command line ({operator})")));
                json!({ "display": format!("{operator}, at the fjord command line") })
            }
            None => json!({ "display": "anyone (authentication off)" }),
        },
    };
    if let Some(principal) = principal.filter(|p| !p.roles.is_empty()) {
        let roles: Vec<Value> = principal
            .roles
            .iter()
            .map(|r| json!({ "text": r }))
            .collect();
        user.insert("role".into(), json!(roles));
    }
    user.insert("who".into(), who);
    if let Some(subject) = principal.and_then(|p| p.subject.as_ref()) {
        user.insert("altId".into(), json!(subject));
    }
    user.insert("requestor".into(), json!(true));
    if let Some(address) = &caller.address {
        user.insert("network".into(), json!({ "address": address, "type": "2" }));
    }
    let mut agents = vec![Value::Object(user)];
    if let Some(client) = principal.and_then(|p| p.client_id.as_ref()) {
        agents.push(json!({
            "type": { "text": "client application" },
            "who": { "identifier": { "system": "urn:fjord:oauth-client", "value": client } },
            "requestor": false,
        }));
    }
    if let Some(Notification {
        destination: Some(destination),
        ..
    }) = &audited.notification
    {
        agents.push(json!({
            "type": { "coding": [{ "system": DICOM, "code": "110152", "display": "Destination Role ID" }] },
            "who": { "display": "the subscription's endpoint" },
            "requestor": false,
            "network": { "address": destination, "type": "5" },
        }));
    }
    let entity_type = |code: &str| json!({ "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": code });
    let role = |code: &str| json!({ "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": code });
    let mut entities: Vec<Value> = audited
        .entities
        .iter()
        .map(|reference| json!({ "what": { "reference": reference }, "type": entity_type("2") }))
        .collect();
    if let Some(notification) = &audited.notification {
        entities.insert(
            0,
            json!({
                "what": { "reference": notification.subscription },
                "type": entity_type("2"),
                "role": role("9"),
            }),
        );
    }
    if let Some(query) = &audited.query {
        use base64::Engine as _;
        entities.push(json!({
            "type": entity_type("2"),
            "role": role("24"),
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }
    for patient in &audited.patients {
        entities.push(json!({
            "what": { "reference": patient },
            "type": entity_type("1"),
            "role": role("1"),
        }));
    }
    let mut event = Map::new();
    event.insert("resourceType".into(), json!(AUDIT_EVENT));
    if let [patient] = audited.patients.iter().collect::<Vec<_>>().as_slice() {
        event.insert(
            "extension".into(),
            json!([{ "url": PATIENT_EXTENSION, "valueReference": { "reference": patient } }]),
        );
    }
    if audited.notification.is_some() || audited.interaction == EXPORT {
        event.insert(
            "type".into(),
            json!({ "system": DICOM, "code": "110106", "display": "Export" }),
        );
    } else if audited.interaction == IMPORT {
        event.insert(
            "type".into(),
            json!({ "system": DICOM, "code": "110107", "display": "Import" }),
        );
    } else {
        event.insert(
            "type".into(),
            json!({
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "RESTful Operation",
            }),
        );
        event.insert(
            "subtype".into(),
            json!([{ "system": "http://hl7.org/fhir/restful-interaction", "code": audited.interaction }]),
        );
    }
    event.insert("action".into(), json!(audited.action()));
    let recorded = now();
    if let Some(notification) = &audited.notification {
        // The notifications the event records went within this period.
        event.insert(
            "period".into(),
            json!({ "start": format_instant(notification.since), "end": format_instant(recorded) }),
        );
    }
    event.insert("recorded".into(), json!(format_instant(recorded)));
    match &audited.failure {
        None => {
            event.insert("outcome".into(), json!("0"));
        }
        Some((code, why)) => {
            event.insert("outcome".into(), json!(code.to_string()));
            event.insert("outcomeDesc".into(), json!(why));
        }
    }
    if let Some(shared) = caller.access.sharing() {
        mark_cross_tenant(&mut event, &mut agents, shared);
    }
    event.insert("agent".into(), json!(agents));
    event.insert(
        "source".into(),
        json!({
            "site": caller.tenant.id,
            "observer": { "display": "Fjord FHIR server" },
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        }),
    );
    if !entities.is_empty() {
        event.insert("entity".into(), json!(entities));
    }
    Value::Object(event)
}

/// Marks an event of an access by another tenant's caller, under a sharing grant: the subtype
/// `urn:fjord:audit|cross-tenant`, the purpose the token asserted, and the caller's home
/// tenant as an agent beside the user.
fn mark_cross_tenant(event: &mut Map<String, Value>, agents: &mut Vec<Value>, shared: &Shared) {
    let marker = json!({
        "system": FJORD_AUDIT,
        "code": CROSS_TENANT,
        "display": "another tenant's caller, under the sharing policy",
    });
    match event.get_mut("subtype").and_then(Value::as_array_mut) {
        Some(subtypes) => subtypes.push(marker),
        None => {
            event.insert("subtype".into(), json!([marker]));
        }
    }
    let coding = match shared.purpose.split_once('|') {
        Some((system, code)) => json!({ "system": system, "code": code }),
        None => json!({ "code": shared.purpose }),
    };
    event.insert(
        "purposeOfEvent".into(),
        json!([{ "coding": [coding], "text": shared.purpose }]),
    );
    agents.push(json!({
        "type": { "text": "the caller's home tenant" },
        "who": { "identifier": { "system": "urn:fjord:tenant", "value": shared.home_tenant } },
        "requestor": false,
    }));
}
