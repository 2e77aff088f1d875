//! Prometheus metrics of `warden controller`: reconciles by kind and outcome, errors by kind
//! and reason, reconcile durations, the claim-to-ready latency and whether this replica leads.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaunchLabels {
    launch: &'static str,
}

/// The controller's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    claim_ready: Family<LaunchLabels, Histogram>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warden_controller");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and outcome (ok or error)",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and reason (conflict, not_found, already_exists, invalid, forbidden, unavailable, transport, other)",
            errors.clone(),
        );
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one object, API calls included",
            duration.clone(),
        );
        let claim_ready = Family::<LaunchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register(
            "claim_ready_seconds",
            "From a SandboxClaim's creation to its first Ready, by launch type (warm or cold)",
            claim_ready.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the reconcilers",
            leader.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            claim_ready,
            leader,
        }
    }

    /// Counts one reconcile of `kind` that took `took`.
    pub fn reconciled(&self, kind: &'static str, took: Duration, error: Option<&'static str>) {
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&OutcomeLabels { kind, outcome })
            .inc();
        if let Some(reason) = error {
            self.errors
                .get_or_create(&ErrorLabels { kind, reason })
                .inc();
        }
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Records a claim that became Ready `latency` after it was created.
    pub fn claim_ready(&self, warm: bool, latency: Duration) {
        let launch = if warm { "warm" } else { "cold" };
        self.claim_ready
            .get_or_create(&LaunchLabels { launch })
            .observe(latency.as_secs_f64());
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The reconciles counted for `kind` and `outcome` so far.
    pub fn reconcile_count(&self, kind: &'static str, outcome: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&OutcomeLabels { kind, outcome })
            .get()
    }

    /// The errors counted for `kind` and `reason` so far.
    pub fn error_count(&self, kind: &'static str, reason: &'static str) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels { kind, reason })
            .get()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
