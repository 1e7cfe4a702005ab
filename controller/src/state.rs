//! The cluster as the reconcilers see it: one in-memory copy of the objects they decide on
//! (pods, nodes, NodeClaims, NodePools, EC2NodeClasses, DaemonSets, PDBs), kept current by
//! kube watches rather than by polling the API server, plus the indexes the decisions need
//! (pods by node, nodes and claims by provider ID) and the in-memory pod nominations.
//!
//! [`ClusterState`] is plain data — `apply`/`delete` in, queries out — so it is unit-tested
//! without a cluster; [`watch`] is the thin edge that feeds it from watch streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karpctl_api::v1::{EC2NodeClass, NodeClaim, NodePool};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;

/// The kinds the state tracks; each reports "synced" once its first full list arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Node,
    NodeClaim,
    NodePool,
    EC2NodeClass,
    DaemonSet,
    PodDisruptionBudget,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Pod,
        Kind::Node,
        Kind::NodeClaim,
        Kind::NodePool,
        Kind::EC2NodeClass,
        Kind::DaemonSet,
        Kind::PodDisruptionBudget,
    ];
}

/// Where pods placed on in-flight capacity are expected to land, so the next batch does not
/// plan them again. Expires so a claim that never comes up does not hold pods forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nomination {
    /// The NodeClaim (or Node) name.
    pub target: String,
    pub until: Instant,
}

/// `namespace/name` for namespaced objects, `name` otherwise.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// An object kind the state stores.
pub trait Tracked: Resource + Clone + Sized {
    const KIND: Kind;
    fn map(state: &mut ClusterState) -> &mut BTreeMap<String, Self>;
}

macro_rules! tracked {
    ($ty:ty, $kind:ident, $field:ident) => {
        impl Tracked for $ty {
            const KIND: Kind = Kind::$kind;
            fn map(state: &mut ClusterState) -> &mut BTreeMap<String, Self> {
                &mut state.$field
            }
        }
    };
}

tracked!(Pod, Pod, pods);
tracked!(Node, Node, nodes);
tracked!(NodeClaim, NodeClaim, node_claims);
tracked!(NodePool, NodePool, node_pools);
tracked!(EC2NodeClass, EC2NodeClass, node_classes);
tracked!(DaemonSet, DaemonSet, daemon_sets);
tracked!(PodDisruptionBudget, PodDisruptionBudget, pdbs);

