//! `karpenter_pods_state`: one series per pod in the cluster, labelled with where it runs
//! (node, and that node's NodePool, zone, architecture, capacity type and instance type) and
//! its phase, so dashboards can count pending pods per pool or pods per instance type. It is
//! read from the watched cluster state at each scrape, so a deleted pod's series disappears
//! with the pod, a pod that moves or changes phase never leaves a stale one behind, and the
//! series cost no memory of their own.
//!
//! Labels and their values follow upstream's pod metrics controller: `owner` is the first
//! owner reference as a self link (`/apis/apps/v1/namespaces/default/replicasets/web-abc`),
//! node facts come from the Node's labels and are empty while the pod is unbound.

use std::sync::Arc;

use karpctl_api::labels;

use crate::metrics::Collector;
use crate::state::{self, NodeRecord, PodRecord, SharedState};

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

/// One pod's label values; `node` is the Node it is bound to, if the state has it.
pub fn labels_for<'a>(pod: &'a PodRecord, node: Option<&'a NodeRecord>) -> [&'a str; 10] {
    let node_label = |key: &str| node.and_then(|n| n.label(key)).unwrap_or_default();
    [
        &pod.name,
        &pod.namespace,
        pod.owner.as_deref().unwrap_or_default(),
        pod.node_name.as_deref().unwrap_or_default(),
        node_label(labels::NODE_POOL),
        node_label(labels::TOPOLOGY_ZONE),
        node_label(labels::ARCH),
        node_label(labels::CAPACITY_TYPE),
        node_label(labels::INSTANCE_TYPE),
        pod.phase.as_deref().unwrap_or_default(),
    ]
}

/// Every pod's series, read from `shared` (none until the state has synced, so a scrape
/// never shows a half-listed cluster).
pub fn collector(shared: SharedState) -> Collector<10> {
    Arc::new(move |emit| {
        let s = state::read(&shared);
        if !s.synced() {
            return;
        }
        for pod in s.pods() {
            let node = pod.node_name.as_deref().and_then(|n| s.node(n));
            emit(labels_for(pod, node), 1.0);
        }
    })
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

    fn node() -> NodeRecord {
        NodeRecord::new(node_object())
    }

    fn node_object() -> k8s_openapi::api::core::v1::Node {
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
            labels_for(&p, Some(&n)),
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
            labels_for(&p, None),
            ["lonely", "default", "", "", "", "", "", "", "", "Pending"]
        );
    }

    /// The `karpenter_pods_state` sample lines of a scrape.
    fn scrape(metrics: &crate::metrics::Metrics) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("karpenter_pods_state{"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_scrape_reads_the_state_as_it_is_then() {
        use crate::events::MetricsSink;
        let shared: SharedState = Default::default();
        let metrics = crate::metrics::Metrics::new();
        metrics.pods_state(collector(shared.clone()));
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
        {
            let mut s = state::write(&shared);
            s.apply(node_object());
            s.apply(bound.clone());
            s.apply(pending.clone());
        }
        assert!(
            scrape(&metrics).is_empty(),
            "nothing before the state synced"
        );
        {
            let mut s = state::write(&shared);
            for kind in state::Kind::ALL {
                s.mark_synced(kind);
            }
        }
        let lines = scrape(&metrics);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(r#"karpenter_pods_state{name="a",namespace="default",owner="",node="ip-10-0-1-5",nodepool="web""#),
            "the bound pod's nodepool comes from its node: {lines:?}"
        );
        assert!(lines[1].contains(r#"phase="Pending"} 1"#), "{lines:?}");

        state::write(&shared).delete(&pending);
        let lines = scrape(&metrics);
        assert_eq!(lines.len(), 1, "a deleted pod's series goes with it");
        state::write(&shared).delete(&bound);
        assert!(scrape(&metrics).is_empty());
    }
}
