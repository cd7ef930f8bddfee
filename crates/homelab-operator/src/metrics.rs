//! Prometheus metrics. Labels are bounded: kinds, outcomes and error categories, never object
//! names.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AzureLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub reconciles_in_flight: Family<KindLabels, Gauge>,
    pub child_applies: Family<ApplyLabels, Counter>,
    pub status_patches: Family<KindLabels, Counter>,
    pub azure_requests: Family<AzureLabels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("homelab_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let reconciles_in_flight = Family::<KindLabels, Gauge>::default();
        let child_applies = Family::<ApplyLabels, Counter>::default();
        let status_patches = Family::<KindLabels, Counter>::default();
        let azure_requests = Family::<AzureLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciliations running now",
            reconciles_in_flight.clone(),
        );
        registry.register(
            "child_applies",
            "Child objects applied (outcome=applied) or found already up to date (outcome=unchanged)",
            child_applies.clone(),
        );
        registry.register(
            "status_patches",
            "Status updates written",
            status_patches.clone(),
        );
        registry.register(
            "azure_requests",
            "Requests to Azure Key Vault and Blob Storage",
            azure_requests.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_in_flight,
            child_applies,
            status_patches,
            azure_requests,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconciliation and returns a guard that records its duration when dropped.
    pub fn start_reconcile(self: &Arc<Self>, kind: &'static str) -> ReconcileTimer {
        let labels = KindLabels { kind };
        self.reconciles.get_or_create(&labels).inc();
        self.reconciles_in_flight.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: Arc::clone(self),
            kind,
            start: Instant::now(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records the duration of a reconciliation when dropped.
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let labels = KindLabels { kind: self.kind };
        self.metrics
            .reconcile_duration
            .get_or_create(&labels)
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .reconciles_in_flight
            .get_or_create(&labels)
            .dec();
    }
}
