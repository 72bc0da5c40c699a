//! Every Prometheus series of the service, declared in one place.
//!
//! Handles are registered once and kept, so the hot path (one increment per
//! delivery) does no name lookup. No label ever carries a user id or token.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Reasons a notification is not delivered to a stream.
#[derive(Clone, Copy, Debug)]
pub enum DropReason {
    /// The stream's queue was full: the client is disconnected and resumes.
    SlowConsumer,
    /// A bus message whose body is not JSON; it would corrupt the stream.
    InvalidPayload,
    /// A live message that the user's stream did not store: another
    /// `Nats-Stream`, or a sequence above that stream's last
    /// (docs/protocol.md §2).
    Forged,
}

/// Reasons a new stream is refused.
#[derive(Clone, Copy, Debug)]
pub enum RejectReason {
    PerUserLimit,
    NodeLimit,
    Draining,
    BusUnavailable,
}

const DELIVERY_LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The service's metric handles.
pub struct Metrics {
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub users_online: Gauge,
    pub received: Counter,
    pub published: Counter,
    pub delivered: Counter,
    pub replayed: Counter,
    pub delivery_latency: Histogram,
    /// Stream-info requests that checked live sequences (docs/protocol.md §2).
    pub live_sequence_checks: Counter,
    /// Users whose position, read again once their subscription had
    /// settled, had moved past what arrived live (NATS bus).
    pub head_recheck_repairs: Counter,
    pub bus_connected: Gauge,
    pub ready: Gauge,
    pub draining: Gauge,
    /// JWK set fetch attempts (periodic, on an unknown `kid`, retries).
    pub jwks_refreshes: Counter,
    /// JWK set fetch attempts that did not produce a usable set.
    pub jwks_failures: Counter,
    /// Usable keys in the current JWK set.
    pub jwks_keys: Gauge,
    /// When a JWK set was last loaded, unix seconds (0: never).
    pub jwks_last_success: Gauge,
    pub idempotency_keys: Gauge,
    pub idempotency_bytes: Gauge,
    dropped: [Counter; 3],
    rejected: [Counter; 4],
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    fn register() -> Self {
        describe_gauge!("notify_connections_open", "Open SSE streams on this node.");
        describe_gauge!(
            "notify_connections_max",
            "Streams this node accepts: NOTIFY_MAX_CONNECTIONS, lowered to fit the open-files limit."
        );
        describe_gauge!(
            "notify_users_online",
            "Users with at least one open stream on this node."
        );
        describe_counter!("notify_connections_total", "SSE streams accepted.");
        describe_counter!(
            "notify_connections_rejected_total",
            "SSE streams refused, by reason."
        );
        describe_counter!(
            "notify_notifications_received_total",
            "Notifications this node received for its online users."
        );
        describe_counter!(
            "notify_notifications_published_total",
            "Notifications stored through the HTTP publish API."
        );
        describe_counter!(
            "notify_notifications_delivered_total",
            "Notifications written to a stream (one per stream)."
        );
        describe_counter!(
            "notify_notifications_replayed_total",
            "Notifications written to a stream from history on resume."
        );
        describe_counter!(
            "notify_notifications_dropped_total",
            "Notifications not delivered to a stream, by reason."
        );
        describe_histogram!(
            "notify_delivery_latency_seconds",
            "From this node receiving a notification to queueing it on its streams."
        );
        describe_counter!(
            "notify_live_sequence_checks_total",
            "Stream-info requests made to check that a live message's sequence was stored (NATS bus)."
        );
        describe_counter!(
            "notify_head_recheck_repairs_total",
            "Users whose position, read again after their live subscription settled, had moved past what arrived live; caught up from history (NATS bus)."
        );
        describe_counter!("notify_auth_failures_total", "Refused tokens, by reason.");
        describe_gauge!(
            "notify_bus_connected",
            "1 while the bus (NATS or embedded) is connected."
        );
        describe_gauge!("notify_ready", "1 while /readyz answers 200.");
        describe_gauge!("notify_draining", "1 after SIGTERM.");
        describe_counter!("notify_jwks_refreshes_total", "JWK set fetch attempts.");
        describe_counter!(
            "notify_jwks_refresh_failures_total",
            "JWK set fetch attempts that failed; the last good set stays in use."
        );
        describe_gauge!("notify_jwks_keys", "Usable keys in the current JWK set.");
        describe_gauge!(
            "notify_jwks_last_success_timestamp_seconds",
            "When the JWK set was last loaded (0: never)."
        );
        describe_gauge!(
            "notify_idempotency_keys",
            "Idempotency-Keys of HTTP publishes remembered on this node."
        );
        describe_gauge!(
            "notify_idempotency_bytes",
            "Bytes the remembered Idempotency-Keys take (NOTIFY_IDEMPOTENCY_MAX_BYTES bounds it)."
        );
        let dropped = |reason: &'static str| counter!("notify_notifications_dropped_total", "reason" => reason);
        let rejected = |reason: &'static str| counter!("notify_connections_rejected_total", "reason" => reason);
        let m = Self {
            connections_open: gauge!("notify_connections_open"),
            connections_total: counter!("notify_connections_total"),
            users_online: gauge!("notify_users_online"),
            received: counter!("notify_notifications_received_total"),
            published: counter!("notify_notifications_published_total"),
            delivered: counter!("notify_notifications_delivered_total"),
            replayed: counter!("notify_notifications_replayed_total"),
            delivery_latency: histogram!("notify_delivery_latency_seconds"),
            live_sequence_checks: counter!("notify_live_sequence_checks_total"),
            head_recheck_repairs: counter!("notify_head_recheck_repairs_total"),
            bus_connected: gauge!("notify_bus_connected"),
            ready: gauge!("notify_ready"),
            draining: gauge!("notify_draining"),
            jwks_refreshes: counter!("notify_jwks_refreshes_total"),
            jwks_failures: counter!("notify_jwks_refresh_failures_total"),
            jwks_keys: gauge!("notify_jwks_keys"),
            jwks_last_success: gauge!("notify_jwks_last_success_timestamp_seconds"),
            idempotency_keys: gauge!("notify_idempotency_keys"),
            idempotency_bytes: gauge!("notify_idempotency_bytes"),
            dropped: [
                dropped("slow_consumer"),
                dropped("invalid_payload"),
                dropped("forged"),
            ],
            rejected: [
                rejected("per_user_limit"),
                rejected("node_limit"),
                rejected("draining"),
                rejected("bus_unavailable"),
            ],
        };
        // Touch every series so dashboards see zeros, not gaps.
        for c in [
            &m.connections_total,
            &m.received,
            &m.published,
            &m.delivered,
            &m.replayed,
            &m.head_recheck_repairs,
            &m.jwks_refreshes,
            &m.jwks_failures,
        ]
        .into_iter()
        .chain(&m.dropped)
        .chain(&m.rejected)
        {
            c.increment(0);
        }
        for g in [
            &m.connections_open,
            &m.users_online,
            &m.bus_connected,
            &m.ready,
            &m.draining,
            &m.jwks_keys,
            &m.jwks_last_success,
            &m.idempotency_keys,
            &m.idempotency_bytes,
        ] {
            g.set(0.0);
        }
        m
    }