#[derive(Default, Debug)]
pub struct ClusterState {
    pods: BTreeMap<String, Pod>,
    nodes: BTreeMap<String, Node>,
    node_claims: BTreeMap<String, NodeClaim>,
    node_pools: BTreeMap<String, NodePool>,
    node_classes: BTreeMap<String, EC2NodeClass>,
    daemon_sets: BTreeMap<String, DaemonSet>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
    /// Node name → keys of the pods bound to it.
    pods_by_node: BTreeMap<String, BTreeSet<String>>,
    /// Provider ID → node name.
    nodes_by_provider_id: BTreeMap<String, String>,
    /// Provider ID → claim name.
    claims_by_provider_id: BTreeMap<String, String>,
    nominations: BTreeMap<String, Nomination>,
    synced: BTreeSet<Kind>,
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn node_provider_id(node: &Node) -> Option<&str> {
    node.spec.as_ref().and_then(|s| s.provider_id.as_deref())
}

fn claim_provider_id(claim: &NodeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.provider_id.as_deref())
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace one object (stored [`trim`]med).
    pub fn apply<K: Tracked + 'static>(&mut self, mut obj: K) {
        trim(&mut obj);
        let key = key_of(&obj);
        self.unindex::<K>(&key);
        self.index(&key, &obj);
        K::map(self).insert(key, obj);
    }

    pub fn delete<K: Tracked + 'static>(&mut self, obj: &K) {
        let key = key_of(obj);
        self.unindex::<K>(&key);
        K::map(self).remove(&key);
        match K::KIND {
            Kind::Pod => {
                self.nominations.remove(&key);
            }
            // Pods waiting for a claim that went away are planned again at once.
            Kind::NodeClaim => self.nominations.retain(|_, n| n.target != key),
            _ => {}
        }
    }

    /// Replace every object of one kind (a watch's initial list) and mark it synced.
    pub fn replace<K: Tracked + 'static>(&mut self, objs: Vec<K>) {
        let old: Vec<String> = K::map(self).keys().cloned().collect();
        for key in old {
            self.unindex::<K>(&key);
        }
        K::map(self).clear();
        for obj in objs {
            self.apply(obj);
        }
        self.synced.insert(K::KIND);
    }

    fn index<K: Tracked + 'static>(&mut self, key: &str, obj: &K) {
        let any: &dyn std::any::Any = obj;
        if let Some(pod) = any.downcast_ref::<Pod>() {
            if let Some(node) = pod_node(pod) {
                self.pods_by_node
                    .entry(node.to_owned())
                    .or_default()
                    .insert(key.to_owned());
            }
        } else if let Some(node) = any.downcast_ref::<Node>() {
            if let Some(id) = node_provider_id(node) {
                self.nodes_by_provider_id
                    .insert(id.to_owned(), key.to_owned());
            }
        } else if let Some(claim) = any.downcast_ref::<NodeClaim>()
            && let Some(id) = claim_provider_id(claim)
        {
            self.claims_by_provider_id
                .insert(id.to_owned(), key.to_owned());
        }
    }

    fn unindex<K: Tracked + 'static>(&mut self, key: &str) {
        match K::KIND {
            Kind::Pod => {
                if let Some(node) = self.pods.get(key).and_then(pod_node).map(str::to_owned)
                    && let Some(set) = self.pods_by_node.get_mut(&node)
                {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_by_node.remove(&node);
                    }
                }
            }
            Kind::Node => {
                if let Some(id) = self.nodes.get(key).and_then(node_provider_id) {
                    let id = id.to_owned();
                    self.nodes_by_provider_id.remove(&id);
                }
            }
            Kind::NodeClaim => {
                if let Some(id) = self.node_claims.get(key).and_then(claim_provider_id) {
                    let id = id.to_owned();
                    self.claims_by_provider_id.remove(&id);
                }
            }
            _ => {}
        }
    }

    /// Every kind has delivered its initial list (for /readyz and before garbage collection).
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn mark_synced(&mut self, kind: Kind) {
        self.synced.insert(kind);
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn node_claims(&self) -> impl Iterator<Item = &NodeClaim> {
        self.node_claims.values()
    }

    pub fn node_claim(&self, name: &str) -> Option<&NodeClaim> {
        self.node_claims.get(name)
    }

    pub fn node_pools(&self) -> impl Iterator<Item = &NodePool> {
        self.node_pools.values()
    }

    pub fn node_pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.get(name)
    }

    pub fn node_classes(&self) -> impl Iterator<Item = &EC2NodeClass> {
        self.node_classes.values()
    }

    pub fn node_class(&self, name: &str) -> Option<&EC2NodeClass> {
        self.node_classes.get(name)
    }

    pub fn daemon_sets(&self) -> impl Iterator<Item = &DaemonSet> {
        self.daemon_sets.values()
    }

    pub fn pdbs(&self) -> impl Iterator<Item = &PodDisruptionBudget> {
        self.pdbs.values()
    }

    /// Pods bound to `node`, terminal ones included (callers filter).
    pub fn pods_on_node(&self, node: &str) -> Vec<&Pod> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .collect()
    }

    pub fn node_for_provider_id(&self, provider_id: &str) -> Option<&Node> {
        self.nodes_by_provider_id
            .get(provider_id)
            .and_then(|n| self.nodes.get(n))
    }

    pub fn claim_for_provider_id(&self, provider_id: &str) -> Option<&NodeClaim> {
        self.claims_by_provider_id
            .get(provider_id)
            .and_then(|n| self.node_claims.get(n))
    }

    /// The Node a claim launched, once it registered.
    pub fn node_for_claim(&self, claim: &NodeClaim) -> Option<&Node> {
        claim_provider_id(claim).and_then(|id| self.node_for_provider_id(id))
    }

    /// Claims still coming up: not being deleted and with no Node yet.
    pub fn in_flight_claims(&self) -> Vec<&NodeClaim> {
        self.node_claims
            .values()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter(|c| self.node_for_claim(c).is_none())
            .collect()
    }

    pub fn nominate(&mut self, pod_key: &str, target: &str, until: Instant) {
        self.nominations.insert(
            pod_key.to_owned(),
            Nomination {
                target: target.to_owned(),
                until,
            },
        );
    }

    /// Where `pod_key` is nominated, unless that has expired.
    pub fn nomination(&self, pod_key: &str, now: Instant) -> Option<&str> {
        self.nominations
            .get(pod_key)
            .filter(|n| n.until > now)
            .map(|n| n.target.as_str())
    }

    /// Keys of pending pods nominated to `target` (not expired).
    pub fn nominated_to(&self, target: &str, now: Instant) -> Vec<String> {
        self.nominations
            .iter()
            .filter(|(_, n)| n.target == target && n.until > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Pods the provisioner should plan capacity for: unschedulable, and not already
    /// nominated to capacity that is on its way.
    pub fn provisionable_pods(&self, now: Instant) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|(key, pod)| is_provisionable(pod) && self.nomination(key, now).is_none())
            .map(|(_, p)| p)
            .collect()
    }
}

