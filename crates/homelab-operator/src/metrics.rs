//! Prometheus metrics. Labels are bounded: kinds, outcomes and error categories, never object
//! names — except the per-database backup and drill gauges ([`DatabaseGauges`]), whose
//! `namespace` and `database` labels are bounded by the number of AppDatabases.

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
    /// `homelab_backup_*`, `homelab_wal_*` and `homelab_restore_drill_*`, per database.
    pub databases: Arc<DatabaseGauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let databases = Arc::new(DatabaseGauges::default());
        root.register_collector(Box::new(databases.clone()));
        let registry = root.sub_registry_with_prefix("homelab_operator");
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
            registry: root,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_in_flight,
            child_applies,
            status_patches,
            azure_requests,
            leader,
            databases,
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

/// What is known about one database's backups and drills, exported per database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatabaseBackupFacts {
    /// When the last base backup completed (Unix seconds).
    pub last_backup: Option<f64>,
    /// When the newest WAL segment in the archive was uploaded (Unix seconds).
    pub wal_archived: Option<f64>,
    /// How old that segment may grow (seconds), for databases with a heartbeat writer.
    pub wal_max_age: Option<f64>,
    /// Since when CloudNativePG reports archiving failing (Unix seconds).
    pub wal_failing_since: Option<f64>,
    /// Whether the last finished restore drill succeeded.
    pub drill_succeeded: Option<bool>,
    /// Seconds the last drill that verified the data needed until it answered (its RTO).
    pub drill_recovery_seconds: Option<f64>,
    /// Seconds between that drill's start and the newest heartbeat it found (its RPO).
    pub drill_data_loss_seconds: Option<f64>,
    /// Whether that drill was within the policy's RPO and RTO objectives.
    pub drill_objectives_met: Option<bool>,
}

/// What the AppDatabase controller knows of one database's backups and archive.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackupFigures {
    /// When the last base backup completed (Unix seconds).
    pub last_backup: Option<f64>,
    /// When the newest WAL segment in the archive was uploaded (Unix seconds).
    pub wal_archived: Option<f64>,
    /// How old that segment may grow (seconds); only with a heartbeat writer.
    pub wal_max_age: Option<f64>,
    /// Since when CloudNativePG reports archiving failing (Unix seconds).
    pub wal_failing_since: Option<f64>,
}

/// What the last restore drills of one database showed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DrillFigures {
    /// Whether the last finished drill restored and verified the data.
    pub succeeded: Option<bool>,
    /// RTO and RPO of the last drill that verified the data.
    pub recovery_seconds: Option<f64>,
    pub data_loss_seconds: Option<f64>,
    /// Whether that drill was within the objectives.
    pub objectives_met: Option<bool>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub namespace: String,
    pub database: String,
}

/// The per-database gauges, computed at scrape time from the latest facts, so that a database
/// or a drill record that goes away takes its series with it.
#[derive(Debug, Default)]
pub struct DatabaseGauges {
    facts: std::sync::Mutex<std::collections::BTreeMap<DatabaseLabels, DatabaseBackupFacts>>,
}

impl DatabaseGauges {
    /// Updates what the AppDatabase controller knows (backups and WAL archiving).
    pub fn set_backups(&self, namespace: &str, database: &str, facts: BackupFigures) {
        self.update(namespace, database, |f| {
            f.last_backup = facts.last_backup;
            f.wal_archived = facts.wal_archived;
            f.wal_max_age = facts.wal_max_age;
            f.wal_failing_since = facts.wal_failing_since;
        });
    }

    /// Updates what the BackupPolicy controller knows (the last finished drill).
    pub fn set_drill(&self, namespace: &str, database: &str, figures: DrillFigures) {
        self.update(namespace, database, |f| {
            f.drill_succeeded = figures.succeeded;
            f.drill_recovery_seconds = figures.recovery_seconds;
            f.drill_data_loss_seconds = figures.data_loss_seconds;
            f.drill_objectives_met = figures.objectives_met;
        });
    }

    /// Drops every series of a database that no longer exists.
    pub fn forget(&self, namespace: &str, database: &str) {
        if let Ok(mut facts) = self.facts.lock() {
            facts.remove(&DatabaseLabels {
                namespace: namespace.to_string(),
                database: database.to_string(),
            });
        }
    }

    /// The facts of one database (for tests and diagnostics).
    pub fn get(&self, namespace: &str, database: &str) -> Option<DatabaseBackupFacts> {
        let facts = self.facts.lock().ok()?;
        facts
            .get(&DatabaseLabels {
                namespace: namespace.to_string(),
                database: database.to_string(),
            })
            .cloned()
    }

    fn update(
        &self,
        namespace: &str,
        database: &str,
        change: impl FnOnce(&mut DatabaseBackupFacts),
    ) {
        if let Ok(mut facts) = self.facts.lock() {
            let entry = facts
                .entry(DatabaseLabels {
                    namespace: namespace.to_string(),
                    database: database.to_string(),
                })
                .or_default();
            change(entry);
        }
    }
}

impl prometheus_client::collector::Collector for DatabaseGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let snapshot: Vec<(DatabaseLabels, DatabaseBackupFacts)> = match self.facts.lock() {
            Ok(facts) => facts.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return Ok(()),
        };
        type Pick = fn(&DatabaseBackupFacts) -> Option<f64>;
        let families: [(&str, &str, Pick); 8] = [
            (
                "homelab_backup_last_success_timestamp_seconds",
                "When the last base backup of the database completed (Unix seconds)",
                |f| f.last_backup,
            ),
            (
                "homelab_wal_last_archived_timestamp_seconds",
                "When the newest WAL segment in the database's Blob container finished uploading (its Last-Modified, Unix seconds), as the operator last listed the archive",
                |f| f.wal_archived,
            ),
            (
                "homelab_wal_archive_max_age_seconds",
                "How old the newest archived WAL segment may grow while archiving works: walArchiveTimeout plus the heartbeat interval plus a minute; only for databases with a heartbeat writer (an idle database archives nothing)",
                |f| f.wal_max_age,
            ),
            (
                "homelab_wal_archiving_failing_since_timestamp_seconds",
                "Since when CloudNativePG reports WAL archiving failing (ContinuousArchiving=False, Unix seconds); absent while it works",
                |f| f.wal_failing_since,
            ),
            (
                "homelab_restore_drill_last_success",
                "1 when the database's last finished restore drill restored and verified its data, 0 when it failed",
                |f| f.drill_succeeded.map(|s| if s { 1.0 } else { 0.0 }),
            ),
            (
                "homelab_restore_drill_recovery_seconds",
                "Seconds from the start of the last restore drill that verified the data until the restored database answered (the RTO achieved)",
                |f| f.drill_recovery_seconds,
            ),
            (
                "homelab_restore_drill_data_loss_seconds",
                "Seconds between the start of the last restore drill that verified the data and the newest heartbeat in the restored database (the RPO achieved)",
                |f| f.drill_data_loss_seconds,
            ),
            (
                "homelab_restore_drill_objectives_met",
                "1 when the last restore drill that verified the data was within the BackupPolicy's RPO and RTO objectives, 0 when it missed one",
                |f| f.drill_objectives_met.map(|s| if s { 1.0 } else { 0.0 }),
            ),
        ];
        for (name, help, pick) in families {
            let values: Vec<(&DatabaseLabels, f64)> = snapshot
                .iter()
                .filter_map(|(labels, facts)| Some((labels, pick(facts)?)))
                .collect();
            if values.is_empty() {
                continue;
            }
            let gauge = ConstGauge::new(0.0f64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for (labels, value) in values {
                ConstGauge::new(value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
