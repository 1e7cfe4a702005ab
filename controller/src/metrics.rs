//! The controller's Prometheus metrics under upstream Karpenter's names and labels, so the
//! dashboards and alerts written for Karpenter keep working. One [`Metrics`] value is made at
//! start and cloned (an `Arc`) into every reconciler; `/metrics` renders it in the Prometheus
//! text exposition format (version 0.0.4).
//!
//! The text format is small enough to write here rather than pull in a metrics framework:
//! counters, gauges and histograms, each a family of series keyed by a fixed number of label
//! values (the const generic `N`, so a wrong label count does not compile).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upstream's duration buckets (seconds), wide enough for a cloud call or a large simulation.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0,
    50.0, 60.0,
];

/// Every metric the controller exports. Cheap to clone; all clones share the same series.
#[derive(Clone)]
pub struct Metrics(Arc<MetricSet>);

impl Deref for Metrics {
    type Target = MetricSet;
    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The metric families, by upstream name. Label order is the order the arrays take.
pub struct MetricSet {
    /// `karpenter_build_info{version,commit}`, always 1.
    pub build_info: Gauge<2>,
    /// `karpenter_nodeclaims_created_total{reason,nodepool}`; reason is `provisioning` or a
    /// disruption method.
    pub nodeclaims_created_total: Counter<2>,
    /// `karpenter_nodeclaims_launched_total{nodepool}`.
    pub nodeclaims_launched_total: Counter<1>,
    /// `karpenter_nodeclaims_registered_total{nodepool}`.
    pub nodeclaims_registered_total: Counter<1>,
    /// `karpenter_nodeclaims_initialized_total{nodepool}`.
    pub nodeclaims_initialized_total: Counter<1>,
    /// `karpenter_nodeclaims_terminated_total{nodepool}`.
    pub nodeclaims_terminated_total: Counter<1>,
    /// `karpenter_nodeclaims_disrupted_total{reason,nodepool}`.
    pub nodeclaims_disrupted_total: Counter<2>,
    /// `karpenter_nodes_created_total{nodepool}`.
    pub nodes_created_total: Counter<1>,
    /// `karpenter_nodes_terminated_total{nodepool}`.
    pub nodes_terminated_total: Counter<1>,
    /// `karpenter_pods_state{name,namespace,owner,node,nodepool,zone,arch,capacity_type,
    /// instance_type,phase}`, 1 per pod, read from the cluster state at each scrape
    /// (`crate::podstate::collector`).
    pub pods_state: Collected<10>,
    /// `karpenter_scheduler_scheduling_duration_seconds{controller}`.
    pub scheduler_scheduling_duration_seconds: Histogram<1>,
    /// `karpenter_provisioner_scheduling_duration_seconds` (the pre-v1 name, still exported).
    pub provisioner_scheduling_duration_seconds: Histogram<0>,
    /// `karpenter_scheduler_queue_depth{controller}`: pods waiting in the current batch.
    pub scheduler_queue_depth: Gauge<1>,
    /// `karpenter_cloudprovider_errors_total{controller,method,provider,error}`.
    pub cloudprovider_errors_total: Counter<4>,
    /// `karpenter_cloudprovider_duration_seconds{controller,method,provider}`.
    pub cloudprovider_duration_seconds: Histogram<3>,
    /// `karpenter_nodepools_usage{nodepool,resource_type}`.
    pub nodepools_usage: Gauge<2>,
    /// `karpenter_nodepools_limit{nodepool,resource_type}`.
    pub nodepools_limit: Gauge<2>,
    /// `karpenter_cluster_state_node_count`.
    pub cluster_state_node_count: Gauge<0>,
    /// `karpenter_cluster_state_synced`: 1 once the cluster state matches the API server.
    pub cluster_state_synced: Gauge<0>,
    /// `karpenter_nodes_eviction_requests_total{code}`: Eviction API calls by response code.
    pub nodes_eviction_requests_total: Counter<1>,
    /// `karpenter_interruption_received_messages_total{message_type}`.
    pub interruption_received_messages_total: Counter<1>,
    /// `karpenter_interruption_deleted_messages_total`.
    pub interruption_deleted_messages_total: Counter<0>,
    /// `karpenter_interruption_message_queue_duration_seconds`: from the event's time to its
    /// handling.
    pub interruption_message_queue_duration_seconds: Histogram<0>,
    /// `karpctl_interruption_queue_reachable` (karpctl's own): 1 while the last receive from
    /// the interruption queue worked, 0 while it fails (missing queue, denied permission).
    pub interruption_queue_reachable: Gauge<0>,
    /// `karpenter_voluntary_disruption_decisions_total{decision,reason,consolidation_type}`.
    pub voluntary_disruption_decisions_total: Counter<3>,
    /// `karpenter_voluntary_disruption_eligible_nodes{reason}`.
    pub voluntary_disruption_eligible_nodes: Gauge<1>,
    /// `karpenter_voluntary_disruption_decision_evaluation_duration_seconds{method,consolidation_type}`.
    pub voluntary_disruption_decision_evaluation_duration_seconds: Histogram<2>,
    /// `karpenter_nodepools_allowed_disruptions{nodepool,reason}`.
    pub nodepools_allowed_disruptions: Gauge<2>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let set = MetricSet {
            build_info: Gauge::new(
                "karpenter_build_info",
                "A metric with a constant '1' value labeled by version from which karpenter was built.",
                ["version", "commit"],
            ),
            nodeclaims_created_total: Counter::new(
                "karpenter_nodeclaims_created_total",
                "Number of nodeclaims created in total by Karpenter. Labeled by reason the nodeclaim was created and the owning nodepool.",
                ["reason", "nodepool"],
            ),
            nodeclaims_launched_total: Counter::new(
                "karpenter_nodeclaims_launched_total",
                "Number of nodeclaims launched in total by Karpenter. Labeled by the owning nodepool.",
                ["nodepool"],
            ),
            nodeclaims_registered_total: Counter::new(
                "karpenter_nodeclaims_registered_total",
                "Number of nodeclaims registered in total by Karpenter. Labeled by the owning nodepool.",
                ["nodepool"],
            ),
            nodeclaims_initialized_total: Counter::new(
                "karpenter_nodeclaims_initialized_total",
                "Number of nodeclaims initialized in total by Karpenter. Labeled by the owning nodepool.",
                ["nodepool"],
            ),
            nodeclaims_terminated_total: Counter::new(
                "karpenter_nodeclaims_terminated_total",
                "Number of nodeclaims terminated in total by Karpenter. Labeled by the owning nodepool.",
                ["nodepool"],
            ),
            nodeclaims_disrupted_total: Counter::new(
                "karpenter_nodeclaims_disrupted_total",
                "Number of nodeclaims disrupted in total by Karpenter. Labeled by reason the nodeclaim was disrupted and the owning nodepool.",
                ["reason", "nodepool"],
            ),
            nodes_created_total: Counter::new(
                "karpenter_nodes_created_total",
                "Number of nodes created in total by Karpenter. Labeled by owning nodepool.",
                ["nodepool"],
            ),
            nodes_terminated_total: Counter::new(
                "karpenter_nodes_terminated_total",
                "Number of nodes terminated in total by Karpenter. Labeled by owning nodepool.",
                ["nodepool"],
            ),
            pods_state: Collected::new(
                "karpenter_pods_state",
                "Pod state is the current state of pods. This metric can be used several ways as it is labeled by the pod name, namespace, owner, node, nodepool name, zone, architecture, capacity type, instance type and pod phase.",
                [
                    "name",
                    "namespace",
                    "owner",
                    "node",
                    "nodepool",
                    "zone",
                    "arch",
                    "capacity_type",
                    "instance_type",
                    "phase",
                ],
            ),
            scheduler_scheduling_duration_seconds: Histogram::new(
                "karpenter_scheduler_scheduling_duration_seconds",
                "Duration of scheduling simulations used for deprovisioning and provisioning in seconds.",
                ["controller"],
                DURATION_BUCKETS,
            ),
            provisioner_scheduling_duration_seconds: Histogram::new(
                "karpenter_provisioner_scheduling_duration_seconds",
                "Duration of scheduling process in seconds.",
                [],
                DURATION_BUCKETS,
            ),
            scheduler_queue_depth: Gauge::new(
                "karpenter_scheduler_queue_depth",
                "The number of pods currently waiting to be scheduled.",
                ["controller"],
            ),
            cloudprovider_errors_total: Counter::new(
                "karpenter_cloudprovider_errors_total",
                "Total number of errors returned from CloudProvider calls.",
                ["controller", "method", "provider", "error"],
            ),
            cloudprovider_duration_seconds: Histogram::new(
                "karpenter_cloudprovider_duration_seconds",
                "Duration of cloud provider method calls. Labeled by the controller, method name and provider.",
                ["controller", "method", "provider"],
                DURATION_BUCKETS,
            ),
            nodepools_usage: Gauge::new(
                "karpenter_nodepools_usage",
                "The amount of resources that have been provisioned for a nodepool. Labeled by nodepool name and resource type.",
                ["nodepool", "resource_type"],
            ),
            nodepools_limit: Gauge::new(
                "karpenter_nodepools_limit",
                "Limits specified on the nodepool that restrict the quantity of resources provisioned. Labeled by nodepool name and resource type.",
                ["nodepool", "resource_type"],
            ),
            cluster_state_node_count: Gauge::new(
                "karpenter_cluster_state_node_count",
                "Current count of nodes in cluster state",
                [],
            ),
            cluster_state_synced: Gauge::new(
                "karpenter_cluster_state_synced",
                "Returns 1 if cluster state is synced and 0 otherwise. Synced checks that nodeclaims and nodes that are stored in the APIServer have the same representation as Karpenter's cluster state",
                [],
            ),
            nodes_eviction_requests_total: Counter::new(
                "karpenter_nodes_eviction_requests_total",
                "The total number of eviction requests made by Karpenter",
                ["code"],
            ),
            interruption_received_messages_total: Counter::new(
                "karpenter_interruption_received_messages_total",
                "Count of messages received from the SQS queue. Broken down by message type and whether the message was actionable.",
                ["message_type"],
            ),
            interruption_deleted_messages_total: Counter::new(
                "karpenter_interruption_deleted_messages_total",
                "Count of messages deleted from the SQS queue.",
                [],
            ),
            interruption_message_queue_duration_seconds: Histogram::new(
                "karpenter_interruption_message_queue_duration_seconds",
                "Amount of time an interruption message is on the queue before it is processed by karpenter.",
                [],
                DURATION_BUCKETS,
            ),
            interruption_queue_reachable: Gauge::new(
                "karpctl_interruption_queue_reachable",
                "1 while the last receive from the interruption queue succeeded, 0 while it fails (see the controller's log for why).",
                [],
            ),
            voluntary_disruption_decisions_total: Counter::new(
                "karpenter_voluntary_disruption_decisions_total",
                "Number of disruption decisions performed. Labeled by disruption decision, reason, and consolidation type.",
                ["decision", "reason", "consolidation_type"],
            ),
            voluntary_disruption_eligible_nodes: Gauge::new(
                "karpenter_voluntary_disruption_eligible_nodes",
                "Number of nodes eligible for disruption by Karpenter. Labeled by disruption reason.",
                ["reason"],
            ),
            voluntary_disruption_decision_evaluation_duration_seconds: Histogram::new(
                "karpenter_voluntary_disruption_decision_evaluation_duration_seconds",
                "Duration of the disruption decision evaluation process in seconds. Labeled by method and consolidation type.",
                ["method", "consolidation_type"],
                DURATION_BUCKETS,
            ),
            nodepools_allowed_disruptions: Gauge::new(
                "karpenter_nodepools_allowed_disruptions",
                "The number of nodes for a given NodePool that can be concurrently disrupting at a point in time. Labeled by NodePool. Note that allowed disruptions can change very rapidly, as new nodes may be created and others may be deleted at any point.",
                ["nodepool", "reason"],
            ),
        };
        set.build_info
            .set([env!("CARGO_PKG_VERSION"), crate::logging::commit()], 1.0);
        Metrics(Arc::new(set))
    }