/// kubectl's copy of the whole object it last applied, in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what no reconciler reads before an object is stored, so the state of a big cluster
/// stays small: every object's `managedFields` and kubectl's last-applied copy, and for pods
/// (the bulk of a cluster) and DaemonSet pod templates the container details only a kubelet
/// needs (env, commands, probes, mounts, security contexts, statuses). What scheduling
/// (`pod_from_spec`: resources, init containers and their restart policy, overhead, node
/// selectors, affinity, tolerations, topology spread, host ports, PVC volumes), events
/// (name, namespace, uid, resourceVersion), `karpenter_pods_state` (owner, node, phase) and
/// provisioning (conditions, phase, deletion) read is kept.
pub fn trim<K: Tracked + 'static>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    let any: &mut dyn std::any::Any = obj;
    if let Some(pod) = any.downcast_mut::<Pod>() {
        if let Some(spec) = pod.spec.as_mut() {
            trim_pod_spec(spec);
        }
        if let Some(status) = pod.status.as_mut() {
            status.container_statuses = None;
            status.init_container_statuses = None;
            status.ephemeral_container_statuses = None;
            status.resource_claim_statuses = None;
            status.message = None;
        }
    } else if let Some(node) = any.downcast_mut::<Node>() {
        if let Some(status) = node.status.as_mut() {
            status.images = None;
            status.volumes_attached = None;
            status.volumes_in_use = None;
            status.config = None;
        }
    } else if let Some(ds) = any.downcast_mut::<DaemonSet>() {
        if let Some(spec) = ds.spec.template.spec.as_mut() {
            trim_pod_spec(spec);
        }
        if let Some(meta) = ds.spec.template.metadata.as_mut() {
            meta.managed_fields = None;
        }
    }
}

fn trim_pod_spec(spec: &mut PodSpec) {
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.env = None;
        c.env_from = None;
        c.command = None;
        c.args = None;
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        c.lifecycle = None;
        c.volume_mounts = None;
        c.volume_devices = None;
        c.security_context = None;
        c.working_dir = None;
        c.termination_message_path = None;
        c.termination_message_policy = None;
        c.image_pull_policy = None;
        c.ports = c
            .ports
            .take()
            .map(|ports| {
                ports
                    .into_iter()
                    .filter(|p| p.host_port.is_some_and(|h| h > 0))
                    .collect::<Vec<_>>()
            })
            .filter(|ports| !ports.is_empty());
    }
    spec.ephemeral_containers = None;
    spec.security_context = None;
    spec.dns_config = None;
    spec.host_aliases = None;
    spec.image_pull_secrets = None;
    // Only volumes that can constrain placement (their claims carry topology) are kept.
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
    }
}

/// `PodScheduled=False` with reason `Unschedulable`, not bound, not terminal, not being
/// deleted, and not a DaemonSet's pod (those follow nodes, they do not ask for them).
pub fn is_provisionable(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() || pod_node(pod).is_some() {
        return false;
    }
    if pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return false;
    }
    status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })
}

