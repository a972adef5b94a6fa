//! Websocket channels, without the websocket: `$get-ws-binding-token` hands a client a short-lived
//! token for subscriptions it may read; a connection (`fjord-rest` owns the socket) binds with
//! it (`bind-with-token`, or classic R4's `bind {id}`), and the subscriptions' workers then send
//! it their notifications as text, each acknowledged once written, so `delivered` moves only for
//! what reached the connection. With no connection bound, events wait; they are not failures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fjord_engine::{Caller, EngineError, Tenant};
use fjord_store::TenantKey;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::notification::{instant, Notice};
use crate::spec::{ChannelType, Kind};
use crate::{SubscriptionError, Subscriptions};

/// How long a binding token is good for.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A message for a bound connection, and where to say whether it was written.
#[derive(Debug)]
pub struct Outgoing {
    pub text: String,
    pub written: oneshot::Sender<bool>,
}

/// What binding gives a connection: the messages to send at once (handshakes), then a stream
/// of notifications.
#[derive(Debug)]
pub struct Binding {
    pub first: Vec<String>,
    pub messages: mpsc::Receiver<Outgoing>,
}

/// A binding token: which subscriptions of which tenant, until when.
#[derive(Debug, Clone)]
pub(crate) struct BindingToken {
    tenant: TenantKey,
    subscriptions: Vec<String>,
    expires: Instant,
}

/// Bound connections, by subscription.
pub(crate) type Sockets = HashMap<(TenantKey, String), Vec<mpsc::Sender<Outgoing>>>;

impl Subscriptions {
    /// `$get-ws-binding-token` for a websocket subscription the caller may read.
    pub async fn binding_token(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Value, SubscriptionError> {
        self.engine.read(caller, "Subscription", id).await?;
        let live = self.live(caller.key, id);
        if live.is_none_or(|l| l.spec.channel.kind != ChannelType::Websocket) {
            return Err(EngineError::BadRequest(format!(
                "Subscription/{id} is not an active websocket subscription"
            ))
            .into());
        }
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires = OffsetDateTime::now_utc() + TOKEN_LIFETIME;
        let mut tokens = self.ws_tokens.lock().expect("binding tokens");
        tokens.retain(|_, t| t.expires > Instant::now());
        tokens.insert(
            token.clone(),
            BindingToken {
                tenant: caller.key,
                subscriptions: vec![id.to_owned()],
                expires: Instant::now() + TOKEN_LIFETIME,
            },
        );
        let url = self.base(caller).replacen("http", "ws", 1) + "/$subscription-websocket";
        Ok(json!({
            "resourceType": "Parameters",
            "parameter": [
                { "name": "token", "valueString": token },
                { "name": "expiration", "valueDateTime": instant(expires) },
                { "name": "subscription", "valueString": id },
                { "name": "websocket-url", "valueUrl": url },
            ],
        }))
    }

    /// Binds a connection of `tenant` by a client's message: `bind-with-token TOKEN` (also with
    /// a colon), or classic R4's `bind ID` for a classic websocket subscription (whose pings
    /// carry nothing but its id). `Err` says why not.
    pub async fn bind(&self, tenant: &Tenant, message: &str) -> Result<Binding, String> {
        let message = message.trim();
        let ids = if let Some(token) = message
            .strip_prefix("bind-with-token")
            .map(|t| t.trim_start_matches(':').trim())
        {
            let tokens = self.ws_tokens.lock().expect("binding tokens");
            match tokens.get(token) {
                Some(t) if t.tenant == tenant.key && t.expires > Instant::now() => {
                    t.subscriptions.clone()
                }
                _ => return Err("unknown or expired binding token".into()),
            }
        } else if let Some(id) = message.strip_prefix("bind ") {
            let classic = self.live(tenant.key, id.trim()).is_some_and(|l| {
                matches!(l.spec.kind, Kind::Criteria { .. })
                    && l.spec.channel.kind == ChannelType::Websocket
            });
            if !classic {
                return Err(format!("no classic websocket subscription {}", id.trim()));
            }
            vec![id.trim().to_owned()]
        } else {
            return Err("expected 'bind-with-token TOKEN' or 'bind ID'".into());
        };
        let (sender, messages) = mpsc::channel(16);
        let mut first = Vec::new();
        for id in &ids {
            let live = self.live(tenant.key, id);
            let Some(live) = live else {
                return Err(format!("Subscription/{id} is not active"));
            };
            match &live.spec.kind {
                Kind::Topic { .. } => {
                    let state = self
                        .engine
                        .store()
                        .subscription_state(tenant.key, id)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("Subscription/{id} is gone"))?;
                    let notice = Notice::bare("handshake", live.spec.content);
                    let handshake = self
                        .notification(tenant, &live, &state, notice)
                        .await
                        .map_err(|e| e.to_string())?;
                    first.push(handshake.to_json());
                }
                Kind::Criteria { .. } => first.push(format!("bound {id}")),
            }
        }
        let mut sockets = self.sockets.lock().expect("sockets");
        for id in &ids {
            let bound = sockets.entry((tenant.key, id.clone())).or_default();
            bound.retain(|s| !s.is_closed());
            bound.push(sender.clone());
        }
        drop(sockets);
        for id in &ids {
            self.wake(tenant, id);
        }
        Ok(Binding { first, messages })
    }

    /// Sends a text to a connection bound to the subscription; `Ok(false)` when none is (the
    /// events wait), `Err` when the connection failed.
    pub(crate) async fn send_to_socket(
        &self,
        tenant: TenantKey,
        id: &str,
        text: String,
    ) -> Result<bool, String> {
        let socket = {
            let mut sockets = self.sockets.lock().expect("sockets");
            let bound = sockets.entry((tenant, id.to_owned())).or_default();
            bound.retain(|s| !s.is_closed());
            bound.last().cloned()
        };
        let Some(socket) = socket else {
            return Ok(false);
        };
        let (written, ack) = oneshot::channel();
        socket
            .send(Outgoing { text, written })
            .await
            .map_err(|_| "the websocket closed".to_owned())?;
        match ack.await {
            Ok(true) => Ok(true),
            _ => Err("the websocket closed before the notification was written".into()),
        }
    }

    /// Whether a connection is bound to the subscription.
    pub(crate) fn has_socket(&self, tenant: TenantKey, id: &str) -> bool {
        self.sockets
            .lock()
            .expect("sockets")
            .get(&(tenant, id.to_owned()))
            .is_some_and(|bound| bound.iter().any(|s| !s.is_closed()))
    }
}
