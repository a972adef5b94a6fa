//! How far each follower of the change log is behind its end, per tenant: the consumers that
//! record their cursors in the database (subscription matching) and the text index. A growing
//! lag means a follower cannot keep up with the writes.

use crate::{Engine, EngineError};

/// Consumer name of the text index.
const TEXT_INDEX: &str = "text-index";

/// One consumer of one tenant's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    pub tenant: String,
    pub consumer: String,
    /// Positions of the log it has not read (see [`fjord_store::ChangeCursor::behind`]).
    pub behind: i64,
}

impl Engine {
    /// Every consumer's lag in every tenant, as of now. For operators (`/metrics`): it names
    /// tenants and consumers, nothing of their data.
    #[tracing::instrument(skip_all)]
    pub async fn change_log_lags(&self) -> Result<Vec<ConsumerLag>, EngineError> {
        let mut lags = Vec::new();
        for tenant in self.store.list_tenants().await? {
            let end = self.store.change_log_end(tenant.key).await?;
            let mut cursors = self.store.consumer_cursors(tenant.key).await?;
            if let Some(cursor) = self.text_cursor(&tenant) {
                cursors.push((TEXT_INDEX.to_owned(), cursor));
            }
            lags.extend(cursors.into_iter().map(|(consumer, cursor)| ConsumerLag {
                tenant: tenant.id.clone(),
                consumer,
                behind: cursor.behind(end),
            }));
        }
        Ok(lags)
    }
}
