//! Fjord's operational metrics: counted in memory by the layers that see the events, and written
//! in Prometheus's text format for `/metrics`.
//!
//! Labels carry no personal data and stay few: tenants only once resolved (an unknown tenant in a
//! URL is counted under no tenant), resource types only when they are R4's, interactions from a
//! fixed list, and never ids or query values.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One answered HTTP request, as counted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The tenant the request was resolved to; empty when none was (unknown, or no FHIR path).
    pub tenant: String,
    /// What was asked: a FHIR interaction (`read`, `search-type`, …), an operation (`$export`),
    /// or what else the server serves (`admin`, `health`, `metrics`, `auth`, `other`).
    pub interaction: &'static str,
    /// The resource type the path names; empty when it names none or no R4 type.
    pub resource_type: String,
    pub status: u16,
}

/// The labels of a request's duration: fewer than its count's, as each histogram is many series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    tenant: String,
    interaction: &'static str,
}

/// A subscription channel's notifications, by outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    tenant: String,
    /// `rest-hook` or `websocket`.
    channel: &'static str,
    /// `delivered` or `failed`.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    pool: &'static str,
    /// `in_use`, `idle` or `waiting` (requests waiting for a connection).
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    tenant: String,
    consumer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    tenant: String,
    resource_type: &'static str,
    /// `refused` (strict validation) or `stored` (lenient: stored with its issues).
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// Every metric of the process. Cheap to share: one instance, behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    in_flight: Gauge,
    notifications: Family<NotificationLabels, Counter>,
    subscription_errors: Family<TenantLabels, Counter>,
    events_pending: Family<TenantLabels, Gauge>,
    connections: Family<ConnectionLabels, Gauge>,
    change_log_lag: Family<ConsumerLabels, Gauge>,
    validation_failures: Family<ValidationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fjord");
        let r = &mut registry;
        // 1 ms to about 16 s, doubling.
        let durations = Family::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 15))) as fn() -> Histogram,
        );
        Metrics {
            requests: registered(
                r,
                "http_requests",
                "HTTP requests answered, by tenant, interaction, resource type and status",
                Family::default(),
            ),
            durations: registered(
                r,
                "http_request_duration_seconds",
                "Time from a request's arrival to its answer, by tenant and interaction",
                durations,
            ),
            in_flight: registered(
                r,
                "http_requests_in_flight",
                "HTTP requests being answered",
                Gauge::default(),
            ),
            notifications: registered(
                r,
                "subscription_notifications",
                "Subscription notifications of events sent, by tenant, channel and outcome",
                Family::default(),
            ),
            subscription_errors: registered(
                r,
                "subscription_errors",
                "Subscriptions put in error after failing delivery too often in a row",
                Family::default(),
            ),
            events_pending: registered(
                r,
                "subscription_events_pending",
                "Events matched for active subscriptions and not yet delivered, as their delivery \
                 workers last saw them",
                Family::default(),
            ),
            connections: registered(
                r,
                "db_connections",
                "Database connections by pool (tenant, admin) and state (in_use, idle), and \
                 requests waiting for one (waiting), when last scraped",
                Family::default(),
            ),
            change_log_lag: registered(
                r,
                "change_log_lag",
                "Positions of a tenant's change log a consumer (subscriptions, text-index) has \
                 not read yet, when last scraped",
                Family::default(),
            ),
            validation_failures: registered(
                r,
                "validation_failures",
                "Resources written with validation errors, refused (strict) or stored (lenient)",
                Family::default(),
            ),
            registry,
        }
    }

    /// A request has arrived: it counts as in flight until the guard is dropped.
    pub fn arrived(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts an answered request and how long it took.
    pub fn answered(&self, labels: RequestLabels, took: Duration) {
        self.durations
            .get_or_create(&DurationLabels {
                tenant: labels.tenant.clone(),
                interaction: labels.interaction,
            })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a notification of events on a subscription channel (`rest-hook`, `websocket`).
    pub fn notified(&self, tenant: &str, channel: &'static str, delivered: bool) {
        let labels = NotificationLabels {
            tenant: tenant.to_owned(),
            channel,
            outcome: if delivered { "delivered" } else { "failed" },
        };
        self.notifications.get_or_create(&labels).inc();
    }

    /// Counts a subscription put in `error` after too many failed deliveries.
    pub fn subscription_failed(&self, tenant: &str) {
        self.subscription_errors
            .get_or_create(&tenant_labels(tenant))
            .inc();
    }

    /// Changes a tenant's count of events waiting for delivery.
    pub fn events_pending(&self, tenant: &str, change: i64) {
        self.events_pending
            .get_or_create(&tenant_labels(tenant))
            .inc_by(change);
    }

    /// Records a pool's connections: open, of them idle, and requests waiting for one.
    pub fn connections(&self, pool: &'static str, open: usize, idle: usize, waiting: usize) {
        for (state, value) in [
            ("in_use", open.saturating_sub(idle)),
            ("idle", idle),
            ("waiting", waiting),
        ] {
            let labels = ConnectionLabels { pool, state };
            self.connections
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Records how far a consumer of a tenant's change log is behind its end.
    pub fn change_log_lag(&self, tenant: &str, consumer: &str, behind: i64) {
        let labels = ConsumerLabels {
            tenant: tenant.to_owned(),
            consumer: consumer.to_owned(),
        };
        self.change_log_lag.get_or_create(&labels).set(behind);
    }

    /// Counts a resource a write brought with validation errors: `refused` under strict
    /// validation, stored with its issues otherwise.
    pub fn not_conformant(&self, tenant: &str, resource_type: &'static str, refused: bool) {
        let labels = ValidationLabels {
            tenant: tenant.to_owned(),
            resource_type,
            outcome: if refused { "refused" } else { "stored" },
        };
        self.validation_failures.get_or_create(&labels).inc();
    }

    /// Every metric in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// `metric`, registered under `name` (after the `fjord_` prefix).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A tenant's label.
fn tenant_labels(tenant: &str) -> TenantLabels {
    TenantLabels {
        tenant: tenant.to_owned(),
    }
}

/// A request being answered: counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_requests_are_counted_and_timed_by_their_labels() {
        let metrics = Arc::new(Metrics::new());
        let read = RequestLabels {
            tenant: "hf-nord".into(),
            interaction: "read",
            resource_type: "Patient".into(),
            status: 200,
        };
        metrics.answered(read.clone(), Duration::from_millis(3));
        metrics.answered(read, Duration::from_millis(5));
        {
            let _guard = metrics.arrived();
            assert!(metrics
                .render()
                .contains("fjord_http_requests_in_flight 1\n"));
        }
        let text = metrics.render();
        assert!(text.contains(
            "fjord_http_requests_total{tenant=\"hf-nord\",interaction=\"read\",resource_type=\"Patient\",status=\"200\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "fjord_http_request_duration_seconds_count{tenant=\"hf-nord\",interaction=\"read\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "fjord_http_request_duration_seconds_bucket{le=\"0.004\",tenant=\"hf-nord\",interaction=\"read\"} 1\n"
        ), "{text}");
        assert!(text.contains("fjord_http_requests_in_flight 0\n"), "{text}");
    }
}
