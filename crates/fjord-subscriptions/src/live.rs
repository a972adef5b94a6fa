//! The subscriptions the dispatcher matches, and for each tenant and resource type the
//! candidates a change of that type meets. A candidate whose filters require an equality key
//! (a patient, a code) is found by that key among the change's index keys, so a measurement
//! meets its own patient's subscriptions rather than every subscription of the tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fjord_search::Filter;
use fjord_store::TenantKey;

use crate::dispatch::Live;
use crate::spec::{Kind, Spec};

/// A subscription by tenant and id.
pub(crate) type LiveKey = (TenantKey, String);

/// The live subscriptions, with the candidates of each type built on first use after a change.
#[derive(Default)]
pub(crate) struct LiveSet {
    by_id: HashMap<LiveKey, Arc<Live>>,
    candidates: Mutex<HashMap<(TenantKey, String), Arc<Candidates>>>,
}

impl LiveSet {
    pub fn get(&self, key: &LiveKey) -> Option<Arc<Live>> {
        self.by_id.get(key).cloned()
    }

    pub fn insert(&mut self, key: LiveKey, live: Arc<Live>) {
        self.by_id.insert(key, live);
        self.candidates.get_mut().expect("candidates").clear();
    }

    pub fn remove(&mut self, key: &LiveKey) {
        if self.by_id.remove(key).is_some() {
            self.candidates.get_mut().expect("candidates").clear();
        }
    }

    /// The subscriptions of `tenant` that may match a change of `resource_type`.
    pub fn candidates(&self, tenant: TenantKey, resource_type: &str) -> Arc<Candidates> {
        let mut cache = self.candidates.lock().expect("candidates");
        if let Some(found) = cache.get(&(tenant, resource_type.to_owned())) {
            return found.clone();
        }
        let built = Arc::new(Candidates::of(
            self.by_id
                .iter()
                .filter(|((key, _), live)| *key == tenant && wants_type(&live.spec, resource_type))
                .map(|((_, id), live)| (id.clone(), live.clone())),
            resource_type,
        ));
        cache.insert((tenant, resource_type.to_owned()), built.clone());
        built
    }
}

/// The subscriptions of one tenant that may match changes of one type.
pub(crate) struct Candidates {
    all: Vec<(String, Arc<Live>)>,
    /// Positions in `all` of the subscriptions that need one of these keys.
    keyed: HashMap<i64, Vec<usize>>,
    /// Positions in `all` of the others, met by every change.
    unkeyed: Vec<usize>,
    /// The earliest position in the change log after which a candidate matches.
    earliest_start: i64,
    /// The parameters matching needs extracted from a change; `None` for all of them (a
    /// candidate's grant is limited: its compartment and scope parameters need them all).
    pub needed: Option<Vec<String>>,
}

impl Candidates {
    fn of(subscriptions: impl Iterator<Item = (String, Arc<Live>)>, resource_type: &str) -> Self {
        let all: Vec<(String, Arc<Live>)> = subscriptions.collect();
        let mut keyed: HashMap<i64, Vec<usize>> = HashMap::new();
        let mut unkeyed = Vec::new();
        let mut needed = Some(Vec::new());
        for (position, (_, live)) in all.iter().enumerate() {
            match required_keys(&live.spec, resource_type) {
                Some(keys) => {
                    for key in keys {
                        keyed.entry(key).or_default().push(position);
                    }
                }
                None => unkeyed.push(position),
            }
            match (&mut needed, live.access.is_unrestricted()) {
                (Some(codes), true) => {
                    let named = live.spec.parameters.iter();
                    for (_, code) in named.filter(|(t, _)| t == "*" || t == resource_type) {
                        if !codes.contains(code) {
                            codes.push(code.clone());
                        }
                    }
                }
                _ => needed = None,
            }
        }
        Candidates {
            earliest_start: all
                .iter()
                .map(|(_, l)| l.since_seq)
                .min()
                .unwrap_or(i64::MAX),
            all,
            keyed,
            unkeyed,
            needed,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether any candidate matches changes at this position of the log (it started before).
    pub fn any_started_before(&self, seq: i64) -> bool {
        self.earliest_start < seq
    }

    /// The candidates a version with these index keys may match, each once.
    pub fn meeting(&self, keys: &[i64]) -> impl Iterator<Item = &(String, Arc<Live>)> {
        let mut positions = self.unkeyed.clone();
        if !self.keyed.is_empty() {
            for key in keys {
                if let Some(found) = self.keyed.get(key) {
                    positions.extend(found);
                }
            }
            positions.sort_unstable();
            positions.dedup();
        }
        positions.into_iter().map(|position| &self.all[position])
    }
}

/// Whether a subscription may match a change of this type at all.
fn wants_type(spec: &Spec, resource_type: &str) -> bool {
    match &spec.kind {
        Kind::Topic { topic, filters } => topic.triggers.iter().any(|t| match &t.resource_type {
            Some(t) => t == resource_type,
            None => filters.iter().any(|(t, _)| t == resource_type),
        }),
        Kind::Criteria {
            resource_type: t, ..
        } => t == resource_type,
    }
}

/// Keys of which a version must have one for the subscription to match it (its filters on
/// the type are ANDed, each must hold on the version's terms); `None` when no such set is known.
fn required_keys(spec: &Spec, resource_type: &str) -> Option<Vec<i64>> {
    match &spec.kind {
        Kind::Topic { filters, .. } => filters
            .iter()
            .filter(|(t, _)| t == resource_type)
            .find_map(|(_, filter)| keys_required(filter, resource_type)),
        Kind::Criteria { filter, .. } => keys_required(filter, resource_type),
    }
}

fn keys_required(filter: &Filter, resource_type: &str) -> Option<Vec<i64>> {
    match filter {
        Filter::Key(key) => Some(vec![*key]),
        Filter::Any(parts) if !parts.is_empty() => {
            let mut keys = Vec::new();
            for part in parts {
                keys.extend(keys_required(part, resource_type)?);
            }
            Some(keys)
        }
        Filter::All(parts) => parts
            .iter()
            .find_map(|part| keys_required(part, resource_type)),
        Filter::OfType(t, inner) if t == resource_type => keys_required(inner, resource_type),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use fjord_search::Filter;

    use super::keys_required;

    #[test]
    fn required_keys_come_only_from_conditions_every_match_meets() {
        let check = |filter: Filter, expected: Option<Vec<i64>>| {
            assert_eq!(
                keys_required(&filter, "Observation"),
                expected,
                "{filter:?}"
            );
        };
        check(Filter::Key(1), Some(vec![1]));
        check(
            Filter::Any(vec![Filter::Key(1), Filter::Key(2)]),
            Some(vec![1, 2]),
        );
        // One alternative without a key: any version may match.
        check(
            Filter::Any(vec![Filter::Key(1), Filter::Id("x".into())]),
            None,
        );
        check(Filter::Any(vec![]), None);
        check(
            Filter::All(vec![Filter::Id("x".into()), Filter::Key(3)]),
            Some(vec![3]),
        );
        check(Filter::Not(Box::new(Filter::Key(1))), None);
        check(
            Filter::OfType("Observation".into(), Box::new(Filter::Key(4))),
            Some(vec![4]),
        );
        check(
            Filter::OfType("Patient".into(), Box::new(Filter::Key(4))),
            None,
        );
    }
}
