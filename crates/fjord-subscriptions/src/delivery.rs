//! Delivery: one worker per subscription with something to send. It reads the subscription's
//! state, sends the handshake (status `requested` → `active`), then the events after
//! `delivered` in number order, `max_count` per notification, and heartbeats while idle. A
//! failure is retried after an exponential back-off with jitter; after `max_failures` in a row
//! the subscription goes to `error` (set in its state and in the resource) and the worker stops
//! until the client sets it back. `delivered` moves only after the receiver answered 2xx, and
//! is stored before the next notification goes (see `marks`), so a crash sends the last
//! notification again rather than never, and nothing before it.

use std::sync::Arc;
use std::time::Duration;

use fjord_engine::{Audited, Caller, EngineError, Format, Tenant};
use fjord_store::{Delivery, SubscriptionEvent, SubscriptionState, TenantKey};
use rand_core::RngCore;
use serde_json::Value;
use tokio::sync::Notify;

use crate::dispatch::Live;
use crate::handoff::{Take, Worker};
use crate::http::HookRequest;
use crate::notification::{Notice, Notification};
use crate::spec::{ChannelType, Content, Kind, Spec};
use crate::{SubscriptionError, Subscriptions};

/// What a worker does next.
enum Next {
    Continue,
    Stop,
}

impl Subscriptions {
    /// Makes sure a worker delivers the subscription's pending work, and wakes it.
    pub(crate) fn wake(&self, tenant: &Tenant, id: &str) {
        self.hand(tenant, id, Vec::new());
    }

