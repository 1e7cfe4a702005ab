//! NodePool status: what the pool holds (`status.resources`, the summed capacity of its
//! NodeClaims, and `status.nodes`), whether its EC2NodeClass is usable (`NodeClassReady`)
//! and `Ready`. A pool whose node class is missing or not Ready gets the condition and an
//! Event, and provisioning skips it; every other pool keeps working.
//!
//! Also the NodePool hash written onto NodeClaims for drift detection ([`hash`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::condition_types::node_pool as cond;
use karpctl_api::v1::{ConditionStatus, NodePool, NodePoolStatus, READY};
use karpctl_cloud::Resources;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::events::{Events, MetricsSink, reasons};
use crate::nodeclaim::set_condition;
use crate::provisioning::{node_class_readiness, resources_from_list, resources_to_list};
use crate::state::{self, ClusterState, SharedState};

pub use karpctl_api::hash::fnv1a64;

/// `karpenter.sh/nodepool-hash`: FNV-1a (64-bit) of the pool's `spec.template` serialized as
/// JSON with sorted keys, leaving out what upstream leaves out of its hash — requirements
/// (checked against the claim's labels instead), `expireAfter` and
/// `terminationGracePeriod` (changing them must not replace nodes) — printed in decimal.
/// Bump `NODE_POOL_HASH_VERSION` when this recipe changes.
pub fn hash(pool: &NodePool) -> String {
    let mut template = serde_json::to_value(&pool.spec.template).unwrap_or_default();
    if let Some(spec) = template.get_mut("spec").and_then(|s| s.as_object_mut()) {
        for ignored in ["requirements", "expireAfter", "terminationGracePeriod"] {
            spec.remove(ignored);
        }
    }
    fnv1a64(template.to_string().as_bytes()).to_string()
}

/// The status a pool should have given the cluster.
pub fn status(pool: &NodePool, state: &ClusterState, now: Timestamp) -> NodePoolStatus {
    let name = pool.name_any();
    let mut resources = Resources::default();
    let mut nodes = 0;
    for claim in state.node_claims() {
        if claim.labels().get(labels::NODE_POOL) != Some(&name) {
            continue;
        }
        nodes += 1;
        if let Some(capacity) = claim.status.as_ref().map(|s| &s.capacity)
            && let Ok(r) = resources_from_list(capacity)
        {
            resources.add(&r);
        }
    }
    let old = pool.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    match node_class_readiness(pool, state) {
        None => set_condition(
            &mut conditions,
            cond::NODE_CLASS_READY,
            ConditionStatus::True,
            "NodeClassReady",
            "",
            now,
        ),
        Some((reason, why)) => set_condition(
            &mut conditions,
            cond::NODE_CLASS_READY,
            ConditionStatus::False,
            &reason,
            &why,
            now,
        ),
    }
    // Ready carries the first failing condition's reason and every failing message.
    let failing: Vec<(String, String)> = conditions
        .iter()
        .filter(|c| {
            c.type_ != READY
                && c.type_ != cond::NODE_REGISTRATION_HEALTHY
                && c.status == ConditionStatus::False
        })
        .map(|c| (c.reason.clone(), format!("{}: {}", c.type_, c.message)))
        .collect();
    match failing.first() {
        None => set_condition(
            &mut conditions,
            READY,
            ConditionStatus::True,
            "Ready",
            "",
            now,
        ),
        Some((reason, _)) => {
            let message: Vec<&str> = failing.iter().map(|(_, m)| m.as_str()).collect();
            let reason = reason.clone();
            set_condition(
                &mut conditions,
                READY,
                ConditionStatus::False,
                &reason,
                &message.join("; "),
                now,
            );
        }
    }
    let class_generation = state
        .node_class(&pool.spec.template.spec.node_class_ref.name)
        .and_then(|c| c.metadata.generation);
    let mut r = resources_to_list(&resources);
    // An empty pool reports zeros rather than nothing, as upstream does.
    for k in ["cpu", "memory", "pods", "ephemeral-storage"] {
        r.entry(k.to_owned())
            .or_insert_with(|| "0".parse().expect("valid quantity"));
    }
    r.insert(
        "nodes".to_owned(),
        nodes.to_string().parse().expect("valid quantity"),
    );
    NodePoolStatus {
        resources: r,
        nodes: Some(nodes),
        node_class_observed_generation: class_generation.or(old.node_class_observed_generation),
        conditions,
    }
}

fn differs(a: &NodePoolStatus, b: &NodePoolStatus) -> bool {
    let strip = |s: &NodePoolStatus| {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conds {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(a) != strip(b)
}

pub struct NodePoolReconciler {
    pub client: Client,
    pub state: SharedState,
    pub events: Events,
    pub metrics: Arc<dyn MetricsSink>,
}

impl NodePoolReconciler {
    pub async fn reconcile_all(&self) {
        let now = Timestamp::now();
        let work: Vec<(NodePool, NodePoolStatus)> = {
            let s = state::read(&self.state);
            s.node_pools()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (p.clone(), status(p, &s, now)))
                .collect()
        };
        let api: Api<NodePool> = Api::all(self.client.clone());
        for (pool, new) in work {
            let name = pool.name_any();
            for (resource, quantity) in &new.resources {
                let usage = Resources::from_quantities([(resource.as_str(), quantity.as_str())])
                    .map(|r| r.get(resource) as f64)
                    .unwrap_or(0.0);
                let limit = pool.spec.limits.get(resource).and_then(|q| {
                    Resources::from_quantities([(resource.as_str(), q.as_str())])
                        .ok()
                        .map(|r| r.get(resource) as f64)
                });
                self.metrics.node_pool_usage(&name, resource, usage, limit);
            }
            let old = pool.status.clone().unwrap_or_default();
            if !differs(&old, &new) {
                continue;
            }
            // A Warning when the node class stops being ready, and again whenever the cause
            // changes (a class is "not resolved yet" before it is "no subnet matches").
            let cause = |s: &NodePoolStatus| {
                use karpctl_api::v1::Conditions;
                s.condition(cond::NODE_CLASS_READY)
                    .filter(|c| c.status == ConditionStatus::False)
                    .map(|c| (c.reason.clone(), c.message.clone()))
            };
            let was = cause(&old).map(|(reason, _)| reason);
            if let Some((reason, why)) = &cause(&new)
                && was.as_ref() != Some(reason)
            {
                tracing::error!(controller = "nodepool.readiness", NodePool = %json!({"name": name}), reason = %why, "nodepool skipped, its node class is not ready");
                self.events
                    .warning(
                        &pool,
                        reasons::NODE_CLASS_NOT_READY,
                        format!("NodePool {name} is not ready: {why}"),
                    )
                    .await;
            }
            let patch =
                json!({"metadata": {"resourceVersion": pool.resource_version()}, "status": new});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => state::write(&self.state).apply(updated),
                Err(e) => {
                    tracing::debug!(controller = "nodepool", NodePool = %json!({"name": name}), error = %e, "updating nodepool status failed, will retry")
                }
            }
        }
    }

    /// After every change (at most every 2 s) and every 30 s.
    pub async fn run(self, mut changes: tokio::sync::watch::Receiver<u64>) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tick.tick() => {},
            }
            if state::read(&self.state).synced() {
                self.reconcile_all().await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
