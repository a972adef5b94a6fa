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
//! ([`Merged`]), its `period` the time they went in. So are the reads (`read`, `vread`)
//! of one patient's resources by one actor between two flushes ([`buffer`]): a SMART app opening
//! a record reads dozens at once, and one event per read made the trail's writes, not the reads,
//! what bounded the rate of reads.
//!
//! The shape follows the Norwegian AuditEvent profile (`no-domain-Trustframework-Auditevent`)
//! where Fjord knows the facts: the patient extension, `agent.who` as the user (`fhirUser`,
//! else the token's subject) with the client and role claims beside it, `source` the server.

mod buffer;
mod event;

use std::collections::{BTreeSet, HashMap, HashSet};

use fjord_search::{IndexValue, Registry};
use fjord_store::{Expected, NewVersion, Op, StoredVersion};
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub(crate) use buffer::AuditBuffer;
use event::{audit_event, Actor};

use crate::interactions::{format_instant, now};
use crate::{Caller, Engine, EngineError};

pub(crate) const AUDIT_EVENT: &str = "AuditEvent";

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
    /// When the first of several interactions the event records took place (notifications,
    /// merged reads): its `period` runs from then to when it was recorded.
    since: Option<time::OffsetDateTime>,
}

/// Where a notification went.
#[derive(Debug, Clone)]
struct Notification {
    /// `Subscription/id`.
    subscription: String,
    /// The endpoint's origin (`https://host:port`), for a rest-hook.
    destination: Option<String>,
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

/// One event recording several interactions (the notifications of one subscription, the reads
/// of one patient's resources by one actor): each entity named once however often it came
/// back, its `period` from the first interaction to the record.
#[derive(Debug)]
pub struct Merged {
    audited: Audited,
    /// The entities of `audited`, to name each once without scanning them.
    named: HashSet<String>,
}

impl Merged {
    /// Opens the event with its first interaction.
    pub fn open(mut audited: Audited) -> Merged {
        audited.since.get_or_insert_with(now);
        let named = audited.entities.iter().cloned().collect();
        Merged { audited, named }
    }

    /// Adds what a later interaction named and the patients it concerns.
    pub fn absorb(&mut self, later: Audited) {
        for entity in later.entities {
            if self.named.insert(entity.clone()) {
                self.audited.entities.push(entity);
            }
        }
        self.audited.patients.extend(later.patients);
        for (entity, patients) in later.owners {
            self.audited
                .owners
                .entry(entity)
                .or_default()
                .extend(patients);
        }
    }

    /// The event so far.
    pub fn audited(&self) -> &Audited {
        &self.audited
    }

    /// Entities named.
    pub fn entities(&self) -> usize {
        self.named.len()
    }

    /// The event, to record.
    pub fn into_audited(self) -> Audited {
        self.audited
    }
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
            since: None,
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
            }),
            since: Some(now()),
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

    /// Whether a [`Merged`] event opened with this may absorb `later`: both are notifications
    /// of the same subscription to the same destination, and neither failed.
    pub fn absorbs(&self, later: &Audited) -> bool {
        let same = match (&self.notification, &later.notification) {
            (Some(first), Some(then)) => {
                first.subscription == then.subscription && first.destination == then.destination
            }
            _ => false,
        };
        same && self.failure.is_none() && later.failure.is_none()
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
    /// Records a read or a refusal: written within a second by [`Engine::follow_audit`], reads
    /// merged ([`Audited::merges`]). Waits while the buffer is full.
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
        let actor = Actor::of(caller);
        let internal = Caller::internal(caller.tenant.clone());
        for audited in per_patient(audited) {
            if audited.merges() {
                self.buffer_read(&caller.tenant, actor.clone(), audited)
                    .await;
                continue;
            }
            let stored = match self
                .stored_event(&internal, audit_event(&actor, &audited))
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
            let event = audit_event(&Actor::of(caller), &audited);
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
