//! Subscriptions: topic-based (the Subscriptions R5 Backport IG for R4, STU 1.1) and classic R4,
//! delivered over rest-hook or websocket, at least once and in order, from the change log.
//!
//! - [`topic`]: the topics Fjord ships, as R5 `SubscriptionTopic` JSON (data, not code).
//! - [`spec`]: a Subscription read into topic or criteria, filters and channel; the check the
//!   engine runs before one is stored.
//! - `dispatch`: one follower of each tenant's change log matches every change against the
//!   tenant's subscriptions, off the write path, and numbers the events it raises in the same
//!   transaction that moves its cursor (`fjord-store`), so none is lost or raised twice.
//! - `delivery`: a worker per subscription sends its events in number order (handshake,
//!   notifications, heartbeats), retries with exponential back-off and jitter, and after the
//!   configured number of failures sets the subscription to `error` (events keep counting).
//! - `http`: the rest-hook client (hyper, rustls with the machine's trust store).
//! - `notification`: the notification Bundles, and `$status` and `$events`.
//! - `digest`: a subscription's notifications of a few seconds, one AuditEvent.
//! - `socket`: websocket channels without the websocket (`fjord-rest` owns it):
//!   `$get-ws-binding-token`, binding a connection, notifications written to it.
//!
//! A subscription sees what the token that last wrote it may read, in its tenant only: events
//! are matched only on versions that token's read grant admits.

mod delivery;
mod digest;
mod dispatch;
mod handoff;
mod http;
mod live;
mod marks;
mod notification;
mod socket;
pub mod spec;
pub mod topic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use fjord_engine::{Engine, EngineError, Tenant};
use fjord_store::{StoreError, TenantKey};

pub use notification::{EventsQuery, NOTIFICATION_PROFILE, STATUS_PROFILE};
pub use socket::{Binding, Outgoing};
pub use spec::{Spec, SubscriptionCheck};
pub use topic::Topic;

/// What can go wrong in subscriptions.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("invalid topic: {0}")]
    Topic(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The topics a server offers, by canonical URL.
#[derive(Debug, Default)]
pub struct Topics {
    all: Vec<Arc<Topic>>,
}

impl Topics {
    /// The topics Fjord ships (`topics/`).
    pub fn shipped() -> Result<Topics, SubscriptionError> {
        Ok(Topics {
            all: topic::shipped()?.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn get(&self, url: &str) -> Option<Arc<Topic>> {
        // A canonical may carry a version (`url|1.0`).
        let url = url.split('|').next().unwrap_or(url);
        self.all.iter().find(|t| t.url == url).cloned()
    }

    pub fn all(&self) -> &[Arc<Topic>] {
        &self.all
    }
}

/// How delivery retries.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Consecutive failures after which a subscription goes to `error`.
    pub max_failures: u32,
    /// The first retry's delay; each failure doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long delivered events stay for `$events`; events not yet delivered stay until they
    /// are.
    pub keep_events: Duration,
}

/// Whether a token (by `jti`) was revoked.
pub type RevocationCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The subscription service of a server: topics, the dispatcher and the delivery workers.
pub struct Subscriptions {
    engine: Engine,
    topics: Arc<Topics>,
    settings: DeliverySettings,
    revoked: Option<RevocationCheck>,
    /// The subscriptions the dispatcher matches, shared with the workers that deliver them.
    live: RwLock<live::LiveSet>,
    /// Running delivery workers, each with its wake-up and the events handed to it.
    workers: Mutex<HashMap<(TenantKey, String), Arc<handoff::Worker>>>,
    /// This service, for the workers it spawns.
    me: Weak<Subscriptions>,
    /// The server's public origin (`https://host`), for the URLs notifications carry.
    origin: RwLock<String>,
    /// One client for every rest-hook: its connections to an endpoint are kept and reused.
    http: http::RestHookClient,
    /// Deliveries not yet noted in the store.
    marks: marks::DeliveryMarks,
    /// Delivered notifications not yet in the audit trail.
    digests: digest::AuditDigests,
    /// Where deliveries are counted.
    metrics: Arc<fjord_metrics::Metrics>,
    /// Websocket binding tokens.
    ws_tokens: Mutex<HashMap<String, socket::BindingToken>>,
    /// Bound websocket connections.
    sockets: Mutex<socket::Sockets>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("topics", &self.topics.all.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// The service over `engine`; `revoked` stops the subscriptions of revoked tokens. Run
    /// [`Subscriptions::run_dispatcher`] to start it.
    pub fn new(
        engine: Engine,
        topics: Arc<Topics>,
        settings: DeliverySettings,
        revoked: Option<RevocationCheck>,
        metrics: Arc<fjord_metrics::Metrics>,
    ) -> Arc<Subscriptions> {
        Arc::new_cyclic(|me| Subscriptions {
            engine,
            topics,
            settings,
            revoked,
            live: Default::default(),
            workers: Default::default(),
            me: me.clone(),
            origin: RwLock::new("http://localhost".into()),
            http: http::RestHookClient::new(),
            marks: Default::default(),
            digests: Default::default(),
            metrics,
            ws_tokens: Default::default(),
            sockets: Default::default(),
        })
    }

    /// Where clients reach the server (known once it listens): notifications name resources
    /// by URLs under it.
    pub fn set_origin(&self, origin: &str) {
        *self.origin.write().expect("origin") = origin.trim_end_matches('/').to_owned();
    }

    /// The check an engine must run on every Subscription it writes.
    pub fn check(topics: Arc<Topics>) -> SubscriptionCheck {
        SubscriptionCheck { topics }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The base URL of a tenant's FHIR API: its public base URL, else under the server's.
    fn base(&self, tenant: &Tenant) -> String {
        match &tenant.settings.public_base_url {
            Some(base) => base.clone(),
            None => format!("{}/fhir/{}", self.origin.read().expect("origin"), tenant.id),
        }
    }
}