    /// The Prometheus text exposition of every family, in a stable order.
    pub fn render(&self) -> String {
        let set = &self.0;
        let families: [&dyn Render; 28] = [
            &set.build_info,
            &set.nodeclaims_created_total,
            &set.nodeclaims_launched_total,
            &set.nodeclaims_registered_total,
            &set.nodeclaims_initialized_total,
            &set.nodeclaims_terminated_total,
            &set.nodeclaims_disrupted_total,
            &set.nodes_created_total,
            &set.nodes_terminated_total,
            &set.pods_state,
            &set.scheduler_scheduling_duration_seconds,
            &set.provisioner_scheduling_duration_seconds,
            &set.scheduler_queue_depth,
            &set.cloudprovider_errors_total,
            &set.cloudprovider_duration_seconds,
            &set.nodepools_usage,
            &set.nodepools_limit,
            &set.cluster_state_node_count,
            &set.cluster_state_synced,
            &set.nodes_eviction_requests_total,
            &set.interruption_received_messages_total,
            &set.interruption_deleted_messages_total,
            &set.interruption_message_queue_duration_seconds,
            &set.interruption_queue_reachable,
            &set.voluntary_disruption_decisions_total,
            &set.voluntary_disruption_eligible_nodes,
            &set.voluntary_disruption_decision_evaluation_duration_seconds,
            &set.nodepools_allowed_disruptions,
        ];
        let mut out = String::new();
        for family in families {
            family.render(&mut out);
        }
        out
    }
}

