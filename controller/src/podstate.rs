//! `karpenter_pods_state`: one series per pod in the cluster, labelled with where it runs
//! (node, and that node's NodePool, zone, architecture, capacity type and instance type) and
//! its phase, so dashboards can count pending pods per pool or pods per instance type. It is
//! recomputed whole from the watched cluster state, so a deleted pod's series disappears with
//! the pod and a pod that moves or changes phase never leaves a stale one behind.
//!
//! Labels and their values follow upstream's pod metrics controller: `owner` is the first
//! owner reference as a self link (`/apis/apps/v1/namespaces/default/replicasets/web-abc`),
//! node facts come from the Node's labels and are empty while the pod is unbound.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use karpctl_api::labels;
use kube::ResourceExt;

use crate::events::MetricsSink;
use crate::metrics::Labels;
use crate::state::{self, ClusterState, PodRecord, SharedState};

/// The label names, in the order [`labels_for`] returns their values.
pub const LABELS: [&str; 10] = [
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
];

/// One pod's label values; `node` is the Node it is bound to, if the state has it. Values
/// come from `shared`, so a value many pods repeat (namespace, node, zone, ...) is one string.
pub fn labels_for(
    pod: &PodRecord,
    node: Option<&Node>,
    shared: &mut HashSet<Arc<str>>,
) -> Labels<10> {
    let mut one = |v: &str| -> Arc<str> {
        match shared.get(v) {
            Some(s) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(v);
                shared.insert(s.clone());
                s
            }
        }
    };
    let node_label = |key: &str| node.and_then(|n| n.labels().get(key)).map_or("", |v| v);
    [
        Arc::from(&*pod.name),
        one(&pod.namespace),
        one(pod.owner.as_deref().unwrap_or_default()),
        one(pod.node_name.as_deref().unwrap_or_default()),
        one(node_label(labels::NODE_POOL)),
        one(node_label(labels::TOPOLOGY_ZONE)),
        one(node_label(labels::ARCH)),
        one(node_label(labels::CAPACITY_TYPE)),
        one(node_label(labels::INSTANCE_TYPE)),
        one(pod.phase.as_deref().unwrap_or_default()),
    ]
}

/// Every pod's series, from the cluster state.
pub fn series(state: &ClusterState) -> Vec<Labels<10>> {
    let mut shared = HashSet::new();
    state
        .pods()
        .map(|p| {
            let node = p.node_name.as_deref().and_then(|n| state.node(n));
            labels_for(p, node, &mut shared)
        })
        .collect()
}

/// Recompute the series after changes (at most every 2 s) and every 30 s, once synced.
pub async fn run(
    shared: SharedState,
    metrics: Arc<dyn MetricsSink>,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {},
        }
        let computed = {
            let s = state::read(&shared);
            s.synced().then(|| series(&s))
        };
        if let Some(all) = computed {
            metrics.pods_state(all);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(v).unwrap()
    }

    fn record(v: serde_json::Value) -> PodRecord {
        PodRecord::new(pod(v))
    }

    fn node() -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "ip-10-0-1-5", "labels": {
                "karpenter.sh/nodepool": "web",
                "topology.kubernetes.io/zone": "us-west-2a",
                "kubernetes.io/arch": "amd64",
                "karpenter.sh/capacity-type": "spot",
                "node.kubernetes.io/instance-type": "m5.large"
            }},
            "spec": {}
        }))
        .unwrap()
    }

    #[test]
    fn a_bound_pod_carries_its_nodes_facts_and_owner() {
        let p = record(json!({
            "metadata": {"name": "web-abc-1", "namespace": "shop", "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u"
            }]},
            "spec": {"nodeName": "ip-10-0-1-5", "containers": []},
            "status": {"phase": "Running"}
        }));
        let n = node();
        assert_eq!(
            labels_for(&p, Some(&n), &mut HashSet::new()),
            [
                "web-abc-1",
                "shop",
                "/apis/apps/v1/namespaces/shop/replicasets/web-abc",
                "ip-10-0-1-5",
                "web",
                "us-west-2a",
                "amd64",
                "spot",
                "m5.large",
                "Running"
            ]
            .map(Arc::from)
        );
    }

    #[test]
    fn a_pending_pod_has_only_its_own_facts() {
        let p = record(json!({
            "metadata": {"name": "lonely", "namespace": "default"},
            "spec": {"containers": []},
            "status": {"phase": "Pending"}
        }));
        assert_eq!(
            labels_for(&p, None, &mut HashSet::new()),
            ["lonely", "default", "", "", "", "", "", "", "", "Pending"].map(Arc::from)
        );
    }

    #[test]
    fn series_follow_the_state_and_drop_deleted_pods() {
        let mut s = ClusterState::new();
        s.apply(node());
        let bound = pod(json!({
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"nodeName": "ip-10-0-1-5", "containers": []},
            "status": {"phase": "Running"}
        }));
        let pending = pod(json!({
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"containers": []},
            "status": {"phase": "Pending"}
        }));
        s.apply(bound.clone());
        s.apply(pending.clone());
        let all = series(&s);
        assert_eq!(all.len(), 2);
        assert_eq!(
            &*all[0][4], "web",
            "the bound pod's nodepool comes from its node"
        );
        assert_eq!(&*all[1][9], "Pending");
        assert!(
            Arc::ptr_eq(&all[0][1], &all[1][1]),
            "one copy of a namespace for every pod in it"
        );
        s.delete(&pending);
        let all = series(&s);
        assert_eq!(all.len(), 1);
        assert_eq!(&*all[0][0], "a");

        let metrics = crate::metrics::Metrics::new();
        metrics.pods_state(series(&s));
        let text = metrics.render();
        assert!(
            text.contains(r#"karpenter_pods_state{name="a",namespace="default",owner="",node="ip-10-0-1-5",nodepool="web""#),
            "{text}"
        );
        s.delete(&bound);
        metrics.pods_state(series(&s));
        assert!(
            !metrics.render().contains("karpenter_pods_state{"),
            "a deleted pod's series goes with it"
        );
    }
}
