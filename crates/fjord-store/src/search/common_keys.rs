//! Which index keys are common in a tenant, from Postgres's own statistics of the `keys` column
//! (`most_common_elems`, refreshed by ANALYZE).
//!
//! A GIN lookup of several keys reads the posting list of each: for `subject=X&category=
//! vital-signs` that is a hundred entries for the patient and a third of the tenant for the
//! category, which cost four fifths of the query. A common key is therefore checked on the rows
//! the rare ones find instead of being looked up.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::TenantKey;

/// A key on more than this share of a tenant's resources is checked, not looked up.
const COMMON_SHARE: f32 = 0.01;
/// How long the statistics read are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(300);

/// Common keys with the share of a tenant's resources that have each.
pub(crate) type Shares = Arc<HashMap<i64, f32>>;

/// The common keys of each tenant, with when they were read.
#[derive(Debug, Default, Clone)]
pub(crate) struct CommonKeys {
    by_tenant: Arc<RwLock<HashMap<TenantKey, (Instant, Shares)>>>,
}

impl CommonKeys {
    /// The tenant's common keys, read from the statistics when not known or stale.
    pub(crate) async fn of(
        &self,
        tenant: TenantKey,
        connection: &mut sqlx::PgConnection,
    ) -> Result<Shares, sqlx::Error> {
        if let Some((read_at, keys)) = self.by_tenant.read().expect("common keys").get(&tenant) {
            if read_at.elapsed() < FRESH_FOR {
                return Ok(keys.clone());
            }
        }
        // Elements and their shares; no row when the table was never analyzed.
        type Statistics = (Option<Vec<i64>>, Option<Vec<f32>>);
        let rows: Vec<Statistics> = sqlx::query_as(
            "SELECT most_common_elems::text::bigint[], most_common_elem_freqs FROM pg_stats \
             WHERE schemaname = current_schema() AND tablename = $1 AND attname = 'keys'",
        )
        .bind(format!("resource_current_{}", tenant.0))
        .fetch_all(connection)
        .await?;
        let keys: HashMap<i64, f32> = rows
            .into_iter()
            .filter_map(|(elements, shares)| Some(elements?.into_iter().zip(shares?)))
            .flatten()
            .filter(|(_, share)| *share > COMMON_SHARE)
            .collect();
        let keys = Arc::new(keys);
        self.by_tenant
            .write()
            .expect("common keys")
            .insert(tenant, (Instant::now(), keys.clone()));
        Ok(keys)
    }
}

/// Splits keys every match must have into those to look up in the index (the rare ones, or the
/// rarest when all are common) and those to check on the rows found.
pub(super) fn split(required: Vec<i64>, common: &HashMap<i64, f32>) -> (Vec<i64>, Vec<i64>) {
    let (mut looked_up, mut checked): (Vec<i64>, Vec<i64>) = required
        .into_iter()
        .partition(|key| !common.contains_key(key));
    if looked_up.is_empty() {
        checked.sort_by(|a, b| common[a].total_cmp(&common[b]));
        if !checked.is_empty() {
            looked_up.push(checked.remove(0));
        }
    }
    (looked_up, checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_keys_are_looked_up_and_common_ones_checked() {
        let common = HashMap::from([(10, 0.3), (11, 0.05)]);
        assert_eq!(split(vec![1, 10, 2], &common), (vec![1, 2], vec![10]));
        assert_eq!(split(vec![10, 11], &common), (vec![11], vec![10]));
        assert_eq!(split(vec![1, 2], &common), (vec![1, 2], vec![]));
        assert_eq!(split(vec![], &common), (vec![], vec![]));
    }
}
