//! The text index (`fjord-text`) fed from the change log: a follower the server runs in the
//! background, and a catch-up before every search that asks the index, so that such a search
//! sees every write acknowledged before it started.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fjord_search::{Filter, Registry, SearchQuery, TextField};

use crate::audit::AUDIT_EVENT;
use fjord_store::{Change, ChangeCursor, Tenant};
use fjord_text::{TextError, TextIndex, TextUpdate};

use crate::{Caller, Engine, EngineError};

/// Changes read from the log per round (and per index commit).
const FEED_BATCH: usize = 2000;
/// A text search that matches more resources than this is refused: its ids become a filter of
/// the SQL query.
pub const MAX_TEXT_MATCHES: usize = 20_000;

/// The index with the lock that lets one feeder at a time move it.
#[derive(Debug)]
pub(crate) struct TextFeed {
    index: Arc<TextIndex>,
    feeding: tokio::sync::Mutex<()>,
}

impl Engine {
    /// Serves `_text`, `_content` and `:text` from `index`.
    pub fn with_text_index(mut self, index: Arc<TextIndex>) -> Engine {
        self.text = Some(Arc::new(TextFeed {
            index,
            feeding: tokio::sync::Mutex::new(()),
        }));
        self
    }

    /// Whether full-text search is served.
    pub fn has_text_index(&self) -> bool {
        self.text.is_some()
    }

    /// Feeds the index every change of every tenant not fed yet (the server calls this in the
    /// background, so that searches find little left to do).
    pub async fn follow_text(&self) -> Result<(), EngineError> {
        if self.text.is_none() {
            return Ok(());
        }
        for tenant in self.list_tenants().await? {
            self.catch_up_text(&tenant).await?;
        }
        Ok(())
    }

    /// Where the text index stands in the tenant's change log; `None` without a text index.
    pub(crate) fn text_cursor(&self, tenant: &Tenant) -> Option<ChangeCursor> {
        let feed = self.text.as_ref()?;
        let position = feed.index.position(i64::from(tenant.key.0));
        Some(
            position
                .and_then(|position| serde_json::from_str(&position).ok())
                .unwrap_or_default(),
        )
    }

    /// Feeds the index the tenant's changes up to the end of its log as of now.
    #[tracing::instrument(skip_all, fields(tenant = %tenant.id))]
    pub async fn catch_up_text(&self, tenant: &Tenant) -> Result<(), EngineError> {
        let Some(feed) = &self.text else {
            return Ok(());
        };
        let _feeding = feed.feeding.lock().await;
        let key = i64::from(tenant.key.0);
        loop {
            let cursor: ChangeCursor = feed
                .index
                .position(key)
                .and_then(|position| serde_json::from_str(&position).ok())
                .unwrap_or_default();
            let batch = self.store.changes(tenant.key, &cursor, FEED_BATCH).await?;
            if batch.changes.is_empty() && batch.cursor == cursor {
                return Ok(());
            }
            let registry = self.registry(tenant).await?;
            let index = feed.index.clone();
            let position = serde_json::to_string(&batch.cursor).expect("a cursor serializes");
            let changes = batch.changes;
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                // The audit trail is searched by its parameters: an event per read would cost
                // the text index more than the reads themselves.
                let updates = changes
                    .iter()
                    .filter(|c| c.resource_type != AUDIT_EVENT)
                    .map(|c| update_of(&registry, c))
                    .collect();
                index.apply(key, updates, position)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("text index feeder: {e}")))?
            .map_err(text_error)?;
            if !batch.full {
                return Ok(());
            }
        }
    }

    /// Puts the text index's answer in place of every [`Filter::Text`] of the query, after
    /// feeding the index what was written before.
    pub(crate) async fn answer_text(
        &self,
        caller: &Caller,
        query: &mut SearchQuery,
    ) -> Result<(), EngineError> {
        let mut asked: HashSet<TextAsk> = HashSet::new();
        each_text_filter(query, |_, ask| {
            asked.insert(ask);
        });
        if asked.is_empty() {
            return Ok(());
        }
        if asked
            .iter()
            .any(|(resource_type, _, _)| resource_type == AUDIT_EVENT)
        {
            return Err(EngineError::BadRequest(
                "the full-text index leaves out AuditEvents: search them by their parameters"
                    .into(),
            ));
        }
        let Some(feed) = &self.text else {
            return Err(EngineError::BadRequest(
                "full-text search (_text, _content, :text) is not served here".into(),
            ));
        };
        self.catch_up_text(caller).await?;
        let index = feed.index.clone();
        let key = i64::from(caller.key.0);
        let answers = tokio::task::spawn_blocking(move || {
            let mut answers = HashMap::new();
            for (resource_type, field, text) in asked {
                let ids = index.search(key, &resource_type, &field, &text, MAX_TEXT_MATCHES)?;
                answers.insert((resource_type, field, text), ids);
            }
            Ok::<_, TextError>(answers)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("text search: {e}")))?
        .map_err(text_error)?;
        each_text_filter(query, |filter, ask| {
            *filter = Filter::Among {
                ids: answers.get(&ask).cloned().unwrap_or_default(),
                resource_type: ask.0,
            }
        });
        Ok(())
    }
}

/// What a text filter asks: words in a field of resources of a type.
type TextAsk = (String, TextField, String);

/// Calls `f` on every [`Filter::Text`] of the query, with what it asks.
fn each_text_filter(query: &mut SearchQuery, mut f: impl FnMut(&mut Filter, TextAsk)) {
    query.visit_filters_mut(&mut |filter| {
        if let Filter::Text {
            resource_type,
            field,
            text,
        } = filter
        {
            let ask = (resource_type.clone(), field.clone(), text.clone());
            f(filter, ask);
        }
    });
}

/// What a change does to the index: the current version's document, or its removal.
fn update_of(registry: &Registry, change: &Change) -> TextUpdate {
    let parsed = change
        .body
        .as_deref()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok());
    match parsed {
        Some(resource) => TextUpdate::Put(fjord_text::document(
            registry,
            &change.resource_type,
            &change.id,
            &resource,
        )),
        None => TextUpdate::Remove {
            resource_type: change.resource_type.clone(),
            id: change.id.clone(),
        },
    }
}

fn text_error(error: TextError) -> EngineError {
    match error {
        TextError::TooManyMatches(_) | TextError::NoWords => {
            EngineError::BadRequest(error.to_string())
        }
        other => EngineError::Internal(other.to_string()),
    }
}