/// Whether a pod still uses its node's resources.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The state shared by the watches and the reconcilers. Never held across an `.await`.
pub type SharedState = Arc<RwLock<ClusterState>>;

pub fn read(state: &SharedState) -> std::sync::RwLockReadGuard<'_, ClusterState> {
    state.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write(state: &SharedState) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
    state.write().unwrap_or_else(|e| e.into_inner())
}

/// Bumped after every change the watches apply; reconcilers wait on it.
pub type Changes = tokio_watch::Sender<u64>;

/// Feed `state` from one watch per kind until the client goes away. Each change bumps
/// `changes` so reconcilers wake up.
pub async fn watch(client: Client, state: SharedState, changes: Arc<Changes>) {
    futures::join!(
        feed(Api::<Pod>::all(client.clone()), &state, &changes),
        feed(Api::<Node>::all(client.clone()), &state, &changes),
        feed(Api::<NodeClaim>::all(client.clone()), &state, &changes),
        feed(Api::<NodePool>::all(client.clone()), &state, &changes),
        feed(Api::<EC2NodeClass>::all(client.clone()), &state, &changes),
        feed(Api::<DaemonSet>::all(client.clone()), &state, &changes),
        feed(Api::<PodDisruptionBudget>::all(client), &state, &changes),
    );
}

