//! What the reconcilers tell people and dashboards: Kubernetes Events on pods and NodeClaims
//! (`kubectl describe` shows why a pod is still pending or why a claim went away), published
//! through kube's `Recorder` as reporting controller `karpenter`, and the metric increments
//! behind the upstream `karpenter_*` series.
//!
//! Both are behind small seams so unit tests record them in memory: [`Events::in_memory`]
//! keeps what would have been published, and [`MetricsSink`] has a no-op default that the
//! operations layer's `Metrics` implements.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

pub const REPORTING_CONTROLLER: &str = "karpenter";

/// Event reasons, as upstream Karpenter names them.
pub mod reasons {
    pub const NOMINATED: &str = "Nominated";
    pub const FAILED_SCHEDULING: &str = "FailedScheduling";
    pub const DISRUPTION_BLOCKED: &str = "DisruptionBlocked";
    pub const DISRUPTION_LAUNCHING: &str = "DisruptionLaunching";
    pub const DISRUPTION_WAITING_READINESS: &str = "DisruptionWaitingReadiness";
    pub const DISRUPTION_TERMINATING: &str = "DisruptionTerminating";
    pub const LAUNCHED: &str = "Launched";
    pub const REGISTERED: &str = "Registered";
    pub const INITIALIZED: &str = "Initialized";
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientCapacityError";
    pub const LAUNCH_FAILED: &str = "LaunchFailed";
    pub const NODE_CLASS_NOT_READY: &str = "NodeClassNotReady";
    pub const LIVENESS: &str = "Liveness";
    pub const GARBAGE_COLLECTED: &str = "GarbageCollected";
}

/// One event as published (or recorded in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// `Kind/namespace/name` or `Kind/name`.
    pub regarding: String,
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

#[derive(Clone)]
pub struct Events {
    recorder: Option<Recorder>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Events {
    /// Publish to the cluster; `instance` is the pod name (reportingInstance).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance,
        };
        Self {
            recorder: Some(Recorder::new(client, reporter)),
            log: Arc::default(),
        }
    }

    /// Record only, for unit tests.
    pub fn in_memory() -> Self {
        Self {
            recorder: None,
            log: Arc::default(),
        }
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj.object_ref(&()), false, reason, note).await;
    }

    pub async fn warning<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(obj.object_ref(&()), true, reason, note).await;
    }

    async fn publish(&self, reference: ObjectReference, warning: bool, reason: &str, note: String) {
        let regarding = match &reference.namespace {
            Some(ns) => format!(
                "{}/{ns}/{}",
                reference.kind.as_deref().unwrap_or_default(),
                reference.name.as_deref().unwrap_or_default()
            ),
            None => format!(
                "{}/{}",
                reference.kind.as_deref().unwrap_or_default(),
                reference.name.as_deref().unwrap_or_default()
            ),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recorded {
                regarding: regarding.clone(),
                warning,
                reason: reason.to_owned(),
                note: note.clone(),
            });
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            action: action(reason, &note),
            // The API server caps notes at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(regarding, reason, error = %e, "publishing event failed");
        }
    }
}

/// The Event's `action`, which kube's recorder folds repeats by: the reason and a digest of
/// the note. The recorder keys a series on (object, type, reason, action) and keeps the first
/// Event's message while counting repeats, so with the reason alone a pod first told "nodepool
/// not ready" and later "nodepool limit reached" would show the stale cause forever. With the
/// note's digest, repeats of one message still fold into a count (as `kubectl describe`
/// shows for the scheduler's own Events) and a changed message is an Event of its own.
pub fn action(reason: &str, note: &str) -> String {
    // Stable across builds and replicas (std's hasher is randomly seeded).
    let digest = karpctl_api::hash::fnv1a64(note);
    format!("{reason}-{:08x}", digest as u32)
}

