//! Prometheus metrics, named as controller-runtime users expect, plus tenants by phase.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    pub tenants_by_phase: Family<PhaseLabels, Gauge>,
    pub writes: Counter,
    leader: Gauge,
    certificate_expiry: Family<TenantLabels, Gauge>,
    backup_last_success: Family<TenantLabels, Gauge>,
    backup_interval: Family<TenantLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let tenants_by_phase = Family::<PhaseLabels, Gauge>::default();
        let writes = Counter::default();
        let leader = Gauge::default();
        let certificate_expiry = Family::<TenantLabels, Gauge>::default();
        let backup_last_success = Family::<TenantLabels, Gauge>::default();
        let backup_interval = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tiqzy_backup_last_success_timestamp_seconds",
            "When the tenant's newest complete backup was taken (Unix seconds); the Tenant's \
             creation while it has none",
            backup_last_success.clone(),
        );
        registry.register(
            "tiqzy_backup_interval_seconds",
            "Seconds between two runs of the tenant's backup schedule",
            backup_interval.clone(),
        );
        registry.register(
            "controller_runtime_reconcile",
            "Reconciles by result",
            reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconcile errors by reason",
            errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time per reconcile",
            duration.clone(),
        );
        registry.register(
            "tiqzy_tenants",
            "Tenants by phase",
            tenants_by_phase.clone(),
        );
        registry.register(
            "tiqzy_operator_writes",
            "Objects created, patched or deleted by the operator",
            writes.clone(),
        );
        registry.register(
            "tiqzy_operator_leader",
            "1 while this replica runs the controller (it holds the Lease, or leader election \
             is off), 0 while it waits as a standby",
            leader.clone(),
        );
        registry.register(
            "tiqzy_certificate_expiry_seconds",
            "When the certificate a tenant is served with expires (Unix seconds)",
            certificate_expiry.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            duration,
            tenants_by_phase,
            writes,
            leader,
            certificate_expiry,
            backup_last_success,
            backup_interval,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, result: &'static str) {
        self.duration.observe(took.as_secs_f64());
        self.reconciles
            .get_or_create(&ResultLabels {
                controller: "tenant",
                result,
            })
            .inc();
    }

    pub fn error(&self, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: "tenant",
                reason,
            })
            .inc();
    }

    /// Sets `tiqzy_operator_leader` to 1: this replica runs the controller from now on (a
    /// replica that loses the Lease exits).
    pub fn leading(&self) {
        self.leader.set(1);
    }

    /// Sets `tiqzy_tenants{phase}` from the cached Tenants.
    pub fn count_phases(&self, tenants: &[&tiqzy_crds::Tenant]) {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for phase in [
            "Pending",
            "Provisioning",
            "Ready",
            "Degraded",
            "Suspended",
            "Failed",
            "Terminating",
        ] {
            counts.insert(phase.to_owned(), 0);
        }
        for tenant in tenants {
            let phase = tenant
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or("Pending".to_owned(), |p| format!("{p:?}"));
            *counts.entry(phase).or_default() += 1;
        }
        for (phase, count) in counts {
            self.tenants_by_phase
                .get_or_create(&PhaseLabels { phase })
                .set(count);
        }
    }

    /// Sets `tiqzy_certificate_expiry_seconds{tenant}`.
    pub fn certificate_expires(&self, tenant: &str, not_after: i64) {
        self.certificate_expiry
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .set(not_after);
    }

    /// Sets the tenant's backup gauges.
    pub fn backup(&self, tenant: &str, last_success: i64, interval: i64) {
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        self.backup_last_success
            .get_or_create(&labels)
            .set(last_success);
        self.backup_interval.get_or_create(&labels).set(interval);
    }

    /// Drops the backup gauges of a tenant without backups (or gone).
    pub fn forget_backup(&self, tenant: &str) {
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        self.backup_last_success.remove(&labels);
        self.backup_interval.remove(&labels);
    }

    /// Drops the expiry of a tenant served with the router's default certificate (or gone).
    pub fn forget_certificate(&self, tenant: &str) {
        self.certificate_expiry.remove(&TenantLabels {
            tenant: tenant.to_owned(),
        });
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