trait Render {
    fn render(&self, out: &mut String);
}

/// What every family shares: its name, help, label names and series.
struct Family<const N: usize, V> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    series: Mutex<BTreeMap<Labels<N>, V>>,
}

impl<const N: usize, V> Family<N, V> {
    fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Family {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// A panic elsewhere while holding the lock leaves plain numbers behind, still valid.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Labels<N>, V>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn header(&self, out: &mut String, kind: &str) {
        header(out, self.name, self.help, kind);
    }

    fn label_text(&self, values: &Labels<N>, extra: Option<(&str, &str)>) -> String {
        label_text(&self.labels, &values.each_ref().map(|v| &**v), extra)
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="1",b="2"}` (empty without labels), `extra` last (a histogram's `le`).
fn label_text(names: &[&str], values: &[&str], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect();
    if let Some((name, value)) = extra {
        pairs.push(format!("{name}=\"{}\"", escape_label(value)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// One stored series' label values, in the family's label order.
pub type Labels<const N: usize> = [Arc<str>; N];

fn key<const N: usize>(labels: [&str; N]) -> Labels<N> {
    labels.map(Arc::from)
}

/// Reads a collected family's series: calls `emit` once per series with its label values
/// (in the family's label order) and its value.
pub type Collector<const N: usize> = Arc<dyn Fn(&mut dyn FnMut([&str; N], f64)) + Send + Sync>;

/// A gauge family whose series are read at each scrape from data the process already holds
/// rather than stored. `karpenter_pods_state` has a series per pod and the cluster state
/// holds every pod: a stored copy of 10,000 pods' label values was several MB of the
/// controller's memory, and it could only be as fresh as its last recomputation.
pub struct Collected<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    collector: Mutex<Option<Collector<N>>>,
}

impl<const N: usize> Collected<N> {
    fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Collected {
            name,
            help,
            labels,
            collector: Mutex::new(None),
        }
    }

    /// Where the series come from from now on (until then the family has none).
    pub fn collect_from(&self, collector: Collector<N>) {
        *self.collector.lock().unwrap_or_else(|e| e.into_inner()) = Some(collector);
    }
}

impl<const N: usize> Render for Collected<N> {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        let collector = self
            .collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(collect) = collector {
            collect(&mut |values, value| {
                let _ = writeln!(
                    out,
                    "{}{} {}",
                    self.name,
                    label_text(&self.labels, &values, None),
                    number(value)
                );
            });
        }
    }
}

/// A monotonically increasing count.
pub struct Counter<const N: usize>(Family<N, f64>);

impl<const N: usize> Counter<N> {
    fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Counter(Family::new(name, help, labels))
    }

    pub fn inc(&self, labels: [&str; N]) {
        self.inc_by(labels, 1.0);
    }

    /// Adds `by`; negative or NaN amounts are ignored (a counter never goes down).
    pub fn inc_by(&self, labels: [&str; N], by: f64) {
        if by >= 0.0 {
            *self.0.lock().entry(key(labels)).or_default() += by;
        }
    }

    /// The current value, 0 for a series never incremented.
    pub fn get(&self, labels: [&str; N]) -> f64 {
        self.0.lock().get(&key(labels)).copied().unwrap_or(0.0)
    }
}

impl<const N: usize> Render for Counter<N> {
    fn render(&self, out: &mut String) {
        let family = &self.0;
        family.header(out, "counter");
        let series = family.lock();
        // A family without labels always has its one series, as Prometheus clients do.
        if N == 0 && series.is_empty() {
            let _ = writeln!(out, "{} 0", family.name);
        }
        for (labels, value) in series.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                family.name,
                family.label_text(labels, None),
                number(*value)
            );
        }
    }
}

/// A value that goes up and down.
pub struct Gauge<const N: usize>(Family<N, f64>);

impl<const N: usize> Gauge<N> {
    fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Gauge(Family::new(name, help, labels))
    }

    pub fn set(&self, labels: [&str; N], value: f64) {
        self.0.lock().insert(key(labels), value);
    }

    pub fn add(&self, labels: [&str; N], by: f64) {
        *self.0.lock().entry(key(labels)).or_default() += by;
    }

    /// Drops one series, e.g. a deleted pod's `karpenter_pods_state`.
    pub fn remove(&self, labels: [&str; N]) {
        self.0.lock().remove(&key(labels));
    }

    /// Keeps only the series `keep` accepts (given the label values in order).
    pub fn retain(&self, mut keep: impl FnMut(&Labels<N>) -> bool) {
        self.0.lock().retain(|labels, _| keep(labels));
    }

    pub fn get(&self, labels: [&str; N]) -> Option<f64> {
        self.0.lock().get(&key(labels)).copied()
    }
}

impl<const N: usize> Render for Gauge<N> {
    fn render(&self, out: &mut String) {
        let family = &self.0;
        family.header(out, "gauge");
        let series = family.lock();
        if N == 0 && series.is_empty() {
            let _ = writeln!(out, "{} 0", family.name);
        }
        for (labels, value) in series.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                family.name,
                family.label_text(labels, None),
                number(*value)
            );
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Observations {
    /// Per bucket (not cumulative); rendered cumulatively.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A distribution of observations (durations, in seconds) over fixed buckets.
pub struct Histogram<const N: usize> {
    family: Family<N, Observations>,
    bounds: &'static [f64],
}

impl<const N: usize> Histogram<N> {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
        bounds: &'static [f64],
    ) -> Self {
        Histogram {
            family: Family::new(name, help, labels),
            bounds,
        }
    }

    pub fn observe(&self, labels: [&str; N], value: f64) {
        let mut series = self.family.lock();
        let entry = series.entry(key(labels)).or_insert_with(|| Observations {
            buckets: vec![0; self.bounds.len()],
            ..Observations::default()
        });
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound) {
            entry.buckets[i] += 1;
        }
        entry.sum += value;
        entry.count += 1;
    }

    pub fn observe_duration(&self, labels: [&str; N], elapsed: Duration) {
        self.observe(labels, elapsed.as_secs_f64());
    }

    /// How many observations a series has.
    pub fn count(&self, labels: [&str; N]) -> u64 {
        self.family.lock().get(&key(labels)).map_or(0, |o| o.count)
    }
}

impl<const N: usize> Render for Histogram<N> {
    fn render(&self, out: &mut String) {
        let family = &self.family;
        family.header(out, "histogram");
        let series = family.lock();
        let empty = Observations {
            buckets: vec![0; self.bounds.len()],
            ..Observations::default()
        };
        let unlabelled = [(key_empty::<N>(), &empty)];
        let rows: Vec<(&Labels<N>, &Observations)> = if N == 0 && series.is_empty() {
            unlabelled.iter().map(|(k, v)| (k, *v)).collect()
        } else {
            series.iter().collect()
        };
        for (labels, obs) in rows {
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&obs.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    family.name,
                    family.label_text(labels, Some(("le", &number(*bound))))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                family.name,
                family.label_text(labels, Some(("le", "+Inf"))),
                obs.count
            );
            let plain = family.label_text(labels, None);
            let _ = writeln!(out, "{}_sum{plain} {}", family.name, number(obs.sum));
            let _ = writeln!(out, "{}_count{plain} {}", family.name, obs.count);
        }
    }
}

fn key_empty<const N: usize>() -> Labels<N> {
    std::array::from_fn(|_| Arc::from(""))
}

/// A sample value as Prometheus writes it: `1`, `0.5`, `+Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `text` that are samples (not comments) for metric `name`.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            })
            .collect()
    }

    #[test]
    fn every_contract_metric_is_declared_with_its_type() {
        let text = Metrics::new().render();
        for (name, kind) in [
            ("karpenter_nodeclaims_created_total", "counter"),
            ("karpenter_nodeclaims_launched_total", "counter"),
            ("karpenter_nodeclaims_registered_total", "counter"),
            ("karpenter_nodeclaims_initialized_total", "counter"),
            ("karpenter_nodeclaims_terminated_total", "counter"),
            ("karpenter_nodeclaims_disrupted_total", "counter"),
            ("karpenter_nodes_created_total", "counter"),
            ("karpenter_nodes_terminated_total", "counter"),
            ("karpenter_pods_state", "gauge"),
            (
                "karpenter_scheduler_scheduling_duration_seconds",
                "histogram",
            ),
            (
                "karpenter_provisioner_scheduling_duration_seconds",
                "histogram",
            ),
            ("karpenter_scheduler_queue_depth", "gauge"),
            ("karpenter_cloudprovider_errors_total", "counter"),
            ("karpenter_cloudprovider_duration_seconds", "histogram"),
            ("karpenter_nodepools_usage", "gauge"),
            ("karpenter_nodepools_limit", "gauge"),
            ("karpenter_cluster_state_node_count", "gauge"),
            ("karpenter_cluster_state_synced", "gauge"),
        ] {
            let line = format!("# TYPE {name} {kind}\n");
            assert!(text.contains(&line), "missing {line:?}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name}"
            );
        }
    }

    #[test]
    fn unlabelled_families_always_have_a_sample() {
        let text = Metrics::new().render();
        assert_eq!(
            samples(&text, "karpenter_cluster_state_synced"),
            ["karpenter_cluster_state_synced 0"]
        );
        assert_eq!(
            samples(
                &text,
                "karpenter_provisioner_scheduling_duration_seconds_count"
            ),
            ["karpenter_provisioner_scheduling_duration_seconds_count 0"]
        );
        // A labelled family with no series says nothing beyond its header.
        assert!(samples(&text, "karpenter_nodeclaims_created_total").is_empty());
    }

    #[test]
    fn counters_render_labels_in_declared_order() {
        let metrics = Metrics::new();
        let shared = metrics.clone();
        shared
            .nodeclaims_created_total
            .inc(["provisioning", "default"]);
        metrics
            .nodeclaims_created_total
            .inc(["provisioning", "default"]);
        metrics.nodeclaims_created_total.inc(["drift", "gpu"]);
        metrics
            .nodeclaims_created_total
            .inc_by(["drift", "gpu"], -5.0);
        let text = metrics.render();
        assert_eq!(
            samples(&text, "karpenter_nodeclaims_created_total"),
            [
                r#"karpenter_nodeclaims_created_total{reason="drift",nodepool="gpu"} 1"#,
                r#"karpenter_nodeclaims_created_total{reason="provisioning",nodepool="default"} 2"#,
            ]
        );
        assert_eq!(
            metrics
                .nodeclaims_created_total
                .get(["provisioning", "default"]),
            2.0
        );
    }

    #[test]
    fn gauges_set_and_remove_series() {
        let metrics = Metrics::new();
        metrics.nodepools_usage.set(["default", "cpu"], 2.5);
        metrics.nodepools_usage.set(["other", "cpu"], 1.0);
        metrics.cluster_state_synced.set([], 1.0);
        let text = metrics.render();
        assert_eq!(
            samples(&text, "karpenter_nodepools_usage"),
            [
                r#"karpenter_nodepools_usage{nodepool="default",resource_type="cpu"} 2.5"#,
                r#"karpenter_nodepools_usage{nodepool="other",resource_type="cpu"} 1"#
            ]
        );
        assert_eq!(
            samples(&text, "karpenter_cluster_state_synced"),
            ["karpenter_cluster_state_synced 1"]
        );
        metrics
            .nodepools_usage
            .retain(|labels| &*labels[0] != "other");
        metrics.nodepools_usage.remove(["default", "cpu"]);
        assert!(samples(&metrics.render(), "karpenter_nodepools_usage").is_empty());
    }

    #[test]
    fn a_collected_family_reads_its_series_at_each_scrape() {
        let metrics = Metrics::new();
        assert!(samples(&metrics.render(), "karpenter_pods_state").is_empty());
        let phase = Arc::new(Mutex::new("Pending"));
        let source = phase.clone();
        metrics.pods_state.collect_from(Arc::new(move |emit| {
            let phase = *source.lock().unwrap();
            emit(
                [
                    "web-1",
                    "default",
                    "web",
                    "node-a",
                    "default",
                    "us-west-2a",
                    "amd64",
                    "on-demand",
                    "m5.large",
                    phase,
                ],
                1.0,
            );
        }));
        let line = |phase: &str| {
            let head = concat!(
                r#"karpenter_pods_state{name="web-1",namespace="default",owner="web","#,
                r#"node="node-a",nodepool="default",zone="us-west-2a",arch="amd64","#,
                r#"capacity_type="on-demand",instance_type="m5.large",phase=""#
            );
            format!(r#"{head}{phase}"}} 1"#)
        };
        assert_eq!(
            samples(&metrics.render(), "karpenter_pods_state"),
            [line("Pending")]
        );
        *phase.lock().unwrap() = "Running";
        assert_eq!(
            samples(&metrics.render(), "karpenter_pods_state"),
            [line("Running")]
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let metrics = Metrics::new();
        let h = &metrics.cloudprovider_duration_seconds;
        h.observe(["nodeclaim.lifecycle", "Create", "aws"], 0.02);
        h.observe(["nodeclaim.lifecycle", "Create", "aws"], 0.3);
        h.observe_duration(
            ["nodeclaim.lifecycle", "Create", "aws"],
            Duration::from_secs(90),
        );
        let text = metrics.render();
        let lines = samples(&text, "karpenter_cloudprovider_duration_seconds");
        let labels = r#"controller="nodeclaim.lifecycle",method="Create",provider="aws""#;
        for want in [
            format!(r#"karpenter_cloudprovider_duration_seconds_bucket{{{labels},le="0.01"}} 0"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_bucket{{{labels},le="0.025"}} 1"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_bucket{{{labels},le="0.5"}} 2"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_bucket{{{labels},le="60"}} 2"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_bucket{{{labels},le="+Inf"}} 3"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_sum{{{labels}}} 90.32"#),
            format!(r#"karpenter_cloudprovider_duration_seconds_count{{{labels}}} 3"#),
        ] {
            assert!(lines.contains(&want.as_str()), "missing {want}\n{text}");
        }
        assert_eq!(lines.len(), DURATION_BUCKETS.len() + 3);
        assert_eq!(h.count(["nodeclaim.lifecycle", "Create", "aws"]), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.cloudprovider_errors_total.inc([
            "nodeclaim.lifecycle",
            "Create",
            "aws",
            "say \"no\"\\\nnow",
        ]);
        let text = metrics.render();
        assert!(text.contains(r#"error="say \"no\"\\\nnow"} 1"#), "{text}");
    }

    #[test]
    fn build_info_names_version_and_commit() {
        let text = Metrics::new().render();
        let lines = samples(&text, "karpenter_build_info");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with(&format!(
            "karpenter_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(lines[0].ends_with("\"} 1"));
    }
}