async fn feed<K>(api: Api<K>, state: &SharedState, changes: &Changes)
where
    K: Tracked + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use kube::runtime::WatchStreamExt;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut initial: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            // Trimmed as each page arrives, so a big cluster's first list never sits in
            // memory whole and untrimmed.
            Ok(watcher::Event::InitApply(mut obj)) => {
                trim(&mut obj);
                initial.push(obj);
            }
            Ok(watcher::Event::InitDone) => {
                write(state).replace(std::mem::take(&mut initial));
                tracing::debug!(kind = ?K::KIND, "cluster state synced");
            }
            Ok(watcher::Event::Apply(obj)) => write(state).apply(obj),
            Ok(watcher::Event::Delete(obj)) => write(state).delete(&obj),
            Err(e) => {
                tracing::warn!(kind = ?K::KIND, error = %e, "watch failed, retrying");
                continue;
            }
        }
        changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pending(ns: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn bound(ns: &str, name: &str, node: &str) -> Pod {
        let mut p = pending(ns, name);
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        p
    }

    fn node(name: &str, provider_id: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(provider_id.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn claim(name: &str, provider_id: Option<&str>) -> NodeClaim {
        let mut c: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .unwrap();
        if let Some(id) = provider_id {
            c.status = Some(karpctl_api::v1::NodeClaimStatus {
                provider_id: Some(id.into()),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn pods_are_indexed_by_node_and_follow_rebinding_and_deletion() {
        let mut s = ClusterState::new();
        s.apply(bound("a", "p1", "n1"));
        s.apply(bound("a", "p2", "n1"));
        assert_eq!(s.pods_on_node("n1").len(), 2);
        s.apply(bound("a", "p2", "n2"));
        assert_eq!(s.pods_on_node("n1").len(), 1);
        assert_eq!(s.pods_on_node("n2").len(), 1);
        s.delete(&bound("a", "p1", "n1"));
        assert!(s.pods_on_node("n1").is_empty());
    }

    #[test]
    fn claims_and_nodes_are_found_by_provider_id() {
        let mut s = ClusterState::new();
        s.apply(claim("c1", None));
        assert_eq!(s.in_flight_claims().len(), 1);
        s.apply(claim("c1", Some("aws:///z/i-1")));
        assert_eq!(
            s.claim_for_provider_id("aws:///z/i-1")
                .map(|c| c.name_any()),
            Some("c1".into())
        );
        assert_eq!(s.in_flight_claims().len(), 1, "launched but no node yet");
        s.apply(node("n1", "aws:///z/i-1"));
        assert!(s.in_flight_claims().is_empty());
        assert_eq!(
            s.node_for_claim(s.node_claim("c1").unwrap())
                .map(|n| n.name_any()),
            Some("n1".into())
        );
        s.delete(&node("n1", "aws:///z/i-1"));
        assert!(s.node_for_provider_id("aws:///z/i-1").is_none());
        s.delete(&claim("c1", Some("aws:///z/i-1")));
        assert!(s.claim_for_provider_id("aws:///z/i-1").is_none());
    }

    #[test]
    fn provisionable_pods_exclude_bound_terminal_daemonset_and_nominated_ones() {
        let now = Instant::now();
        let mut s = ClusterState::new();
        s.apply(pending("a", "wants-capacity"));
        s.apply(bound("a", "running", "n1"));
        let mut done = pending("a", "done");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        s.apply(done);
        let mut ds = pending("a", "ds-pod");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            name: "ds".into(),
            api_version: "apps/v1".into(),
            uid: "u".into(),
            ..Default::default()
        }]);
        s.apply(ds);
        let mut scheduled = pending("a", "not-yet-tried");
        scheduled.status.as_mut().unwrap().conditions = None;
        s.apply(scheduled);
        s.apply(pending("a", "nominated"));
        s.nominate(
            "a/nominated",
            "c1",
            now + std::time::Duration::from_secs(10),
        );
        let names: Vec<String> = s
            .provisionable_pods(now)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, vec!["wants-capacity"]);
        // Once the nomination expires the pod is planned again.
        let later = now + std::time::Duration::from_secs(11);
        assert_eq!(s.provisionable_pods(later).len(), 2);
        assert_eq!(s.nominated_to("c1", now), vec!["a/nominated".to_string()]);
    }

    #[test]
    fn stored_pods_drop_managed_fields_env_and_probes_but_schedule_the_same() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": "a", "name": "web", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "karpenter.sh/do-not-disrupt": "true"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "nodeSelector": {"karpenter.sh/nodepool": "p"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "initContainers": [{"name": "sidecar", "restartPolicy": "Always", "env": [{"name": "X", "value": "y"}],
                    "resources": {"requests": {"cpu": "50m"}}}],
                "containers": [{
                    "name": "app", "image": "web:1", "command": ["/web"], "args": ["--port=8080"],
                    "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets"}],
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
                }],
                "volumes": [{"name": "token", "projected": {"sources": []}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web"}}]
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
                "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0}]
            }
        }))
        .unwrap();
        let mut s = ClusterState::new();
        s.apply(pod.clone());
        let stored = s.pod("a/web").unwrap();
        assert!(stored.metadata.managed_fields.is_none());
        assert_eq!(
            stored.annotations().keys().collect::<Vec<_>>(),
            vec!["karpenter.sh/do-not-disrupt"]
        );
        assert_eq!(stored.owner_references().len(), 1);
        assert_eq!(stored.resource_version().as_deref(), Some("7"));
        let spec = stored.spec.as_ref().unwrap();
        let app = &spec.containers[0];
        assert!(app.env.is_none() && app.command.is_none() && app.readiness_probe.is_none());
        assert_eq!(app.ports.as_ref().map(Vec::len), Some(1), "only host ports");
        assert_eq!(
            spec.volumes.as_ref().unwrap()[0].name,
            "data",
            "only claims are kept"
        );
        assert!(stored.status.as_ref().unwrap().container_statuses.is_none());
        assert!(is_provisionable(stored));
        let scheduled = |p: &Pod| {
            karpctl_scheduling::kubernetes::pod_from_spec(
                "a",
                "web",
                p.metadata.labels.as_ref().unwrap(),
                p.spec.as_ref().unwrap(),
                "spec",
            )
            .unwrap()
        };
        assert_eq!(scheduled(stored), scheduled(&pod));
    }

    #[test]
    fn replace_drops_objects_missing_from_the_new_list_and_marks_synced() {
        let mut s = ClusterState::new();
        s.apply(node("old", "aws:///z/i-old"));
        assert!(!s.synced());
        s.replace(vec![node("new", "aws:///z/i-new")]);
        assert!(s.node("old").is_none());
        assert!(s.node_for_provider_id("aws:///z/i-old").is_none());
        assert!(s.node_for_provider_id("aws:///z/i-new").is_some());
        for k in Kind::ALL {
            s.mark_synced(k);
        }
        assert!(s.synced());
    }
}
