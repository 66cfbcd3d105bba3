//! obsd's own metrics (contract names, product.md), registered once.
//!
//! Per-resource series are created at 0 when a resource appears and removed when it
//! goes, so dashboards and `ObsdDriftPersisting` see explicit zeros, and label sets
//! stay bounded by the desired state.

use crate::desired::model::Kind;
use crate::desired::DesiredState;
use crate::reconcile::plan::{Reason, ResourceStatus};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabels {
    pub service: String,
    pub image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

/// Every `result` of `obsd_image_checks_total`.
pub const IMAGE_CHECK_RESULTS: [&str; 4] = ["current", "outdated", "pulled", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub result: String,
}

/// Every `action` label value of `obsd_actions_total`: the service steps
/// (`Step::action_name`) and the infrastructure actions of `reconcile::exec`. Each
/// series exists at 0 from start-up.
pub const ACTIONS: [&str; 11] = [
    "adopt",
    "cleanup",
    "create",
    "create_network",
    "create_volume",
    "pull",
    "recreate",
    "remove",
    "restart",
    "signal",
    "start",
];

/// Every metric the daemon updates.
pub struct Metrics {
    pub build_info: Family<VersionLabel, Gauge>,
    pub desired_state_valid: Gauge,
    pub desired_generation: Gauge,
    pub applied_generation: Gauge,
    pub reconcile_total: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub last_success: Gauge<f64, AtomicU64>,
    pub resource_in_sync: Family<ResourceLabels, Gauge>,
    pub resource_drift: Family<DriftLabels, Gauge>,
    pub actions_total: Family<ActionLabels, Counter>,
    /// Replacements that failed their health gate and were rolled back, per service.
    pub rollbacks_total: Family<ServiceLabel, Counter>,
    /// Preflight checks (`configCheck`) that failed, per service.
    pub preflight_failures_total: Family<ServiceLabel, Counter>,
    pub docker_up: Gauge,
    /// 1 while the registry has a newer image under a watched service's tag
    /// (`update.image`), per service and image.
    pub image_update_available: Family<ImageLabels, Gauge>,
    /// Registry checks by result.
    pub image_checks_total: Family<ResultLabel, Counter>,
    /// Failed registry checks by error class (`registry::ERROR_CLASSES`).
    pub image_check_errors_total: Family<ErrorLabel, Counter>,
    /// Resources that currently have series, to remove the ones that go away.
    known: Mutex<BTreeSet<(String, String)>>,
    /// (service, image) pairs that have an `obsd_image_update_available` series.
    known_images: Mutex<BTreeSet<(String, String)>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            build_info: Family::default(),
            desired_state_valid: Gauge::default(),
            desired_generation: Gauge::default(),
            applied_generation: Gauge::default(),
            reconcile_total: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            last_success: Gauge::default(),
            resource_in_sync: Family::default(),
            resource_drift: Family::default(),
            actions_total: Family::default(),
            rollbacks_total: Family::default(),
            preflight_failures_total: Family::default(),
            docker_up: Gauge::default(),
            image_update_available: Family::default(),
            image_checks_total: Family::default(),
            image_check_errors_total: Family::default(),
            known: Mutex::new(BTreeSet::new()),
            known_images: Mutex::new(BTreeSet::new()),
        };
        registry.register("obsd_build_info", "obsd version", m.build_info.clone());
        registry.register(
            "obsd_desired_state_valid",
            "1 when the last load of the desired-state directory was valid",
            m.desired_state_valid.clone(),
        );
        registry.register(
            "obsd_desired_state_generation",
            "Generation of the loaded desired state (bumped on every content change)",
            m.desired_generation.clone(),
        );
        registry.register(
            "obsd_applied_generation",
            "Generation the last fully successful reconcile applied",
            m.applied_generation.clone(),
        );
        registry.register(
            "obsd_reconcile",
            "Reconcile passes by result",
            m.reconcile_total.clone(),
        );
        registry.register(
            "obsd_reconcile_duration_seconds",
            "Duration of reconcile passes",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "obsd_last_successful_reconcile_timestamp_seconds",
            "Unix time of the last reconcile pass without errors",
            m.last_success.clone(),
        );
        registry.register(
            "obsd_resource_in_sync",
            "1 when the resource matches its desired state",
            m.resource_in_sync.clone(),
        );
        registry.register(
            "obsd_resource_drift",
            "1 while the resource shows this drift reason",
            m.resource_drift.clone(),
        );
        registry.register(
            "obsd_actions",
            "Docker actions by action and result",
            m.actions_total.clone(),
        );
        registry.register(
            "obsd_rollbacks",
            "Replacements that failed their health gate and were rolled back, by service",
            m.rollbacks_total.clone(),
        );
        registry.register(
            "obsd_preflight_failures",
            "Preflight config checks that failed (nothing was rolled out), by service",
            m.preflight_failures_total.clone(),
        );
        registry.register(
            "obsd_docker_up",
            "1 when the Docker engine answers",
            m.docker_up.clone(),
        );
        registry.register(
            "obsd_image_update_available",
            "1 while the registry has another image under the tag of a service with update.image",
            m.image_update_available.clone(),
        );
        registry.register(
            "obsd_image_checks",
            "Registry checks of update.image tags by result",
            m.image_checks_total.clone(),
        );
        registry.register(
            "obsd_image_check_errors",
            "Registry checks of update.image tags that failed, by error class",
            m.image_check_errors_total.clone(),
        );
        for r in IMAGE_CHECK_RESULTS {
            let _ = m
                .image_checks_total
                .get_or_create(&ResultLabel { result: r.into() });
        }
        for e in crate::registry::ERROR_CLASSES {
            let _ = m
                .image_check_errors_total
                .get_or_create(&ErrorLabel { error: e.into() });
        }
        registry.register_collector(Box::new(ProcessCollector));
        m.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        for r in ["success", "error"] {
            let _ = m
                .reconcile_total
                .get_or_create(&ResultLabel { result: r.into() });
            for action in ACTIONS {
                let _ = m.actions_total.get_or_create(&ActionLabels {
                    action: action.into(),
                    result: r.into(),
                });
            }
        }
        m
    }

    /// A desired state loaded: every resource it declares gets its series now, at 0
    /// (not known to be in sync, no drift seen), unless a pass already set them. So
    /// `obsd_resource_in_sync` exists from start-up, before the first pass.
    pub fn seed_resources(&self, d: &DesiredState) {
        let mut known = self.known.lock().expect("metrics lock");
        let declared = d
            .services
            .keys()
            .map(|n| (Kind::Service, n))
            .chain(d.volumes.keys().map(|n| (Kind::Volume, n)))
            .chain(d.networks.keys().map(|n| (Kind::Network, n)));
        for (kind, name) in declared {
            let key = (kind.to_string(), name.clone());
            if known.contains(&key) {
                continue;
            }
            let _ = self.resource_in_sync.get_or_create(&ResourceLabels {
                kind: key.0.clone(),
                name: name.clone(),
            });
            for reason in Reason::ALL {
                let _ = self.resource_drift.get_or_create(&DriftLabels {
                    kind: key.0.clone(),
                    name: name.clone(),
                    reason: reason.as_str().into(),
                });
            }
            known.insert(key);
        }
    }

    /// Sets per-resource series from a plan's statuses; removes vanished resources.
    pub fn set_resources(&self, resources: &[ResourceStatus]) {
        let mut known = self.known.lock().expect("metrics lock");
        let now: BTreeSet<(String, String)> = resources
            .iter()
            .map(|r| (r.kind.to_string(), r.name.clone()))
            .collect();
        for (kind, name) in known.difference(&now) {
            self.resource_in_sync.remove(&ResourceLabels {
                kind: kind.clone(),
                name: name.clone(),
            });
            if kind == crate::desired::model::Kind::Service.as_str() {
                let label = ServiceLabel {
                    service: name.clone(),
                };
                self.rollbacks_total.remove(&label);
                self.preflight_failures_total.remove(&label);
            }
            for reason in Reason::ALL {
                self.resource_drift.remove(&DriftLabels {
                    kind: kind.clone(),
                    name: name.clone(),
                    reason: reason.as_str().into(),
                });
            }
        }
        for r in resources {
            if r.kind == crate::desired::model::Kind::Service {
                // Born at 0, so `increase()` sees the first rollback.
                let label = ServiceLabel {
                    service: r.name.clone(),
                };
                let _ = self.rollbacks_total.get_or_create(&label);
                let _ = self.preflight_failures_total.get_or_create(&label);
            }
            self.resource_in_sync
                .get_or_create(&ResourceLabels {
                    kind: r.kind.to_string(),
                    name: r.name.clone(),
                })
                .set(r.in_sync as i64);
            for reason in Reason::ALL {
                self.resource_drift
                    .get_or_create(&DriftLabels {
                        kind: r.kind.to_string(),
                        name: r.name.clone(),
                        reason: reason.as_str().into(),
                    })
                    .set(r.drift.contains(&reason) as i64);
            }
        }
        *known = now;
    }

    /// Counts one rollback of `service`.
    pub fn rollback(&self, service: &str) {
        self.rollbacks_total
            .get_or_create(&ServiceLabel {
                service: service.into(),
            })
            .inc();
    }

    /// Counts one failed preflight check of `service`.
    pub fn preflight_failure(&self, service: &str) {
        self.preflight_failures_total
            .get_or_create(&ServiceLabel {
                service: service.into(),
            })
            .inc();
    }

    /// A desired state loaded: `obsd_image_update_available` exists (at 0 until a pass
    /// says otherwise) for every service with `update.image`; the series of services
    /// that stopped watching (or changed image) are removed.
    pub fn seed_image_updates(&self, d: &DesiredState) {
        let want: BTreeSet<(String, String)> = d
            .services
            .iter()
            .filter(|(_, r)| r.spec.image_updates().is_some())
            .map(|(n, r)| (n.clone(), r.spec.image.clone()))
            .collect();
        let mut known = self.known_images.lock().expect("metrics lock");
        for (service, image) in known.difference(&want) {
            self.image_update_available.remove(&ImageLabels {
                service: service.clone(),
                image: image.clone(),
            });
        }
        for (service, image) in &want {
            let _ = self.image_update_available.get_or_create(&ImageLabels {
                service: service.clone(),
                image: image.clone(),
            });
        }
        *known = want;
    }

    /// After a pass: 1 for each watched service whose status shows `image_outdated`
    /// (the planner's decision, so the gauge and the drift never disagree).
    pub fn set_image_updates(&self, resources: &[ResourceStatus]) {
        let known = self.known_images.lock().expect("metrics lock");
        for (service, image) in known.iter() {
            let outdated = resources.iter().any(|r| {
                r.kind == Kind::Service
                    && r.name == *service
                    && r.drift.contains(&Reason::ImageOutdated)
            });
            self.image_update_available
                .get_or_create(&ImageLabels {
                    service: service.clone(),
                    image: image.clone(),
                })
                .set(outdated as i64);
        }
    }

    pub fn image_check(&self, result: &str) {
        self.image_checks_total
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn image_check_error(&self, error: &str) {
        self.image_check_errors_total
            .get_or_create(&ErrorLabel {
                error: error.into(),
            })
            .inc();
    }

    pub fn action(&self, action: &str, ok: bool) {
        self.actions_total
            .get_or_create(&ActionLabels {
                action: action.into(),
                result: if ok { "success" } else { "error" }.into(),
            })
            .inc();
    }
}