    /// [`Subscriptions::wake`], handing the worker the events a dispatcher round just recorded
    /// (in number order), so that it need not read them back.
    pub(crate) fn hand(&self, tenant: &Tenant, id: &str, events: Vec<SubscriptionEvent>) {
        let key = (tenant.key, id.to_owned());
        let mut workers = self.workers.lock().expect("workers");
        if let Some(worker) = workers.get(&key) {
            worker.hand(events);
            worker.wake.notify_one();
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let worker = Arc::new(Worker::default());
        worker.hand(events);
        workers.insert(key, worker.clone());
        let (tenant, id) = (tenant.clone(), id.to_owned());
        tokio::spawn(async move { me.work(tenant, id, worker).await });
    }

    #[tracing::instrument(skip(self, tenant, worker), fields(tenant = %tenant.id))]
    async fn work(self: Arc<Self>, tenant: Tenant, id: String, worker: Arc<Worker>) {
        let mut progress = Progress::default();
        let mut waiting = Pending {
            metrics: &self.metrics,
            tenant: &tenant.id,
            counted: 0,
        };
        loop {
            match (self.step(&tenant, &id, &worker, &mut progress, &mut waiting)).await {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => break,
                Err(error) => {
                    progress.known = None;
                    tracing::warn!(%error, "subscription delivery: the database failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        drop(waiting);
        self.workers
            .lock()
            .expect("workers")
            .remove(&(tenant.key, id.clone()));
        // Work that arrived while the worker was stopping gets a new one.
        if let Ok(Some(state)) = self
            .engine
            .store()
            .subscription_state(tenant.key, &id)
            .await
        {
            let live = self.live(tenant.key, &id).is_some();
            if live && pending(&state) {
                self.wake(&tenant, &id);
            }
        }
    }

    /// One thing done: a handshake, a notification, a heartbeat or a wait.
    async fn step(
        &self,
        tenant: &Tenant,
        id: &str,
        worker: &Worker,
        progress: &mut Progress,
        pending: &mut Pending<'_>,
    ) -> Result<Next, SubscriptionError> {
        let live = self.live(tenant.key, id);
        let Some(live) = live else {
            return Ok(Next::Stop);
        };
        if progress.since_seq != Some(live.since_seq) {
            // Started afresh (deleted and created again): numbers begin anew.
            if progress.since_seq.is_some() {
                progress.delivered = 0;
            }
            progress.since_seq = Some(live.since_seq);
        }
        if let Some(next) = self
            .step_from_memory(tenant, id, &live, worker, progress, pending)
            .await
        {
            return next;
        }
        let delivered = &mut progress.delivered;
        let websocket = live.spec.channel.kind == ChannelType::Websocket;
        let store = self.engine.store();
        let Some((state, events)) = store
            .pending_events(tenant.key, id, *delivered, live.spec.max_count)
            .await?
        else {
            return Ok(Next::Stop);
        };
        worker.forget_through(state.delivered.max(*delivered));
        let waiting = state.events - state.delivered.max(*delivered);
        pending.set(if state.status == "active" { waiting } else { 0 });
        if self.is_revoked(&live.access) {
            let reason = "the token that created the subscription was revoked";
            let failures = state.failures;
            let stop = Delivery::Failed {
                failures,
                error: reason,
                status: Some("error"),
            };
            store.note_delivery(tenant.key, id, stop).await?;
            self.set_resource_status(tenant, id, "error", Some(reason))
                .await;
            return Ok(Next::Stop);
        }
        match state.status.as_str() {
            "requested" => {
                let result = match (&live.spec.kind, &live.spec.channel.kind) {
                    (Kind::Topic { .. }, ChannelType::RestHook) => {
                        let notice = Notice::bare("handshake", live.spec.content);
                        let handshake = self.notification(tenant, &live, &state, notice).await?;
                        self.post_bundle(&live, &handshake).await
                    }
                    // Classic subscriptions have no handshake.
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => {
                        store
                            .note_delivery(tenant.key, id, Delivery::Status("active"))
                            .await?;
                        self.set_resource_status(tenant, id, "active", None).await;
                        Ok(Next::Continue)
                    }
                    Err(error) => self.failed(tenant, &state, &error).await,
                }
            }
            // A websocket subscription's events wait for a connection; binding one wakes this.
            "active" if websocket && !self.has_socket(tenant.key, id) => {
                self.idle(tenant, &live, &state, &worker.wake).await
            }
            "active" if !events.is_empty() => {
                let last = events.last().map_or(state.delivered, |e| e.number);
                match self.deliver(tenant, &live, &state, &events).await {
                    Ok(()) => {}
                    // A connection that went away is no failure of the subscription: the
                    // events wait for the next one.
                    Err(_) if websocket => return Ok(Next::Continue),
                    Err(error) => return self.failed(tenant, &state, &error).await,
                }
                *delivered = last;
                pending.set(state.events - last);
                if state.failures > 0 {
                    let note = [(id.to_owned(), last)];
                    store.note_delivered(tenant.key, &note, true).await?;
                }
                if last < state.events {
                    // The next step's read stores the mark.
                    return Ok(Next::Continue);
                }
                // Caught up with what was read: later events wake the worker.
                self.mark_delivered(tenant.key, id, last);
                let state = SubscriptionState {
                    delivered: last,
                    failures: 0,
                    error: None,
                    ..state
                };
                self.idle_caught_up(tenant, &live, state, worker, progress)
                    .await
            }
            "active" if state.delivered.max(*delivered) < state.events => {
                // Numbers without stored events (removed meanwhile): nothing to send.
                *delivered = state.events;
                self.mark_delivered(tenant.key, id, state.events);
                Ok(Next::Continue)
            }
            "active" => {
                self.idle_caught_up(tenant, &live, state, worker, progress)
                    .await
            }
            _ => Ok(Next::Stop),
        }
    }

    /// The step a worker takes from what it knows, without reading the store: a wait when
    /// nothing new was handed, or a notification of handed events that follow the delivered
    /// ones. `None` when the store must be read.
    async fn step_from_memory(
        &self,
        tenant: &Tenant,
        id: &str,
        live: &Arc<Live>,
        worker: &Worker,
        progress: &mut Progress,
        pending: &mut Pending<'_>,
    ) -> Option<Result<Next, SubscriptionError>> {
        let known = progress.known.take()?;
        // Written again since (restarted, changed, or set back): the store knows how.
        let same = Arc::ptr_eq(&known.live, live);
        let websocket = live.spec.channel.kind == ChannelType::Websocket;
        if !same || self.is_revoked(&live.access) || (websocket && !self.has_socket(tenant.key, id))
        {
            return None;
        }
        if !worker.has_after(progress.delivered) {
            return Some(
                self.idle_caught_up(tenant, live, known.state, worker, progress)
                    .await,
            );
        }
        // The last notification's mark must be stored before the next one goes.
        if self.mark_waiting(tenant.key, id) {
            return None;
        }
        let Take::Events(events) = worker.take(progress.delivered, live.spec.max_count) else {
            return None;
        };
        let last = events.last().map_or(progress.delivered, |e| e.number);
        let state = SubscriptionState {
            events: last,
            ..known.state.clone()
        };
        // Pending until delivered, through a failure's back-off too, as when read from the store.
        pending.set(last - progress.delivered);
        if let Err(error) = self.deliver(tenant, live, &state, &events).await {
            if websocket {
                // The events wait in the store for the next connection.
                return Some(Ok(Next::Continue));
            }
            return Some(self.failed(tenant, &state, &error).await);
        }
        progress.delivered = last;
        pending.set(0);
        self.mark_delivered(tenant.key, id, last);
        progress.known = Some(Known {
            state: SubscriptionState {
                delivered: last,
                ..state
            },
            live: known.live,
        });
        Some(Ok(Next::Continue))
    }

    /// [`Subscriptions::idle`] for a worker that delivered everything in the store: woken, it
    /// keeps the state for its next step from memory. A heartbeat sent meanwhile may have
    /// counted a failure in the store, so after one the next step reads the state from there.
    async fn idle_caught_up(
        &self,
        tenant: &Tenant,
        live: &Arc<Live>,
        state: SubscriptionState,
        worker: &Worker,
        progress: &mut Progress,
    ) -> Result<Next, SubscriptionError> {
        if !wait_for_events(live, &worker.wake).await {
            return self.heartbeat(tenant, live, &state).await;
        }
        if state.failures == 0 {
            progress.known = Some(Known {
                live: live.clone(),
                state,
            });
        }
        Ok(Next::Continue)
    }

    /// Waits for new events, sending a heartbeat whenever the period passes without any.
    async fn idle(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        wake: &Notify,
    ) -> Result<Next, SubscriptionError> {
        if wait_for_events(live, wake).await {
            return Ok(Next::Continue);
        }
        self.heartbeat(tenant, live, state).await
    }

    async fn heartbeat(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
    ) -> Result<Next, SubscriptionError> {
        let notice = Notice::bare("heartbeat", live.spec.content);
        let heartbeat = self.notification(tenant, live, state, notice).await?;
        match self.transmit(tenant.key, live, &heartbeat).await {
            Ok(()) => Ok(Next::Continue),
            Err(_) if live.spec.channel.kind == ChannelType::Websocket => Ok(Next::Continue),
            Err(error) => self.failed(tenant, state, &error).await,
        }
    }

    /// Sends events (one notification Bundle, or as classic R4 does) and records what went to
    /// whom in the audit trail, delivered or not (see `digest`).
    async fn deliver(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        events: &[SubscriptionEvent],
    ) -> Result<(), String> {
        let destination = match live.spec.channel.kind {
            ChannelType::RestHook => live.spec.channel.endpoint.as_deref().and_then(origin),
            ChannelType::Websocket => None,
        };
        let mut audited = Audited::notification(&state.id, destination);
        if carries_resources(&live.spec) {
            for event in events {
                audited.named_version(
                    &event.resource_type,
                    &event.id,
                    event.version,
                    event.patients.iter().cloned(),
                );
            }
        }
        let result = self
            .send_events(tenant, live, state, events, &mut audited)
            .await;
        if let Err(why) = &result {
            audited = audited.not_delivered(why.clone());
        }
        let channel = match live.spec.channel.kind {
            ChannelType::RestHook => "rest-hook",
            ChannelType::Websocket => "websocket",
        };
        (self.metrics).notified(&tenant.id, channel, result.is_ok());
        self.audit_delivered(tenant.key, &state.id, self.caller_of(tenant, live), audited)
            .await;
        result
    }

    /// Sends events: one notification Bundle (topic-based), or as classic R4 does. Names in
    /// `audited` the context resources a full-resource notification carried.
    async fn send_events(
        &self,
        tenant: &Tenant,
        live: &Live,
        state: &SubscriptionState,
        events: &[SubscriptionEvent],
        audited: &mut Audited,
    ) -> Result<(), String> {
        let state = SubscriptionState {
            // The notification reports the events up to its last.
            events: events.last().map_or(state.events, |e| e.number),
            ..state.clone()
        };
        match &live.spec.kind {
            Kind::Topic { .. } => {
                let bundle = self
                    .notification(
                        tenant,
                        live,
                        &state,
                        Notice {
                            kind: "event-notification",
                            events,
                            content: live.spec.content,
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                for context in bundle.context_carried() {
                    audited.named(context.to_owned());
                }
                self.transmit(tenant.key, live, &bundle).await
            }
            // Classic R4 over a websocket: `ping {id}`, and the client searches.
            Kind::Criteria { .. } if live.spec.channel.kind == ChannelType::Websocket => {
                let ping = format!("ping {}", state.id);
                match self.send_to_socket(tenant.key, &state.id, ping).await? {
                    true => Ok(()),
                    false => Err("no websocket is bound".into()),
                }
            }
            Kind::Criteria { .. } => {
                let endpoint = live.spec.channel.endpoint.clone().unwrap_or_default();
                if live.spec.channel.payload.is_none() {
                    // No payload: a bare POST says "search again".
                    return self.send(live, "POST", endpoint, None).await;
                }
                // With a payload the endpoint is a base: each resource is PUT there.
                for event in events {
                    let body = self
                        .engine
                        .store()
                        .read_version(tenant.key, &event.resource_type, &event.id, event.version)
                        .await
                        .map_err(|e| e.to_string())?
                        .and_then(|v| v.body);
                    let url = format!(
                        "{}/{}/{}",
                        endpoint.trim_end_matches('/'),
                        event.resource_type,
                        event.id
                    );
                    self.send(live, "PUT", url, body.map(String::into_bytes))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Sends a notification Bundle over the subscription's channel.
    async fn transmit(
        &self,
        tenant: TenantKey,
        live: &Live,
        bundle: &Notification,
    ) -> Result<(), String> {
        match live.spec.channel.kind {
            ChannelType::RestHook => self.post_bundle(live, bundle).await,
            ChannelType::Websocket => {
                match self
                    .send_to_socket(tenant, &live.spec.id, bundle.to_json())
                    .await?
                {
                    true => Ok(()),
                    false => Err("no websocket is bound".into()),
                }
            }
        }
    }

    async fn post_bundle(&self, live: &Live, bundle: &Notification) -> Result<(), String> {
        let endpoint = live.spec.channel.endpoint.clone().unwrap_or_default();
        let body = bundle.to_json().into_bytes();
        self.send(live, "POST", endpoint, Some(body)).await
    }

    /// One HTTP request to the subscriber, with the channel's headers and timeout; `Err` unless
    /// it answered 2xx.
    async fn send(
        &self,
        live: &Live,
        method: &str,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let media_type = live
            .spec
            .channel
            .payload
            .as_deref()
            .unwrap_or("application/fhir+json");
        let request = HookRequest {
            method,
            url: &url,
            headers: &live.spec.channel.headers,
            body: body.map(|body| (body, media_type)),
            timeout: live.spec.timeout,
        };
        self.http.send(request).await
    }

    /// Counts a failure; past the limit the subscription goes to `error`, else waits.
    async fn failed(
        &self,
        tenant: &Tenant,
        state: &SubscriptionState,
        error: &str,
    ) -> Result<Next, SubscriptionError> {
        let failures = state.failures + 1;
        tracing::warn!(subscription = %state.id, failures, error, "subscription delivery failed");
        let gives_up = failures as u32 >= self.settings.max_failures;
        let status = gives_up.then_some("error");
        self.engine
            .store()
            .note_delivery(
                tenant.key,
                &state.id,
                Delivery::Failed {
                    failures,
                    error,
                    status,
                },
            )
            .await?;
        if gives_up {
            self.metrics.subscription_failed(&tenant.id);
            self.set_resource_status(tenant, &state.id, "error", Some(error))
                .await;
            return Ok(Next::Stop);
        }
        tokio::time::sleep(self.backoff(failures as u32)).await;
        Ok(Next::Continue)
    }

    /// The wait after `failures` failures: doubling from the base up to the maximum, with
    /// jitter (half to all of it), so many subscribers of one endpoint do not retry in step.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .settings
            .backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = doubled.min(self.settings.max_backoff);
        let jitter = f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX);
        capped.mul_f64(0.5 + jitter / 2.0)
    }

    /// Writes the server's view of a subscription (`status`, R4's `error`) into the resource,
    /// as Fjord; a client's write meanwhile wins.
    async fn set_resource_status(
        &self,
        tenant: &Tenant,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) {
        let result: Result<(), EngineError> = async {
            let caller = Caller::internal(tenant.clone());
            let current = self.engine.read(&caller, "Subscription", id).await?;
            let Some(body) = current.body else {
                return Ok(());
            };
            let mut json: Value = serde_json::from_str(&body)
                .map_err(|e| EngineError::Internal(format!("stored body unreadable: {e}")))?;
            let error_value = error.map(|e| Value::String(e.to_owned()));
            if json["status"].as_str() == Some(status) && json.get("error") == error_value.as_ref()
            {
                return Ok(());
            }
            let object = json.as_object_mut().expect("a resource is an object");
            object.insert("status".into(), Value::String(status.to_owned()));
            match error_value {
                Some(error) => object.insert("error".into(), error),
                None => object.remove("error"),
            };
            let bytes = serde_json::to_vec(&json).expect("JSON serializes");
            self.engine
                .update(
                    &caller,
                    "Subscription",
                    id,
                    &bytes,
                    Format::Json,
                    Some(current.version),
                )
                .await
                .map(drop)
        }
        .await;
        if let Err(error) = result {
            tracing::info!(subscription = id, %error, status, "the Subscription's status was not written");
        }
    }
}

/// Waits until woken (true), or until the heartbeat period passes when a heartbeat is due
/// (false): topic-based subscriptions with a period.
async fn wait_for_events(live: &Live, wake: &Notify) -> bool {
    match (live.spec.heartbeat, &live.spec.kind) {
        (Some(period), Kind::Topic { .. }) => {
            tokio::time::timeout(period, wake.notified()).await.is_ok()
        }
        _ => {
            wake.notified().await;
            true
        }
    }
}

/// Whether a subscription's notifications carry its events' resources (by id or whole); the
/// others say only that something happened.
fn carries_resources(spec: &Spec) -> bool {
    match spec.kind {
        Kind::Topic { .. } => spec.content != Content::Empty,
        Kind::Criteria { .. } => {
            spec.channel.kind == ChannelType::RestHook && spec.channel.payload.is_some()
        }
    }
}

/// An endpoint's origin (`scheme://host:port`): what the audit trail names, since the path or
/// query of an endpoint may hold a secret, and so may the user part.
fn origin(endpoint: &str) -> Option<String> {
    let origin = url::Url::parse(endpoint).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// What a worker carries from one step to the next.
#[derive(Default)]
struct Progress {
    /// Every event up to this number was delivered, ahead of the marks in the store.
    delivered: i64,
    /// The start (`since_seq`) the delivered number counts from.
    since_seq: Option<i64>,
    /// The state as of the last step, while the subscription is active, without failures, and
    /// caught up with everything but the handed events.
    known: Option<Known>,
}

struct Known {
    live: Arc<Live>,
    state: SubscriptionState,
}

/// A worker's share of its tenant's pending-events gauge, taken back when the worker stops.
struct Pending<'a> {
    metrics: &'a fjord_metrics::Metrics,
    tenant: &'a str,
    counted: i64,
}

impl Pending<'_> {
    fn set(&mut self, events: i64) {
        let events = events.max(0);
        self.metrics
            .events_pending(self.tenant, events - self.counted);
        self.counted = events;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Whether a worker has something to do.
fn pending(state: &SubscriptionState) -> bool {
    state.status == "requested" || (state.status == "active" && state.delivered < state.events)
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn an_endpoints_origin_keeps_no_secret() {
        assert_eq!(
            origin("https://user:pw@hooks.example.no:8443/a/b?key=k#f").as_deref(),
            Some("https://hooks.example.no:8443")
        );
        assert_eq!(origin("http://h/notify").as_deref(), Some("http://h"));
        assert_eq!(origin("http://h?key=k").as_deref(), Some("http://h"));
    }
}