/// The metric increments reconcilers make, named after the upstream series they feed. Every
/// method defaults to doing nothing so tests and partial wiring need not implement all.
pub trait MetricsSink: Send + Sync + 'static {
    /// `karpenter_nodeclaims_created_total{nodepool,reason}`.
    fn node_claim_created(&self, _node_pool: &str, _reason: &str) {}
    /// `karpenter_nodeclaims_launched_total{nodepool}`.
    fn node_claim_launched(&self, _node_pool: &str) {}
    /// `karpenter_nodeclaims_registered_total{nodepool}`.
    fn node_claim_registered(&self, _node_pool: &str) {}
    /// `karpenter_nodeclaims_initialized_total{nodepool}`.
    fn node_claim_initialized(&self, _node_pool: &str) {}
    /// `karpenter_nodeclaims_terminated_total{nodepool,reason}`.
    fn node_claim_terminated(&self, _node_pool: &str, _reason: &str) {}
    /// `karpenter_nodes_created_total{nodepool}`.
    fn node_created(&self, _node_pool: &str) {}
    /// `karpenter_nodes_terminated_total{nodepool}`.
    fn node_terminated(&self, _node_pool: &str) {}
    /// `karpenter_cloudprovider_errors_total{controller,method,provider,error}` and
    /// `karpenter_cloudprovider_duration_seconds{controller,method,provider}`.
    fn cloud_call(&self, _controller: &str, _method: &str, _seconds: f64, _error: Option<&str>) {}
    /// `karpenter_scheduler_scheduling_duration_seconds` and `karpenter_scheduler_queue_depth`.
    fn scheduled(&self, _seconds: f64, _queue_depth: usize) {}
    /// `karpenter_nodepools_usage{nodepool,resource_type}` / `karpenter_nodepools_limit`.
    fn node_pool_usage(&self, _node_pool: &str, _resource: &str, _usage: f64, _limit: Option<f64>) {
    }
    /// `karpenter_cluster_state_node_count` and `karpenter_cluster_state_synced`.
    fn cluster_state(&self, _nodes: usize, _synced: bool) {}
    /// `karpenter_pods_state{...}`: where every pod's series (`crate::podstate::LABELS`) are
    /// read from at each scrape.
    fn pods_state(&self, _collector: crate::metrics::Collector<10>) {}
    /// `karpenter_nodeclaims_disrupted_total{reason,nodepool}`.
    fn node_claim_disrupted(&self, _node_pool: &str, _reason: &str) {}
    /// `karpenter_nodes_eviction_requests_total{code}` (0: no response).
    fn eviction_request(&self, _code: u16) {}
    /// `karpenter_interruption_received_messages_total{message_type}`.
    fn interruption_received(&self, _message_type: &str) {}
    /// `karpenter_interruption_deleted_messages_total` and, when the event's time is known,
    /// `karpenter_interruption_message_queue_duration_seconds`.
    fn interruption_deleted(&self, _queued_seconds: Option<f64>) {}
    /// `karpctl_interruption_queue_reachable`.
    fn interruption_queue_reachable(&self, _reachable: bool) {}
    /// `karpenter_voluntary_disruption_decisions_total{decision,reason,consolidation_type}`.
    fn disruption_decision(&self, _decision: &str, _reason: &str, _consolidation_type: &str) {}
    /// `karpenter_voluntary_disruption_eligible_nodes{reason}`.
    fn disruption_eligible(&self, _reason: &str, _count: usize) {}
    /// `karpenter_voluntary_disruption_decision_evaluation_duration_seconds`.
    fn disruption_evaluated(&self, _method: &str, _consolidation_type: &str, _seconds: f64) {}
    /// `karpenter_nodepools_allowed_disruptions{nodepool,reason}`.
    fn allowed_disruptions(&self, _node_pool: &str, _reason: &str, _allowed: usize) {}
}

/// Counts nothing.
pub struct NoMetrics;

impl MetricsSink for NoMetrics {}