/// Process metrics read from /proc at scrape time.
#[derive(Debug)]
struct ProcessCollector;

/// (cpu seconds, rss bytes, start time if /proc/stat is visible, open fds).
fn proc_stats() -> Option<(f64, f64, Option<f64>, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start_ticks: f64 = f.get(19)?.parse().ok()?;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    let page = 4096.0;
    // /proc/stat is hidden under systemd's ProcSubset=pid: then no start time.
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    });
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .unwrap_or(0.0);
    Some((
        (utime + stime) / ticks,
        rss_pages * page,
        boot.map(|b| b + start_ticks / ticks),
        fds,
    ))
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let Some((cpu, rss, start, fds)) = proc_stats() else {
            return Ok(());
        };
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(cpu).encode(e)?;
        let e = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(rss).encode(e)?;
        if let Some(start) = start {
            let e = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(start).encode(e)?;
        }
        let e = encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(fds).encode(e)?;
        Ok(())
    }
}

/// Encodes the registry in the Prometheus/OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut s = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::Step;

    #[test]
    fn every_step_action_is_pre_registered() {
        let id = || "x".to_string();
        let steps = [
            Step::CleanupTemp { id: id() },
            Step::Adopt { id: id() },
            Step::RemoveDuplicate { id: id() },
            Step::Pull { image: id() },
            Step::Create,
            Step::Replace { old_id: id() },
            Step::Start { id: id() },
            Step::Restart { id: id() },
            Step::Signal {
                id: id(),
                signal: id(),
            },
        ];
        for s in steps {
            assert!(
                ACTIONS.contains(&s.action_name()),
                "{} is not in metrics::ACTIONS",
                s.action_name()
            );
        }
    }

    #[test]
    fn contract_series_exist_before_any_pass() {
        let mut r = Registry::default();
        let _m = Metrics::register(&mut r);
        let text = encode(&r);
        for series in [
            "obsd_actions_total{action=\"create\",result=\"success\"} 0",
            "obsd_actions_total{action=\"recreate\",result=\"error\"} 0",
            "obsd_reconcile_total{result=\"success\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing in:\n{text}");
        }
    }
}