    /// Shows every reason a token can be refused for, at 0, so that
    /// dashboards see the series before the first refusal. The reasons are
    /// the token checker's (`auth`), handed in so that this module, which
    /// every other one uses, depends on none of them.
    pub fn auth_failure_reasons(&self, reasons: &[&'static str]) {
        for reason in reasons {
            counter!("notify_auth_failures_total", "reason" => *reason).increment(0);
        }
    }

    /// Counts a refused token, by the checker's reason label.
    pub fn auth_failure(&self, reason: &'static str) {
        counter!("notify_auth_failures_total", "reason" => reason).increment(1);
    }

    /// Counts a notification not delivered to one stream.
    pub fn dropped(&self, reason: DropReason) -> &Counter {
        &self.dropped[reason as usize]
    }

    /// Counts a refused stream.
    pub fn rejected(&self, reason: RejectReason) -> &Counter {
        &self.rejected[reason as usize]
    }
}

/// The handles; a no-op recorder's until [`install`] has run.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::register)
}

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once: several nodes built
/// in one process share it) and registers every series.
pub fn install(max_connections: u32) -> Result<PrometheusHandle, String> {
    let handle = RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("notify_delivery_latency_seconds".into()),
                    DELIVERY_LATENCY_BUCKETS,
                )
                .and_then(|b| b.install_recorder())
                .map_err(|e| e.to_string())
        })
        .clone()?;
    gauge!("notify_connections_max").set(f64::from(max_connections));
    describe_gauge!(
        "notify_build_info",
        "Always 1; the version label is this build's."
    );
    gauge!("notify_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    process_collector().describe();
    refresh_process();
    metrics();
    Ok(handle)
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Reads the process' CPU time, memory and file descriptors into the
/// standard `process_*` series; called at every scrape so they are current.
pub fn refresh_process() {
    process_collector().collect();
}