/// The operations layer's Prometheus families (`crate::metrics`).
impl MetricsSink for crate::metrics::Metrics {
    fn node_claim_created(&self, node_pool: &str, reason: &str) {
        self.nodeclaims_created_total.inc([reason, node_pool]);
    }
    fn node_claim_launched(&self, node_pool: &str) {
        self.nodeclaims_launched_total.inc([node_pool]);
    }
    fn node_claim_registered(&self, node_pool: &str) {
        self.nodeclaims_registered_total.inc([node_pool]);
    }
    fn node_claim_initialized(&self, node_pool: &str) {
        self.nodeclaims_initialized_total.inc([node_pool]);
    }
    fn node_claim_terminated(&self, node_pool: &str, _reason: &str) {
        self.nodeclaims_terminated_total.inc([node_pool]);
    }
    fn node_created(&self, node_pool: &str) {
        self.nodes_created_total.inc([node_pool]);
    }
    fn node_terminated(&self, node_pool: &str) {
        self.nodes_terminated_total.inc([node_pool]);
    }
    fn cloud_call(&self, controller: &str, method: &str, seconds: f64, error: Option<&str>) {
        self.cloudprovider_duration_seconds
            .observe([controller, method, "aws"], seconds);
        if let Some(error) = error {
            self.cloudprovider_errors_total
                .inc([controller, method, "aws", error]);
        }
    }
    fn scheduled(&self, seconds: f64, queue_depth: usize) {
        self.scheduler_scheduling_duration_seconds
            .observe(["provisioner"], seconds);
        self.provisioner_scheduling_duration_seconds
            .observe([], seconds);
        self.scheduler_queue_depth
            .set(["provisioner"], queue_depth as f64);
    }
    fn node_pool_usage(&self, node_pool: &str, resource: &str, usage: f64, limit: Option<f64>) {
        self.nodepools_usage.set([node_pool, resource], usage);
        if let Some(limit) = limit {
            self.nodepools_limit.set([node_pool, resource], limit);
        }
    }
    fn cluster_state(&self, nodes: usize, synced: bool) {
        self.cluster_state_node_count.set([], nodes as f64);
        self.cluster_state_synced
            .set([], if synced { 1.0 } else { 0.0 });
    }
    fn pods_state(&self, collector: crate::metrics::Collector<10>) {
        self.pods_state.collect_from(collector);
    }
    fn node_claim_disrupted(&self, node_pool: &str, reason: &str) {
        self.nodeclaims_disrupted_total.inc([reason, node_pool]);
    }
    fn eviction_request(&self, code: u16) {
        self.nodes_eviction_requests_total.inc([&code.to_string()]);
    }
    fn interruption_received(&self, message_type: &str) {
        self.interruption_received_messages_total
            .inc([message_type]);
    }
    fn interruption_deleted(&self, queued_seconds: Option<f64>) {
        self.interruption_deleted_messages_total.inc([]);
        if let Some(s) = queued_seconds {
            self.interruption_message_queue_duration_seconds
                .observe([], s);
        }
    }
    fn disruption_decision(&self, decision: &str, reason: &str, consolidation_type: &str) {
        self.voluntary_disruption_decisions_total
            .inc([decision, reason, consolidation_type]);
    }
    fn disruption_eligible(&self, reason: &str, count: usize) {
        self.voluntary_disruption_eligible_nodes
            .set([reason], count as f64);
    }
    fn disruption_evaluated(&self, method: &str, consolidation_type: &str, seconds: f64) {
        self.voluntary_disruption_decision_evaluation_duration_seconds
            .observe([method, consolidation_type], seconds);
    }
    fn allowed_disruptions(&self, node_pool: &str, reason: &str, allowed: usize) {
        self.nodepools_allowed_disruptions
            .set([node_pool, reason], allowed.min(i32::MAX as usize) as f64);
    }
    fn interruption_queue_reachable(&self, reachable: bool) {
        self.interruption_queue_reachable
            .set([], if reachable { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::action;

    #[test]
    fn one_message_folds_and_a_changed_message_is_an_event_of_its_own() {
        let not_ready = "Failed to schedule pod, nodepool a is not ready";
        let limit = "Failed to schedule pod, nodepool a: cpu limit 2 reached";
        assert_eq!(
            action("FailedScheduling", not_ready),
            action("FailedScheduling", not_ready)
        );
        assert_ne!(
            action("FailedScheduling", not_ready),
            action("FailedScheduling", limit)
        );
        let a = action("FailedScheduling", limit);
        assert!(a.starts_with("FailedScheduling-"), "{a}");
        // The API server takes at most 128 characters.
        assert!(a.len() <= 128);
        // Stable across runs and replicas: the same digest every time.
        assert_eq!(action("Nominated", ""), "Nominated-84222325");
    }
}
